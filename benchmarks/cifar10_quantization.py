"""Quantization cost on real data: float vs PTQ int8 vs QAT int8 on the full CIFAR-10 test set.

Trains a MobileNetV2CA on CIFAR-10 (the JPEG image-folder archive of the shared data, 50,000
training images), then reports, on all 10,000 test images: float Keras, float32 TFLite, PTQ int8
TFLite and QAT int8 TFLite top-1, model sizes, and LiteRT latency (batch 1, 2 threads, XNNPACK)
at the training resolution and, for the same weights, at 224x224 (the usual mobile input).

    python benchmarks/cifar10_quantization.py --data ../shared/data/cifar10/cifar10_jpeg.tar.gz \
        --output benchmarks/results/<date>-cifar10-quantization-<machine>.md

Goals (issue "Quantization"): QAT int8 within 0.5 points of float top-1, PTQ int8 within 1.5
points, int8 latency at most half of float.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_split(archive: Path, split: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decodes ``split`` of the image-folder tar.gz once, caching uint8 arrays as .npz."""
    cache = cache_dir / f"cifar10_{split}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["images"], data["labels"]
    from PIL import Image

    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.strip("./").split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != split:
                continue
            raw = tar.extractfile(member).read()
            images.append(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
            labels.append(CLASSES.index(parts[1]))
    images, labels = np.stack(images), np.asarray(labels, dtype="int64")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=images, labels=labels)
    return images, labels


def resized_twin(model, alpha: float, size: int):
    """The same classifier built for ``size`` x ``size`` inputs, with ``model``'s weights."""
    from keras_coordatt.applications import MobileNetV2CA

    twin = MobileNetV2CA(input_shape=(size, size, 3), alpha=alpha, weights=None, classes=10,
                         classifier_activation=None)
    twin.set_weights(model.get_weights())
    return twin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="cifar10_jpeg.tar.gz")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=4e-3)
    parser.add_argument("--train-images", type=int, default=None, help="subset for quick runs")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kca_cifar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-model", type=Path, default=None,
                        help="skip training: load this .keras model (saved by an earlier run)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from keras_coordatt.demo import (
        build_classifier,
        fit_classifier,
        keras_accuracy,
        preprocess_images,
        tflite_latency_ms,
    )
    from keras_coordatt.export import evaluate_tflite, export_tflite, float_ops, inspect_tflite
    from keras_coordatt.quantization import quantize_model

    keras.utils.set_random_seed(args.seed)
    started = time.perf_counter()
    x_train, y_train = load_split(args.data, "train", args.cache)
    x_test, y_test = load_split(args.data, "test", args.cache)
    if args.train_images:
        keep = np.random.default_rng(args.seed).permutation(len(x_train))[: args.train_images]
        x_train, y_train = x_train[keep], y_train[keep]
    test_inputs = preprocess_images(x_test)
    print(f"{len(x_train)} training / {len(x_test)} test images")

    work = Path(tempfile.mkdtemp(prefix="kca_bench_"))
    t0 = time.perf_counter()
    if args.float_model is not None:
        model = keras.saving.load_model(args.float_model)
    else:
        model = build_classifier(args.alpha, None)
        fit_classifier(model, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, seed=args.seed)
        model.save(work / "float.keras")
        print(f"trained float model saved to {work / 'float.keras'} (--float-model resumes)")
    train_minutes = (time.perf_counter() - t0) / 60
    float_top1 = keras_accuracy(model, test_inputs, y_test)
    print(f"float Keras top-1 {100 * float_top1:.2f} % after {train_minutes:.1f} min")

    picks = np.random.default_rng(1).permutation(len(x_train))[:512]
    calibration = preprocess_images(x_train[picks])
    paths = {
        "float32 TFLite": export_tflite(model, work / "float32.tflite", mode="float32"),
        "PTQ int8 TFLite": export_tflite(model, work / "ptq.tflite", mode="int8",
                                         representative_dataset=calibration),
    }
    t0 = time.perf_counter()
    qat_model = quantize_model(model, calibration_data=calibration)
    fit_classifier(qat_model, x_train, y_train, epochs=args.qat_epochs,
                   batch_size=args.batch_size, learning_rate=args.learning_rate / 20,
                   seed=args.seed + 1)
    qat_minutes = (time.perf_counter() - t0) / 60
    qat_keras_top1 = keras_accuracy(qat_model, test_inputs, y_test)
    paths["QAT int8 TFLite"] = export_tflite(qat_model, work / "qat.tflite", mode="int8")

    rows = [("float Keras", float_top1, None, None, None),
            ("QAT Keras (fake-quant)", qat_keras_top1, None, None, None)]
    for label, path in paths.items():
        top1 = evaluate_tflite(path, (test_inputs, y_test), num_threads=2)["accuracy"]
        float_count = len(float_ops(inspect_tflite(path))) if "int8" in label else None
        rows.append((label, top1, os.path.getsize(path) / 1024, tflite_latency_ms(path),
                     float_count))

    # Latency at 224x224 for the same weights (float32 vs PTQ int8, calibrated on upsampled
    # training images), since 32x32 inference is too small to show the int8 speed-up.
    big = resized_twin(model, args.alpha, 224)
    big_calibration = tf.image.resize(calibration[:64], (224, 224)).numpy()
    big_float = export_tflite(big, work / "float32_224.tflite", mode="float32")
    big_int8 = export_tflite(big, work / "ptq_224.tflite", mode="int8",
                             representative_dataset=big_calibration)
    latency_224 = {"float32": tflite_latency_ms(big_float, runs=50),
                   "int8": tflite_latency_ms(big_int8, runs=50)}

    report = format_report(args, rows, latency_224, len(x_train), train_minutes, qat_minutes,
                           (time.perf_counter() - started) / 60)
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return 0


