"""Inert stand-ins created while unpickling (converted to numpy / plain data afterwards)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_coordatt.weights.torch_checkpoint._dtypes import _ElementType
from keras_coordatt.weights.torch_checkpoint._errors import _MAX_TENSOR_DIMS, CheckpointError


class _Inert:
    """Base of the unpickling stand-ins: no ``__dict__``; the pickle BUILD opcode is refused."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise CheckpointError(
            f"checkpoint truncated or corrupt: cannot set the state of {type(self).__name__}"
        )


class _SafeCallable(_Inert):
    """An allowlisted function, wrapped so that a pickle cannot alter its attributes."""

    __slots__ = ("qualified_name", "function")

    def __init__(self, qualified_name: str, function: Callable[..., Any]) -> None:
        self.qualified_name = qualified_name
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __repr__(self) -> str:
        return f"<allowlisted {self.qualified_name}>"


class _ImmutableClass(type):
    """Metaclass that refuses attribute changes, so a pickle cannot tamper with the class."""

    def __setattr__(cls, name: str, value: object) -> None:
        raise CheckpointError(f"checkpoint tries to modify class {cls.__name__}")

    def __delattr__(cls, name: str) -> None:
        raise CheckpointError(f"checkpoint tries to modify class {cls.__name__}")


class _TorchDtype(_Inert):
    """Stand-in for a ``torch.<dtype>`` object such as ``torch.float32``."""

    __slots__ = ("name", "element")

    def __init__(self, name: str, element: _ElementType | None) -> None:
        self.name = name
        self.element = element


class _StorageType(_Inert):
    """Stand-in for a storage class such as ``torch.FloatStorage`` or ``UntypedStorage``."""

    __slots__ = ("label", "element")

    def __init__(self, label: str, element: _ElementType) -> None:
        self.label = label
        self.element = element


class _StorageRef(_Inert):
    """A storage (or a legacy view of one) to be read from the file: ``key`` plus a byte range."""

    __slots__ = ("key", "element", "byte_offset", "nbytes")

    def __init__(self, key: str, element: _ElementType, byte_offset: int, nbytes: int) -> None:
        self.key = key
        self.element = element
        self.byte_offset = byte_offset
        self.nbytes = nbytes


class _TensorRef(_Inert):
    """A tensor to be rebuilt: storage, element offset, sizes, strides (in elements)."""

    __slots__ = ("storage", "element", "offset", "size", "stride")

    def __init__(
        self,
        storage: _StorageRef,
        element: _ElementType,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
    ) -> None:
        self.storage = storage
        self.element = element
        self.offset = offset
        self.size = size
        self.stride = stride


_NUMPY_DTYPE_CODE = re.compile(r"^(b1|[iu][1248]|f[248]|c(8|16))$")


class _NumpyDtypeSpec(_Inert):
    """Stand-in for ``numpy.dtype(code, align, copy)`` + BUILD state, for plain numeric codes."""

    __slots__ = ("code", "byteorder")

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if not isinstance(code, str) or not _NUMPY_DTYPE_CODE.match(code):
            raise CheckpointError(f"unsupported numpy dtype {code!r} in checkpoint")
        self.code = code
        self.byteorder = "<"

    def __setstate__(self, state: object) -> None:
        plain = isinstance(state, tuple) and len(state) >= 5 and state[0] in (3, 4)
        if (
            not plain
            or state[1] not in ("<", ">", "|", "=")
            or any(item is not None for item in state[2:5])
        ):
            raise CheckpointError(f"unsupported numpy dtype state {state!r} in checkpoint")
        self.byteorder = "=" if state[1] == "|" else state[1]

    def to_numpy(self) -> np.dtype:
        return np.dtype(self.byteorder + self.code)


class _NumpyScalarRef(_Inert):
    """Stand-in result of ``numpy.core.multiarray.scalar(dtype, bytes)``."""

    __slots__ = ("dtype_spec", "data")

    def __init__(self, dtype_spec: _NumpyDtypeSpec, data: bytes) -> None:
        self.dtype_spec = dtype_spec
        self.data = data


class _NumpyNdarrayClass(_Inert):
    """Stand-in for the ``numpy.ndarray`` class (only usable as ``_reconstruct``'s argument)."""

    __slots__ = ()


class _NdarrayRef(_Inert):
    """Stand-in result of ``numpy.core.multiarray._reconstruct`` + BUILD state."""

    __slots__ = ("shape", "dtype_spec", "fortran_order", "data")

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype_spec: _NumpyDtypeSpec | None = None
        self.fortran_order = False
        self.data = b""

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise CheckpointError("unsupported numpy array state in checkpoint")
        shape, dtype_spec, fortran_order, data = state
        if isinstance(data, str):
            data = data.encode("latin-1")
        if not isinstance(dtype_spec, _NumpyDtypeSpec) or not isinstance(data, bytes):
            raise CheckpointError(
                "unsupported numpy array in checkpoint (only plain numeric arrays are allowed)"
            )
        self.shape = _int_tuple(shape, "numpy array shape")
        self.dtype_spec = dtype_spec
        self.fortran_order = bool(fortran_order)
        self.data = data

    def to_numpy(self) -> np.ndarray:
        if self.shape is None or self.dtype_spec is None:
            raise CheckpointError("numpy array in checkpoint has no data")
        dtype = self.dtype_spec.to_numpy()
        count = math.prod(self.shape)
        if len(self.data) != count * dtype.itemsize:
            raise CheckpointError(
                f"checkpoint truncated or corrupt: numpy array of shape {self.shape} and dtype "
                f"{dtype} needs {count * dtype.itemsize} bytes, got {len(self.data)}"
            )
        flat = np.frombuffer(self.data, dtype=dtype, count=count)
        array = flat.reshape(self.shape, order="F" if self.fortran_order else "C")
        return np.array(array, dtype=dtype.newbyteorder("="), order="C", copy=True)


class PickledNamespace(metaclass=_ImmutableClass):
    """Inert stand-in for ``argparse.Namespace`` found in training checkpoints.

    Holds the pickled attributes as plain data (``ns.lr``, ``ns.as_dict()``) and runs no code.
    """

    __slots__ = ("_attributes",)

    def __new__(cls, *args: object, **kwargs: object) -> PickledNamespace:
        if args:
            raise CheckpointError("argparse.Namespace takes no positional arguments")
        instance = super().__new__(cls)
        object.__setattr__(instance, "_attributes", {})
        return instance

    def __init__(self, **attributes: Any) -> None:
        self._attributes.update(attributes)

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise CheckpointError("argparse.Namespace state must be a dict with string keys")
        self._attributes.update(state)

    def __getattr__(self, name: str) -> Any:
        if name == "_attributes":
            raise AttributeError(name)
        try:
            return self._attributes[name]
        except KeyError:
            raise AttributeError(f"namespace has no attribute {name!r}") from None

    def as_dict(self) -> dict[str, Any]:
        """The attributes as a new dict."""
        return dict(self._attributes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PickledNamespace):
            return NotImplemented
        return self._attributes == other._attributes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        items = ", ".join(f"{key}={value!r}" for key, value in self._attributes.items())
        return f"PickledNamespace({items})"


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise CheckpointError(f"checkpoint truncated or corrupt: {what} is not a tuple of ints")
    if len(value) > _MAX_TENSOR_DIMS:
        raise CheckpointError(f"checkpoint truncated or corrupt: {what} has {len(value)} dims")
    return tuple(value)
