"""The zip format of ``torch.save`` (torch >= 1.6): ``<folder>/data.pkl``, ``<folder>/data/<key>``
and an optional ``<folder>/byteorder`` record (big-endian storages are byte-swapped)."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from keras_coordatt.weights.torch_checkpoint._errors import _EXPECTED, CheckpointError
from keras_coordatt.weights.torch_checkpoint._storage import _Materializer, _StorageTable
from keras_coordatt.weights.torch_checkpoint._unpickler import _unpickle


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

        storages = _StorageTable(legacy=False)
        if f"{prefix}byteorder" in names:
            record = _read_member(archive, f"{prefix}byteorder")
            byteorder = record.decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(
                    f"checkpoint truncated or corrupt: unknown byteorder record {byteorder!r}"
                )
            storages.big_endian = byteorder == "big"
        storages.read_record = lambda key, nbytes: memoryview(
            _read_member(archive, f"{prefix}data/{key}", nbytes)
        )
        data_pkl = _read_member(archive, pickles[0])
        obj = _unpickle(io.BytesIO(data_pkl), pickles[0], storages)
        return _Materializer(storages).run(obj)


def _read_member(archive: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """The bytes of one record, exactly ``limit`` of them when given."""
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
