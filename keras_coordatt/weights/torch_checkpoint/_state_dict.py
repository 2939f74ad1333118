"""Unwrapping training checkpoints: the state_dict entry and the ``module.`` prefix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_coordatt.weights.torch_checkpoint._errors import CheckpointError

STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
DATA_PARALLEL_PREFIX = "module."


def _is_tensor_mapping(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(key, str) and isinstance(value, np.ndarray) for key, value in obj.items()
    )


def extract_state_dict(
    checkpoint: Any, state_dict_key: str | None = None, *, source: str = "checkpoint"
) -> dict[str, np.ndarray]:
    """Picks the model weights out of a :func:`read_torch_pickle` result.

    A plain state_dict is returned as is; a training checkpoint yields its ``state_dict_key``
    entry, by default the first of ``state_dict``, ``model``, ``model_state_dict``,
    ``state_dict_ema`` that is a mapping. A ``module.`` prefix is removed when every key has it.
    """
    candidate = checkpoint
    if state_dict_key is not None:
        if not isinstance(checkpoint, Mapping) or state_dict_key not in checkpoint:
            raise CheckpointError(f"{source}: no entry {state_dict_key!r} in the checkpoint")
        candidate = checkpoint[state_dict_key]
    elif isinstance(checkpoint, Mapping) and not _is_tensor_mapping(checkpoint):
        for key in STATE_DICT_KEYS:
            if isinstance(checkpoint.get(key), Mapping):
                candidate = checkpoint[key]
                break
    if not isinstance(candidate, Mapping):
        raise CheckpointError(
            f"{source}: expected a state_dict (a mapping of names to tensors), found "
            f"{type(candidate).__name__}"
        )
    bad = [
        f"{key!r} ({type(value).__name__})"
        for key, value in candidate.items()
        if not (isinstance(key, str) and isinstance(value, np.ndarray))
    ]
    if bad:
        top_keys = list(checkpoint) if isinstance(checkpoint, Mapping) else []
        raise CheckpointError(
            f"{source}: no state_dict of tensors found (entries that are not tensors: "
            f"{', '.join(bad[:8])}; top-level keys: {top_keys[:16]})"
        )
    state_dict = dict(candidate)
    if state_dict and all(key.startswith(DATA_PARALLEL_PREFIX) for key in state_dict):
        state_dict = {key[len(DATA_PARALLEL_PREFIX) :]: value for key, value in state_dict.items()}
    return state_dict
