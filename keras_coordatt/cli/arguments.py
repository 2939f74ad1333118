"""argparse types and the model options shared by the commands."""

from __future__ import annotations

import argparse
import os
from typing import Any

from keras_coordatt.applications.catalog import get_model_entry, model_names


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


def model_choices() -> list[str]:
    """``--model`` choices: the catalog's command-line names."""
    return model_names()


def weights_argument(text: str) -> str | None:
    """A ``--weights`` value for a builder: None for "none" / "random"; a path that looks like
    a file must exist (ValueError)."""
    weights = None if text.lower() in ("none", "random") else text
    if weights is not None and os.path.sep in weights and not os.path.exists(weights):
        raise ValueError(f"--weights file {weights!r} does not exist")
    return weights


def build_model(name: str, **kwargs: Any):
    """The catalog model ``name`` built with ``kwargs`` (builder keyword arguments)."""
    return get_model_entry(name).builder(**kwargs)
