"""Safe, PyTorch-free reader of PyTorch checkpoint files (``.pth``, ``.pt``, ``.pth.tar``).

``torch.save`` writes a pickle, and unpickling an untrusted file can run arbitrary code. This
module never calls ``pickle.load`` or ``torch.load``: it unpickles with a restricted
``pickle.Unpickler`` whose ``find_class`` hands out only this module's own inert stand-ins for an
explicit allowlist of globals (tensor rebuild functions, storage types, ``OrderedDict``,
``argparse.Namespace`` as plain data, numpy scalars, ...). Every other global, e.g.
``posix.system`` or ``builtins.eval``, raises :class:`UnsafeCheckpointError` before anything is
called. Tensor data is read from the file with ``numpy.frombuffer`` after bounds checks.

Supported containers:

* the zip format of ``torch.save`` (torch >= 1.6): ``<folder>/data.pkl``, ``<folder>/data/<key>``
  and an optional ``<folder>/byteorder`` record (big-endian storages are byte-swapped);
* the legacy format (torch < 1.6): magic number, protocol version 1001, system info, the main
  pickle, the list of storage keys, then each storage as an int64 little-endian element count
  followed by its raw little-endian bytes.

Only the standard library and numpy are imported.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "CheckpointError",
    "PickledNamespace",
    "UnsafeCheckpointError",
    "extract_state_dict",
    "load_torch_checkpoint",
    "read_torch_pickle",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
DATA_PARALLEL_PREFIX = "module."

_EXPECTED = (
    "expected a PyTorch checkpoint: a zip archive written by torch.save (torch >= 1.6) or the "
    f"legacy pickle format (magic number {LEGACY_MAGIC_NUMBER:#x})"
)
_MAX_TENSOR_DIMS = 64
_MAX_TENSOR_ELEMENTS = 2**33  # far above any real weight; guards against stride-0 bombs


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint (corrupt, truncated or unsupported)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint asks to import a global outside the allowlist of inert types."""


# --------------------------------------------------------------------------------------------
# Element types
# --------------------------------------------------------------------------------------------


class _ElementType:
    """A torch element type and how its bytes are stored and decoded with numpy."""

    __slots__ = ("torch_name", "storage_code", "result_dtype")

    def __init__(self, torch_name: str, storage_code: str, result_dtype: str) -> None:
        self.torch_name = torch_name
        self.storage_code = storage_code  # numpy code of the raw bytes, without byte order
        self.result_dtype = np.dtype(result_dtype)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.storage_code).itemsize

    def file_dtype(self, big_endian: bool) -> np.dtype:
        """The numpy dtype of the raw bytes as they lie in the file."""
        return np.dtype(
            ("|" if self.itemsize == 1 else ">" if big_endian else "<") + self.storage_code
        )

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """A new C-contiguous, native-order array of this type from a (strided) raw view."""
        if self.torch_name == "bool":
            return np.array(raw != 0, order="C", copy=True)
        if self.torch_name == "bfloat16":
            bits = np.array(raw, dtype=np.uint32, order="C", copy=True)
            bits <<= 16  # bfloat16 is the upper half of a float32
            return bits.view(np.float32)
        return np.array(raw, dtype=self.result_dtype, order="C", copy=True)


