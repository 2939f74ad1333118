"""Tests of the safe, torch-free checkpoint reader against torch itself and hostile files."""

from __future__ import annotations

import argparse
import builtins
import collections
import io
import os
import pickle
import re
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from keras_coordatt.weights.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    CheckpointError,
    PickledNamespace,
    UnsafeCheckpointError,
    load_torch_checkpoint,
    read_torch_pickle,
)

from helpers import CHECKPOINTS_DIR, ROOT

CHECKPOINTS = CHECKPOINTS_DIR
PACKAGE_ROOT = ROOT / "keras_coordatt"

FIXTURES = [
    ("coordatt_c64_r32.pth", "coordatt_c64_r32_keys.txt"),
    ("mbv2_ca_w0.5.pth", "mbv2_ca_w0.5_keys.txt"),
    ("dli14_mobilenetv2_w0.35_legacy.pth", "dli14_mobilenetv2_w0.35_keys.txt"),
    (
        "yitu_mobilenext_i2rnetv3_w0.5_timm_legacy.pth.tar",
        "yitu_mobilenext_i2rnetv3_w0.5_keys.txt",
    ),
]
TIMM_CHECKPOINT = CHECKPOINTS / "yitu_mobilenext_i2rnetv3_w0.5_timm_legacy.pth.tar"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def expected_array(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return np.array(tensor.numpy(), order="C", copy=True)


def assert_same_as_torch(array: np.ndarray, tensor: torch.Tensor, name: str = "") -> None:
    expected = expected_array(tensor)
    assert isinstance(array, np.ndarray), name
    assert array.dtype == expected.dtype, name
    assert array.shape == expected.shape, name
    assert array.flags.c_contiguous and array.flags.writeable, name
    assert array.tobytes() == expected.tobytes(), name  # bit exact, NaN and -0.0 included


def legacy_file_bytes(
    main_pickle: bytes, keys: list[str] | None = None, data: bytes = b""
) -> bytes:
    """Bytes of a legacy (pre-1.6) torch checkpoint around ``main_pickle``."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    header = b"".join(
        pickle.dumps(item, protocol=2) for item in (LEGACY_MAGIC_NUMBER, 1001, sys_info)
    )
    return header + main_pickle + pickle.dumps(keys or [], protocol=2) + data


def write_zip_checkpoint(
    path: Path,
    data_pkl: bytes,
    records: dict[str, bytes] | None = None,
    folder: str = "archive",
    byteorder: str = "little",
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/data.pkl", data_pkl)
        archive.writestr(f"{folder}/byteorder", byteorder)
        for key, data in (records or {}).items():
            archive.writestr(f"{folder}/data/{key}", data)
        archive.writestr(f"{folder}/version", "3\n")
    return path


class _FakeStorage:
    def __init__(self, key: str, numel: int, legacy: bool = False, view: tuple | None = None):
        self.key = key
        self.numel = numel
        self.legacy = legacy  # the legacy format's persistent ids carry view metadata
        self.view = view  # (view_key, offset, size)


class _FakeTensor:
    """Pickles like a float32 tensor with arbitrary (possibly invalid) view parameters."""

    def __init__(self, storage: _FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _FakeTensorPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            view_metadata = (obj.view,) if obj.legacy else ()
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel, *view_metadata)
        return None


def fake_tensor_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _FakeTensorPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def float_bytes(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


# ---------------------------------------------------------------------------------------------
# 1. The bundled fixture checkpoints
# ---------------------------------------------------------------------------------------------


def read_keys_file(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    entries = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = tuple(int(dim) for dim in shape.strip("()").split(",") if dim.strip())
        entries.append((key, dims, dtype))
    return entries


@pytest.mark.parametrize("checkpoint, keys_file", FIXTURES)
def test_fixture_keys_order_shapes_and_dtypes(checkpoint, keys_file):
    state_dict = load_torch_checkpoint(CHECKPOINTS / checkpoint)
    expected = read_keys_file(CHECKPOINTS / keys_file)
    got = [(key, value.shape, str(value.dtype)) for key, value in state_dict.items()]
    assert got == expected
    assert all(value.flags.c_contiguous for value in state_dict.values())


@pytest.mark.parametrize("checkpoint, _keys_file", FIXTURES)
def test_fixture_values_equal_torch_load(checkpoint, _keys_file):
    with torch.serialization.safe_globals([argparse.Namespace]):
        reference = torch.load(CHECKPOINTS / checkpoint, weights_only=True)
    if "state_dict" in reference:
        reference = {
            key.removeprefix("module."): value for key, value in reference["state_dict"].items()
        }
    state_dict = load_torch_checkpoint(CHECKPOINTS / checkpoint)
    assert list(state_dict) == list(reference)
    for key, tensor in reference.items():
        assert_same_as_torch(state_dict[key], tensor, key)


def test_timm_training_checkpoint_metadata():
    checkpoint = read_torch_pickle(TIMM_CHECKPOINT)
    assert list(checkpoint) == [
        "epoch",
        "arch",
        "state_dict",
        "optimizer",
        "args",
        "version",
        "metric",
    ]
    assert checkpoint["epoch"] == 207 and checkpoint["arch"] == "i2rnetv3"
    assert checkpoint["version"] == 2 and checkpoint["metric"] == pytest.approx(74.022)
    assert all(key.startswith("module.") for key in checkpoint["state_dict"])
    assert set(checkpoint["optimizer"]) == {"state", "param_groups"}
    args = checkpoint["args"]
    assert isinstance(args, PickledNamespace)
    assert not isinstance(args, argparse.Namespace)
    attributes = args.as_dict()
    assert attributes == {
        "model": "i2rnetv3",
        "lr": 0.1,
        "epochs": 200,
        "sched": "cosine",
        "width_mult": 0.5,
        "smoothing": 0.1,
    }
    assert all(type(value) in (str, int, float) for value in attributes.values())
    assert args.width_mult == 0.5
    with pytest.raises(AttributeError):
        _ = args.not_there


# ---------------------------------------------------------------------------------------------
# 2. Round trips through torch.save
# ---------------------------------------------------------------------------------------------


def make_tricky_state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=generator).to(dtype)

    def randint(low, high, shape, dtype):
        return torch.randint(low, high, shape, generator=generator, dtype=torch.int64).to(dtype)

    shared = randn(100)
    int_shared = torch.arange(40, dtype=torch.int16)
    return collections.OrderedDict(
        float32=randn(3, 4, 5),
        float32_special=torch.tensor(
            [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, 3.4e38]
        ),
        float64=randn(7, dtype=torch.float64),
        float16=(randn(2, 3) * 100).half(),
        float16_stepped=(randn(4, 6) * 100).half()[1::2, ::3],
        bfloat16=randn(4, 5, dtype=torch.bfloat16),
        bfloat16_transposed=randn(4, 3, dtype=torch.bfloat16).t(),
        int64=randint(-(2**62), 2**62, (6,), torch.int64),
        int32=randint(-(2**31), 2**31 - 1, (2, 3), torch.int32),
        int16=randint(-(2**15), 2**15 - 1, (5,), torch.int16),
        int8=randint(-128, 127, (5,), torch.int8),
        uint8=randint(0, 255, (3, 3), torch.uint8),
        bool=randn(9) > 0,
        complex64=torch.complex(randn(3), randn(3)),
        uint16=torch.from_numpy(np.array([0, 1, 513, 65535], dtype=np.uint16)),
        uint16_view=torch.from_numpy(np.arange(60000, 60012, dtype=np.uint16)).view(3, 4)[1:, 1:],
        transposed=randn(3, 5).t(),
        stepped=randn(6, 9)[::2, 1::3],
        permuted=randn(2, 3, 4).permute(2, 0, 1),
        shared_whole=shared,
        shared_view=shared[10:30].view(4, 5),
        shared_stepped=shared[50:74:3],
        shared_transposed=shared[80:92].view(3, 4).t(),
        int_view=int_shared[3:].view(37)[5:17].view(3, 4),
        expanded=randn(3, 1).expand(3, 4),
        scalar=torch.tensor(3.25),
        scalar_int64=torch.tensor(7),
        scalar_bool=torch.tensor(True),
        scalar_bfloat16=torch.tensor(-2.5, dtype=torch.bfloat16),
        scalar_view=shared[42],
        empty=torch.zeros(0, 3),
        empty_view=shared[5:5],
        parameter=torch.nn.Parameter(randn(2, 2)),
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_every_dtype_and_view_matches_torch(tmp_path, zip_format):
    reference = make_tricky_state_dict()
    path = tmp_path / "tricky.pth"
    torch.save(reference, path, _use_new_zipfile_serialization=zip_format)
    state_dict = load_torch_checkpoint(path)
    assert list(state_dict) == list(reference)
    for key, tensor in reference.items():
        assert_same_as_torch(state_dict[key], tensor, key)
    assert state_dict["bfloat16"].dtype == np.float32
    # Tensors that shared one storage come back as independent arrays.
    shared = [state_dict[key] for key in reference if key.startswith("shared")]
    assert not any(np.shares_memory(a, b) for i, a in enumerate(shared) for b in shared[i + 1 :])
    state_dict["shared_whole"][:] = 0
    assert_same_as_torch(state_dict["shared_view"], reference["shared_view"])


def test_bare_storage_and_torch_scalars(tmp_path):
    path = tmp_path / "misc.pt"
    values = torch.tensor([1, -2, 3], dtype=torch.int32)
    torch.save(
        {
            "storage": values.untyped_storage(),
            "size": torch.Size([2, 3]),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
        },
        path,
    )
    checkpoint = read_torch_pickle(path)
    np.testing.assert_array_equal(checkpoint["storage"], values.numpy().view(np.uint8))
    assert checkpoint["size"] == (2, 3)
    assert checkpoint["dtype"] == "torch.float16"
    assert checkpoint["device"] == "cpu"


def make_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_training_checkpoint_round_trip(tmp_path, zip_format):
    model = make_model()
    model(torch.randn(2, 3, 6, 6))  # materialises the lazy layer and BN statistics
    parameters = list(model.parameters())
    # The layout of an SGD state_dict (building a real optimizer costs seconds of imports).
    optimizer_state = {
        "state": {
            index: {"momentum_buffer": torch.randn_like(p)} for index, p in enumerate(parameters)
        },
        "param_groups": [
            {"lr": 0.1, "momentum": 0.9, "nesterov": False, "params": list(range(len(parameters)))}
        ],
    }
    wrapped_state = torch.nn.DataParallel(model).state_dict()  # keys "module.*", has _metadata
    ema_state = collections.OrderedDict(
        (key, value.clone() + 1 if value.is_floating_point() else value.clone())
        for key, value in wrapped_state.items()
    )
    extra = {
        "array": np.arange(6, dtype=">i2").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "set": {1, 2},
        "bytes": b"\x00\xff",
        "empty_bytes": b"",
        "tuple": (1, "a", None),
    }
    checkpoint = {
        "epoch": 5,
        "arch": "toy",
        "state_dict": wrapped_state,
        "state_dict_ema": ema_state,
        "optimizer": optimizer_state,
        "args": argparse.Namespace(lr=0.1, layers=[1, 2], name="x", flag=True, nothing=None),
        "metric": np.float64(71.5),
        "version": 2,
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "extra": extra,
    }
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)

    state_dict = load_torch_checkpoint(path)
    assert list(state_dict) == list(model.state_dict())
    for key, tensor in model.state_dict().items():
        assert_same_as_torch(state_dict[key], tensor, key)
    ema = load_torch_checkpoint(path, state_dict_key="state_dict_ema")
    for key, tensor in ema_state.items():
        assert_same_as_torch(ema[key.removeprefix("module.")], tensor, key)

    loaded = read_torch_pickle(path)
    assert loaded["epoch"] == 5 and loaded["arch"] == "toy" and loaded["version"] == 2
    assert isinstance(loaded["metric"], np.float64) and loaded["metric"] == 71.5
    assert loaded["amp_scaler"] == checkpoint["amp_scaler"]
    assert isinstance(loaded["args"], PickledNamespace)
    assert loaded["args"].as_dict() == vars(checkpoint["args"])
    assert loaded["args"].layers == [1, 2]
    assert list(loaded["state_dict"]) == list(wrapped_state)
    assert loaded["state_dict"]._metadata == wrapped_state._metadata  # set by BUILD, kept
    momentum = optimizer_state["state"]
    assert set(loaded["optimizer"]["state"]) == set(momentum)
    for index, entry in momentum.items():
        assert_same_as_torch(
            loaded["optimizer"]["state"][index]["momentum_buffer"], entry["momentum_buffer"]
        )
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 0.1
    got_extra = loaded["extra"]
    for key in ("array", "fortran"):
        np.testing.assert_array_equal(got_extra[key], extra[key])
        assert got_extra[key].dtype == extra[key].dtype.newbyteorder("=")
        assert got_extra[key].flags.c_contiguous
    assert {key: got_extra[key] for key in ("set", "bytes", "empty_bytes", "tuple")} == {
        key: extra[key] for key in ("set", "bytes", "empty_bytes", "tuple")
    }


def test_state_dict_selection_and_prefix_stripping(tmp_path):
    first, second = torch.ones(2), torch.zeros(3)
    cases = {
        "partial_prefix": ({"module.a": first, "b": second}, ["module.a", "b"]),
        "full_prefix": ({"module.a": first, "module.b": second}, ["a", "b"]),
        "prefers_state_dict": ({"model": {"x": first}, "state_dict": {"y": second}}, ["y"]),
        "model_key": ({"model": {"x": first}, "epoch": 3}, ["x"]),
        "model_state_dict_key": ({"model_state_dict": {"z": first}, "epoch": 3}, ["z"]),
    }
    for name, (obj, expected_keys) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        assert list(load_torch_checkpoint(path)) == expected_keys, name

    path = tmp_path / "no_weights.pth"
    torch.save({"epoch": 1, "note": "hello"}, path)
    with pytest.raises(CheckpointError, match="no state_dict") as info:
        load_torch_checkpoint(path)
    assert "'epoch'" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("folder", ["archive", "some_model_name"])
def test_big_endian_zip_is_byte_swapped(tmp_path, folder):
    tensors = collections.OrderedDict(
        f32=torch.tensor([1.5, -2.25, 3e38]),
        f64=torch.tensor([1.0 / 3.0], dtype=torch.float64),
        f16=torch.tensor([0.1, 65504.0], dtype=torch.float16),
        bf16=torch.tensor([1.5, -7.0], dtype=torch.bfloat16),
        i64=torch.tensor([1, -2, 2**40]),
        i32=torch.tensor([70000, -3], dtype=torch.int32),
        i16=torch.tensor([258, -2], dtype=torch.int16),
        u8=torch.tensor([1, 200], dtype=torch.uint8),
        flag=torch.tensor([True, False]),
        view=torch.arange(12, dtype=torch.int32).view(3, 4).t(),
    )
    little = tmp_path / "little.pth"
    torch.save(tensors, little)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as source, zipfile.ZipFile(big, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            relative = name.split("/", 1)[1]
            if relative == "byteorder":
                assert data == b"little"
                data = b"big"
            elif relative.startswith("data/"):  # storage keys follow the dict order
                tensor = list(tensors.values())[int(relative.removeprefix("data/"))]
                itemsize = tensor.element_size()
                data = np.frombuffer(data, dtype=f"<u{itemsize}").byteswap().tobytes()
            target.writestr(f"{folder}/{relative}", data)
    state_dict = load_torch_checkpoint(big)
    for key, tensor in tensors.items():
        assert_same_as_torch(state_dict[key], tensor, key)


def test_hand_crafted_tensor_pickle_positive_control(tmp_path):
    storage = _FakeStorage("0", 6)
    data_pkl = fake_tensor_pickle({"w": _FakeTensor(storage, 1, (2, 2), (1, 2))})
    path = write_zip_checkpoint(tmp_path / "ok.pth", data_pkl, {"0": float_bytes(*range(6))})
    np.testing.assert_array_equal(load_torch_checkpoint(path)["w"], [[1.0, 3.0], [2.0, 4.0]])
    assert torch.load(path, weights_only=True)["w"].tolist() == [[1.0, 3.0], [2.0, 4.0]]


def legacy_storage_bytes(*values: float) -> bytes:
    return len(values).to_bytes(8, "little") + float_bytes(*values)


def test_legacy_storage_views(tmp_path):
    """Pre-1.6 files could reference a slice of a storage through view metadata."""
    root = _FakeStorage("root", 6, legacy=True)
    view = _FakeStorage("root", 6, legacy=True, view=("view", 2, 3))
    main = fake_tensor_pickle(
        {"whole": _FakeTensor(root, 0, (2, 3), (3, 1)), "part": _FakeTensor(view, 1, (2,), (1,))}
    )
    path = tmp_path / "views.pth"
    path.write_bytes(legacy_file_bytes(main, ["root"], legacy_storage_bytes(*range(6))))
    state_dict = load_torch_checkpoint(path)
    np.testing.assert_array_equal(state_dict["whole"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(state_dict["part"], [3, 4])
    reference = torch.load(path, weights_only=True)  # the crafted file is valid for torch too
    for key, tensor in reference.items():
        assert_same_as_torch(state_dict[key], tensor, key)

    outside = _FakeStorage("root", 6, legacy=True, view=("view", 4, 3))
    main = fake_tensor_pickle({"bad": _FakeTensor(outside, 0, (3,), (1,))})
    path.write_bytes(legacy_file_bytes(main, ["root"], legacy_storage_bytes(*range(6))))
    with pytest.raises(ValueError, match="lies outside storage 'root'"):
        load_torch_checkpoint(path)
    too_long = _FakeStorage("root", 6, legacy=True, view=("view", 2, 3))
    main = fake_tensor_pickle({"bad": _FakeTensor(too_long, 1, (3,), (1,))})
    path.write_bytes(legacy_file_bytes(main, ["root"], legacy_storage_bytes(*range(6))))
    with pytest.raises(ValueError, match="outside its storage"):
        load_torch_checkpoint(path)


def test_reader_module_imports_neither_torch_nor_keras():
    # The parent packages are stubbed so that only the reader's own modules are executed.
    script = (
        "import importlib, sys, types\n"
        "sys.modules['torch'] = None\n"
        f"root = {str(PACKAGE_ROOT)!r}\n"
        "for name, path in (('keras_coordatt', root),\n"
        "                   ('keras_coordatt.weights', root + '/weights')):\n"
        "    stub = types.ModuleType(name)\n"
        "    stub.__path__ = [path]\n"
        "    sys.modules[name] = stub\n"
        "reader = importlib.import_module('keras_coordatt.weights.torch_checkpoint')\n"
        f"state = reader.load_torch_checkpoint({str(CHECKPOINTS / FIXTURES[0][0])!r})\n"
        "print(len(state), sorted(name for name, module in sys.modules.items()\n"
        "      if module is not None and name.split('.')[0] in ('torch', 'keras', 'jax')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["11", "[]"]


# ---------------------------------------------------------------------------------------------
# 3. Hostile files
# ---------------------------------------------------------------------------------------------


class _RunsOsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _RunsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


class _RunsPopen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        command = [sys.executable, "-c", f"open({str(self.marker)!r}, 'w').close()"]
        return (subprocess.Popen, (command,))


class _RunsTorchLoadFromBytes:
    def __init__(self, marker: Path) -> None:
        self.payload = legacy_file_bytes(pickle.dumps(_RunsOsSystem(marker), protocol=2))

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


class _BoundTouch:
    """Pickles as ``getattr(Path(marker), 'touch')``; calling the result creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self):
        raise AssertionError("never called while pickling")

    def __reduce__(self):
        return (getattr, (self.marker, "touch"))


