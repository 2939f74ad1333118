"""Torch element types, storage classes and how their bytes decode with numpy (tables)."""

from __future__ import annotations

import numpy as np


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
