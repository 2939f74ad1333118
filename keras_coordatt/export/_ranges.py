"""Quantization ranges that the TFLite converter can turn into int8 parameters (numpy only).

Shared by the QAT calibration (:mod:`keras_coordatt.quantization.qat`) and the int8 export,
neither of which should import the other's dependencies.
"""

from __future__ import annotations

import numpy as np

#: Narrowest range a quantized tensor keeps. A tensor that is constant on the data (a dead ReLU,
#: a block whose input never fires, an all-zero filter) would otherwise get ``min == max``: the
#: converter cannot derive a scale from that and computes the ops around the tensor in float.
MIN_RANGE_WIDTH = 1e-3


def widen_range(low, high, min_width: float = MIN_RANGE_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` (scalars or per-channel arrays) widened to at least ``min_width``.

    The ranges keep containing 0, as tfmot's do. A range that is too narrow grows on its wider
    side: ``[0, 0] -> [0, w]``, ``[-1e-5, 0] -> [-w, 0]``; a symmetric one (a per-channel kernel
    range ``[-a, a]``) stays symmetric: ``[-w/2, w/2]``.
    """
    low = np.minimum(np.asarray(low, dtype=np.float64), 0.0)
    high = np.maximum(np.asarray(high, dtype=np.float64), 0.0)
    missing = np.maximum(min_width - (high - low), 0.0)
    symmetric = np.isclose(-low, high) & (high > 0)
    grow_high = np.where(symmetric, missing / 2, np.where(high >= -low, missing, 0.0))
    grow_low = np.where(symmetric, missing / 2, np.where(high >= -low, 0.0, missing))
    return low - grow_low, high + grow_high


def range_pairs(variables) -> list[tuple]:
    """``(name, min_variable, max_variable)`` for every ``<name>_min`` / ``<name>_max`` pair.

    tfmot and keras_coordatt name the range variables of every activation and kernel quantizer
    that way (``quant_block1_ca/pool_h_q_min:0``, ``quant_stem_relu/output_max:0``, ...).
    """
    by_name = {variable.name.split(":")[0]: variable for variable in variables}
    pairs = []
    for name, variable in by_name.items():
        if name.endswith("_min") and name[:-4] + "_max" in by_name:
            pairs.append((name[:-4], variable, by_name[name[:-4] + "_max"]))
    return pairs
