"""Give freed memory back to the system after streams end.

A burst of big messages (or hostile clients) leaves glibc's heap holding the pages it
used even after every object is freed, so the server's RSS would stay at its peak long
after the load left. After streams end, a background thread (never a gRPC thread: the
call can take milliseconds on a large heap) asks glibc to return what it can with
malloc_trim(0), at most once per interval. Without glibc (musl, macOS) it does nothing,
and says so once at debug level.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def _glibc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    def __init__(self, interval_s: float = 2.0, trim: Callable[[], object] | None = None):
        self.interval_s = interval_s
        self._trim = trim or _glibc_trim()
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._trim is None:
            log.debug("malloc_trim is not available (not glibc): freed memory stays with the process")

    def start(self) -> MemoryTrimmer:
        if self._trim is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-trim", daemon=True)
            self._thread.start()
        return self

    def stream_ended(self) -> None:
        """Cheap: called on a gRPC thread; the trim happens on ours."""
        self._due.set()

    def _run(self) -> None:
        assert self._trim is not None
        while not self._stop.is_set():
            if self._due.wait(self.interval_s) and not self._stop.wait(self.interval_s):
                self._due.clear()  # streams that end while we trim ask again
                self._trim()

    def stop(self) -> None:
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(5)
