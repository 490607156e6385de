"""Who an agent is, and how many Infer streams and bytes in flight the server lets in.

Infer streams are limited here, by the servicer, and not by gRPC's
`maximum_concurrent_rpcs`: that limit counts every RPC, so a few dozen streams (idle or
hostile) used to lock out health checks, Describe and Probe, and a load balancer or
Kubernetes saw a busy server as a dead one. Here only Infer streams count: in all
(`max_streams`) and per agent (`max_streams_per_agent`); a stream over either ends at once
with RESOURCE_EXHAUSTED and a message saying which.

`InflightBytes` bounds the request bytes accepted but not yet answered, over all streams
(`max_inflight_mb`): a stream reader waits for room before it takes the next frame, so
HTTP/2 flow control holds the sender back instead of the server's memory growing.

Lock order: each object has one lock of its own and calls nothing while holding it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import grpc

from splitpoint.errors import RequestError
from splitpoint.wire_metadata import AGENT_METADATA_KEY


def agent_identity(context: grpc.ServicerContext) -> str:
    """The agent behind a call: its client certificate's common name under mutual TLS, else
    the name it sends in `splitpoint-agent` metadata, else its connection (peer address)."""
    try:
        auth = context.auth_context()
    except Exception:  # not every context has one (tests' fakes)
        auth = {}
    names = auth.get("x509_common_name") or []
    if names:
        return "cn:" + names[0].decode(errors="replace")
    for key, value in context.invocation_metadata() or ():
        if key == AGENT_METADATA_KEY and value:
            return "name:" + str(value)[:128]
    return "peer:" + context.peer()


class StreamRefused(RequestError):
    """An Infer stream over `limit` ("max_streams" or "max_streams_per_agent"): RESOURCE_EXHAUSTED."""

    def __init__(self, limit: str, message: str):
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        self.limit = limit


class StreamAdmission:
    """Counts open Infer streams, in all and per agent identity."""

    def __init__(self, max_streams: int, max_per_agent: int):
        self.max_streams = max_streams
        self.max_per_agent = max_per_agent
        self._open: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def admit(self, agent: str) -> None:
        """Count one more stream of `agent`, or raise StreamRefused naming the limit."""
        with self._lock:
            if self._total >= self.max_streams:
                raise StreamRefused("max_streams", f"server has {self._total} Infer streams open (max_streams); "
                                                   "run frames locally or use another replica")
            if self._open[agent] >= self.max_per_agent:
                raise StreamRefused("max_streams_per_agent", f"this agent already has {self._open[agent]} Infer "
                                                             "streams open (max_streams_per_agent)")
            self._open[agent] += 1
            self._total += 1

    def release(self, agent: str) -> None:
        with self._lock:
            self._open[agent] -= 1
            if self._open[agent] <= 0:
                del self._open[agent]
            self._total -= 1

    @property
    def open_streams(self) -> int:
        with self._lock:
            return self._total


class InflightBytes:
    """A budget of request bytes accepted and not yet answered, shared by every stream."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, timeout: float) -> bool:
        """Take n bytes, waiting up to `timeout` for room. A message bigger than the whole
        budget is let in alone (when nothing else is in flight), so it is never stuck."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._used > 0 and self._used + n > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self._used += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used
