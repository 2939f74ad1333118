"""ImageNet input preprocessing and prediction decoding, as the original evaluation code.

All four upstream codebases evaluate on RGB images scaled to [0, 1] and normalised with the
ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) (after resizing the shorter
side to 256 and centre-cropping 224). ``decode_predictions`` reads the class names shipped with
the package (``imagenet_class_index.json``, keras' format), so it works offline.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
from keras import ops

from keras_coordatt.layers._common import resolve_data_format

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_INDEX_PATH = os.path.join(os.path.dirname(__file__), "imagenet_class_index.json")


def preprocess_input(x, data_format: str | None = None):
    """Scales RGB values in [0, 255] to ``(x / 255 - mean) / std`` per channel.

    Args:
        x: RGB image(s), ``(..., H, W, 3)`` for channels_last or ``(..., 3, H, W)`` for
            channels_first; a NumPy array or a backend tensor.
        data_format: ``"channels_last"`` / ``"channels_first"``; default
            ``keras.config.image_data_format()``.

    Returns:
        The normalised image(s), same shape: a float32 NumPy array for NumPy (or list) input
        (float64 stays float64), a backend tensor otherwise.
    """
    data_format = resolve_data_format(data_format)
    ndim = len(x.shape) if hasattr(x, "shape") else np.ndim(x)
    axis = -1 if data_format == "channels_last" else -3
    if ndim < 1 or (data_format == "channels_first" and ndim < 3):
        raise ValueError(f"preprocess_input expects image(s) with a channel axis, got ndim={ndim}.")
    shape = [1] * ndim
    shape[axis] = 3
    mean = np.asarray(IMAGENET_MEAN, dtype="float64").reshape(shape)
    std = np.asarray(IMAGENET_STD, dtype="float64").reshape(shape)
    if isinstance(x, (np.ndarray, list, tuple)) or np.isscalar(x):
        x = np.asarray(x)
        if x.shape[axis] != 3:
            raise ValueError(f"Expected 3 (RGB) channels on axis {axis}, got shape {x.shape}.")
        dtype = np.float64 if x.dtype == np.float64 else np.float32
        return (x.astype(dtype) / 255.0 - mean.astype(dtype)) / std.astype(dtype)
    if x.shape[axis] is not None and x.shape[axis] != 3:
        raise ValueError(f"Expected 3 (RGB) channels on axis {axis}, got shape {x.shape}.")
    dtype = "float64" if "float64" in str(x.dtype) else "float32"
    x = ops.cast(x, dtype)
    mean_t = ops.convert_to_tensor(mean.astype(dtype))
    std_t = ops.convert_to_tensor(std.astype(dtype))
    return (x / 255.0 - mean_t) / std_t


def pixels_from_preprocessed(x) -> np.ndarray:
    """The inverse of :func:`preprocess_input` for channels_last images ``(..., H, W, 3)``:
    uint8 RGB pixels (rounded, clipped to 0..255), e.g. for a file that takes uint8 input."""
    x = np.asarray(x, dtype="float64")
    pixels = (x * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _class_index() -> dict[int, tuple[str, str]]:
    with open(CLASS_INDEX_PATH, encoding="utf-8") as handle:
        raw = json.load(handle)
    return {int(k): (v[0], v[1]) for k, v in raw.items()}


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Top-``top`` ``(synset, name, score)`` per sample of an ``(N, 1000)`` prediction batch.

    Works on probabilities or logits (scores are returned as given), offline.
    """
    preds = np.asarray(ops.convert_to_numpy(preds) if not isinstance(preds, np.ndarray) else preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "decode_predictions expects a batch of ImageNet predictions of shape (samples, 1000), "
            f"got shape {preds.shape}."
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValueError(f"`top` must be an integer in [1, 1000], got {top!r}.")
    index = _class_index()
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(*index[int(i)], float(row[i])) for i in order])
    return results
