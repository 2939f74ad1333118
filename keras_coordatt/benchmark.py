"""The timing harness of ``keras-coordatt benchmark`` and of the scripts in ``benchmarks/``.

Contenders are timed **interleaved in one process**: every trial runs each contender in turn
(round robin, starting at a different contender each trial), a trial of one contender times
many consecutive calls, and the reported value is the median over trials of the mean call time.
Noise that hits the machine for a while (other processes) is spread over all contenders
instead of biasing the ones that happened to run then, so ratios from one run are comparable.

Runtimes (each one at ``threads`` threads, default 2):

* ``keras``: ``model.predict_on_batch`` (TensorFlow backend);
* ``keras_xla``: ``tf.function(jit_compile=True)`` of ``model(x, training=False)``;
* ``litert_f32`` / ``litert_int8``: the model exported with
  :func:`keras_coordatt.export.export_tflite` (float32 / full-integer post-training int8 with
  float I/O), run by :class:`keras_coordatt.export.LiteRTModel`'s interpreter (XNNPACK).

Everything here uses only the installed package (the int8 calibration images are the bundled
CIFAR-10 subset unless a folder is given). The PyTorch / ONNX Runtime columns, the full suite
and the project's goal ratios live in ``benchmarks/`` of the source checkout.
Heavy imports (TensorFlow, LiteRT) happen inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Benchmark model names (the builders' names, and the Keras reference MobileNetV2).
MODELS = (
    "MobileNetV2CA",
    "MobileNetV2",
    "keras.applications.MobileNetV2",
    "MobileNeXt",
    "MobileNeXtCA",
)
QUICK_MODELS = ("MobileNetV2CA", "MobileNetV2", "keras.applications.MobileNetV2")
#: Inference runtimes of the package, in table column order.
RUNTIMES = ("keras", "keras_xla", "litert_f32", "litert_int8")
RUNTIME_LABELS = {
    "keras": "Keras predict_on_batch",
    "keras_xla": "Keras XLA (jit_compile)",
    "litert_f32": "LiteRT float32",
    "litert_int8": "LiteRT int8",
}
#: Pairs whose latency ratio :func:`ratio_lines` reports: (numerator, denominator).
RATIO_PAIRS = (
    ("MobileNetV2CA", "MobileNetV2"),
    ("MobileNeXtCA", "MobileNeXt"),
    ("MobileNetV2", "keras.applications.MobileNetV2"),
)


# ------------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------------


def configure_threads(threads: int) -> None:
    """Pins TensorFlow (intra-op ``threads``, inter-op 1) and, if imported later, torch/OpenMP.

    Call before TensorFlow runs its first op.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised: keep what it has
        pass


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        return "not installed"


def machine_info() -> dict[str, str]:
    """CPU model, core count, Python and library versions."""
    cpu = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "ai-edge-litert": _version("ai-edge-litert"),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
        "keras-coordatt": _version("keras-coordatt"),
    }


def load_average() -> tuple[float, float, float] | None:
    """The 1 / 5 / 15-minute load averages, or None where unknown."""
    try:
        return os.getloadavg()
    except OSError:
        return None


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    """One timed thing: ``fn()`` runs one call (one batch)."""

    model: str
    runtime: str
    batch: int
    fn: Callable[[], Any]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model, self.runtime, self.batch)


@dataclasses.dataclass
class Timing:
    """Per-call seconds: median, quartiles over trials, calls per trial, trial count."""

    median: float
    q1: float
    q3: float
    calls: int
    trials: int

    @property
    def spread(self) -> float:
        """Half the inter-quartile range relative to the median."""
        return (self.q3 - self.q1) / 2 / self.median if self.median else 0.0


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