class _RunsGetattr:
    def __init__(self, marker: Path) -> None:
        self.bound = _BoundTouch(marker)

    def __reduce__(self):
        return (self.bound, ())


HOSTILE_PAYLOADS = {
    "os.system": (_RunsOsSystem, f"{os.system.__module__}.system"),
    "builtins.eval": (_RunsEval, "builtins.eval"),
    "subprocess.Popen": (_RunsPopen, "subprocess.Popen"),
    "torch.storage._load_from_bytes": (_RunsTorchLoadFromBytes, "torch.storage._load_from_bytes"),
    "builtins.getattr": (_RunsGetattr, "builtins.getattr"),
}


def hostile_pickle(payload_name: str, marker: Path, protocol: int = 2) -> bytes:
    make_payload, _ = HOSTILE_PAYLOADS[payload_name]
    # The payload hides inside an ordinary-looking state dict, after a valid entry.
    return pickle.dumps({"weight": [1.0, 2.0], "evil": make_payload(marker)}, protocol=protocol)


@pytest.mark.parametrize("payload_name", list(HOSTILE_PAYLOADS))
def test_hostile_payloads_really_run_code_with_plain_pickle(tmp_path, payload_name):
    """Positive control: the payloads below are live, so their refusal is meaningful."""
    marker = tmp_path / "marker"
    result = pickle.loads(hostile_pickle(payload_name, marker))  # trusted: built by this test
    if isinstance(result["evil"], subprocess.Popen):
        result["evil"].wait(timeout=30)
    assert marker.exists()


