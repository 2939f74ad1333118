"""LiteRT latency of SSDLite320 detectors: MobileNetV2 vs MobileNetV2 + CA, float32 vs int8.

Builds ``SSDLite(MobileNetV2(attention=..., include_top=False), num_classes)`` at 320x320 (or
loads ``--model``, a trained ``.keras`` detector of the same alpha and classes, for the CA
row), exports each as the phone file of ``export_detector_tflite`` — float32, and int8
(post-training, every op of the network int8, calibrated on real Penn-Fudan photos from
``tests/data``) — both with float image input, batch 1 and the ``TFLite_Detection_PostProcess``
op, and times every file interleaved in one process with ``keras_coordatt.benchmark.measure``
(``--threads`` threads, XNNPACK). The post-processing op's cost grows with the number of
anchors above its score threshold: the report gives the detections each file returns on the
timed photo (a fresh network scores many anchors; a trained one few), and ``--network-only``
also times the network alone (``export_tflite`` of the raw box / class outputs).

    python benchmarks/detection_latency.py --network-only \\
        --output benchmarks/results/<date>-detection-latency-<machine>.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segmentation_latency import pennfudan_photos  # noqa: E402  (this folder's script)

SIZE = 320


def _detector(attention: str | None, alpha: float, classes: int, model_path: str | None,
              photos: np.ndarray):
    import keras

    from keras_coordatt.applications import MobileNetV2
    from keras_coordatt.benchmark import calibrate_batchnorm
    from keras_coordatt.tasks import SSDLite

    trained = keras.saving.load_model(model_path, compile=False) if model_path else None
    backbone = MobileNetV2((SIZE, SIZE, 3), alpha=alpha, include_top=False, weights=None,
                           attention=attention)
    model = SSDLite(backbone, num_classes=trained.num_classes if trained else classes)
    if trained is not None:  # the same network at 320x320
        model.set_weights(trained.get_weights())
    else:
        calibrate_batchnorm(model, photos[:4])  # trained-like BN statistics (no denormals)
    return model


def _detector_runner(path: str, image: np.ndarray, threads: int):
    """set_tensor -> invoke -> the four outputs; also returns the detection count."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    outputs = [detail["index"] for detail in interpreter.get_output_details()]

    def run():
        interpreter.set_tensor(index, image)
        interpreter.invoke()
        return [interpreter.get_tensor(output) for output in outputs]

    count = int(run()[-1][0]) if len(outputs) == 4 else None
    return run, count


def _export(model, folder: Path, stem: str, mode: str, photos, network_only: bool):
    """Paths of the detector file (and of the bare network with ``network_only``)."""
    from keras_coordatt.export import export_detector_tflite, export_tflite

    calibration = photos if mode == "int8" else None
    paths = {"with post-processing": export_detector_tflite(
        model, folder / f"{stem}_{mode}.tflite", mode, calibration)}
    if network_only:
        paths["network only"] = export_tflite(
            model, folder / f"{stem}_{mode}_network.tflite", mode=mode, batch_size=1,
            representative_dataset=calibration)
    return paths


def _report(args, argv, contenders, timings, details) -> str:
    from keras_coordatt.benchmark import info_lines, machine_info

    lines = [f"# SSDLite{SIZE} (MobileNetV2-{args.alpha}, {args.classes} classes): "
             "LiteRT latency", "",
             "Command: `python benchmarks/detection_latency.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             *info_lines(machine_info()), f"- threads: {args.threads}, batch 1, XNNPACK", "",
             "| model | mode | file | median ms (± half IQR) | file MiB | detections |",
             "|---|---|---|---:|---:|---:|"]
    for contender in contenders:
        timing = timings[contender.key]
        size, count = details[contender.key]
        model, mode, form = contender.model, *contender.runtime.split(": ")
        lines.append(f"| {model} | {mode} | {form} | {timing.median * 1e3:.1f} "
                     f"(±{timing.spread * 100:.0f}%) | {size:.2f} | "
                     f"{'-' if count is None else count} |")
    lines.append("")
    names = list(dict.fromkeys(c.model for c in contenders))
    forms = list(dict.fromkeys(c.runtime.split(": ")[1] for c in contenders))

    def median(name, mode, form):
        return timings[(name, f"{mode}: {form}", 1)].median

    for form in forms:
        for name in names:
            lines.append(f"- int8 / float32, {name}, {form}: "
                         f"{median(name, 'int8', form) / median(name, 'float32', form):.3f}x")
        if len(names) > 1:
            for mode in ("float32", "int8"):
                lines.append(f"- {names[-1]} / {names[0]}, {mode}, {form}: "
                             f"{median(names[-1], mode, form) / median(names[0], mode, form):.3f}x")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=80, help="80: COCO (the paper's table)")
    parser.add_argument("--attentions", nargs="+", default=["none", "ca"])
    parser.add_argument("--model", help="a trained .keras CA detector (same alpha) to time")
    parser.add_argument("--network-only", action="store_true",
                        help="also time the network without the post-processing op")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    from keras_coordatt.benchmark import Contender, configure_threads, measure

    configure_threads(args.threads)
    photos = pennfudan_photos(SIZE)
    contenders, details = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for attention in args.attentions:
            name = f"SSDLite-MobileNetV2{'' if attention == 'none' else '-' + attention}"
            model = _detector(None if attention == "none" else attention, args.alpha,
                              args.classes, args.model if attention == "ca" else None, photos)
            for mode in ("float32", "int8"):
                paths = _export(model, Path(folder), attention, mode, photos, args.network_only)
                for form, path in paths.items():
                    run, count = _detector_runner(path, photos[:1], args.threads)
                    contender = Contender(name, f"{mode}: {form}", 1, run)
                    details[contender.key] = (Path(path).stat().st_size / 2**20, count)
                    contenders.append(contender)
        timings = measure(contenders, trials=args.trials, trial_seconds=1.0)
    report = _report(args, argv, contenders, timings, details)
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