def measure(
    contenders: Sequence[Contender],
    *,
    trials: int = 7,
    trial_seconds: float = 0.5,
    warmup: int = 2,
    settle_seconds: float = 0.05,
    log: Callable[[str], None] | None = print,
) -> dict[tuple[str, str, int], Timing]:
    """Times ``contenders`` interleaved; returns :class:`Timing` by ``contender.key``.

    Each contender is warmed up with ``warmup`` calls; the calls per trial are chosen from the
    warm-up time so a trial lasts about ``trial_seconds`` (at least one call). Then ``trials``
    rounds run every contender once each, rotating the start; ``settle_seconds`` of sleep before
    each block lets the previous runtime's spinning worker threads go idle.
    """
    calls: dict[tuple, int] = {}
    for contender in contenders:
        for _ in range(warmup):
            contender.fn()
        start = time.perf_counter()
        contender.fn()
        once = max(time.perf_counter() - start, 1e-6)
        calls[contender.key] = max(1, math.ceil(trial_seconds / once))
        if log:
            log(f"  warm {contender.model} / {contender.runtime} / batch {contender.batch}: "
                f"{once * 1e3:.1f} ms, {calls[contender.key]} calls per trial")
    samples: dict[tuple, list[float]] = {c.key: [] for c in contenders}
    count = len(contenders)
    for trial in range(trials):
        for offset in range(count):
            contender = contenders[(trial + offset) % count]
            n = calls[contender.key]
            time.sleep(settle_seconds)
            start = time.perf_counter()
            for _ in range(n):
                contender.fn()
            samples[contender.key].append((time.perf_counter() - start) / n)
        if log:
            log(f"  trial {trial + 1}/{trials} done")
    result = {}
    for key, values in samples.items():
        q1, median, q3 = _quartiles(values)
        result[key] = Timing(median, q1, q3, calls[key], len(values))
    return result


# ------------------------------------------------------------------------------------------
# Keras / LiteRT
# ------------------------------------------------------------------------------------------


def calibrate_batchnorm(model, images: np.ndarray):
    """Sets every BatchNormalization's moving statistics (nested ones too, e.g. CA's ``bn1``)
    to the batch statistics of its input on ``images``, like a trained network.

    Freshly initialised networks (BN gamma 1, beta 0, moving mean 0 / variance 1) shrink the
    activations block after block into float32 denormals, which slows some runtimes several-fold
    (PyTorch eager on x86 does not flush denormals) and makes latency numbers meaningless. One
    training-mode forward with momentum 0 gives each BN the statistics of its actual input.
    """
    import keras

    norms = [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)  # noqa: SLF001
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return model


def build_keras_model(
    name: str, alpha: float = 1.0, input_size: int = 224, calibration: np.ndarray | None = None
):
    """A random-weight model by benchmark name, logits output (no softmax); with
    ``calibration`` images its BN statistics are set from them (:func:`calibrate_batchnorm`)."""
    import keras

    shape = (input_size, input_size, 3)
    if name == "keras.applications.MobileNetV2":
        model = keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, weights=None, classifier_activation=None
        )
    else:
        from keras_coordatt.applications.catalog import get_model_entry

        builder = get_model_entry(name).builder
        model = builder(input_shape=shape, alpha=alpha, weights=None, classifier_activation=None)
    if calibration is not None:
        calibrate_batchnorm(model, calibration)
    return model


def keras_predict_runner(model, images: np.ndarray) -> Callable[[], Any]:
    """``model.predict_on_batch(images)``."""
    return lambda: model.predict_on_batch(images)


