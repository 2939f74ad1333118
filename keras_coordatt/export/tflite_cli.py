"""Deprecated: the ``export-tflite`` command moved to :mod:`keras_coordatt.cli.export_tflite`.

Importing this module loads the CLI (the library itself never does).
"""

from __future__ import annotations

import warnings

from keras_coordatt.cli.export_tflite import (  # noqa: F401 - re-exported for old imports
    CLI_DESCRIPTION,
    CLI_EPILOG,
    CLI_HELP,
    IMAGE_SUFFIXES,
    PREPROCESSING,
    calibration_images,
)
from keras_coordatt.cli.export_tflite import add_arguments as add_cli_arguments  # noqa: F401
from keras_coordatt.cli.export_tflite import run as run_cli  # noqa: F401

warnings.warn(
    "keras_coordatt.export.tflite_cli is deprecated: the export-tflite command lives in "
    "keras_coordatt.cli.export_tflite.",
    DeprecationWarning,
    stacklevel=2,
)


def register_cli() -> None:
    """Deprecated no-op: the CLI lists its commands itself."""
