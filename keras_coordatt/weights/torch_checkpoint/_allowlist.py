"""The allowlist of globals a checkpoint may import: each returns inert data and never touches
anything but its arguments."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from keras_coordatt.weights.torch_checkpoint._dtypes import (
    _ELEMENT_TYPES,
    _STORAGE_CLASSES,
    _TORCH_DTYPE_ALIASES,
    _UNSUPPORTED_STORAGE_CLASSES,
    _UNSUPPORTED_TORCH_DTYPES,
    _UNSUPPORTED_TORCH_FUNCTIONS,
    _ElementType,
)
from keras_coordatt.weights.torch_checkpoint._errors import CheckpointError
from keras_coordatt.weights.torch_checkpoint._standins import (
    PickledNamespace,
    _int_tuple,
    _NdarrayRef,
    _NumpyDtypeSpec,
    _NumpyNdarrayClass,
    _NumpyScalarRef,
    _SafeCallable,
    _StorageRef,
    _StorageType,
    _TensorRef,
    _TorchDtype,
)


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
