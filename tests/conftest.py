"""Shared fixtures; plain helper functions and data paths live in ``helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DATA_DIR

__all__ = ["DATA_DIR"]  # imported from here by older test modules


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR
