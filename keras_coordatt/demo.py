"""The end-to-end demo: MobileNetV2CA -> training -> QAT -> int8 TFLite, on real bundled images.

``keras-coordatt demo`` (or ``python -m keras_coordatt.demo``) trains a MobileNetV2CA on the
CIFAR-10 subset shipped with the package (4,000 training / 1,000 test images, 32x32) in the
small-image configuration (output stride 8: a 4x4 last feature map), then compares the float
Keras model, its float32 TFLite export, a post-training-quantized int8 export and a
quantization-aware-trained int8 export: top-1, file size and LiteRT latency. Needs the
``[qat,litert]`` extras. Everything it writes goes to ``--output`` (default ``demo_output``).

The command line (its options) is :mod:`keras_coordatt.cli.demo`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keras_coordatt.datasets import CIFAR10_CLASSES, load_cifar10_subset
from keras_coordatt.training.fit_setup import build_for_fit

#: The small-image configuration: at 32x32, output stride 8 ends on a 4x4 map (stride 32: 1x1).
SMALL_IMAGE_OUTPUT_STRIDE = 8


def preprocess_images(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` -> float32 ImageNet-normalised inputs of the same shape."""
    from keras_coordatt.applications import preprocess_input

    return np.asarray(preprocess_input(images.astype("float32")), dtype="float32")


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flips and 4-pixel translations (zero padded), NHWC uint8."""
    flip = rng.random(len(images))[:, None, None, None] < 0.5
    flipped = np.where(flip, images[:, :, ::-1], images)
    padded = np.pad(flipped, ((0, 0), (4, 4), (4, 4), (0, 0)))
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    offsets = rng.integers(0, 9, size=(len(images), 2))
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, dy : dy + height, dx : dx + width]
    return out


def build_classifier(alpha: float, weights: str | None, classes: int = 10):
    """MobileNetV2CA at 32x32 with a ``classes``-way logits head (a flat functional model).

    With ``weights`` (a preset name, ``"imagenet"`` or a checkpoint path) the pretrained
    backbone is loaded and a new head is put on top, which is the fine-tuning recipe.
    """
    import keras

    from keras_coordatt.applications import MobileNetV2CA

    if weights is None:
        return MobileNetV2CA(
            input_shape=(32, 32, 3), alpha=alpha, weights=None, classes=classes,
            classifier_activation=None, output_stride=SMALL_IMAGE_OUTPUT_STRIDE,
            name="demo_mobilenetv2_ca",
        )
    backbone = MobileNetV2CA(
        input_shape=(32, 32, 3), alpha=alpha, weights=weights, include_top=False, pooling="avg",
        output_stride=SMALL_IMAGE_OUTPUT_STRIDE,
    )
    x = keras.layers.Dropout(0.1, name="dropout")(backbone.output)
    outputs = keras.layers.Dense(classes, name="predictions")(x)
    return keras.Model(backbone.input, outputs, name="demo_mobilenetv2_ca")


def _keras_module_of(model):
    """``keras`` (3) for our models, ``tf_keras`` for the QAT models tfmot returns."""
    import keras

    if isinstance(model, keras.Model):
        return keras
    import tf_keras

    return tf_keras


def fit_classifier(model, x, y, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
                   warmup_epochs: float = 0.0, weight_decay: float | None = None):
    """Adam (AdamW with ``weight_decay``) + cosine decay after a linear warm-up of
    ``warmup_epochs`` on uint8 images ``x`` ``(N, 32, 32, 3)``, with fresh augmentation every
    epoch."""
    keras = _keras_module_of(model)
    rng = np.random.default_rng(seed)
    steps_per_epoch = int(np.ceil(len(x) / batch_size))
    warmup = int(warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate if not warmup else 0.0, decay_steps=epochs * steps_per_epoch - warmup,
        **({"warmup_target": learning_rate, "warmup_steps": warmup} if warmup else {}),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    build_for_fit(model, y)  # the train step is traced once, not twice
    verbose = 1 if sys.stdout.isatty() else 2  # a progress bar on a terminal, a line in logs
    for epoch in range(epochs):
        print(f"  epoch {epoch + 1}/{epochs}")
        model.fit(
            preprocess_images(augment(x, rng)), y, batch_size=batch_size, epochs=1,
            verbose=verbose,
        )


def keras_accuracy(model, x, y) -> float:
    """Top-1 of a logits model on preprocessed ``x``."""
    logits = model.predict(x, batch_size=100, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def tflite_latency_ms(path: str | os.PathLike, *, num_threads: int = 2, runs: int = 200) -> float:
    """Median LiteRT latency of one batch-1 inference, in milliseconds (after 20 warm-ups)."""
    from keras_coordatt.export import LiteRTModel

    model = LiteRTModel(path, num_threads=num_threads)
    detail = model.input_detail
    shape = [1, *detail["shape"][1:]]
    if model.dynamic_batch:
        model.interpreter.resize_tensor_input(detail["index"], shape)
        model.interpreter.allocate_tensors()
    sample = np.zeros(shape, dtype=detail["dtype"])
    interpreter = model.interpreter
    interpreter.set_tensor(detail["index"], sample)
    for _ in range(20):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


class PhaseClock:
    """Wall time per named phase (a phase named again adds to its total)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def phase(self, name: str) -> None:
        """Ends the running phase and starts ``name``."""
        self.stop()
        self._current = (name, time.perf_counter())

    def stop(self) -> dict[str, float]:
        """Ends the running phase; returns the totals (seconds by phase, first-run order)."""
        if self._current is not None:
            name, start = self._current
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
            self._current = None
        return dict(self.totals)


