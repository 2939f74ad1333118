"""The child process that runs the TFLite converter for ``export_tflite(isolate=True)``.

A converter crash (segmentation fault, abort) must end a child, never the caller. The child is
started on the first conversion and kept for the next ones, so each conversion does not import
TensorFlow again (about 4 s of CPU each). One that dies is reported for the conversion it was
running and replaced on the next call. Requests are request folders (see ``_convert_worker``),
one per line on the child's stdin; the child answers each with the status of
``_convert_worker.main`` on a pipe of its own, and writes the converter's output to the folder's
``converter.log``. On Windows (no ``pass_fds``) every conversion starts a new child.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: Conversions one child runs before it is replaced (bounds what the converter may keep).
CONVERSIONS_PER_CHILD = 32

_WORKER = Path(__file__).with_name("_convert_worker.py")

# Loads the worker from its file without putting keras_coordatt/export/ on sys.path (its
# tflite.py would shadow a module TensorFlow imports) and without importing keras_coordatt.
_LOAD_WORKER = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_convert_worker', sys.argv[1])\n"
    "worker = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(worker)\n"
)


def _environment() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}


def _convert_in_new_child(folder: Path) -> tuple[int, bool]:
    with open(folder / "converter.log", "w+b") as log:
        status = subprocess.run(
            [sys.executable, "-c", _LOAD_WORKER + "sys.exit(worker.main(sys.argv[2]))\n",
             str(_WORKER), str(folder)],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=_environment(), check=False,
        ).returncode
    return status, status < 0


class ConverterProcess:
    """A reusable converter child. ``run(folder)`` -> ``(status, died)``: the worker's exit
    status for that request, or, when the child died running it, the child's exit status
    (negative: the signal) and ``died=True``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._replies = None
        self._owner = os.getpid()
        self._runs = 0

    def run(self, folder: Path) -> tuple[int, bool]:
        if os.name == "nt":
            return _convert_in_new_child(folder)
        with self._lock:
            if not self._alive() or self._runs >= CONVERSIONS_PER_CHILD:
                self._start()
            self._runs += 1
            try:
                self._child.stdin.write(f"{folder}\n")
                self._child.stdin.flush()
                reply = self._replies.readline()
            except BrokenPipeError:
                reply = ""
            if reply.strip():
                return int(reply), False
            status = self._child.wait()
            self._forget()
            return status, True

    def _alive(self) -> bool:
        # A forked copy of this object must not share the parent's child.
        return (self._child is not None and self._owner == os.getpid()
                and self._child.poll() is None)

    def _start(self) -> None:
        self.stop()
        read_fd, write_fd = os.pipe()
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _LOAD_WORKER + "sys.exit(worker.serve(int(sys.argv[2])))\n",
                 str(_WORKER), str(write_fd)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_fd,), cwd=tempfile.gettempdir(), env=_environment(), text=True,
            )
        finally:
            os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r")
        self._owner, self._runs = os.getpid(), 0

    def _forget(self) -> None:
        if self._replies is not None:
            self._replies.close()
        self._child = self._replies = None

    def stop(self) -> None:
        """Ends the child (it exits when its stdin closes)."""
        if self._child is not None and self._owner == os.getpid():
            try:
                self._child.stdin.close()
                self._child.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._child.kill()
        self._forget()


CONVERTER = ConverterProcess()
atexit.register(CONVERTER.stop)
