"""Writing an export directory atomically: stage beside the target, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def check_target(directory: str | os.PathLike, overwrite: bool) -> Path:
    target = Path(os.fspath(directory)).expanduser().absolute()
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise ValueError(f"Output path {str(target)!r} exists and is not a directory.")
        if any(target.iterdir()):
            if not overwrite:
                raise ValueError(
                    f"Output directory {str(target)!r} exists and is not empty; pass "
                    "overwrite=True (CLI: --overwrite) to replace it."
                )
            if not (target / "saved_model.pb").is_file():
                raise ValueError(
                    f"Refusing to overwrite {str(target)!r}: it is not empty and holds no "
                    "saved_model.pb, so it is not a previous export. Remove it yourself or "
                    "choose another directory."
                )
    return target


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def sibling(target: Path, tag: str) -> Path:
    """An unused hidden name beside ``target``: ``.{name}.{tag}-{random}``."""
    return target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:12]}"


def move_into_place(staging: Path, target: Path) -> None:
    """Renames ``staging`` to ``target``, replacing an existing ``target`` directory."""
    if not target.exists():
        os.replace(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.replace(staging, target)
        return
    backup = sibling(target, "old")
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)




@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yields a new empty staging directory beside ``target``; on success renames it to
    ``target`` (replacing a previous export), on any error removes it and the parents it
    created, leaving ``target`` as it was."""
    created = _missing_parents(target)
    staging = sibling(target, "tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # unlike tempfile.mkdtemp (0700), this honours the umask
        yield staging
        move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
