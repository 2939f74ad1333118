"""Errors and limits of the safe checkpoint reader."""

from __future__ import annotations

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_EXPECTED = (
    "expected a PyTorch checkpoint: a zip archive written by torch.save (torch >= 1.6) or the "
    f"legacy pickle format (magic number {LEGACY_MAGIC_NUMBER:#x})"
)
_MAX_TENSOR_DIMS = 64
_MAX_TENSOR_ELEMENTS = 2**33  # far above any real weight; guards against stride-0 bombs


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint (corrupt, truncated or unsupported)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint asks to import a global outside the allowlist of inert types."""
