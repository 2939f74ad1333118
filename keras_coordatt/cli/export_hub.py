"""``keras-coordatt export-hub``: build a catalog model and write it as a TF-Hub SavedModel.

Wraps :func:`keras_coordatt.export.export_hub`; TensorFlow is imported in :func:`run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_coordatt.cli.arguments import (
    alpha_argument,
    build_model,
    image_size_argument,
    model_choices,
    positive_int_argument,
    weights_argument,
)
from keras_coordatt.cli.base import CliError, Command
from keras_coordatt.export.hub import KINDS

CLI_HELP = "export a model as a TF-Hub / Kaggle Models SavedModel (feature vector or logits)"

CLI_DESCRIPTION = """\
Build a keras_coordatt model, load its weights and write a reusable TF2 SavedModel for
TF-Hub / Kaggle Models, with a MODEL_CARD.md beside it.

The SavedModel takes float32 RGB images in [0, 1], shape [batch, height, width, 3] (the
ImageNet normalisation is inside) and returns, by --kind:
  feature_vector  the global-average-pooled features [batch, 1280] (alpha <= 1), the
                  classifier's input
  classification  the logits [batch, classes] (no softmax)

Load it with tensorflow_hub.KerasLayer(OUT_DIR, trainable=True) (tf_keras, fine-tunable),
keras.layers.TFSMLayer(OUT_DIR) (Keras 3) or tf.saved_model.load(OUT_DIR).
"""

CLI_EPILOG = """\
examples:
  keras-coordatt export-hub --model mobilenet_v2_ca --weights imagenet mbv2_ca_fv
  keras-coordatt export-hub --model mobilenet_v2_ca --kind classification --input-size 224 \\
      mbv2_ca_logits
  keras-coordatt export-hub --model mobilenet_v2_ca --alpha 0.35 --weights none \\
      --kind feature_vector --overwrite /tmp/smoke_test

--weights: "imagenet" (the registry's default checkpoint, downloaded and verified), a preset
name (keras_coordatt.weights.list_presets()), a local .pth / .pth.tar / .weights.h5 file, or
"none" for random weights (to test a pipeline; the model card says so).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``export-hub`` arguments to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = CLI_EPILOG
    parser.add_argument("output", metavar="OUT_DIR", help="SavedModel directory to write")
    parser.add_argument(
        "--model", required=True, choices=model_choices(),
        help="architecture: MobileNetV2 / MobileNeXt, with (_ca) or without Coordinate "
        "Attention",
    )
    parser.add_argument("--alpha", type=alpha_argument, default=1.0, help="width multiplier (1.0)")
    parser.add_argument(
        "--weights", default="imagenet",
        help='"imagenet" (default), a preset name, a local checkpoint, or "none" (random)',
    )
    parser.add_argument(
        "--kind", choices=KINDS, default="feature_vector",
        help="feature_vector (default): pooled features; classification: logits",
    )
    parser.add_argument(
        "--input-size", type=image_size_argument, default=None, metavar="N",
        help="fix the input to NxN pixels (default: any size, [batch, None, None, 3])",
    )
    parser.add_argument(
        "--classes", type=positive_int_argument, default=1000,
        help="classifier outputs for --kind classification (1000; other values need "
        "--weights none or a checkpoint with that many)",
    )
    parser.add_argument(
        "--freeze-batch-norm", action="store_true",
        help="export BatchNorm in inference mode for fine-tuning (no statistics updates)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it holds an export"
    )
    parser.add_argument("--no-model-card", action="store_true", help="do not write MODEL_CARD.md")


def run(args: argparse.Namespace) -> int:
    """Runs ``export-hub`` for parsed ``args``; raises :class:`CliError`."""
    from keras_coordatt.export import hub

    weights = None
    try:
        target = hub.check_target(args.output, args.overwrite)
        weights = weights_argument(args.weights)
        hub.require_tensorflow_backend()
        hub.import_tensorflow()
        size = args.input_size
        kwargs: dict[str, Any] = {
            "input_shape": (size, size, 3),
            "alpha": args.alpha,
            "weights": weights,
        }
        if args.kind == "feature_vector":
            kwargs.update(include_top=False, pooling="avg")
        else:
            kwargs.update(include_top=True, classes=args.classes, classifier_activation=None)
        model = build_model(args.model, **kwargs)
        result = hub.export_hub(
            model, target, args.kind, overwrite=args.overwrite, weights=weights,
            freeze_batch_norm=args.freeze_batch_norm, model_card=not args.no_model_card,
        )
    except (ValueError, ImportError, OSError) as error:
        raise CliError(str(error)) from None
    _, height, width, _ = result.input_shape
    size_text = "any size" if height is None else f"{height}x{width}"
    print(
        f"wrote {result.kind} SavedModel of {model.name} ({size_text} input, "
        f"{result.output_key} [batch, {result.output_size}], {result.num_trainable_variables}/"
        f"{result.num_variables} trainable variables) -> {result.path}"
    )
    if result.model_card is not None:
        print(f"model card: {result.model_card}")
    if weights is None:
        print("note: random weights (--weights none): for testing a pipeline only")
    return 0


COMMAND = Command(
    "export-hub", help=CLI_HELP, description=CLI_DESCRIPTION,
    add_arguments=add_arguments, run=run,
)
