"""What every command module uses: :class:`Command`, :class:`CliError` and its one-line form."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the
    exit code (None means 0) or raises :class:`CliError`."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


class CliError(Exception):
    """An error to report as one line on stderr, with ``exit_code`` (default 2)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(message: str, limit: int = 400) -> str:
    """``message`` joined into one line (``; `` between lines), cut at ``limit`` characters."""
    text = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if part:
            text += part if not text else (" " if text.endswith(":") else "; ") + part
    return text if len(text) <= limit else text[: limit - 3] + "..."
