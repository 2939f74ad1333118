"""Download, verification, conversion and caching of presets, offline against 127.0.0.1.

A ``http.server`` in a thread (ephemeral port) serves fixture checkpoints; every test uses its
own temporary cache (``KERAS_HOME`` is pointed there too), so the user's cache is never touched.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from keras_coordatt.weights import (
    WEIGHTS_URL_ENV,
    ChecksumError,
    DownloadError,
    Preset,
    download_checkpoint,
    git_blob_id,
    load_preset_weights,
    register_preset,
    unregister_preset,
)
from keras_coordatt.weights import loading as loading_module
from keras_coordatt.weights.torch_checkpoint import UnsafeCheckpointError

from helpers import CHECKPOINTS_DIR, FIXTURES_DIR, ROOT

FIXTURE_NAME = "mbv2_ca_w0.5.pth"
MIRROR_REPO = "fixtures/coordatt"
MIRROR_COMMIT = "0123456789abcdef0123456789abcdef01234567"
MIRROR_PATH = f"/{MIRROR_REPO}/{MIRROR_COMMIT}/{FIXTURE_NAME}"


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server: ``routes[path] = bytes``, ``(bytes, declared_length)`` or
    ``(bytes, declared_length, event)`` (sends ``bytes``, then stalls until ``event`` is set)."""
    routes: dict[str, object] = {}
    hits: collections.Counter = collections.Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            path = urllib.parse.urlsplit(self.path).path
            hits[path] += 1
            route = routes.get(path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            if not isinstance(route, tuple):
                route = (route, len(route))
            body, declared, *stall = route
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)
            if stall:  # a slow server: hold the connection open until the test releases it
                self.wfile.flush()
                stall[0].wait(timeout=30)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", routes=routes,
                              hits=hits)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache root; ``KERAS_HOME`` points there so nothing reaches ~/.keras."""
    root = tmp_path / "keras_home"
    root.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(root))
    monkeypatch.delenv(WEIGHTS_URL_ENV, raising=False)
    return root


def _cache_files(root) -> list[str]:
    """Every file (hidden ones too) below the cache root."""
    found = []
    for directory, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, f), root) for f in files]
    return sorted(found)


@pytest.fixture
def fixture_bytes() -> bytes:
    return (CHECKPOINTS_DIR / FIXTURE_NAME).read_bytes()


@pytest.fixture
def preset_factory(server):
    """Registers test presets (MobileNetV2CA alpha 0.5) and removes them afterwards."""
    names = []

    def make(name, route, data, **fields):
        server.routes[route] = data if "served" not in fields else fields.pop("served")
        blob = git_blob_id_of(data)
        fields.setdefault("url", server.url + route)
        preset = Preset(
            name=name, family="mobilenet_v2", alpha=0.5, attention="ca", git_blob=blob, **fields
        )
        register_preset(preset)
        names.append(name)
        return preset

    yield make
    for name in names:
        unregister_preset(name)


def git_blob_id_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def expected():
    return SimpleNamespace(
        images=np.load(FIXTURES_DIR / "input_img_2x224x224x3_nhwc.npy"),
        logits=np.load(FIXTURES_DIR / "mbv2_ca_w0.5_logits.npy"),
    )


def _build(weights):
    from keras_coordatt.applications import MobileNetV2CA

    return MobileNetV2CA(alpha=0.5, weights=weights, classifier_activation=None)


def _tiny_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


# ------------------------------------------------------------------------------------------
# success and caching


def test_download_convert_cache_and_reuse(server, cache, fixture_bytes, expected, preset_factory,
                                          monkeypatch):
    """End to end through the builder; the second load reads the converted cache only."""
    monkeypatch.setenv(WEIGHTS_URL_ENV, server.url + "/")  # the mirror layout
    preset = preset_factory(
        "test_mbv2_ca_050", MIRROR_PATH, fixture_bytes, url=None, repo=MIRROR_REPO,
        commit=MIRROR_COMMIT, path=FIXTURE_NAME, imagenet_default=True,
    )
    assert git_blob_id(CHECKPOINTS_DIR / FIXTURE_NAME) == preset.git_blob

    model = _build("test_mbv2_ca_050")
    np.testing.assert_allclose(model.predict_on_batch(expected.images), expected.logits,
                               atol=1e-4)
    assert server.hits[MIRROR_PATH] == 1
    files = _cache_files(cache)
    checkpoint = f"keras_coordatt/mbv2_ca_w0.5-{preset.git_blob[:12]}.pth"
    assert checkpoint in files
    converted = [f for f in files if f.endswith(".weights.h5")]
    records = [f for f in files if f.endswith(".json")]
    assert len(files) == 3 and len(converted) == 1 and len(records) == 1
    assert not any(os.path.basename(f).startswith(".") for f in files)  # no temp files left
    record = json.loads((cache / records[0]).read_text())
    assert record["pin"] == preset.git_blob and record["preset"] == "test_mbv2_ca_050"

    # second load: "imagenet" resolves to the registered default; no download, no conversion
    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again instead of using the cache")

    monkeypatch.setattr(loading_module, "convert_state_dict", must_not_convert)
    monkeypatch.setattr(loading_module, "read_checkpoint", must_not_convert)
    again = _build("imagenet")
    np.testing.assert_allclose(again.predict_on_batch(expected.images), expected.logits,
                               atol=1e-4)
    assert server.hits[MIRROR_PATH] == 1
    assert _cache_files(cache) == files


def test_corrupt_caches_are_rebuilt_never_loaded(server, cache, fixture_bytes, expected,
                                                 preset_factory):
    preset = preset_factory("test_mbv2_ca_050_b", "/b/" + FIXTURE_NAME, fixture_bytes)
    model = _build(None)
    converted = load_preset_weights(model, preset, cache_dir=str(cache))
    assert server.hits["/b/" + FIXTURE_NAME] == 1

    # flip one byte of the converted file: its recorded sha256 no longer matches -> reconvert
    data = bytearray(open(converted, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(converted, "wb").write(bytes(data))
    fresh = _build(None)
    assert load_preset_weights(fresh, preset, cache_dir=str(cache)) == converted
    np.testing.assert_allclose(fresh.predict_on_batch(expected.images), expected.logits,
                               atol=1e-4)
    assert server.hits["/b/" + FIXTURE_NAME] == 1  # the verified download was reused

    # flip a byte of the cached download and delete the converted file: downloaded again
    checkpoint = cache / "keras_coordatt" / preset.cache_file_name
    raw = bytearray(checkpoint.read_bytes())
    raw[100] ^= 0x01
    checkpoint.write_bytes(bytes(raw))
    os.remove(converted)
    with pytest.warns(UserWarning, match="failed verification"):
        assert download_checkpoint(preset, cache_dir=str(cache)) == str(checkpoint)
    assert server.hits["/b/" + FIXTURE_NAME] == 2
    assert git_blob_id(checkpoint) == preset.git_blob


def test_checkpoint_that_does_not_fit_writes_no_converted_file(server, cache, preset_factory):
    # a readable, verified checkpoint of another network: the strict converter refuses it
    data = (CHECKPOINTS_DIR / "coordatt_c64_r32.pth").read_bytes()
    preset = preset_factory("test_misfit", "/misfit.pth", data)
    with pytest.raises(ValueError, match="does not match Keras model"):
        load_preset_weights(_build(None), preset)
    assert _cache_files(cache) == [f"keras_coordatt/{preset.cache_file_name}"]  # kept, verified


# ------------------------------------------------------------------------------------------
# failures leave nothing behind


def test_flipped_byte_is_refused_and_removed(server, cache, fixture_bytes, preset_factory):
    corrupt = bytearray(fixture_bytes)
    corrupt[len(corrupt) // 3] ^= 0x10
    preset = preset_factory("test_flipped", "/flipped.pth", fixture_bytes, served=bytes(corrupt))
    with pytest.raises(ChecksumError) as info:
        _build("test_flipped")
    message = str(info.value)
    assert f"hash mismatch: expected git blob {preset.git_blob}, got " in message
    assert git_blob_id_of(bytes(corrupt)) in message
    assert "the download may be corrupt, the file was removed" in message
    assert _cache_files(cache) == []


def test_truncated_file_is_refused_and_removed(server, cache, fixture_bytes, preset_factory):
    preset = preset_factory("test_truncated", "/truncated.pth", fixture_bytes,
                            served=fixture_bytes[: len(fixture_bytes) // 2])
    with pytest.raises(ChecksumError, match="hash mismatch: expected git blob .*file was removed"):
        download_checkpoint(preset)  # default cache dir: $KERAS_HOME
    assert _cache_files(cache) == []


def test_short_read_is_a_download_error(server, cache, fixture_bytes, preset_factory):
    # the server promises the whole file and closes the connection half way
    preset = preset_factory(
        "test_short", "/short.pth", fixture_bytes,
        served=(fixture_bytes[:4096], len(fixture_bytes)),
    )
    with pytest.raises(DownloadError, match="Could not download weights 'test_short'"):
        download_checkpoint(preset, cache_dir=str(cache))
    assert _cache_files(cache) == []


def test_http_404_is_a_clear_error(server, cache, fixture_bytes, preset_factory):
    preset = preset_factory("test_404", "/present.pth", fixture_bytes,
                            url=server.url + "/missing.pth")
    with pytest.raises(DownloadError, match=r"test_404.*missing\.pth.*404.*Nothing was cached"):
        load_preset_weights(_tiny_model(), preset, cache_dir=str(cache))
    assert _cache_files(cache) == []
    assert server.hits["/missing.pth"] == 1


def test_connection_refused_is_a_clear_error(cache):
    preset = Preset(name="test_refused", family="mobilenet_v2", alpha=0.5,
                    url="http://127.0.0.1:9/none.pth", git_blob="1" * 40)
    with pytest.raises(DownloadError, match="Could not download weights 'test_refused'"):
        download_checkpoint(preset)
    assert _cache_files(cache) == []


def test_stale_partial_files_are_discarded_not_read(server, cache, fixture_bytes,
                                                    preset_factory):
    """Leftovers of a killed download (this version's and the older per-process names)."""
    preset = preset_factory("test_stale_part", "/stale.pth", fixture_bytes)
    datadir = cache / "keras_coordatt"
    datadir.mkdir()
    garbage = b"\x80\x02garbage that is no checkpoint" * 100
    (datadir / f".{preset.cache_file_name}.part").write_bytes(garbage)
    (datadir / f".{preset.cache_file_name}.0123456789abcdef.part").write_bytes(garbage)
    path = download_checkpoint(preset)
    assert path == str(datadir / preset.cache_file_name)
    assert git_blob_id(path) == preset.git_blob
    assert _cache_files(cache) == [f"keras_coordatt/{preset.cache_file_name}"]


def test_concurrent_downloads_of_one_file_fetch_it_once(server, cache, fixture_bytes,
                                                        preset_factory):
    """The partial file is locked: a second download waits, then reuses the verified file."""
    preset = preset_factory("test_concurrent", "/concurrent.pth", fixture_bytes)
    results, errors = [], []

    def fetch():
        try:
            results.append(download_checkpoint(preset))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 3
    assert len(set(results)) == 1 and git_blob_id(results[0]) == preset.git_blob
    assert server.hits["/concurrent.pth"] == 1
    assert _cache_files(cache) == [f"keras_coordatt/{preset.cache_file_name}"]


_KILLED_DOWNLOAD = """
import sys
from keras_coordatt.weights import Preset, download_checkpoint
preset = Preset(name="test_killed", family="mobilenet_v2", alpha=0.5, url=sys.argv[1],
                git_blob=sys.argv[2])
download_checkpoint(preset, cache_dir=sys.argv[3])
raise SystemExit("the download finished although the server stalls")
"""


def test_killed_download_is_discarded_by_the_next_one(server, cache, fixture_bytes, tmp_path):
    """SIGKILL a process mid-transfer from a stalling server; the next download starts clean."""
    stall = threading.Event()
    half = len(fixture_bytes) // 2
    server.routes["/w.pth"] = (fixture_bytes[:half], len(fixture_bytes), stall)
    blob = git_blob_id_of(fixture_bytes)
    env = dict(os.environ, KERAS_BACKEND="numpy",  # the fastest keras import
               KERAS_HOME=str(tmp_path / "child_home"),  # where keras writes its keras.json
               PYTHONPATH=os.pathsep.join([str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "child.log"
    with log.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DOWNLOAD, server.url + "/w.pth", blob, str(cache)],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    datadir = cache / "keras_coordatt"
    preset = Preset(name="test_killed", family="mobilenet_v2", alpha=0.5,
                    url=server.url + "/w.pth", git_blob=blob)
    part = datadir / f".{preset.cache_file_name}.part"
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= half - (1 << 16)):  # buffered
            assert child.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the child never wrote its partial file"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        stall.set()
    assert child.returncode == -signal.SIGKILL
    assert _cache_files(cache) == [f"keras_coordatt/.{preset.cache_file_name}.part"]

    server.routes["/w.pth"] = fixture_bytes  # the server is fast again
    path = download_checkpoint(preset, cache_dir=str(cache))
    assert git_blob_id(path) == blob
    assert _cache_files(cache) == [f"keras_coordatt/{preset.cache_file_name}"]


# ------------------------------------------------------------------------------------------
# hostile checkpoints


class _Payload:
    """Unpickling this runs ``exec``, which creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _hostile_zip(marker) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state_dict": _Payload(marker)}))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return buffer.getvalue()


def _hostile_legacy(marker) -> bytes:
    header = [0x1950A86A20F9469CFC6C, 1001,
              {"protocol_version": 1001, "little_endian": True,
               "type_sizes": {"short": 2, "int": 4, "long": 4}}]
    parts = [pickle.dumps(item, protocol=2) for item in header]
    parts.append(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    parts.append(pickle.dumps([], protocol=2))
    return b"".join(parts)


def test_payload_is_live(tmp_path):
    """Sanity check of the test itself: plain pickle would run the payload."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("make", [_hostile_zip, _hostile_legacy], ids=["zip", "legacy"])
def test_hostile_checkpoint_is_refused(server, cache, tmp_path, preset_factory, make):
    marker = tmp_path / "marker"
    data = make(marker)
    preset = preset_factory(f"test_hostile_{make.__name__}", "/hostile.pth", data)
    with pytest.raises(UnsafeCheckpointError):
        load_preset_weights(_tiny_model(), preset)
    assert not marker.exists()
    assert server.hits["/hostile.pth"] == 1  # it was downloaded and verified, then refused
    assert _cache_files(cache) == []