def keras_xla_runner(model, images: np.ndarray) -> Callable[[], Any]:
    """An XLA-compiled ``model(images, training=False)`` (compiled on the first call)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    tensor = tf.constant(images)
    return lambda: forward(tensor).numpy()


def calibration_images(
    count: int = 8, size: int = 224, folder: str | os.PathLike | None = None
) -> np.ndarray:
    """``count`` preprocessed ``size`` x ``size`` images for BN and int8 calibration, NHWC
    float32: the JPEGs of ``folder`` (centre crop, resized; needs Pillow) or, by default, test
    images of the CIFAR-10 subset bundled with the package (resized bilinearly)."""
    from keras_coordatt.applications import preprocess_input

    if folder is not None:
        images = _folder_images(Path(folder), count, size)
    else:
        import keras

        from keras_coordatt.datasets import load_cifar10_subset

        pictures = load_cifar10_subset("test")[0]
        pictures = pictures[:: max(1, len(pictures) // count)][:count].astype(np.float32)
        images = keras.ops.convert_to_numpy(keras.ops.image.resize(pictures, (size, size)))
    return np.asarray(preprocess_input(images), dtype=np.float32)


def _folder_images(folder: Path, count: int, size: int) -> np.ndarray:
    from PIL import Image

    images = []
    for path in sorted(folder.glob("*.jpg"))[:count]:
        with Image.open(path) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((size, size))
            images.append(np.asarray(image, dtype=np.float32))
    if not images:
        raise ValueError(f"no .jpg images in {str(folder)!r}")
    return np.stack(images)


def export_litert(model, path: str | os.PathLike, mode: str, calibration: np.ndarray) -> str:
    """``export_tflite`` with a dynamic batch: ``mode`` "float32" or "int8" (float I/O)."""
    from keras_coordatt.export import export_tflite

    if mode == "int8":
        return export_tflite(model, path, mode="int8", representative_dataset=calibration)
    return export_tflite(model, path, mode=mode)


def litert_runner(path: str, images: np.ndarray, threads: int) -> Callable[[], Any]:
    """set_tensor -> invoke -> get_tensor on a float-input .tflite, with the interpreter of
    :class:`keras_coordatt.export.LiteRTModel` (resized to ``len(images)``)."""
    from keras_coordatt.export.litert import LiteRTModel

    model = LiteRTModel(path, num_threads=threads)
    if not model.dynamic_batch and model.batch_size != len(images):
        raise ValueError(f"{path} has a fixed batch of {model.batch_size}, not {len(images)}")
    model(images)  # resizes a dynamic batch to len(images) and allocates the tensors
    interpreter = model.interpreter
    index = model.input_detail["index"]
    output = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


# ------------------------------------------------------------------------------------------
# Setting up the contenders
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Suite:
    """The contenders of one run plus what was skipped and why."""

    contenders: list[Contender]
    notes: list[str]
    artifacts: dict[tuple[str, str], str]


def benchmark_inputs(batch: int, input_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed NHWC float32 images and the same data in NCHW."""
    rng = np.random.RandomState(batch)
    nhwc = rng.standard_normal((batch, input_size, input_size, 3)).astype(np.float32)
    return nhwc, np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


