"""LiteRT latency of a DeepLabV3 segmenter at 512x512: float32 vs int8, CA vs no attention.

Builds ``DeepLabV3(MobileNetV2(attention=..., output_stride=16, include_top=False))`` at
512x512 (or loads ``--model``, a trained ``.keras`` segmenter, for the CA row), exports a
float32 and a post-training int8 file (float I/O, calibrated on real Penn-Fudan photos from
``tests/data``), and times every file interleaved in one process with
``keras_coordatt.benchmark.measure`` (batch 1, ``--threads`` threads, XNNPACK). Prints the
table and the ratios of this run; ``--output`` writes them as markdown with the machine.

    python benchmarks/segmentation_latency.py --alpha 1.0 \\
        --output benchmarks/results/<date>-segmentation-latency-<machine>.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 512


def pennfudan_photos(size: int = SIZE, count: int = 8) -> np.ndarray:
    """Real Penn-Fudan photos from tests/data, resized to ``size`` x ``size``, preprocessed."""
    import tensorflow as tf
    from PIL import Image

    from keras_coordatt.applications import preprocess_input

    files = sorted((ROOT / "tests" / "data" / "pennfudan_instances").glob("*Ped?????.png"))
    images = [np.asarray(Image.open(path).convert("RGB"), np.float32) for path in files[:count]]
    resized = tf.image.resize(np.stack(images), (size, size)).numpy()
    return preprocess_input(resized).astype(np.float32)


def _segmenter(attention: str | None, alpha: float, model_path: str | None, photos):
    import keras

    from keras_coordatt.applications import MobileNetV2
    from keras_coordatt.benchmark import calibrate_batchnorm
    from keras_coordatt.tasks import DeepLabV3

    trained = keras.saving.load_model(model_path, compile=False) if model_path else None
    backbone = MobileNetV2((SIZE, SIZE, 3), alpha=alpha, include_top=False, weights=None,
                           attention=attention, output_stride=16)
    model = DeepLabV3(backbone, num_classes=trained.output.shape[-1] if trained else 21)
    if trained is not None:  # the same network at 512x512
        model.set_weights(trained.get_weights())
    else:
        calibrate_batchnorm(model, photos[:4])  # trained-like BN statistics (no denormals)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--attentions", nargs="+", default=["none", "ca"])
    parser.add_argument("--model", help="a trained .keras CA segmenter (same alpha) to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    from keras_coordatt.benchmark import (
        Contender,
        configure_threads,
        export_litert,
        info_lines,
        litert_runner,
        machine_info,
        measure,
    )

    configure_threads(args.threads)
    photos = pennfudan_photos()
    contenders, sizes = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for attention in args.attentions:
            name = f"DeepLabV3-MobileNetV2{'' if attention == 'none' else '-' + attention}"
            model = _segmenter(None if attention == "none" else attention, args.alpha,
                               args.model if attention == "ca" else None, photos)
            for mode in ("float32", "int8"):
                path = export_litert(model, Path(folder) / f"{attention}_{mode}.tflite", mode,
                                     photos)
                sizes[(name, mode)] = Path(path).stat().st_size / 2**20
                contenders.append(Contender(name, f"litert_{mode}", 1,
                                            litert_runner(path, photos[:1], args.threads)))
        timings = measure(contenders, trials=args.trials, trial_seconds=1.0)

    lines = [f"# DeepLabV3 (MobileNetV2-{args.alpha}, output stride 16) at {SIZE}x{SIZE}: "
             "LiteRT latency", "",
             "Command: `python benchmarks/segmentation_latency.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             *info_lines(machine_info()), f"- threads: {args.threads}, batch 1, XNNPACK", "",
             "| model | mode | median ms (± half IQR) | file MiB |", "|---|---|---:|---:|"]
    for contender in contenders:
        timing = timings[contender.key]
        mode = contender.runtime.removeprefix("litert_")
        lines.append(f"| {contender.model} | {mode} | {timing.median * 1e3:.1f} "
                     f"(±{timing.spread * 100:.0f}%) | {sizes[(contender.model, mode)]:.2f} |")
    lines.append("")
    names = list(dict.fromkeys(c.model for c in contenders))
    for name in names:
        ratio = (timings[(name, "litert_int8", 1)].median
                 / timings[(name, "litert_float32", 1)].median)
        lines.append(f"- int8 / float32, {name}: {ratio:.3f}x")
    if len(names) > 1:
        for mode in ("float32", "int8"):
            ratio = (timings[(names[-1], f"litert_{mode}", 1)].median
                     / timings[(names[0], f"litert_{mode}", 1)].median)
            lines.append(f"- {names[-1]} / {names[0]}, {mode}: {ratio:.3f}x")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
