"""Holding back the messages native libraries print to stderr that nobody can act on.

TensorFlow 2.21 writes its start-up lines from C++ straight to file descriptor 2 before absl
logging is initialised (``TF_CPP_MIN_LOG_LEVEL`` does not reach them): the absl banner, INFO lines
(oneDNN, cudart), and on a machine without a GPU a ``cuInit`` error; LiteRT prints ``INFO:``
lines when an interpreter starts. Python's ``warnings`` / ``logging`` cannot filter them.
:func:`filtered_native_stderr` sends fd 2 to a temporary file while its block runs (Python's
own ``sys.stderr`` keeps writing to the console, live), then writes back every captured line
that is not one of those known messages: anything else a native library says still reaches
the user, after the block. Set ``KERAS_COORDATT_NATIVE_LOGS=1`` to see everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: Lines held back: absl's pre-init banner, absl INFO lines (and the continuation of the CPU
#: feature one), the CUDA probe's warnings / errors on machines without a GPU, LiteRT's INFO
#: lines.
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
    r"|[WE]\d{4} [\d:.]+\s+\d+ (?:cuda_\w+|cudart_stub|gpu_\w+)\.cc:\d+\] "
    r"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite)"
    # the second line of cpu_feature_guard's INFO message
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler"
)


def is_noise(line: str) -> bool:
    """True for a line :func:`filtered_native_stderr` holds back."""
    return NOISE.match(line) is not None


def _console_stream(fd: int):
    """A text stream on a copy of ``fd``, or None when ``sys.stderr`` is not fd 2 (e.g. under
    pytest's capture, where Python's writes never reach fd 2 anyway)."""
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                     errors="backslashreplace")


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Runs the block with fd 2 captured; writes back the captured lines that are not
    :data:`NOISE` when it ends (also when it raises)."""
    if os.environ.get("KERAS_COORDATT_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no fd 2 (embedded interpreters)
        yield
        return
    previous = sys.stderr
    console = _console_stream(saved)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        if console is not None:
            sys.stderr = console
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            sys.stderr = previous
            os.dup2(saved, 2)
            os.close(saved)
            if console is not None:
                console.close()
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = "".join(line for line in text.splitlines(True) if not is_noise(line))
            if kept:
                previous.write(kept)
                previous.flush()