def run_demo(
    output_dir: str | os.PathLike = "demo_output",
    *,
    alpha: float = 0.5,
    epochs: int = 12,
    qat_epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    weights: str | None = None,
    seed: int = 0,
    train_images: int | None = None,
    qat_images: int | None = None,
) -> dict[str, Any]:
    """Runs the demo and returns the results table as a dict (also saved as results.json).

    The network is MobileNetV2CA in the small-image configuration (``output_stride=8``: the
    32x32 inputs end on a 4x4 map). ``train_images`` keeps only that many training images (a
    seeded random subset) and ``qat_images`` only that many of those for QAT (quick runs).
    """
    import keras

    from keras_coordatt.export import evaluate_tflite, export_tflite
    from keras_coordatt.quantization import quantize_model

    keras.utils.set_random_seed(seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = PhaseClock()

    clock.phase("data")
    print("[1/6] Loading the bundled CIFAR-10 subset (real images)")
    x_train, y_train, x_test, y_test = _load_data(train_images, seed)
    test_inputs = preprocess_images(x_test)

    clock.phase("training")
    print(f"[2/6] Training MobileNetV2CA (alpha={alpha}, 32x32, output stride "
          f"{SMALL_IMAGE_OUTPUT_STRIDE}, weights={weights}) for {epochs} epochs")
    model = build_classifier(alpha, weights)
    fit_classifier(model, x_train, y_train, epochs=epochs, batch_size=batch_size,
                   learning_rate=learning_rate, seed=seed)
    model.save(out / "mobilenetv2_ca.keras")
    float_accuracy = keras_accuracy(model, test_inputs, y_test)
    print(f"  float Keras top-1: {100 * float_accuracy:.1f} %")

    clock.phase("export")
    print("[3/6] Exporting float32 and post-training-quantized int8 TFLite models")
    float_path = export_tflite(model, out / "mobilenetv2_ca_float32.tflite", mode="float32")
    calibration = preprocess_images(x_train[:: max(1, len(x_train) // 256)])
    ptq_path = export_tflite(
        model, out / "mobilenetv2_ca_ptq_int8.tflite", mode="int8",
        representative_dataset=calibration,
    )

    clock.phase("QAT")
    print(f"[4/6] Quantization-aware training for {qat_epochs} epochs")
    qat_model = quantize_model(model, calibration_data=calibration)
    fit_classifier(qat_model, x_train[:qat_images], y_train[:qat_images], epochs=qat_epochs,
                   batch_size=batch_size, learning_rate=learning_rate / 10, seed=seed + 1)
    qat_accuracy = keras_accuracy(qat_model, test_inputs, y_test)
    print(f"  QAT Keras (fake-quant) top-1: {100 * qat_accuracy:.1f} %")
    clock.phase("export")
    qat_path = export_tflite(qat_model, out / "mobilenetv2_ca_qat_int8.tflite", mode="int8")

    clock.phase("LiteRT evaluation")
    print("[5/6] Evaluating the TFLite models with the LiteRT interpreter")
    rows = [("float Keras", None, float_accuracy), ("QAT Keras (fake-quant)", None, qat_accuracy)]
    for label, path in (("float32 TFLite", float_path), ("PTQ int8 TFLite", ptq_path),
                        ("QAT int8 TFLite", qat_path)):
        result = evaluate_tflite(path, (test_inputs, y_test), num_threads=2,
                                 progress=sys.stdout.isatty())
        print(f"  {label}: top-1 {100 * result['accuracy']:.1f} %")
        rows.append((label, path, result["accuracy"]))

    clock.phase("latency")
    print("[6/6] Measuring LiteRT latency (batch 1, 2 threads)")
    results: dict[str, Any] = {"models": _result_rows(rows), "test_images": int(len(x_test)),
                               "alpha": alpha, "epochs": epochs, "qat_epochs": qat_epochs}
    return _finish(results, clock, out)


def _finish(results: dict[str, Any], clock: PhaseClock, out: Path) -> dict[str, Any]:
    """Adds the times to ``results``, writes results.json and prints the table."""
    results["phase_seconds"] = clock.stop()
    results["seconds"] = sum(results["phase_seconds"].values())
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(format_results(results))
    print("\nSeconds: " + ", ".join(f"{name} {seconds:.0f}"
                                     for name, seconds in results["phase_seconds"].items()))
    print(f"Artifacts in {out.resolve()} ({results['seconds']:.0f} s in all)")
    return results


def _load_data(train_images: int | None, seed: int) -> tuple[np.ndarray, ...]:
    """``x_train, y_train, x_test, y_test`` of the bundled subset (``train_images`` of the
    training images, drawn with ``seed``)."""
    x_train, y_train = load_cifar10_subset("train")
    x_test, y_test = load_cifar10_subset("test")
    if train_images is not None:
        keep = np.random.default_rng(seed).permutation(len(x_train))[:train_images]
        x_train, y_train = x_train[keep], y_train[keep]
    print(f"  {len(x_train)} training and {len(x_test)} test images, classes: "
          f"{', '.join(CIFAR10_CLASSES)}")
    return x_train, y_train, x_test, y_test


def _result_rows(rows: list[tuple[str, Any, float]]) -> list[dict[str, Any]]:
    """One results entry per (label, .tflite path or None, top-1), with size and latency."""
    entries = []
    for label, path, accuracy in rows:
        entry: dict[str, Any] = {"model": label, "top1": accuracy}
        if path is not None:
            entry["size_kb"] = os.path.getsize(path) / 1024
            entry["latency_ms"] = tflite_latency_ms(path)
            entry["file"] = os.path.basename(path)
        entries.append(entry)
    return entries


def format_results(results: dict[str, Any]) -> str:
    """The demo's results as a Markdown table."""
    lines = [
        f"| model | top-1 on {results['test_images']} real test images | size (KB) | "
        "LiteRT latency (ms) |",
        "|---|---|---|---|",
    ]
    for entry in results["models"]:
        size = f"{entry['size_kb']:.0f}" if "size_kb" in entry else "-"
        latency = f"{entry['latency_ms']:.3f}" if "latency_ms" in entry else "-"
        lines.append(f"| {entry['model']} | {100 * entry['top1']:.1f} % | {size} | {latency} |")
    return "\n".join(lines)


def __getattr__(name: str) -> Any:
    """Deprecated names: the ``demo`` command's options moved to ``keras_coordatt.cli.demo``."""
    if name not in ("add_arguments", "run", "main", "register_cli"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"keras_coordatt.demo.{name} is deprecated: the demo command lives in "
        "keras_coordatt.cli.demo (run it with keras_coordatt.cli.main(['demo', ...])).",
        DeprecationWarning,
        stacklevel=2,
    )
    from keras_coordatt.cli import demo as command
    from keras_coordatt.cli import main

    return {
        "add_arguments": command.add_arguments,
        "run": command.run,
        "main": lambda argv=None: main(["demo", *(argv if argv is not None else sys.argv[1:])]),
        "register_cli": lambda: None,
    }[name]


if __name__ == "__main__":
    from keras_coordatt.cli import main as _cli_main

    raise SystemExit(_cli_main(["demo", *sys.argv[1:]]))
