"""Argument and input checks shared by the attention layers."""

from __future__ import annotations

import keras

DATA_FORMATS = ("channels_last", "channels_first")
DIRECTIONS = ("hw", "h", "w")


def resolve_data_format(data_format: str | None) -> str:
    """Returns ``data_format`` or the Keras default, after checking it."""
    if data_format is None:
        data_format = keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"Unknown data_format {data_format!r}: use 'channels_last' (NHWC) or "
            "'channels_first' (NCHW)."
        )
    return data_format


def check_positive_int(name: str, value) -> int:
    """Checks that ``value`` is an integer >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return value


def check_directions(directions: str) -> str:
    """Checks CoordAttention's ``directions``: ``"hw"`` (the paper's block), ``"h"`` or ``"w"``."""
    if directions not in DIRECTIONS:
        raise ValueError(
            f"Unknown directions {directions!r}: use 'hw' (both, the paper's block), "
            "'h' (height only) or 'w' (width only)."
        )
    return directions


def check_odd_kernel_size(name: str, value) -> int:
    """Checks that ``value`` is an odd integer >= 1, so a 'same' conv stays centred."""
    value = check_positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(
            f"`{name}` must be odd so the spatial map stays centred, got {value}."
        )
    return value


def channel_count(layer_name: str, input_shape, data_format: str) -> int:
    """Checks a 4-D image shape and returns its (known) channel count."""
    shape = tuple(input_shape)
    if len(shape) != 4:
        layout = "(batch, height, width, channels)" if data_format == "channels_last" else (
            "(batch, channels, height, width)"
        )
        raise ValueError(
            f"{layer_name} expects a 4-D input {layout} with data_format={data_format!r}, "
            f"got a {len(shape)}-D input of shape {shape}."
        )
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    if channels is None:
        raise ValueError(
            f"{layer_name} needs a known channel dimension, got input shape {shape} "
            f"(data_format={data_format!r}). Give the Input layer a fixed channel count."
        )
    return int(channels)


def hidden_width(channels: int, reduction: int, min_channels: int) -> int:
    """``max(min_channels, channels // reduction)``, the bottleneck width of the paper's code."""
    return max(min_channels, channels // reduction)
