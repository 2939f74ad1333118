"""Shared fixtures; plain helper functions and data paths live in ``helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DATA_DIR

__all__ = ["DATA_DIR"]  # imported from here by older test modules


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


#: Test files that take minutes (measured: the slowest-60 list of a full run), started first so
#: that the two pytest-xdist workers (``--dist loadfile``: a file stays in one worker) do not end
#: with one of them running a long file alone. Order among the rest is pytest's own.
LONG_FILES = (
    "test_qat_matrix.py", "test_notebooks.py", "test_demo.py", "test_segmentation_recipe.py",
    "test_export_hub.py", "test_classification_recipe.py", "test_benchmark.py",
    "test_export_tflite.py", "test_readme.py", "test_deeplab.py", "test_qat_robustness.py",
    "test_detection_export.py", "test_detection_recipe.py", "test_detection.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: index for index, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
