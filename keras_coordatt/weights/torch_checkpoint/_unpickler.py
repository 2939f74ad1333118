"""The restricted unpickler: globals come only from the allowlist of inert stand-ins."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from typing import Any

from keras_coordatt.weights.torch_checkpoint._allowlist import (
    _ALLOWED_GLOBALS,
    _unsupported_reason,
)
from keras_coordatt.weights.torch_checkpoint._errors import CheckpointError, UnsafeCheckpointError
from keras_coordatt.weights.torch_checkpoint._storage import _StorageTable


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves globals only from the allowlist of inert stand-ins."""

    def __init__(self, stream: io.BytesIO, storages: _StorageTable | None) -> None:
        super().__init__(stream, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name some Python 3 globals by their Python 2 names.
        key = _compat_pickle.NAME_MAPPING.get((module, name))
        if key is None:
            key = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        reason = _unsupported_reason(*key)
        if reason is not None:
            raise CheckpointError(reason)
        qualified_name = ".".join(key)
        if key != (module, name):
            qualified_name += f" (pickled as {module}.{name})"
        raise UnsafeCheckpointError(
            f"refusing to load {qualified_name}: this checkpoint asks to import a callable "
            "that could run code; only tensors and plain containers are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise CheckpointError(
                "checkpoint truncated or corrupt: unexpected reference to tensor data"
            )
        return self._storages.persistent_load(pid)


def _unpickle(stream: io.BytesIO, what: str, storages: _StorageTable | None = None) -> Any:
    try:
        return _RestrictedUnpickler(stream, storages).load()
    except CheckpointError:
        raise
    except Exception as exc:  # any parse failure of untrusted bytes becomes a clear error
        raise CheckpointError(
            f"checkpoint truncated or corrupt: cannot parse {what} ({type(exc).__name__}: {exc})"
        ) from None
