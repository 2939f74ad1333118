"""Command line interface: ``keras-coordatt <command> ...`` (also ``python -m keras_coordatt.cli``).

Commands are registered, not hard-wired, so other modules can add theirs::

    # keras_coordatt/export/cli.py
    from keras_coordatt.cli import CliError, register_command

    def _add_arguments(parser):            # an argparse.ArgumentParser for the subcommand
        parser.add_argument("model")

    def _run(args) -> int:                 # args: argparse.Namespace; return the exit code
        import tensorflow as tf            # heavy imports inside the handler, not at import
        ...
        raise CliError("clear one-line message")   # -> "keras-coordatt export-tflite: error: ..."

    register_command("export-tflite", help="...", add_arguments=_add_arguments, run=_run)

and append the module's import path to :data:`COMMAND_MODULES` below; :func:`main` imports
those modules before parsing. A module whose optional dependencies are missing should still
import (keep heavy imports inside ``run``).

Exit codes: 0 success, 2 usage or input error (argparse errors, :class:`CliError`, a checkpoint
that does not fit the model), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Sequence

PROG = "keras-coordatt"

#: Modules imported by :func:`main` so their ``register_command`` calls run.
COMMAND_MODULES: list[str] = [
    "keras_coordatt.benchmark",
    "keras_coordatt.demo",
    "keras_coordatt.export.hub",
    "keras_coordatt.export.tflite_cli",
]


class CliError(Exception):
    """An error to report as one line on stderr, with ``exit_code`` (default 2)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class Command:
    """A registered subcommand."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


_COMMANDS: dict[str, Command] = {}


def register_command(
    name: str,
    *,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    description: str | None = None,
    replace: bool = False,
) -> Command:
    """Registers subcommand ``name``; ``run(args)`` returns the exit code (None means 0)."""
    if name in _COMMANDS and not replace:
        raise ValueError(f"CLI command {name!r} is already registered.")
    command = Command(name, help, add_arguments, run, description)
    _COMMANDS[name] = command
    return command


def registered_commands() -> dict[str, Command]:
    """A copy of the registered commands, by name."""
    return dict(_COMMANDS)


def _load_command_modules() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    from keras_coordatt import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Coordinate Attention for Keras 3: port weights, export, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for command in sorted(_COMMANDS.values(), key=lambda c: c.name):
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
        )
        command.add_arguments(child)
        child.set_defaults(_command=command)
    return parser


def _one_line(message: str, limit: int = 400) -> str:
    text = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if part:
            text += part if not text else (" " if text.endswith(":") else "; ") + part
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI on ``argv`` (default ``sys.argv[1:]``) and returns the exit code."""
    _load_command_modules()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse errors (2) and --help / --version (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    command: Command = args._command
    try:
        code = command.run(args)
    except CliError as exc:
        if getattr(args, "verbose", False):
            print(f"{PROG} {command.name}: error: {exc}", file=sys.stderr)
        else:
            print(f"{PROG} {command.name}: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {command.name}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


# ------------------------------------------------------------------------------------------
# port: PyTorch checkpoint -> .weights.h5
# ------------------------------------------------------------------------------------------

#: ``--model`` choices -> builder in ``keras_coordatt.applications``.
PORT_MODELS = {
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v2_ca": "MobileNetV2CA",
    "mobilenext": "MobileNeXt",
    "mobilenext_ca": "MobileNeXtCA",
}


def alpha_argument(text: str) -> float:
    """argparse type for a width multiplier: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid alpha {text!r}: expected a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"alpha must be > 0, got {text}")
    return value


def positive_int_argument(text: str) -> int:
    """argparse type for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def image_size_argument(text: str) -> int:
    """argparse type for an image side in pixels: an integer >= 32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 32:
        raise argparse.ArgumentTypeError(f"input size must be at least 32, got {value}")
    return value


def _port_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="PyTorch checkpoint (.pth, .pth.tar, .pt)")
    parser.add_argument("output", help="Keras weights file to write (must end in .weights.h5)")
    parser.add_argument(
        "--model", required=True, choices=sorted(PORT_MODELS),
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


def _port(args: argparse.Namespace) -> int:
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

    from keras_coordatt import applications
    from keras_coordatt.weights.convert import load_torch_state_dict
    from keras_coordatt.weights.torch_checkpoint import CheckpointError, load_torch_checkpoint

    try:
        state_dict = load_torch_checkpoint(checkpoint)
    except CheckpointError as exc:  # includes UnsafeCheckpointError
        raise CliError(f"cannot read {checkpoint!r}: {exc}") from None
    builder = getattr(applications, PORT_MODELS[args.model])
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
        model = builder(**kwargs)
    except (ValueError, TypeError) as exc:
        raise CliError(f"cannot build {PORT_MODELS[args.model]}: {exc}") from None
    try:
        report = load_torch_state_dict(model, state_dict, strict=True)
    except ValueError as exc:
        raise CliError(
            f"{checkpoint!r} does not fit {PORT_MODELS[args.model]}(alpha={args.alpha!r}, "
            f"include_top={args.include_top}, classes={args.classes}): {exc}"
        ) from None
    try:
        save_weights_atomic(model, output)
    except OSError as exc:
        raise CliError(f"cannot write {output!r}: {exc}") from None

    skipped = len(getattr(report, "skipped", []) or [])
    loaded = getattr(report, "loaded", None)
    print(
        f"ported {len(state_dict)} checkpoint tensors into {PORT_MODELS[args.model]}"
        f"(alpha={args.alpha!r}, include_top={args.include_top}, classes={args.classes}): "
        f"{loaded} variables assigned, {skipped} classifier tensors skipped, "
        f"{model.count_params():,} parameters -> {output}"
    )
    return 0


register_command(
    "port",
    help="convert a PyTorch checkpoint to a Keras .weights.h5 file",
    description=(
        "Convert a local PyTorch checkpoint (state_dict or training checkpoint, zip or legacy "
        "format; read without executing its pickle) into Keras weights for a "
        "keras_coordatt.applications model. Every tensor must be used exactly once and every "
        "shape must match."
    ),
    add_arguments=_port_arguments,
    run=_port,
)


if __name__ == "__main__":
    # Run the canonical module, not this __main__ copy, so commands that other modules
    # register on ``keras_coordatt.cli`` are seen.
    from keras_coordatt.cli import main as _main

    sys.exit(_main())
