"""Storage bookkeeping and decoding: the storages a pickle declares, their bytes in the file,
and the materializer that turns the unpickled stand-ins into numpy arrays and plain data."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_coordatt.weights.torch_checkpoint._dtypes import _ElementType
from keras_coordatt.weights.torch_checkpoint._errors import _MAX_TENSOR_ELEMENTS, CheckpointError
from keras_coordatt.weights.torch_checkpoint._standins import (
    PickledNamespace,
    _NdarrayRef,
    _NumpyDtypeSpec,
    _NumpyScalarRef,
    _StorageRef,
    _StorageType,
    _TensorRef,
    _TorchDtype,
)


class _StorageTable:
    """Storages declared by the pickle (key -> element type, bytes) and their raw file bytes."""

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy
        self.big_endian = False
        self.declared: dict[str, tuple[_ElementType, int]] = {}
        self.raw: dict[str, memoryview] = {}
        self.read_record: Callable[[str, int], memoryview] | None = None

    def persistent_load(self, pid: object) -> _StorageRef:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(
                f"checkpoint truncated or corrupt: unsupported persistent id {pid!r:.80}"
            )
        storage_type, key, _location, numel = pid[1:5]
        if isinstance(storage_type, _TorchDtype):
            if storage_type.element is None:
                raise CheckpointError(f"storages of torch.{storage_type.name} are not supported")
            element = storage_type.element
        elif isinstance(storage_type, _StorageType):
            element = storage_type.element
        else:
            raise CheckpointError(
                "checkpoint truncated or corrupt: storage type is not a torch type"
            )
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError("checkpoint truncated or corrupt: malformed storage id")
        nbytes = numel * element.itemsize
        previous = self.declared.setdefault(key, (element, nbytes))
        if previous[1] != nbytes or (self.legacy and previous[0].itemsize != element.itemsize):
            raise CheckpointError(
                f"checkpoint truncated or corrupt: storage {key!r} is declared twice with "
                "different sizes or element types"
            )
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return _StorageRef(key, element, 0, nbytes)
        if not (isinstance(view, tuple) and len(view) == 3):
            raise CheckpointError("checkpoint truncated or corrupt: malformed storage view")
        _view_key, view_offset, view_numel = view
        if not (isinstance(view_offset, int) and isinstance(view_numel, int)) or not (
            0 <= view_offset and 0 <= view_numel and view_offset + view_numel <= numel
        ):
            raise CheckpointError(
                f"checkpoint truncated or corrupt: storage view {view!r} lies outside storage "
                f"{key!r} of {numel} elements"
            )
        return _StorageRef(
            key, element, view_offset * element.itemsize, view_numel * element.itemsize
        )

    def storage_bytes(self, ref: _StorageRef) -> memoryview:
        if ref.key not in self.raw:
            if self.read_record is None:
                raise CheckpointError(f"checkpoint truncated or corrupt: no data for {ref.key!r}")
            self.raw[ref.key] = self.read_record(ref.key, self.declared[ref.key][1])
        return self.raw[ref.key][ref.byte_offset : ref.byte_offset + ref.nbytes]

    def flat_array(self, ref: _StorageRef, element: _ElementType) -> np.ndarray:
        data = self.storage_bytes(ref)
        count = len(data) // element.itemsize
        return np.frombuffer(data, dtype=element.file_dtype(self.big_endian), count=count)

    def tensor(self, ref: _TensorRef) -> np.ndarray:
        element = ref.element
        flat = self.flat_array(ref.storage, element)
        if any(dim < 0 for dim in ref.size) or any(step < 0 for step in ref.stride):
            raise CheckpointError(
                f"checkpoint truncated or corrupt: negative tensor size {ref.size} or stride "
                f"{ref.stride}"
            )
        numel = math.prod(ref.size)
        if numel == 0:
            return np.zeros(ref.size, dtype=element.result_dtype)
        if numel > _MAX_TENSOR_ELEMENTS:
            raise CheckpointError(
                f"checkpoint truncated or corrupt: tensor of size {ref.size} is implausibly large"
            )
        last = ref.offset + sum(
            (dim - 1) * step for dim, step in zip(ref.size, ref.stride, strict=True)
        )
        if ref.offset < 0 or last >= flat.size:
            raise CheckpointError(
                f"checkpoint truncated or corrupt: tensor view (offset {ref.offset}, size "
                f"{ref.size}, stride {ref.stride}) lies outside its storage {ref.storage.key!r} "
                f"of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.size,
            strides=tuple(step * flat.itemsize for step in ref.stride),
            writeable=False,
        )
        return element.decode(view)

    def storage_array(self, ref: _StorageRef) -> np.ndarray:
        return ref.element.decode(self.flat_array(ref, ref.element))


_PLAIN_TYPES = (str, bytes, int, float, complex, bool, type(None))


class _Materializer:
    """Replaces stand-ins by numpy arrays / plain values, keeping shared objects shared."""

    def __init__(self, storages: _StorageTable) -> None:
        self._storages = storages
        self._done: dict[int, Any] = {}

    def run(self, obj: Any) -> Any:
        """Converts ``obj``; malformed structures become a :class:`CheckpointError`."""
        try:
            return self.convert(obj)
        except (TypeError, AttributeError, OverflowError) as exc:
            raise CheckpointError(
                f"checkpoint truncated or corrupt: malformed structure ({exc})"
            ) from None

    def convert(self, obj: Any) -> Any:
        if isinstance(obj, _PLAIN_TYPES):
            return obj
        if id(obj) in self._done:
            return self._done[id(obj)]
        result = self._convert_new(obj)
        self._done[id(obj)] = result
        return result

    def _convert_new(self, obj: Any) -> Any:
        if isinstance(obj, dict):  # OrderedDict included; updated in place
            self._done[id(obj)] = obj
            items = list(obj.items())
            obj.clear()
            for key, value in items:
                obj[self.convert(key)] = self.convert(value)
            attributes = getattr(obj, "__dict__", None)  # e.g. a state_dict's _metadata
            if attributes:
                for key, value in list(attributes.items()):
                    attributes[key] = self.convert(value)
            return obj
        if isinstance(obj, list):
            self._done[id(obj)] = obj
            obj[:] = [self.convert(item) for item in obj]
            return obj
        if isinstance(obj, tuple):
            return tuple(self.convert(item) for item in obj)
        if isinstance(obj, (set, frozenset)):
            return type(obj)(self.convert(item) for item in obj)
        if isinstance(obj, PickledNamespace):
            self._done[id(obj)] = obj
            for key, value in list(obj._attributes.items()):
                obj._attributes[key] = self.convert(value)
            return obj
        if isinstance(obj, _TensorRef):
            return self._storages.tensor(obj)
        if isinstance(obj, _StorageRef):
            return self._storages.storage_array(obj)
        if isinstance(obj, _NumpyScalarRef):
            dtype = obj.dtype_spec.to_numpy()
            if len(obj.data) != dtype.itemsize:
                raise CheckpointError("checkpoint truncated or corrupt: malformed numpy scalar")
            return np.frombuffer(obj.data, dtype=dtype)[0].astype(dtype.newbyteorder("="))
        if isinstance(obj, _NdarrayRef):
            return obj.to_numpy()
        if isinstance(obj, _NumpyDtypeSpec):
            return obj.to_numpy()
        if isinstance(obj, _TorchDtype):
            return f"torch.{obj.name}"
        if isinstance(obj, _StorageType):
            return obj.label
        raise CheckpointError(
            f"checkpoint holds a bare reference to {obj!r:.80}, which is not data"
        )
