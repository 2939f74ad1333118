"""Turning the data arguments of the export / QAT helpers into numpy batches (no TF import)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

DataLike = Any
"""An input array; an ``(inputs, labels)`` pair of arrays; an iterable of batches (arrays or
``(inputs, labels[, ...])`` tuples, e.g. a ``tf.data.Dataset``); or a callable returning one."""


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")
    )


def _is_array_pair(data) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and _is_array(data[0])
        and _is_array(data[1])
        and len(np.shape(data[0])) >= 2
        and np.shape(data[0])[0] == np.shape(data[1])[0]
    )


def iter_batches(
    data: DataLike, *, batch_size: int = 32, limit: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yields ``(inputs, labels_or_None)`` numpy batches from any :data:`DataLike`.

    Arrays are cut into batches of ``batch_size``; ``limit`` stops after that many batches.
    """
    if callable(data) and not _is_array(data):
        data = data()
    if _is_array(data) or _is_array_pair(data):
        inputs, labels = (data, None) if _is_array(data) else data
        inputs = np.asarray(inputs)
        labels = None if labels is None else np.asarray(labels)
        batches: Iterable = (
            (inputs[i : i + batch_size], None if labels is None else labels[i : i + batch_size])
            for i in range(0, len(inputs), batch_size)
        )
    else:
        if hasattr(data, "as_numpy_iterator"):
            data = data.as_numpy_iterator()
        batches = (_split(item) for item in data)
    for count, batch in enumerate(batches):
        if limit is not None and count >= limit:
            return
        yield batch


def _split(item) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(item, dict):
        raise ValueError("Dict batches are not supported: give arrays or (inputs, labels) tuples.")
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("Empty batch in dataset.")
        inputs = item[0]
        if isinstance(inputs, (tuple, list)) and len(inputs) == 1:
            inputs = inputs[0]
        labels = item[1] if len(item) > 1 else None
        return np.asarray(inputs), None if labels is None else np.asarray(labels)
    return np.asarray(item), None


def _representative(data: DataLike, batch_size: int | None, steps: int | None, shape: tuple):
    """A converter representative_dataset: float32 batches cut to the exported batch size."""

    def generator() -> Iterator[list[np.ndarray]]:
        count = 0
        for inputs, _ in iter_batches(data):
            inputs = np.asarray(inputs, dtype=np.float32)
            if inputs.shape[1:] != shape:
                raise ValueError(
                    f"representative_dataset batch of shape {inputs.shape} does not match the "
                    f"exported input shape (batch,) + {shape}."
                )
            size = batch_size or 1
            for start in range(0, len(inputs) - size + 1, size):
                if steps is not None and count >= steps:
                    return
                yield [inputs[start : start + size]]
                count += 1

    return generator


def calibration_samples(data: DataLike, batch_size: int | None, steps: int | None,
                        shape: tuple) -> np.ndarray:
    """The converter's calibration inputs: ``(steps, batch, *shape)`` float32."""
    samples = list(_representative(data, batch_size, steps, shape)())
    if not samples:
        raise ValueError("representative_dataset gave no calibration batch.")
    return np.stack([batch for (batch,) in samples])
