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

Only the standard library and numpy are imported. The modules of this package, one job each:
``_errors`` (errors, limits), ``_dtypes`` (element types), ``_standins`` (inert stand-ins),
``_allowlist`` (the globals a pickle may import), ``_unpickler`` (the restricted unpickler),
``_storage`` (storage bytes -> numpy arrays), ``_zip_format`` / ``_legacy_format`` (the two
containers) and ``_state_dict`` (training-checkpoint unwrapping).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_coordatt.weights.torch_checkpoint._errors import (
    _EXPECTED,
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CheckpointError,
    UnsafeCheckpointError,
)
from keras_coordatt.weights.torch_checkpoint._legacy_format import _read_legacy_checkpoint
from keras_coordatt.weights.torch_checkpoint._standins import PickledNamespace
from keras_coordatt.weights.torch_checkpoint._state_dict import (
    DATA_PARALLEL_PREFIX,
    STATE_DICT_KEYS,
    extract_state_dict,
)
from keras_coordatt.weights.torch_checkpoint._zip_format import _read_zip_checkpoint

__all__ = [
    "DATA_PARALLEL_PREFIX",
    "LEGACY_MAGIC_NUMBER",
    "LEGACY_PROTOCOL_VERSION",
    "STATE_DICT_KEYS",
    "CheckpointError",
    "PickledNamespace",
    "UnsafeCheckpointError",
    "extract_state_dict",
    "load_torch_checkpoint",
    "read_torch_pickle",
]


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