def format_report(args, rows, latency_224, n_train, train_minutes, qat_minutes, total_minutes):
    import ai_edge_litert
    import keras
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    top1 = {label: value for label, value, *_ in rows}
    latency = {label: lat for label, _, _, lat, _ in rows if lat is not None}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    lines = [
        "# CIFAR-10: float vs PTQ int8 vs QAT int8 (MobileNetV2CA)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"tfmot {tfmot.__version__}, ai-edge-litert "
        f"{getattr(ai_edge_litert, '__version__', 'unknown')}.",
        "",
        f"Command: `python {' '.join(['benchmarks/cifar10_quantization.py', *sys.argv[1:]])}`",
        "",
        f"MobileNetV2CA alpha {args.alpha}, 32x32 inputs, 10 classes, trained from scratch on "
        f"{n_train} images for {args.epochs} epochs ({train_minutes:.1f} min), then QAT for "
        f"{args.qat_epochs} epoch(s) ({qat_minutes:.1f} min); {total_minutes:.1f} min in all. "
        "Top-1 on the full 10,000-image test set; LiteRT latency: batch 1, 2 threads, median.",
        "",
        "| model | top-1 (%) | size (KB) | latency 32x32 (ms) | float ops inside |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, value, size, lat, floats in rows:
        lines.append(
            f"| {label} | {100 * value:.2f} | {'-' if size is None else f'{size:.0f}'} | "
            f"{'-' if lat is None else f'{lat:.3f}'} | {'-' if floats is None else floats} |"
        )
    qat_gap = 100 * (top1["float Keras"] - top1["QAT int8 TFLite"])
    ptq_gap = 100 * (top1["float Keras"] - top1["PTQ int8 TFLite"])
    ratio_32 = latency["QAT int8 TFLite"] / latency["float32 TFLite"]
    ratio_224 = latency_224["int8"] / latency_224["float32"]
    lines += [
        "",
        f"Same weights at 224x224: float32 {latency_224['float32']:.2f} ms, PTQ int8 "
        f"{latency_224['int8']:.2f} ms.",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| QAT int8 within 0.5 points of float | {qat_gap:+.2f} points | "
        f"{'yes' if qat_gap <= 0.5 else 'no'} |",
        f"| PTQ int8 within 1.5 points of float | {ptq_gap:+.2f} points | "
        f"{'yes' if ptq_gap <= 1.5 else 'no'} |",
        f"| int8 latency <= 0.5x float (32x32) | {ratio_32:.2f}x | "
        f"{'yes' if ratio_32 <= 0.5 else 'no'} |",
        f"| int8 latency <= 0.5x float (224x224) | {ratio_224:.2f}x | "
        f"{'yes' if ratio_224 <= 0.5 else 'no'} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