@pytest.mark.parametrize("container", ["plain_pickle", "legacy", "zip", "zip_protocol4"])
@pytest.mark.parametrize("payload_name", list(HOSTILE_PAYLOADS))
def test_hostile_checkpoint_is_refused_without_running_code(tmp_path, payload_name, container):
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.pth"
    if container == "plain_pickle":
        path.write_bytes(hostile_pickle(payload_name, marker))
    elif container == "legacy":
        path.write_bytes(legacy_file_bytes(hostile_pickle(payload_name, marker)))
    else:
        protocol = 4 if container == "zip_protocol4" else 2
        write_zip_checkpoint(path, hostile_pickle(payload_name, marker, protocol))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_checkpoint(path)
    message = str(info.value)
    forbidden = re.escape(HOSTILE_PAYLOADS[payload_name][1])
    assert re.search(rf"refusing to load {forbidden}( \(pickled as [\w.]+\))?:", message)
    assert "could run code" in message and str(path) in message
    assert isinstance(info.value, ValueError)
    if payload_name == "subprocess.Popen":
        time.sleep(0.25)  # a child process, had one been started, would have run by now
    assert not marker.exists()


@pytest.mark.parametrize(
    "stream",
    [
        b"cos\nsystem\n(S'echo hi'\ntR.",  # GLOBAL + REDUCE, protocol 0
        b"(S'echo hi'\nios\nsystem\n.",  # INST
        b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.",  # STACK_GLOBAL
        b"\x80\x02c__builtin__\neval\n.",  # Python 2 module name
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2.__globals__\n.",  # dotted attribute path
    ],
    ids=["global", "inst", "stack_global", "python2_builtin", "dotted_name"],
)
def test_globals_outside_allowlist_are_refused_on_every_opcode(tmp_path, stream):
    path = tmp_path / "hostile.pkl"
    path.write_bytes(stream)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        read_torch_pickle(path)


