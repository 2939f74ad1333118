"""PTQ and QAT int8 export of every family x attention at the networks' real size (224x224).

For each case, in a child process (a converter crash ends that case only):

1. build ``{MobileNetV2, MobileNeXt}(attention=None | "se" | "cbam" | "ca", alpha,
   input_shape=(224, 224, 3), classifier_activation=None)`` with fresh weights;
2. PTQ: ``export_tflite(model, mode="int8", representative_dataset=images)``; the ops are listed
   (no float op allowed) and the int8 logits are compared with the Keras model's;
3. QAT, the README's recipe: ``quantize_model(model, calibration_data=images)``, ``compile``
   with adam and sparse cross-entropy, ``fit`` for ``--fit-steps`` steps; weights must stay
   finite; ``export_tflite(qat_model, mode="int8")``, ops listed, logits compared with the QAT
   Keras model's.

Agreement is measured in output quantization steps (the int8 output tensor's scale): the
largest and the mean absolute difference of the logits, and the share of images whose argmax
agrees.

    python benchmarks/qat_matrix.py --images tests/data/imagenet_small \\
        --alphas 0.35 0.5 1.0 --output benchmarks/results/<date>-qat-matrix.md

``--cases mobilenext:ca mobilenet_v2:se`` runs those cases in this process, one after another,
and ``--json-dir`` receives their results; :func:`run_in_children` runs them in a child process
that is replaced after a crash (what tests/test_qat_matrix.py does). Fine-tuning on real
images before the comparison is ``benchmarks/qat_fine_tune.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FAMILIES = ("mobilenet_v2", "mobilenext")
ATTENTIONS = ("none", "se", "cbam", "ca")
SIZE = 224


def load_images(folder: str | os.PathLike, size: int = SIZE, limit: int | None = None):
    """JPEG / PNG files under ``folder`` (sorted), resized to ``size``, as float32 in [0, 255];
    or the array saved in ``folder`` if it is a ``.npy`` file (what ``run_in_child`` callers
    load once for all cases)."""
    import keras

    if str(folder).endswith(".npy"):
        return np.load(folder).astype("float32")[:limit]

    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )[:limit]
    if not files:
        raise SystemExit(f"no images under {folder}")
    return np.stack([
        keras.utils.img_to_array(keras.utils.load_img(p, target_size=(size, size)))
        for p in files
    ]).astype("float32")


def _build(family: str, attention: str, alpha: float, size: int, seed: int):
    import keras

    from keras_coordatt.applications import MobileNetV2, MobileNeXt

    keras.utils.set_random_seed(seed)
    builder = {"mobilenet_v2": MobileNetV2, "mobilenext": MobileNeXt}[family]
    return builder(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classifier_activation=None,
        attention=None if attention == "none" else attention,
    )


def compare(path: str, reference: np.ndarray, images: np.ndarray) -> dict:
    """int8 TFLite logits vs ``reference``, in output quantization steps."""
    from keras_coordatt.export import LiteRTModel, float_ops, inspect_tflite

    ops = inspect_tflite(path)
    runner = LiteRTModel(path)
    logits = np.concatenate([runner(images[i : i + 1]) for i in range(len(images))])
    scale = _output_scale(path)
    steps = np.abs(logits - reference) / scale
    return {
        "ops": len(ops),
        "float_ops": [op.name for op in float_ops(ops)],
        "max_steps": float(steps.max()),
        "mean_steps": float(steps.mean()),
        "argmax_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        "output_scale": float(scale),
    }


def _output_scale(path: str) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():  # noqa: SLF001
        if op["op_name"] == "DEQUANTIZE":
            scales = details[op["inputs"][0]]["quantization_parameters"]["scales"]
            return float(scales[0])
    raise ValueError(f"{path} has no DEQUANTIZE op")


def run_case(family, attention, alpha, images, *, size=SIZE, fit_steps=1, seed=0, folder=None):
    """One case of the matrix; returns a JSON-able dict (see the module docstring)."""
    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.export import export_tflite
    from keras_coordatt.quantization import quantize_model
    from keras_coordatt.quantization._deps import import_qat_stack

    _, tf_keras, _ = import_qat_stack()
    folder = Path(folder or tempfile.mkdtemp(prefix="qat_matrix_"))
    inputs = preprocess_input(images.copy())
    result = {"family": family, "attention": attention, "alpha": alpha, "size": size}
    start = time.perf_counter()
    model = _build(family, attention, alpha, size, seed)
    # This case already runs in a process of its own (run_in_child): the converter runs here,
    # with tf_keras and tfmot loaded, which is the harder condition for it.
    ptq_path = export_tflite(model, folder / "ptq.tflite", mode="int8",
                             representative_dataset=inputs, isolate=False)
    result["ptq"] = compare(ptq_path, _logits(model, inputs), inputs)
    result["ptq"]["seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    qat = quantize_model(model, calibration_data=inputs)
    qat.compile(
        optimizer=tf_keras.optimizers.Adam(1e-3),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # one step: tracing the train function would take longer than it
    )
    labels = np.random.default_rng(seed).integers(0, 1000, len(inputs))
    history = qat.fit(inputs, labels, batch_size=4, epochs=1, steps_per_epoch=fit_steps,
                      verbose=0)
    result["qat"] = {"loss": float(history.history["loss"][-1]),
                     "finite_weights": bool(all(np.all(np.isfinite(w)) for w in
                                                qat.get_weights()))}
    qat_path = export_tflite(qat, folder / "qat.tflite", mode="int8", isolate=False)
    result["qat"].update(compare(qat_path, _logits(qat, inputs), inputs))
    result["qat"]["seconds"] = time.perf_counter() - start
    return result


def _logits(model, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """Inference-mode outputs of a Keras 3 or tf_keras ``model``, called eagerly batch by batch
    (the same computation as ``predict``, without tracing a predict function for one use)."""
    return np.concatenate([np.asarray(model(inputs[i : i + batch], training=False))
                           for i in range(0, len(inputs), batch)])


def _json_name(case: str) -> str:
    return case.replace(":", "_") + ".json"


def run_cases(cases: list[str], alpha: float, images, folder: Path, **options) -> None:
    """``run_case`` for each case in turn, in this process; each result (or the Python error it
    raised) is written to ``folder/<family>_<attention>.json`` as soon as it is known."""
    import traceback

    for case in cases:
        family, attention = case.split(":")
        try:
            result = run_case(family, attention, alpha, images, **options)
        except Exception as error:  # noqa: BLE001 - recorded as that case's failure
            result = {"error": f"{type(error).__name__}: {error}",
                      "log": traceback.format_exc()[-3000:]}
        (folder / _json_name(case)).write_text(json.dumps(result, indent=1))


def run_in_children(cases: list[str], alpha: float, images: str, folder: Path,
                    timeout: float, extra: list[str] = (),
                    child: list[str] | None = None) -> dict[str, dict]:
    """``run_cases`` in a child process; ``{case: result}``.

    One child runs the cases in order (the one-time costs of a process, imports and TensorFlow's
    tracing caches, are paid once, not per case). If the child dies (a converter crash) or a
    case runs past ``timeout`` seconds, the first case without a result gets ``{"error": ...}``
    and a new child runs the cases after it: a crash fails that case only. ``child`` is the
    command that takes these arguments (default: this script).
    """
    results: dict[str, dict] = {}
    remaining = list(cases)
    while remaining:
        command = [*(child or [sys.executable, __file__]), "--cases", *remaining,
                   "--alphas", str(alpha), "--images", images, "--json-dir", str(folder),
                   *extra]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=timeout * len(remaining), check=False)
            cause, log = f"exit status {done.returncode}", done.stderr[-3000:]
        except subprocess.TimeoutExpired:
            cause, log = f"timed out after {timeout:.0f} s per case", ""
        finished = [c for c in remaining if (folder / _json_name(c)).exists()]
        for case in finished:
            results[case] = json.loads((folder / _json_name(case)).read_text())
        remaining = [c for c in remaining if c not in finished]
        if remaining:  # the child ended during this case
            results[remaining.pop(0)] = {"error": cause, "log": log}
    return results


def _markdown(results: list[dict], command: str) -> str:
    import platform

    import tensorflow as tf

    lines = [
        "# PTQ / QAT int8 export matrix at 224x224", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"TensorFlow {tf.__version__}.", "",
        "Fresh weights (seed 0), real images; QAT = calibrated `quantize_model` + one adam "
        "step. Steps = output quantization steps between int8 TFLite logits and the Keras "
        "model's (float model for PTQ, QAT model for QAT).", "",
        "| family | attention | alpha | PTQ float ops | PTQ max / mean steps | PTQ argmax | "
        "QAT finite | QAT float ops | QAT max / mean steps | QAT argmax | s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | | {r['alpha']} | ERROR: {r['error']} | | | | | | | |")
            continue
        p, q = r["ptq"], r["qat"]
        lines.append(
            f"| {r['family']} | {r['attention']} | {r['alpha']} | {len(p['float_ops'])} | "
            f"{p['max_steps']:.1f} / {p['mean_steps']:.2f} | {p['argmax_agreement']:.0%} | "
            f"{q['finite_weights']} | {len(q['float_ops'])} | "
            f"{q['max_steps']:.1f} / {q['mean_steps']:.2f} | {q['argmax_agreement']:.0%} | "
            f"{p['seconds'] + q['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True,
                        help="folder of real images (JPEG/PNG), or a .npy of them at 224")
    parser.add_argument("--limit", type=int, default=8, help="images used (default 8)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.35])
    parser.add_argument("--cases", nargs="+",
                        help="family:attention cases, run in this process one after another")
    parser.add_argument("--fit-steps", type=int, default=1)
    parser.add_argument("--json-dir", type=Path,
                        help="with --cases: write each case's result here as JSON")
    parser.add_argument("--output", type=Path, help="Markdown table of the whole matrix")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    if args.cases:
        folder = args.json_dir or Path(tempfile.mkdtemp(prefix="qat_matrix_"))
        images = load_images(args.images, limit=args.limit)
        run_cases(args.cases, args.alphas[0], images, folder, fit_steps=args.fit_steps)
        for case in args.cases:
            print((folder / _json_name(case)).read_text())
        return 0
    results = []
    cases = [f"{family}:{attention}" for family in FAMILIES for attention in ATTENTIONS]
    for alpha in args.alphas:
        with tempfile.TemporaryDirectory() as folder:
            found = run_in_children(cases, alpha, args.images, Path(folder), args.timeout,
                                    ["--limit", str(args.limit),
                                     "--fit-steps", str(args.fit_steps)])
        for case in cases:
            result = {"case": case, "alpha": alpha, **found[case]}
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.output:
        command = "python benchmarks/qat_matrix.py " + " ".join(argv or sys.argv[1:])
        args.output.write_text(_markdown(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
