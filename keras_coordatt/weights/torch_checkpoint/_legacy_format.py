"""The legacy format of ``torch.save`` (torch < 1.6): magic number, protocol version 1001, system
info, the main pickle, the list of storage keys, then each storage as an int64 little-endian
element count followed by its raw little-endian bytes."""

from __future__ import annotations

import io
from typing import Any

from keras_coordatt.weights.torch_checkpoint._errors import (
    _EXPECTED,
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CheckpointError,
)
from keras_coordatt.weights.torch_checkpoint._storage import _Materializer, _StorageTable
from keras_coordatt.weights.torch_checkpoint._unpickler import _RestrictedUnpickler, _unpickle


def _read_legacy_checkpoint(data: bytes) -> Any:
    stream = io.BytesIO(data)
    try:
        magic = _RestrictedUnpickler(stream, None).load()
    except CheckpointError:
        raise
    except Exception:
        raise CheckpointError(f"not a PyTorch checkpoint; {_EXPECTED}") from None
    if isinstance(magic, bool) or magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(
            f"a pickle without the torch magic number, not a PyTorch checkpoint; {_EXPECTED}"
        )
    protocol = _unpickle(stream, "the protocol version")
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"unsupported legacy checkpoint protocol version {protocol!r}")
    sys_info = _unpickle(stream, "the system info")
    if not isinstance(sys_info, dict):
        raise CheckpointError("checkpoint truncated or corrupt: malformed system info")
    storages = _StorageTable(legacy=True)
    obj = _unpickle(stream, "the main pickle", storages)
    keys = _unpickle(stream, "the storage key list")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise CheckpointError("checkpoint truncated or corrupt: malformed storage key list")
    view = memoryview(data)
    position = stream.tell()
    for key in keys:
        if key not in storages.declared:
            raise CheckpointError(
                f"checkpoint truncated or corrupt: storage {key!r} is listed but never used"
            )
        element, nbytes = storages.declared[key]
        if position + 8 > len(data):
            raise CheckpointError(
                f"checkpoint truncated or corrupt: file ends before storage {key!r} "
                f"({len(data)} bytes)"
            )
        count = int.from_bytes(data[position : position + 8], "little", signed=True)
        if count * element.itemsize != nbytes:
            raise CheckpointError(
                f"checkpoint truncated or corrupt: storage {key!r} holds {count} elements, "
                f"the checkpoint declares {nbytes // element.itemsize}"
            )
        start = position + 8
        if start + nbytes > len(data):
            raise CheckpointError(
                f"checkpoint truncated or corrupt: storage {key!r} needs {nbytes} bytes at "
                f"offset {start}, the file holds {len(data)} bytes"
            )
        storages.raw[key] = view[start : start + nbytes]
        position = start + nbytes
    return _Materializer(storages).run(obj)
