"""Bounding the folded gain of BatchNormalization channels whose moving variance is ~0.

A channel whose input was constant in training (a dead ReLU unit upstream) ends with moving
variance ~0, so its inference gain ``gamma / sqrt(var + epsilon)`` is ``gamma / sqrt(epsilon)``,
hundreds of times its layer's typical gain. The TFLite converter folds that gain into the
preceding convolution's int8 kernel (per output channel, with the layer's ``epsilon``), which
makes the channel's requantization multiplier ``s_in * s_w / s_out`` several times 1: the int32
bias can then only hit the float bias to within half of that many output steps, and the int8
file drifts away from the QAT model (benchmarks/results/2026-12-02-qat-alpha035-gap-*.md).

:func:`floor_bn_gain` raises each layer's ``epsilon`` by ``floor = relative * median(var)`` and
rescales ``gamma`` so that every channel with ``var >= floor`` computes exactly what it did,
while a channel below it gets the gain it would have with its variance raised to the floor.
``epsilon`` is a constant of the layer (used in training mode with the batch variance, at
inference with the moving one, and by the converter when it folds), so the bound holds during
and after ``fit`` even as a dead channel's moving variance decays back to 0.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

DEFAULT_BN_VARIANCE_FLOOR = 0.01


def check_variance_floor(value) -> float:
    """``value`` as a float in ``[0, 1]``; ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"bn_variance_floor must be a number in [0, 1] (a fraction of each "
            f"BatchNormalization layer's median moving variance; 0 disables the floor), got "
            f"{value!r}."
        )
    return float(value)


def _scale(variance: np.ndarray) -> float:
    """The layer's typical variance: the median, or the mean where most channels are dead."""
    median = float(np.median(variance))
    return median if median > 0 else float(np.mean(variance))


def floor_layer(layer, relative: float) -> int:
    """Applies the floor to one built tf_keras BatchNormalization; returns the number of
    channels whose gain it lowered (their moving variance was below the floor).

    Left alone: ``scale=False`` layers (no gamma to compensate with) and layers still at their
    initial statistics (variance 1 everywhere, mean 0: never trained, so their variance says
    nothing about the data's scale).
    """
    if not relative or getattr(layer, "gamma", None) is None:
        return 0
    variance = layer.moving_variance.numpy().astype("float64")
    if np.all(variance == 1.0) and not np.any(layer.moving_mean.numpy()):
        return 0
    if not np.all(np.isfinite(variance)):
        return 0
    floor = relative * _scale(variance)
    if not floor > 0:
        return 0
    old_epsilon = float(layer.epsilon)
    new_epsilon = old_epsilon + floor
    gamma = layer.gamma.numpy().astype("float64")
    compensation = np.sqrt(variance + new_epsilon) / np.sqrt(
        np.maximum(variance, floor) + old_epsilon
    )
    layer.gamma.assign((gamma * compensation).astype(layer.gamma.dtype.as_numpy_dtype))
    layer.epsilon = new_epsilon
    return int(np.sum(variance < floor))


def floor_bn_gain(model, relative: float, batch_norm_class) -> dict[str, int]:
    """Applies :func:`floor_layer` to every ``batch_norm_class`` layer inside ``model``
    (wrapped or nested ones included); returns ``{layer name: channels lowered}`` for the layers
    that had channels below their floor."""
    lowered, seen = {}, set()
    for layer in model.submodules:
        if isinstance(layer, batch_norm_class) and id(layer) not in seen:
            seen.add(id(layer))
            count = floor_layer(layer, relative)
            if count:
                lowered[layer.name] = count
    return lowered