_ELEMENT_TYPES = {
    name: _ElementType(name, storage_code, result_dtype)
    for name, storage_code, result_dtype in (
        ("float32", "f4", "float32"),
        ("float64", "f8", "float64"),
        ("float16", "f2", "float16"),
        ("bfloat16", "u2", "float32"),
        ("complex64", "c8", "complex64"),
        ("complex128", "c16", "complex128"),
        ("int64", "i8", "int64"),
        ("int32", "i4", "int32"),
        ("int16", "i2", "int16"),
        ("int8", "i1", "int8"),
        ("uint8", "u1", "uint8"),
        ("uint16", "u2", "uint16"),
        ("uint32", "u4", "uint32"),
        ("uint64", "u8", "uint64"),
        ("bool", "u1", "bool"),
    )
}
_TORCH_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "long": "int64",
    "int": "int32",
    "short": "int16",
}
_UNSUPPORTED_TORCH_DTYPES = frozenset(
    {"complex32", "chalf", "qint8", "quint8", "qint32", "quint4x2", "quint2x4"}
    | {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
    | {"float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2"}
    | {f"int{n}" for n in range(1, 8)}
    | {f"uint{n}" for n in range(1, 8)}
)
_STORAGE_CLASSES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_UNSUPPORTED_STORAGE_CLASSES = frozenset(
    {"QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage"}
    | {"ComplexHalfStorage"}
)
_UNSUPPORTED_TORCH_FUNCTIONS = frozenset(
    {
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_sparse_csr_tensor",
        "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_xla_tensor",
        "_rebuild_mtia_tensor",
    }
)


# --------------------------------------------------------------------------------------------
# Inert stand-ins created while unpickling (converted to numpy / plain data afterwards)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Allowlisted callables (each returns inert data and never touches anything but its arguments)
# --------------------------------------------------------------------------------------------


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise CheckpointError(f"checkpoint truncated or corrupt: {what} is not a tuple of ints")
    if len(value) > _MAX_TENSOR_DIMS:
        raise CheckpointError(f"checkpoint truncated or corrupt: {what} has {len(value)} dims")
    return tuple(value)


def _make_tensor_ref(
    storage: object, offset: object, size: object, stride: object, element: _ElementType | None
) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("checkpoint truncated or corrupt: tensor without a storage")
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise CheckpointError("checkpoint truncated or corrupt: tensor storage offset not an int")
    size_tuple = _int_tuple(size, "tensor size")
    stride_tuple = _int_tuple(stride, "tensor stride")
    if len(size_tuple) != len(stride_tuple):
        raise CheckpointError(
            f"checkpoint truncated or corrupt: tensor size {size_tuple} and stride "
            f"{stride_tuple} differ in length"
        )
    return _TensorRef(storage, element or storage.element, offset, size_tuple, stride_tuple)


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object) -> _TensorRef:
    return _make_tensor_ref(storage, offset, size, stride, None)


