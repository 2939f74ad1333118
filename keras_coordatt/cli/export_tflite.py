"""``keras-coordatt export-tflite``: a network, a saved Keras model or a QAT model -> ``.tflite``.

Wraps :func:`keras_coordatt.export.export_tflite`; heavy imports happen in :func:`run`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from keras_coordatt.cli.arguments import (
    alpha_argument,
    build_model,
    image_size_argument,
    model_choices,
    positive_int_argument,
    weights_argument,
)
from keras_coordatt.cli.base import CliError, Command
from keras_coordatt.export.tflite import MODES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
PREPROCESSING = ("imagenet", "none")

CLI_HELP = "export a network or a saved (QAT) model to a .tflite file (float32/fp16/dynamic/int8)"
CLI_DESCRIPTION = """\
Converts a model to TFLite with builtin ops only (never SELECT_TF_OPS). The model is one of:
  --model NAME         a keras_coordatt network, built with --alpha, --weights, --classes and
                       a fixed --input-size (default 224)
  --keras-model FILE   a Keras 3 model saved as .keras (loaded with safe_mode=True)
  --qat-model FILE     a tf_keras QAT model from keras_coordatt.quantization.quantize_model,
                       saved with model.save() (.h5 or SavedModel folder); exported as int8

--mode:
  float32   plain float model
  float16   float16 weights (half the size; runs in float32 or fp16 on GPU delegates)
  dynamic   int8 weights, float activations
  int8      full integer: every op int8. From a QAT model, or calibrated on
            --calibration-images (a folder of images like the ones the model will see;
            subfolders are searched). --int8-io also makes the input/output tensors int8.

A saved object detector (keras_coordatt.tasks.SSDLite) is exported with the post-processing
op TFLite_Detection_PostProcess after its network (outputs: boxes, classes, scores,
num_detections; batch 1), its own score / NMS thresholds and detection count.

An int8 export is checked op by op: if any op between the input QUANTIZE and the output
DEQUANTIZE computes in float, the file is deleted and the command fails (--no-strict keeps it).
"""
CLI_EPILOG = """\
examples:
  keras-coordatt export-tflite --model mobilenet_v2_ca --weights imagenet mbv2_ca.tflite
  keras-coordatt export-tflite --model mobilenet_v2_ca --weights imagenet --mode int8 \\
      --calibration-images my_images/ mbv2_ca_int8.tflite
  keras-coordatt export-tflite --qat-model qat.h5 --mode int8 --int8-io qat_int8.tflite
  keras-coordatt export-tflite --keras-model finetuned.keras --mode float16 model_fp16.tflite

Inputs of the exported model are what the Keras model takes: for keras_coordatt networks,
RGB images normalised with keras_coordatt.applications.preprocess_input (--preprocessing
imagenet, also used for the calibration images; "none" feeds raw 0-255 pixel values).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``export-tflite`` arguments to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = CLI_EPILOG
    parser.add_argument("output", metavar="OUT.tflite", help="TFLite file to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", choices=model_choices(),
                        help="a keras_coordatt network (with _ca: Coordinate Attention)")
    source.add_argument("--keras-model", metavar="FILE", help="a Keras 3 .keras model file")
    source.add_argument("--qat-model", metavar="FILE",
                        help="a saved tf_keras QAT model (.h5 or SavedModel folder)")
    parser.add_argument("--mode", choices=MODES, default="float32", help="export mode (float32)")
    parser.add_argument("--alpha", type=alpha_argument, default=1.0,
                        help="--model width multiplier (1.0)")
    parser.add_argument("--weights", default="imagenet",
                        help='--model weights: "imagenet" (default), a preset name, a local '
                        '.pth / .pth.tar / .weights.h5 file, or "none" (random)')
    parser.add_argument("--classes", type=positive_int_argument, default=1000,
                        help="--model classifier outputs (1000)")
    parser.add_argument("--input-size", type=image_size_argument, default=None, metavar="N",
                        help="export at NxN pixels (default 224 for --model; the saved model's "
                        "own size otherwise, needed when it accepts any size)")
    parser.add_argument("--calibration-images", metavar="DIR",
                        help="folder of images to calibrate a float model's int8 export")
    parser.add_argument("--calibration-steps", type=positive_int_argument, default=200,
                        help="use at most this many calibration images (200)")
    parser.add_argument("--preprocessing", choices=PREPROCESSING, default="imagenet",
                        help="how calibration images become model inputs (imagenet)")
    parser.add_argument("--int8-io", action="store_true",
                        help="with --mode int8: int8 input and output tensors")
    parser.add_argument("--batch-size", type=positive_int_argument, default=None,
                        help="fixed batch size of the graph (default: dynamic, 1 when run)")
    parser.add_argument("--no-strict", action="store_true",
                        help="keep an int8 export even if some op computes in float")