def build_suite(
    models: Iterable[str],
    runtimes: Iterable[str],
    batches: Iterable[int],
    *,
    alpha: float = 1.0,
    input_size: int = 224,
    threads: int = 2,
    workdir: str | os.PathLike,
    log: Callable[[str], None] | None = print,
    keras_models: dict[str, Any] | None = None,
    calibration: np.ndarray | None = None,
) -> Suite:
    """Builds, exports and wraps every (model, runtime, batch) into a :class:`Contender`.

    ``runtimes`` are names from :data:`RUNTIMES`. Exports go to ``workdir`` (reused when
    already there). ``keras_models`` may pass prebuilt Keras models by name; ``calibration``
    images (default :func:`calibration_images`) set the BN statistics and calibrate int8.
    """
    runtimes, batches = list(runtimes), list(batches)
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"Unknown runtime(s) {unknown}: the package times {RUNTIMES}.")
    log = log or (lambda _message: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = {batch: benchmark_inputs(batch, input_size)[0] for batch in batches}
    keras_models = dict(keras_models or {})
    if calibration is None:
        calibration = calibration_images(size=input_size)
    suite = Suite([], [], {})
    for name in models if runtimes else []:
        if name not in keras_models:
            log(f"building Keras {name} (alpha {alpha}), BN statistics calibrated")
            keras_models[name] = build_keras_model(name, alpha, input_size, calibration)
        model = keras_models[name]
        for runtime in runtimes:
            if runtime.startswith("litert"):
                suite.artifacts[(name, runtime)] = _litert_file(
                    model, name, runtime, workdir / f"{model.name}_{alpha}_{input_size}",
                    calibration, log,
                )
            for batch in batches:
                if runtime == "keras":
                    fn = keras_predict_runner(model, inputs[batch])
                elif runtime == "keras_xla":
                    fn = keras_xla_runner(model, inputs[batch])
                else:
                    fn = litert_runner(suite.artifacts[(name, runtime)], inputs[batch], threads)
                suite.contenders.append(Contender(name, runtime, batch, fn))
    return suite


def _litert_file(model, name: str, runtime: str, stem: Path, calibration, log) -> str:
    mode = "float32" if runtime == "litert_f32" else "int8"
    path = stem.with_name(f"{stem.name}_{mode}.tflite")
    if not path.is_file():
        log(f"exporting {name} to LiteRT {mode}")
        start = time.perf_counter()
        export_litert(model, path, mode, calibration)
        log(f"  {time.perf_counter() - start:.0f} s")
    return str(path)


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------


def _cell(timing: Timing | None) -> str:
    if timing is None:
        return "—"
    return f"{timing.median * 1e3:.2f} (±{timing.spread * 100:.0f}%)"


def latency_table(
    timings: dict[tuple[str, str, int], Timing],
    models: Sequence[str],
    runtimes: Sequence[str],
    batch: int,
    labels: dict[str, str] | None = None,
) -> str:
    """Markdown: one row per model, one column per runtime, median ms per batch (± half IQR);
    ``labels`` names the runtimes' columns (default :data:`RUNTIME_LABELS`)."""
    labels = RUNTIME_LABELS if labels is None else labels
    present = [r for r in runtimes if any(k[1] == r and k[2] == batch for k in timings)]
    names = " | ".join(labels[r] for r in present)
    header = f"| model (batch {batch}, ms per batch) | {names} |"
    lines = [header, "|---" * (len(present) + 1) + "|"]
    for model in models:
        cells = [_cell(timings.get((model, r, batch))) for r in present]
        if all(c == "—" for c in cells):
            continue
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio(
    timings: dict[tuple[str, str, int], Timing],
    numerator: tuple[str, str, int],
    denominator: tuple[str, str, int],
) -> float | None:
    """``timings[numerator].median / timings[denominator].median`` (None if either missing)."""
    if numerator in timings and denominator in timings:
        return timings[numerator].median / timings[denominator].median
    return None


def ratio_lines(
    timings: dict[tuple[str, str, int], Timing], runtimes: Sequence[str], batch: int
) -> list[str]:
    """Markdown bullets with the latency ratios of this run (no thresholds): attention vs
    plain network, ours vs keras.applications, int8 vs float32 LiteRT."""
    lines = []
    for runtime in runtimes:
        for numerator, denominator in RATIO_PAIRS:
            value = ratio(timings, (numerator, runtime, batch), (denominator, runtime, batch))
            if value is not None:
                lines.append(f"- {numerator} / {denominator}, {RUNTIME_LABELS[runtime]} "
                             f"(batch {batch}): {value:.3f}x")
    for model in MODELS:
        value = ratio(timings, (model, "litert_int8", batch), (model, "litert_f32", batch))
        if value is not None:
            lines.append(f"- LiteRT int8 / float32, {model} (batch {batch}): {value:.3f}x")
    return lines


def info_lines(info: dict[str, str]) -> list[str]:
    """Machine / version lines for a report."""
    versions = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cores"))
    return [f"- CPU: {info['cpu']}, {info['cores']} cores", f"- versions: {versions}"]
