"""One worker for every local run: the whole model (k = K) and every fallback.

An edge device has one accelerator, and a full-model run takes long enough to
delay whatever thread it runs on. Running fallbacks on the gRPC receive thread
delayed every other frame's answer; running them on the deadline watchdog
delayed every other frame's deadline check. So those threads only `submit` a
job here and return at once; jobs run one at a time, in the order submitted.

A job that raises is logged and the worker goes on (jobs record their own
failures; this is the last resort). `close()` stops taking jobs; jobs still
queued are dropped - their frames stay unfinished in the ledger and are counted
as abandoned - so closing never waits behind a queue of full-model runs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class LocalExecutor:
    def __init__(self, name: str = "local-executor"):
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        # started by the first job: an agent built but never run leaves no thread behind
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue `job`; False (not queued) once closed."""
        with self._lock:
            if self._closed:
                return False
            if not self._thread.is_alive() and self._thread.ident is None:
                self._thread.start()
            self._jobs.put(job)
            return True

    def on_worker(self) -> bool:
        return threading.current_thread() is self._thread

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the job running now (queued jobs are dropped); wait up to `timeout_s` for it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)
        if self._thread.ident is not None and not self.on_worker():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("a local run is still going after %.1f s; closing anyway", timeout_s)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closed:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed job must not stop every later local run
                log.exception("local run failed")
