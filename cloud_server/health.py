"""grpc.health.v1 for the server: Check, Watch, and a shutdown that ends every Watch at once.

Written here instead of using grpc_health's HealthServicer for two reasons:

- That servicer sends Watch responses while holding its lock, and its on-close callback
  (run on gRPC's event thread) takes the same lock. A send that waits for gRPC's event
  thread, while that thread waits for the lock, deadlocks the whole server: seen when 30
  agents' client-side health checkers re-opened their Watch during a drain. Here the lock
  only guards the state; every send happens outside it.
- It keeps a Watch open until the client cancels it, so one watching load balancer made
  every shutdown take the full grace period. `end_watches()` ends each open Watch right
  after its NOT_SERVING message, and a Watch opened during shutdown gets NOT_SERVING and
  ends at once.

Watch is non-blocking (the server passes `send_response_callback`): a watcher holds no
thread, so thousands of agents' health checks cost no threads.

Lock order: `_lock` is a leaf; nothing is called while holding it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class _EndOnce:
    """The server's send callback for one Watch; the end (`None`) goes through once only.

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
        self._send(response)  # outside the lock: a send may wait for the client


class DrainingHealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, int] = {"": SERVING}
        self._watches: dict[str, set[_EndOnce]] = {}
        self._shutting_down = False  # set() is ignored from now on
        self._ending = False  # Watches end as soon as they have sent their status

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            status = self._status.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> None:
        service = request.service
        watch = _EndOnce(send_response_callback)
        with self._lock:
            status = self._status.get(service, SERVICE_UNKNOWN)
            ending = self._ending
            if not ending:
                self._watches.setdefault(service, set()).add(watch)
        context.add_callback(lambda: self._closed(service, watch))
        watch(health_pb2.HealthCheckResponse(status=status))
        if ending:
            watch(None)

    # the gRPC server hands Watch a callback instead of a thread (grpc_health does the same)
    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    Watch.experimental_thread_pool = None  # type: ignore[attr-defined]

    def _closed(self, service: str, watch: _EndOnce) -> None:
        with self._lock:
            watchers = self._watches.get(service)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:  # a name any client may send: kept, every one ever watched stayed
                    del self._watches[service]
        watch(None)

    def _notify(self, updates: list[tuple[str, int]]) -> None:
        """Send each service's new status to its watchers (outside the lock)."""
        for service, status in updates:
            with self._lock:
                watchers = list(self._watches.get(service, ()))
            for watch in watchers:
                try:
                    watch(health_pb2.HealthCheckResponse(status=status))
                except Exception:  # a call already gone
                    log.debug("a health Watch could not be sent its status", exc_info=True)

    def set(self, service: str, status: int) -> None:
        with self._lock:
            if self._shutting_down:
                return
            self._status[service] = status
        self._notify([(service, status)])

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; later `set()` calls are ignored."""
        with self._lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            services = list(self._status)
        self._notify([(s, NOT_SERVING) for s in services])

    def end_watches(self) -> None:
        """End every open Watch (call after `enter_graceful_shutdown()`, which sent NOT_SERVING)."""
        with self._lock:
            self._ending = True
            watches = [w for ws in self._watches.values() for w in ws]
            self._watches = {}
        for watch in watches:
            try:
                watch(None)
            except Exception:  # a call already gone: nothing to end, shutdown goes on
                log.debug("ending a health Watch failed", exc_info=True)
        if watches:
            log.info("ended %d health Watch stream(s)", len(watches))
