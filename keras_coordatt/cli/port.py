"""``keras-coordatt port``: a PyTorch checkpoint -> a Keras ``.weights.h5`` file."""

from __future__ import annotations

import argparse
import os

from keras_coordatt.applications.catalog import get_model_entry
from keras_coordatt.cli.arguments import alpha_argument, model_choices, positive_int_argument
from keras_coordatt.cli.base import CliError, Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="PyTorch checkpoint (.pth, .pth.tar, .pt)")
    parser.add_argument("output", help="Keras weights file to write (must end in .weights.h5)")
    parser.add_argument(
        "--model", required=True, choices=model_choices(),
        help="architecture the checkpoint was trained with",
    )
    parser.add_argument("--alpha", type=alpha_argument, default=1.0, help="width multiplier (1.0)")
    parser.add_argument(
        "--classes", type=positive_int_argument, default=1000, help="classifier outputs (1000)"
    )
    parser.add_argument(
        "--include-top", action=argparse.BooleanOptionalAction, default=True,
        help="keep the classifier (default: yes); --no-include-top drops it",
    )
    parser.add_argument(
        "--reduction", type=positive_int_argument, default=None,
        help="attention reduction ratio (default: the builder's, 32 for CA)",
    )
    parser.add_argument("--verbose", action="store_true", help="print full error details")


def run(args: argparse.Namespace) -> int:
    from keras_coordatt.weights.loading import TORCH_SUFFIXES, save_weights_atomic

    checkpoint = os.path.expanduser(args.checkpoint)
    output = os.path.expanduser(args.output)
    if not os.path.isfile(checkpoint):
        raise CliError(f"checkpoint {checkpoint!r} does not exist")
    if not checkpoint.lower().endswith(TORCH_SUFFIXES):
        raise CliError(
            f"checkpoint {checkpoint!r} is not a PyTorch file ({', '.join(TORCH_SUFFIXES)})"
        )
    if not output.endswith(".weights.h5"):
        raise CliError(f"output {output!r} must end in .weights.h5")
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise CliError(f"output directory {out_dir!r} does not exist")

    from keras_coordatt.weights.convert import load_torch_state_dict
    from keras_coordatt.weights.torch_checkpoint import CheckpointError, load_torch_checkpoint

    try:
        state_dict = load_torch_checkpoint(checkpoint)
    except CheckpointError as exc:  # includes UnsafeCheckpointError
        raise CliError(f"cannot read {checkpoint!r}: {exc}") from None
    entry = get_model_entry(args.model)
    kwargs = {
        "alpha": args.alpha,
        "include_top": args.include_top,
        "classes": args.classes,
        "weights": None,
        "classifier_activation": None,
    }
    if args.reduction is not None:
        kwargs["reduction"] = args.reduction
    try:
        model = entry.builder(**kwargs)
    except (ValueError, TypeError) as exc:
        raise CliError(f"cannot build {entry.builder_name}: {exc}") from None
    try:
        report = load_torch_state_dict(model, state_dict, strict=True)
    except ValueError as exc:
        raise CliError(
            f"{checkpoint!r} does not fit {entry.builder_name}(alpha={args.alpha!r}, "
            f"include_top={args.include_top}, classes={args.classes}): {exc}"
        ) from None
    try:
        save_weights_atomic(model, output)
    except OSError as exc:
        raise CliError(f"cannot write {output!r}: {exc}") from None

    skipped = len(getattr(report, "skipped", []) or [])
    loaded = getattr(report, "loaded", None)
    print(
        f"ported {len(state_dict)} checkpoint tensors into {entry.builder_name}"
        f"(alpha={args.alpha!r}, include_top={args.include_top}, classes={args.classes}): "
        f"{loaded} variables assigned, {skipped} classifier tensors skipped, "
        f"{model.count_params():,} parameters -> {output}"
    )
    return 0


COMMAND = Command(
    "port",
    help="convert a PyTorch checkpoint to a Keras .weights.h5 file",
    description=(
        "Convert a local PyTorch checkpoint (state_dict or training checkpoint, zip or legacy "
        "format; read without executing its pickle) into Keras weights for a "
        "keras_coordatt.applications model. Every tensor must be used exactly once and every "
        "shape must match."
    ),
    add_arguments=add_arguments,
    run=run,
)