def calibration_images(
    directory: str | os.PathLike, size: tuple[int, int], limit: int, preprocessing: str
) -> np.ndarray:
    """Up to ``limit`` images under ``directory`` (sorted, recursive), resized to ``size``
    (bilinear), as float32 model inputs ``(N, H, W, 3)``."""
    import tensorflow as tf

    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"--calibration-images {str(directory)!r} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {str(directory)!r}"
        )
    images = []
    for path in files:
        try:
            image = tf.io.decode_image(
                tf.io.read_file(str(path)), channels=3, expand_animations=False
            )
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(f"cannot decode calibration image {str(path)!r}: {error}") from None
        images.append(tf.image.resize(tf.cast(image, tf.float32), size).numpy())
    batch = np.stack(images).astype("float32")
    if preprocessing == "imagenet":
        from keras_coordatt.applications import preprocess_input

        batch = np.asarray(preprocess_input(batch), dtype="float32")
    return batch


def _load_model(args: argparse.Namespace):
    if args.model is not None:
        size = args.input_size or 224
        return build_model(args.model, input_shape=(size, size, 3), alpha=args.alpha,
                           weights=weights_argument(args.weights), classes=args.classes)
    path = args.keras_model or args.qat_model
    if not os.path.exists(path):
        raise ValueError(f"model file {path!r} does not exist")
    if args.keras_model is not None:
        import keras

        import keras_coordatt  # noqa: F401 - registers the layers for deserialization

        return keras.saving.load_model(path, safe_mode=True)
    import tf_keras

    from keras_coordatt.quantization import quantize_scope

    with quantize_scope():
        return tf_keras.models.load_model(path)


def _is_detector(model) -> bool:
    from keras_coordatt.tasks.detection import ObjectDetector

    return isinstance(model, ObjectDetector)


def _export_detector(model, args: argparse.Namespace, calibration) -> str:
    """An ObjectDetector with ``TFLite_Detection_PostProcess`` (prints what the file gives)."""
    from keras_coordatt.export.detection import OUTPUT_NAMES, POSTPROCESS_OP, export_detector_tflite

    if args.int8_io or args.input_size is not None or args.batch_size not in (None, 1):
        raise ValueError("an object detector exports at its own input size, batch 1, with float "
                         "outputs: drop --int8-io, --input-size and --batch-size")
    path = export_detector_tflite(model, args.output, args.mode, calibration,
                                  strict=not args.no_strict)
    print(f"detector: network then {POSTPROCESS_OP} ({model.num_classes} classes, "
          f"{len(model.anchors)} anchors) -> {', '.join(OUTPUT_NAMES)}")
    return path


def run(args: argparse.Namespace) -> int:
    """Runs ``export-tflite`` for parsed ``args``; raises :class:`CliError`."""
    from keras_coordatt.export.tflite import export_tflite, float_ops, inspect_tflite

    if args.qat_model is not None and args.mode != "int8":
        raise CliError(f"a QAT model exports with --mode int8, not --mode {args.mode}")
    if args.mode == "int8" and args.qat_model is None and args.calibration_images is None:
        raise CliError(
            "--mode int8 of a float model needs --calibration-images DIR (a folder of images "
            "like the ones the model will see), or use --qat-model"
        )
    if args.int8_io and args.mode != "int8":
        raise CliError("--int8-io needs --mode int8")
    try:
        model = _load_model(args)
        shape = tuple(model.inputs[0].shape[1:])
        size = args.input_size
        if size is not None:
            shape = (size, size, shape[-1])
        elif any(dim is None for dim in shape):
            raise ValueError(
                f"the model accepts any image size {shape}: pass --input-size N to export it "
                "at NxN"
            )
        calibration = None
        if args.mode == "int8" and args.qat_model is None:
            calibration = calibration_images(
                args.calibration_images, shape[:2], args.calibration_steps, args.preprocessing
            )
        if _is_detector(model):
            path = _export_detector(model, args, calibration)
        else:
            path = export_tflite(
                model, args.output, args.mode, calibration, int8_io=args.int8_io,
                input_shape=shape if args.input_size is not None else None,
                batch_size=args.batch_size, strict=not args.no_strict,
            )
    except (ValueError, ImportError, OSError) as error:
        raise CliError(str(error)) from None
    size_kb = os.path.getsize(path) / 1024
    print(f"wrote {args.mode} TFLite model of {model.name} ({shape[0]}x{shape[1]} input, "
          f"{size_kb:.0f} KB) -> {path}")
    if args.mode == "int8":
        floats = [op for op in float_ops(inspect_tflite(path), allow_float_io=not args.int8_io)
                  if op.name != "TFLite_Detection_PostProcess"]  # a detector's float op
        inside = "no op computes in float" if not floats else f"{len(floats)} float op(s)"
        print(f"int8 check: {inside}"
              f"{' (int8 input and output)' if args.int8_io else ' (float input/output)'}")
    if args.model is not None and args.weights.lower() in ("none", "random"):
        print("note: random weights (--weights none): for testing a pipeline only")
    return 0


COMMAND = Command(
    "export-tflite", help=CLI_HELP, description=CLI_DESCRIPTION,
    add_arguments=add_arguments, run=run,
)
