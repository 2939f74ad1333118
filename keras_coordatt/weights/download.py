"""Downloading upstream checkpoints into the Keras cache, verified against their content pin.

Files go to ``<cache_dir>/keras_coordatt/`` where ``cache_dir`` is the argument, else
``$KERAS_HOME`` (read at call time), else ``~/.keras`` (``/tmp/.keras`` when that is not
writable, as ``keras.utils.get_file`` does). A download first lands in the hidden partial file
``.<final name>.part`` in that directory, is verified, and only then renamed (``os.replace``) to
its final, content-addressed name ``<stem>-<pin[:12]><suffix>``; a file that fails verification
is deleted, so the cache never holds an unverified checkpoint under a final name. The partial
file is held under an exclusive lock (``fcntl.flock`` where available) while a process writes
it; the next download of the same file takes the lock, so a partial file left by a killed
process is emptied and overwritten (and older ``.<final name>.<id>.part`` leftovers deleted),
never read. Concurrent downloads of one file wait for each other and reuse the verified result.

The download URL is the preset's upstream URL, or ``{base_url}/{repo}/{commit}/{path}`` when
a base URL is given as an argument or in the environment variable
``KERAS_COORDATT_WEIGHTS_URL`` (a mirror laid out like ``raw.githubusercontent.com``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator

try:  # POSIX: the partial file is locked while it is written
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the partial file is still replaced
    fcntl = None  # type: ignore[assignment]

from keras_coordatt.weights.registry import Preset, get_preset

#: Environment variable holding a mirror's base URL.
WEIGHTS_URL_ENV = "KERAS_COORDATT_WEIGHTS_URL"
#: Sub-directory of the Keras cache directory used for checkpoints and converted weights.
CACHE_SUBDIR = "keras_coordatt"

_CHUNK = 1 << 20
_LFS_MAGIC = b"version https://git-lfs.github.com/spec/"


class ChecksumError(ValueError):
    """A file's content does not match its pin (git blob id or SHA-256)."""


class DownloadError(OSError):
    """A checkpoint could not be fetched (HTTP error, connection refused, short read)."""


def git_blob_id(path: str | os.PathLike) -> str:
    """Git blob id of a file: SHA-1 of ``b"blob <size>\\0" + content`` (``git hash-object``)."""
    size = os.path.getsize(path)
    digest = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(
    path: str | os.PathLike, *, git_blob: str | None = None, sha256: str | None = None
) -> None:
    """Raises ChecksumError unless ``path`` matches every pin given (at least one needed)."""
    if git_blob is None and sha256 is None:
        raise ValueError("verify_file needs git_blob and/or sha256.")
    checks = []
    if git_blob is not None:
        checks.append(("git blob", git_blob.lower(), git_blob_id(path)))
    if sha256 is not None:
        checks.append(("sha256", sha256.lower(), sha256_file(path)))
    for kind, expected, actual in checks:
        if expected != actual:
            raise ChecksumError(
                f"hash mismatch: expected {kind} {expected}, got {actual} "
                f"({os.path.getsize(path)} bytes){_lfs_hint(path)}"
            )


def _lfs_hint(path: str | os.PathLike) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LFS_MAGIC))
    except OSError:
        return ""
    if head == _LFS_MAGIC:
        return (
            "; the server sent a Git LFS pointer, not the file: use a URL that resolves LFS "
            "objects (github.com/<repo>/raw/...) or a mirror"
        )
    return ""


def weights_cache_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """The directory holding downloaded and converted weights (created if needed)."""
    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    base = os.path.expanduser(os.fspath(cache_dir))
    with contextlib.suppress(OSError):
        os.makedirs(base, exist_ok=True)
    if not os.access(base, os.W_OK):  # same fallback as keras.utils.get_file
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    datadir = os.path.join(base, CACHE_SUBDIR)
    os.makedirs(datadir, exist_ok=True)
    return datadir


def resolve_base_url(base_url: str | None = None) -> str | None:
    """``base_url`` if given, else ``$KERAS_COORDATT_WEIGHTS_URL``, else None (upstream)."""
    if base_url:
        return base_url
    return os.environ.get(WEIGHTS_URL_ENV) or None


def cached_checkpoint_path(preset: Preset, cache_dir: str | os.PathLike | None = None) -> str:
    """Where the verified download of ``preset`` lives (whether or not it exists yet)."""
    return os.path.join(weights_cache_dir(cache_dir), preset.cache_file_name)


