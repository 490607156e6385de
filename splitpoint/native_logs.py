"""Native libraries' own logging (TensorFlow, absl, LiteRT/XNNPACK, OpenCV): quiet unless asked.

These libraries write straight to file descriptor 2 from C++, past Python's
logging, and a user reads their INFO chatter as errors. What each needs:

- TensorFlow's C++ logging honours TF_CPP_MIN_LOG_LEVEL (set before it loads).
- absl, before absl::InitializeLog() is called, ignores every threshold: the
  "All log messages before absl::InitializeLog()" warning and TensorFlow's
  oneDNN notice print while `import tensorflow` loads its libraries, once for
  each of the two that carry their own copy of absl and of that notice
  (libtensorflow_framework.so.2 and _pywrap_profiler_plugin.so): hence twice.
- LiteRT/TFLite's "Created TensorFlow Lite XNNPACK delegate" comes from its
  minimal logger, whose threshold has no environment variable and no Python
  API, when the first interpreter of a process is built.
- OpenCV honours OPENCV_LOG_LEVEL (read when it first logs).

So: environment variables where they work, and `filtered_stderr()` - fd 2
captured to a temp file around the one call that prints, known chatter lines
dropped, everything else replayed - where nothing else does. Numerics stay as
they are: TF_ENABLE_ONEDNN_OPTS is never touched.

`splitpoint -v` (or SPLITPOINT_NATIVE_LOGS=1) lets all of it through. The
switch lives in os.environ so child processes (the demo's server, partition
workers, benchmark workers) inherit it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: "1": native libraries print what they like (set by `splitpoint -v`; inherited by children)
VERBOSE_ENV = "SPLITPOINT_NATIVE_LOGS"

#: set only when absent, so a user's own setting wins; all of them are about logging only
_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow C++: errors only
    "OPENCV_LOG_LEVEL": "ERROR",  # OpenCV: no "[ WARN:0@...] global cap_v4l.cpp" before our own error
    # gRPC core: no INFO line per failed TLS handshake ("ssl_transport_security.cc ... Handshake
    # failed"): any peer sending junk to the port wrote one each, unthrottled, to the journal
    "GRPC_VERBOSITY": "ERROR",
}

#: lines known to be chatter; anything else captured is replayed
CHATTER = re.compile(
    r"^(?:"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "  # absl INFO lines (oneDNN notice, CPU feature guard)
    r"|To enable the following instructions: .*rebuild TensorFlow"  # the CPU feature guard's second line
    r"|INFO: (?:Created|Initialized) TensorFlow Lite"  # TFLite minimal logger: XNNPACK delegate, runtime
    r")"
)

_lock = threading.RLock()
_depth = 0


def verbose() -> bool:
    """True when native libraries may print (splitpoint -v, or SPLITPOINT_NATIVE_LOGS=1)."""
    return os.environ.get(VERBOSE_ENV, "") == "1"


def configure(verbose_logs: bool) -> None:
    """The CLI's switch, before any native library loads. Never turns a verbose parent's child quiet."""
    if verbose_logs:
        os.environ[VERBOSE_ENV] = "1"
    quiet_environment()


def quiet_environment() -> None:
    """Put the quiet settings into os.environ (unless verbose): this process and its children use them."""
    if verbose():
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process that carries this process's choice (quiet or verbose)."""
    out = dict(os.environ if env is None else env)
    if verbose():
        out[VERBOSE_ENV] = "1"
    else:
        for key, value in _QUIET_ENV.items():
            out.setdefault(key, value)
    return out


@contextmanager
def filtered_stderr(taken: re.Pattern[str] | None = None, into: list[str] | None = None) -> Iterator[None]:
    """Around one native call that prints: drop its known chatter from fd 2, replay the rest.

    Everything is replayed if the call raises, so a failure keeps its native
    explanation. Other threads' stderr output during the call is delayed, not
    lost. Nested uses (interpreter creation importing TensorFlow) capture once.
    Lines matching `taken` are not replayed but appended to `into`: the caller says
    what they meant in its own one-line error (gRPC's "Failed to add port ... Address
    already in use" before "listen = ...: cannot bind").
    """
    global _depth
    if verbose():
        yield
        return
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2 (closed, or embedded): run as is
            saved = -1
        if saved < 0:
            yield
            return
        _depth = 1
        raised = True
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
                raised = False
            finally:
                _depth = 0
                try:
                    sys.stderr.flush()  # Python-level writes made meanwhile belong to the capture too
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                _replay(capture.read(), everything=raised, taken=taken, into=into)


def _replay(data: bytes, everything: bool, taken: re.Pattern[str] | None = None, into: list[str] | None = None) -> None:
    if not data:
        return
    if not everything:
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        if taken is not None:
            mine = [line for line in lines if taken.search(line)]
            if into is not None:
                into.extend(line.rstrip("\n") for line in mine)
            lines = [line for line in lines if line not in mine]
        kept = [line for line in lines if not CHATTER.match(line)]
        if len(kept) < len(lines):
            log.debug("dropped %d lines of native library chatter (splitpoint -v shows them)", len(lines) - len(kept))
        data = "".join(kept).encode("utf-8")
    view = memoryview(data)
    while view:
        try:
            written = os.write(2, view)
        except OSError:
            return  # stderr gone: nothing to report to
        view = view[written:]