@pytest.mark.parametrize(
    "stream",
    [
        b"ctorch\nFloatStorage\nN}S'element'\nI1\ns\x86b.",
        b"cargparse\nNamespace\nN}S'__getattr__'\nI1\ns\x86b.",
        b"ctorch._utils\n_rebuild_tensor_v2\nN}S'__defaults__'\n)s\x86b.",
        b"ccollections\nOrderedDict\nN}S'fromkeys'\nI1\ns\x86b.",
        b"ctorch._utils\n_rebuild_tensor_v2\n}S'__setstate__'\nI1\nsb.",
    ],
    ids=["storage_type", "namespace_class", "function_defaults", "builtin_class", "func_dict"],
)
def test_pickle_cannot_modify_allowlisted_stand_ins(tmp_path, stream):
    path = tmp_path / "tamper.pkl"
    path.write_bytes(stream)
    with pytest.raises(CheckpointError):
        read_torch_pickle(path)
    # Nothing was changed: a genuine checkpoint still reads exactly.
    state_dict = load_torch_checkpoint(CHECKPOINTS / "coordatt_c64_r32.pth")
    reference = torch.load(CHECKPOINTS / "coordatt_c64_r32.pth", weights_only=True)
    for key, tensor in reference.items():
        assert_same_as_torch(state_dict[key], tensor, key)


