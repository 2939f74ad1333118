"""``keras-coordatt demo``: MobileNetV2CA -> training -> QAT -> int8 TFLite on bundled images.

Runs :func:`keras_coordatt.demo.run_demo` (needs the ``[qat,litert]`` extras).
"""

from __future__ import annotations

import argparse

from keras_coordatt.cli.base import Command

#: The demo in one paragraph (the command's --help description).
DESCRIPTION = """\
``keras-coordatt demo`` (or ``python -m keras_coordatt.demo``) trains a MobileNetV2CA on the
CIFAR-10 subset shipped with the package (4,000 training / 1,000 test images, 32x32; output
stride 8, so the last feature map is 4x4), then
compares the float Keras model, its float32 TFLite export, a post-training-quantized int8 export
and a quantization-aware-trained int8 export: top-1, file size and LiteRT latency. Needs the
``[qat,litert]`` extras. Everything it writes goes to ``--output`` (default ``demo_output``).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``demo`` arguments to ``parser``."""
    parser.add_argument("--output", default="demo_output",
                        help="directory for the models, TFLite files and results.json")
    parser.add_argument("--alpha", type=float, default=0.5, help="MobileNetV2CA width (0.5)")
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs (12)")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs (2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--weights", default=None,
                        help="start from pretrained weights (a preset, 'imagenet' or a .pth path; "
                             "needs network for presets); default: train from scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only this many of the 4,000 training images (quick runs)")
    parser.add_argument("--qat-images", type=int, default=None,
                        help="quantization-aware training on only this many of them")


def run(args: argparse.Namespace) -> int:
    """Runs the demo for parsed ``args``."""
    from keras_coordatt._native_stderr import filtered_native_stderr
    from keras_coordatt.demo import run_demo

    with filtered_native_stderr():  # TensorFlow / LiteRT start-up lines: see the module
        run_demo(args.output, alpha=args.alpha, epochs=args.epochs, qat_epochs=args.qat_epochs,
                 batch_size=args.batch_size, weights=args.weights, seed=args.seed,
                 train_images=args.train_images, qat_images=args.qat_images)
    return 0


COMMAND = Command(
    "demo",
    help="train MobileNetV2CA on bundled CIFAR-10, QAT, export int8 TFLite, compare",
    add_arguments=add_arguments,
    run=run,
    description=DESCRIPTION,
)