def _rebuild_tensor_v2(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    return _make_tensor_ref(storage, offset, size, stride, None)


def _rebuild_tensor_v3(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    dtype: object,
    metadata: object = None,
) -> _TensorRef:
    if not isinstance(dtype, _TorchDtype):
        raise CheckpointError("checkpoint truncated or corrupt: tensor dtype is not a torch dtype")
    if dtype.element is None:
        raise CheckpointError(f"tensors of dtype torch.{dtype.name} are not supported")
    return _make_tensor_ref(storage, offset, size, stride, dtype.element)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> object:
    if not isinstance(data, _TensorRef):
        raise CheckpointError("checkpoint truncated or corrupt: parameter without a tensor")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> object:
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _torch_size(dims: object = ()) -> tuple[int, ...]:
    return _int_tuple(dims, "torch.Size")


def _torch_device(kind: object, index: object = None) -> str:
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise CheckpointError("checkpoint truncated or corrupt: malformed torch.device")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    """The ``_codecs.encode(str, 'latin1')`` that protocol-2 pickles use for bytes."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise CheckpointError("checkpoint truncated or corrupt: malformed _codecs.encode call")
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise CheckpointError(f"unsupported encoding {encoding!r} in _codecs.encode")
    return text.encode("latin-1")


def _empty_bytes(*args: object) -> bytes:
    """``bytes()``, as protocol-2 pickles write an empty bytes object."""
    if args:
        raise CheckpointError("only bytes() without arguments is allowed in a checkpoint")
    return b""


def _numpy_dtype(code: object, align: object = False, copy: object = True) -> _NumpyDtypeSpec:
    return _NumpyDtypeSpec(code, align, copy)


def _numpy_scalar(dtype_spec: object, data: object = None) -> _NumpyScalarRef:
    if isinstance(data, str):
        data = data.encode("latin-1")
    if not isinstance(dtype_spec, _NumpyDtypeSpec) or not isinstance(data, bytes):
        raise CheckpointError("unsupported numpy scalar in checkpoint (only plain numbers)")
    return _NumpyScalarRef(dtype_spec, data)


def _numpy_reconstruct(cls: object, shape: object = (0,), typecode: object = b"b") -> _NdarrayRef:
    if not isinstance(cls, _NumpyNdarrayClass):
        raise CheckpointError("only numpy.ndarray may be reconstructed from a checkpoint")
    return _NdarrayRef()


def _build_allowlist() -> dict[tuple[str, str], object]:
    functions: dict[tuple[str, str], Callable[..., Any]] = {
        ("builtins", "bytes"): _empty_bytes,
        ("_codecs", "encode"): _codecs_encode,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch", "Size"): _torch_size,
        ("torch", "device"): _torch_device,
        ("numpy", "dtype"): _numpy_dtype,
    }
    for numpy_module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        functions[(numpy_module, "scalar")] = _numpy_scalar
        functions[(numpy_module, "_reconstruct")] = _numpy_reconstruct
    allowed: dict[tuple[str, str], object] = {
        key: _SafeCallable(".".join(key), function) for key, function in functions.items()
    }
    # Classes, for the NEWOBJ opcode; none of them can be modified by a pickle.
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("builtins", "set")] = set
    allowed[("builtins", "frozenset")] = frozenset
    allowed[("argparse", "Namespace")] = PickledNamespace
    allowed[("numpy", "ndarray")] = _NumpyNdarrayClass()
    untyped = _StorageType("torch.UntypedStorage", _ELEMENT_TYPES["uint8"])
    allowed[("torch", "UntypedStorage")] = untyped
    allowed[("torch.storage", "UntypedStorage")] = untyped
    for class_name, dtype_name in _STORAGE_CLASSES.items():
        for module in ("torch", "torch.cuda"):
            allowed[(module, class_name)] = _StorageType(
                f"{module}.{class_name}", _ELEMENT_TYPES[dtype_name]
            )
    for name in _ELEMENT_TYPES:
        allowed[("torch", name)] = _TorchDtype(name, _ELEMENT_TYPES[name])
    for alias, name in _TORCH_DTYPE_ALIASES.items():
        allowed[("torch", alias)] = _TorchDtype(name, _ELEMENT_TYPES[name])
    for name in _UNSUPPORTED_TORCH_DTYPES:
        allowed[("torch", name)] = _TorchDtype(name, None)
    return allowed


_ALLOWED_GLOBALS = _build_allowlist()


def _unsupported_reason(module: str, name: str) -> str | None:
    """Why a known, harmless torch global cannot be read (None when it is not one of those)."""
    if module in ("torch", "torch.cuda") and name in _UNSUPPORTED_STORAGE_CLASSES:
        return f"quantized/complex-half storages ({module}.{name}) are not supported"
    if module == "torch._utils" and name in _UNSUPPORTED_TORCH_FUNCTIONS:
        return (
            f"{module}.{name} (quantized, sparse, nested or device-only tensors) is not supported"
        )
    return None


# --------------------------------------------------------------------------------------------
# Restricted unpickling and storage bookkeeping
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Turning the unpickled stand-ins into numpy arrays and plain data
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def _read_zip_checkpoint(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint truncated or corrupt: unreadable zip archive ({exc})"
        ) from None
    with archive:
        names = archive.namelist()
        pickles = [name for name in names if re.fullmatch(r"([^/]+/)?data\.pkl", name)]
        if len(pickles) != 1:
            raise CheckpointError(
                f"zip archive without a single '<folder>/data.pkl' record; {_EXPECTED}"
            )
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
            raise CheckpointError(
                "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint"
            )

        def read_member(name: str, limit: int | None = None) -> bytes:
            try:
                info = archive.getinfo(name)
                if limit is not None and info.file_size < limit:
                    raise CheckpointError(
                        f"checkpoint truncated or corrupt: record {name!r} holds "
                        f"{info.file_size} bytes, the checkpoint declares {limit}"
                    )
                with archive.open(info) as member:
                    data = member.read(limit) if limit is not None else member.read()
            except CheckpointError:
                raise
            except KeyError:
                raise CheckpointError(
                    f"checkpoint truncated or corrupt: record {name!r} is missing"
                ) from None
            except Exception as exc:  # bad CRC, bad compression data, I/O errors
                raise CheckpointError(
                    f"checkpoint truncated or corrupt: cannot read record {name!r} ({exc})"
                ) from None
            if limit is not None and len(data) != limit:
                raise CheckpointError(
                    f"checkpoint truncated or corrupt: record {name!r} holds {len(data)} "
                    f"bytes, the checkpoint declares {limit}"
                )
            return data

        storages = _StorageTable(legacy=False)
        if f"{prefix}byteorder" in names:
            byteorder = read_member(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(
                    f"checkpoint truncated or corrupt: unknown byteorder record {byteorder!r}"
                )
            storages.big_endian = byteorder == "big"
        storages.read_record = lambda key, nbytes: memoryview(
            read_member(f"{prefix}data/{key}", nbytes)
        )
        data_pkl = read_member(pickles[0])
        obj = _unpickle(io.BytesIO(data_pkl), pickles[0], storages)
        return _Materializer(storages).run(obj)


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


def _read_any(path: str) -> Any:
    with open(path, "rb") as handle:
        header = handle.read(512)
        if not header:
            raise CheckpointError(f"file is empty; {_EXPECTED}")
        if header.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _read_zip_checkpoint(path)
        if header.startswith(b"\x89HDF\r\n\x1a\n"):
            raise CheckpointError(f"this is an HDF5 file (e.g. Keras .h5 weights); {_EXPECTED}")
        if header[257:262] == b"ustar":
            raise CheckpointError(
                "this is a tar archive; the tar-based format of torch < 0.4 is not supported"
            )
        return _read_legacy_checkpoint(header + handle.read())


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_torch_pickle(path: str | os.PathLike[str]) -> Any:
    """Reads a whole ``torch.save`` file safely, with every tensor as a numpy array.

    Containers stay as pickled (dict, ``OrderedDict``, list, tuple); ``argparse.Namespace``
    becomes a :class:`PickledNamespace`, ``torch.Size`` a tuple, ``torch.float16`` the string
    ``"torch.float16"``, numpy scalars and arrays stay numpy.

    Raises:
        UnsafeCheckpointError: the file imports a global outside the allowlist.
        CheckpointError: (a ``ValueError``) the file is not a readable PyTorch checkpoint.
    """
    source = os.fspath(path)
    try:
        return _read_any(source)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{exc} (file: {source})") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{source}: checkpoint nested too deeply to read") from None


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


def load_torch_checkpoint(
    path: str | os.PathLike[str], state_dict_key: str | None = None
) -> dict[str, np.ndarray]:
    """Reads the model state_dict of a PyTorch checkpoint as numpy arrays, without torch.

    Handles plain state_dicts and training checkpoints (see :func:`extract_state_dict`), in the
    zip or the legacy format. Arrays are C-contiguous copies in the tensor's dtype (bfloat16
    becomes float32), in the order of the file.

    Raises:
        UnsafeCheckpointError: the file imports a global outside the allowlist.
        CheckpointError: (a ``ValueError``) unreadable file or no state_dict in it.
    """
    return extract_state_dict(read_torch_pickle(path), state_dict_key, source=os.fspath(path))