# ---------------------------------------------------------------------------------------------
# 4. Corrupt and foreign files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "checkpoint", ["coordatt_c64_r32.pth", "dli14_mobilenetv2_w0.35_legacy.pth"]
)
def test_fixture_cut_in_half_is_reported_as_truncated(tmp_path, checkpoint):
    data = (CHECKPOINTS / checkpoint).read_bytes()
    path = tmp_path / checkpoint
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checkpoint truncated or corrupt") as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9, 0.999])
def test_truncation_anywhere_gives_a_clear_error(tmp_path, zip_format, fraction):
    path = tmp_path / "whole.pth"
    torch.save(
        {"a": torch.arange(300.0), "b": torch.ones(50, dtype=torch.int64)},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path)
    message = str(info.value)
    assert "truncated or corrupt" in message or "not a PyTorch checkpoint" in message


def test_storage_record_shorter_than_declared(tmp_path):
    data_pkl = fake_tensor_pickle({"w": _FakeTensor(_FakeStorage("0", 6), 0, (6,), (1,))})
    path = write_zip_checkpoint(tmp_path / "short.pth", data_pkl, {"0": float_bytes(1, 2, 3)})
    with pytest.raises(ValueError, match=r"truncated or corrupt: record .*data/0.* declares 24"):
        load_torch_checkpoint(path)


