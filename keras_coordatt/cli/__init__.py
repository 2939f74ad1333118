"""Command line interface: ``keras-coordatt <command> ...`` (also ``python -m keras_coordatt.cli``).

The CLI sits on top of the library: it imports ``keras_coordatt``, and nothing in the library
imports it. One module per command (``port``, ``export_hub``, ``export_tflite``, ``demo``,
``benchmark``), each defining ``COMMAND``, a :class:`Command` (name, help, ``add_arguments``,
``run``); :data:`COMMANDS` lists them. Heavy imports (TensorFlow, LiteRT, tfmot) happen inside
``run``. A plug-in can add a command with :func:`register_command`.

Exit codes: 0 success, 2 usage or input error (argparse errors, :class:`CliError`, a checkpoint
that does not fit the model), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from keras_coordatt.cli.arguments import (
    alpha_argument,
    image_size_argument,
    positive_int_argument,
)
from keras_coordatt.cli.base import CliError, Command, one_line

PROG = "keras-coordatt"


def _builtin_commands() -> dict[str, Command]:
    from keras_coordatt.cli import benchmark, demo, export_hub, export_tflite, port

    modules = (port, export_hub, export_tflite, demo, benchmark)
    return {module.COMMAND.name: module.COMMAND for module in modules}


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
    """Adds subcommand ``name`` (for plug-ins); ``run(args)`` returns the exit code."""
    if name in _COMMANDS and not replace:
        raise ValueError(f"CLI command {name!r} is already registered.")
    command = Command(name, help, add_arguments, run, description)
    _COMMANDS[name] = command
    return command


def registered_commands() -> dict[str, Command]:
    """A copy of the commands, by name."""
    return dict(_COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI on ``argv`` (default ``sys.argv[1:]``) and returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse errors (2) and --help / --version (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    command: Command = args._command
    try:
        code = command.run(args)
    except CliError as exc:
        message = str(exc) if getattr(args, "verbose", False) else one_line(str(exc))
        print(f"{PROG} {command.name}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {command.name}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


_COMMANDS.update(_builtin_commands())

#: The built-in commands, by name.
COMMANDS: dict[str, Command] = dict(_COMMANDS)


def __getattr__(name: str) -> Any:
    if name == "PORT_MODELS":
        warnings.warn(
            "keras_coordatt.cli.PORT_MODELS is deprecated: read keras_coordatt.applications."
            "CATALOG (ModelEntry.name / .builder_name).",
            DeprecationWarning,
            stacklevel=2,
        )
        from keras_coordatt.applications.catalog import CATALOG

        return {entry.name: entry.builder_name for entry in CATALOG}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMMANDS",
    "PROG",
    "CliError",
    "Command",
    "alpha_argument",
    "build_parser",
    "image_size_argument",
    "main",
    "positive_int_argument",
    "register_command",
    "registered_commands",
]