def remove_quietly(path: str | os.PathLike | None) -> None:
    """Deletes a file if it exists, ignoring errors."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.remove(path)


def partial_path(datadir: str, file_name: str) -> str:
    """The hidden partial file a download of ``file_name`` is written to."""
    return os.path.join(datadir, f".{file_name}.part")


def _open_locked(path: str) -> int | None:
    """Opens (creating) ``path`` and holds an exclusive lock on the file now at that path.

    Returns the open descriptor, or None where ``fcntl`` is missing (then nothing is held open,
    as Windows cannot rename an open file).
    """
    if fcntl is None:  # pragma: no cover - Windows
        remove_quietly(path)
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process downloads this file
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                os.ftruncate(fd, 0)  # what a killed download left is discarded
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder renamed or removed it meanwhile: lock the new one


@contextlib.contextmanager
def _exclusive_partial(datadir: str, file_name: str) -> Iterator[str]:
    """Yields the emptied partial file of ``file_name``, locked; removes it on exit.

    Whatever an earlier, killed download left there (or under the older per-process names
    ``.<name>.<id>.part``) is discarded before the caller writes.
    """
    part = partial_path(datadir, file_name)
    fd = _open_locked(part)
    try:
        pattern = f".{glob.escape(file_name)}.*.part"
        for stale in glob.glob(os.path.join(glob.escape(datadir), pattern)):
            remove_quietly(stale)
        yield part
    finally:
        with contextlib.suppress(OSError):
            if fd is None or os.fstat(fd).st_ino == os.stat(part).st_ino:
                os.remove(part)  # still ours: not renamed to its final name
        if fd is not None:
            os.close(fd)


def _verified_cache(final: str, preset: Preset) -> bool:
    """True if ``final`` holds ``preset``'s verified checkpoint; a corrupt copy is removed."""
    if not os.path.exists(final):
        return False
    try:
        verify_file(final, git_blob=preset.git_blob, sha256=preset.sha256)
        return True
    except ChecksumError as exc:
        remove_quietly(final)  # corrupted cache entry: fetch it again
        warnings.warn(
            f"Cached checkpoint {final} failed verification ({exc}); it was removed and "
            "will be downloaded again.",
            stacklevel=3,
        )
        return False


def download_checkpoint(
    preset: Preset | str,
    *,
    base_url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
) -> str:
    """Returns the local path of ``preset``'s checkpoint, downloading it if needed.

    The file is fetched with ``keras.utils.get_file`` (progress bar, Keras cache) and its
    content pin is verified before the path is returned; a cached copy is re-verified on
    every call. A mismatch deletes the file and raises :class:`ChecksumError`; a failed
    fetch raises :class:`DownloadError`, also leaving nothing in the cache.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    datadir = weights_cache_dir(cache_dir)
    final = os.path.join(datadir, preset.cache_file_name)
    if not force_download and _verified_cache(final, preset):
        return final

    import keras  # deferred: importing keras is slow

    url = preset.url_for(resolve_base_url(base_url))
    with _exclusive_partial(datadir, preset.cache_file_name) as part:
        if not force_download and _verified_cache(final, preset):
            return final  # another process fetched it while this one waited for the lock
        try:
            downloaded = keras.utils.get_file(
                fname=os.path.basename(part),
                origin=url,
                cache_dir=os.path.dirname(datadir),
                cache_subdir=CACHE_SUBDIR,
                force_download=True,
            )
        except Exception as exc:
            raise DownloadError(
                f"Could not download weights {preset.name!r} from {url}: {exc}. Nothing was "
                f"cached. To use a mirror, set ${WEIGHTS_URL_ENV} (files under "
                "<base>/<owner>/<repo>/<commit>/<path>)."
            ) from exc
        try:
            verify_file(downloaded, git_blob=preset.git_blob, sha256=preset.sha256)
        except ChecksumError as exc:
            raise ChecksumError(
                f"Weights {preset.name!r} from {url}: {exc}; the download may be corrupt, the "
                "file was removed."
            ) from None
        os.replace(downloaded, final)
        return final


__all__ = [
    "CACHE_SUBDIR",
    "WEIGHTS_URL_ENV",
    "ChecksumError",
    "DownloadError",
    "cached_checkpoint_path",
    "download_checkpoint",
    "git_blob_id",
    "partial_path",
    "resolve_base_url",
    "sha256_file",
    "verify_file",
    "weights_cache_dir",
]
