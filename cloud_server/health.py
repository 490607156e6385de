"""grpc.health.v1 whose `Watch` streams end when the server shuts down.

The stock HealthServicer keeps a `Watch` open until the client cancels it: it sends
NOT_SERVING on `enter_graceful_shutdown()` and then waits. The gRPC server's graceful
stop waits for every open call, so one watching load balancer made every shutdown take
the full grace period. `end_watches()` ends each open Watch with status OK right after
its NOT_SERVING message (a watcher sees the server leave, then the stream end), and a
Watch started during shutdown gets NOT_SERVING and ends at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health

log = logging.getLogger(__name__)


class _EndOnce:
    """The server's send callback for one Watch; `None` (end the call) goes through once only.

    Both `end_watches()` and the call's own close callback end the call: the second end
    must not send a second status.
    """

    def __init__(self, send: Callable[[Any], None]):
        self._send = send
        self._ended = False
        self._lock = threading.Lock()

    def __call__(self, response: Any) -> None:
        with self._lock:
            if self._ended:
                return
            if response is None:
                self._ended = True
        # outside the lock: sending waits for the client, ending must not wait behind it
        self._send(response)


class DrainingHealthServicer(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__()  # non-blocking Watch: the server passes send_response_callback
        self._watches: set[_EndOnce] = set()
        self._watches_lock = threading.Lock()
        self._ending = False

    def Watch(self, request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
        if send_response_callback is None:  # a blocking server: nothing to end early
            return super().Watch(request, context)
        watch = _EndOnce(send_response_callback)
        with self._watches_lock:
            ending = self._ending
            if not ending:
                self._watches.add(watch)
        context.add_callback(lambda: self._forget(watch))
        result = super().Watch(request, context, watch)  # sends the current status
        if ending:
            watch(None)
        return result

    def _forget(self, watch: _EndOnce) -> None:
        with self._watches_lock:
            self._watches.discard(watch)

    def end_watches(self) -> None:
        """End every open Watch (call after `enter_graceful_shutdown()`, which sent NOT_SERVING)."""
        with self._watches_lock:
            self._ending = True
            watches, self._watches = list(self._watches), set()
        for watch in watches:
            try:
                watch(None)
            except Exception:  # a call already gone: nothing to end, shutdown goes on
                log.debug("ending a health Watch failed", exc_info=True)
        if watches:
            log.info("ended %d health Watch stream(s)", len(watches))