def test_missing_storage_record(tmp_path):
    data_pkl = fake_tensor_pickle({"w": _FakeTensor(_FakeStorage("7", 2), 0, (2,), (1,))})
    path = write_zip_checkpoint(tmp_path / "missing.pth", data_pkl, {})
    with pytest.raises(ValueError, match="truncated or corrupt: record .* is missing"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize(
    "offset, size, stride",
    [(0, (7,), (1,)), (4, (3,), (1,)), (0, (2, 3), (3, 2)), (-1, (2,), (1,)), (0, (2,), (-1,))],
)
def test_tensor_view_outside_storage(tmp_path, offset, size, stride):
    storage = _FakeStorage("0", 6)
    data_pkl = fake_tensor_pickle({"w": _FakeTensor(storage, offset, size, stride)})
    path = write_zip_checkpoint(tmp_path / "view.pth", data_pkl, {"0": float_bytes(*range(6))})
    with pytest.raises(ValueError, match="truncated or corrupt: .*(outside its storage|negative)"):
        load_torch_checkpoint(path)


def test_stride_zero_bomb_is_refused(tmp_path):
    data_pkl = fake_tensor_pickle(
        {"w": _FakeTensor(_FakeStorage("0", 1), 0, (2**20, 2**20), (0, 0))}
    )
    path = write_zip_checkpoint(tmp_path / "bomb.pth", data_pkl, {"0": float_bytes(1)})
    with pytest.raises(ValueError, match="implausibly large"):
        load_torch_checkpoint(path)


def test_legacy_storage_size_mismatch(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"a": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    count_at = len(data) - 16 - 8
    assert int.from_bytes(data[count_at : count_at + 8], "little") == 4
    data[count_at : count_at + 8] = (5).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="holds 5 elements, the checkpoint declares 4"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "file is empty"),
        (np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
        (b"epoch,loss\n1,0.5\n", "not a PyTorch checkpoint"),
        (b"\x89HDF\r\n\x1a\n" + bytes(600), "HDF5 file"),
        (pickle.dumps({"weights": [1, 2]}, protocol=2), "without the torch magic number"),
        (legacy_file_bytes(pickle.dumps({}, protocol=2))[:-1], "truncated or corrupt"),
    ],
    ids=["empty", "random", "text", "hdf5", "plain_pickle", "legacy_without_key_list"],
)
def test_foreign_files_are_rejected_with_a_clear_message(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_torch_checkpoint(path)
    assert isinstance(info.value, ValueError) and str(path) in str(info.value)
    if expected != "truncated or corrupt":
        assert "expected a PyTorch checkpoint" in str(info.value)


def test_zip_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="data.pkl"):
        load_torch_checkpoint(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_torch_checkpoint(tmp_path / "nope.pth")
