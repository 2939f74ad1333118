"""Seconds of ``export_tflite``'s two Python-heavy steps, freezing and conversion, with the
shortcuts through TensorFlow's private steps and with TensorFlow's public functions.

For each network (``MobileNetV2CA`` / ``MobileNeXtCA``, fresh weights, ``--alpha``, 224x224) and
mode (float32; PTQ int8 on ``--images``), in one process, interleaved ``--repeats`` times:

- freeze: ``freeze_variables(function)`` vs ``freeze_variables(function, public_api=True)``
  (``convert_variables_to_constants_v2_as_graph``, which also prunes the frozen graph into a
  concrete function nobody uses);
- convert: ``_convert_worker.main(folder)`` vs ``main(folder, refreeze=True)`` (the converter
  freezing the already frozen graph again), in this process;

and checks that both give the same GraphDef and the same .tflite bytes. Prints the medians
and the ratio public / shortcut.

    python benchmarks/export_time.py --images tests/data/imagenet_small \\
        --output benchmarks/results/<date>-export-time-<machine>.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qat_matrix import load_images  # noqa: E402


def _timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def measure(builder_name: str, mode: str, alpha: float, images: np.ndarray, repeats: int,
            folder: Path) -> dict:
    """Median seconds of each step, shortcut vs public, for one network and mode."""
    import keras
    import tensorflow as tf

    from keras_coordatt import applications
    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.export import _convert_worker
    from keras_coordatt.export import tflite as tflite_module
    from keras_coordatt.export._request import conversion_request, write_request

    keras.utils.set_random_seed(0)
    model = getattr(applications, builder_name)(input_shape=(224, 224, 3), alpha=alpha,
                                                weights=None)
    inputs = np.asarray(preprocess_input(images.copy()), dtype="float32")
    spec = tf.TensorSpec((1, 224, 224, 3), tf.float32, name="inputs")
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[spec]).get_concrete_function()
    samples = inputs[:, None] if mode == "int8" else None
    times = {key: [] for key in ("freeze", "freeze_public", "convert", "convert_public")}
    files = {}
    for repeat in range(repeats):
        seconds, graph_def = _timed(lambda: tflite_module.freeze_variables(function))
        times["freeze"].append(seconds)
        seconds, public = _timed(
            lambda: tflite_module.freeze_variables(function, public_api=True))
        times["freeze_public"].append(seconds)
        if (graph_def.SerializeToString(deterministic=True)
                != public.SerializeToString(deterministic=True)):
            raise SystemExit(f"{builder_name}: the two frozen graphs differ")
        request = conversion_request(
            mode, False, function.inputs[0].name, [t.name for t in function.outputs])
        for refreeze, key in ((False, "convert"), (True, "convert_public")):
            request_folder = folder / f"{builder_name}_{mode}_{repeat}_{refreeze}"
            request_folder.mkdir()
            write_request(request_folder, request, graph_def, samples)
            seconds, status = _timed(
                lambda f=request_folder, r=refreeze: _convert_worker.main(str(f), refreeze=r))
            if status != 0:
                raise SystemExit((request_folder / "error.txt").read_text())
            times[key].append(seconds)
            files[key] = (request_folder / "model.tflite").read_bytes()
        if files["convert"] != files["convert_public"]:
            raise SystemExit(f"{builder_name} {mode}: the two .tflite files differ")
    return {key: statistics.median(values) for key, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="real images (folder or .npy)")
    parser.add_argument("--limit", type=int, default=8, help="calibration images (default 8)")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = load_images(args.images, limit=args.limit)
    rows = [
        "| network | mode | freeze s (shortcut / public) | ratio | convert s "
        "(shortcut / public) | ratio | both steps, ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for builder_name in ("MobileNetV2CA", "MobileNeXtCA"):
            for mode in ("float32", "int8"):
                t = measure(builder_name, mode, args.alpha, images, args.repeats, Path(folder))
                both = (t["freeze_public"] + t["convert_public"]) / (t["freeze"] + t["convert"])
                rows.append(
                    f"| {builder_name} | {mode} | {t['freeze']:.2f} / {t['freeze_public']:.2f} "
                    f"| {t['freeze_public'] / t['freeze']:.2f} | {t['convert']:.2f} / "
                    f"{t['convert_public']:.2f} | {t['convert_public'] / t['convert']:.2f} | "
                    f"{both:.2f} |")
                print(rows[-1], flush=True)
    from keras_coordatt.benchmark import machine_info

    machine = machine_info()
    command = "python benchmarks/export_time.py " + " ".join(argv or sys.argv[1:])
    report = "\n".join([
        "# export_tflite: freezing and conversion, shortcut vs public path", "",
        f"Command: `{command}`", "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; "
        f"TensorFlow {machine['tensorflow']}; alpha {args.alpha}, 224x224, batch 1, medians of "
        f"{args.repeats} interleaved runs. Both paths gave the same GraphDef and the same "
        ".tflite bytes in every run.", "", *rows, "",
    ])
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
