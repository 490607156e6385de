"""Warnings about refused calls, at most one line per client per interval, with a count.

A client that keeps retrying with a wrong token (or a hostile one that floods) would
otherwise write one WARNING per call: 300 refusals, 300 lines, and a full disk on a
drone's SD card. The first refusal from a client is logged at once; further ones in the
same interval are counted and reported in one line when the interval is over (on the next
refusal from anyone after that, or on `flush()`).

The set of clients tracked is bounded: past `max_clients`, new ones share one entry, so
forged source addresses cannot grow memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: seconds between two lines about the same client
DEFAULT_INTERVAL_S = 60.0
DEFAULT_MAX_CLIENTS = 256
OTHER_CLIENTS = "other clients"


@dataclass
class _Window:
    start: float
    what: str
    suppressed: int = 0


class RefusalLog:
    """`note(client, what)` for every refused call; logs WARNINGs at a bounded rate."""

    def __init__(self, logger: logging.Logger, interval_s: float = DEFAULT_INTERVAL_S,
                 max_clients: int = DEFAULT_MAX_CLIENTS, clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self.interval_s = interval_s
        self.max_clients = max_clients
        self._clock = clock
        # oldest window first: windows are opened in clock order, so expired ones are at the front
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, client: str, what: str) -> None:
        now = self._clock()
        with self._lock:
            self._report_expired(now)
            window = self._windows.get(client)
            if window is None and len(self._windows) >= self.max_clients:
                client = OTHER_CLIENTS
                window = self._windows.get(client)
            if window is not None:
                window.suppressed += 1
                window.what = what
                return
            self._windows[client] = _Window(now, what)
        self._log.warning("refused a call from %s: %s (more from this client are counted and reported "
                          "every %g s)", client, what, self.interval_s)

    def flush(self) -> None:
        """Report every count still pending (on shutdown)."""
        with self._lock:
            self._report_expired(float("inf"))

    def _report_expired(self, now: float) -> None:
        while self._windows:
            client, window = next(iter(self._windows.items()))
            if now - window.start < self.interval_s:
                return
            del self._windows[client]
            if window.suppressed:
                self._log.warning("refused %d more calls from %s in %g s (last: %s)",
                                  window.suppressed, client, self.interval_s, window.what)


def client_of(peer: str) -> str:
    """The host of a gRPC peer string ('ipv4:10.0.0.5:41234' -> 'ipv4:10.0.0.5'), so that a
    client reconnecting from a new port counts as the same client."""
    head, sep, port = peer.rpartition(":")
    if sep and port.isdigit() and head not in ("ipv4", "ipv6", "unix", ""):
        return head
    return peer
