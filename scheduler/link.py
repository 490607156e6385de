"""Link and load estimation from live traffic and probes.

Each answered frame gives one sample: the time from sending to the answer,
minus the time the server says it spent, is RTT + bytes / bandwidth. The RTT is
tracked as a windowed minimum of small exchanges (probes and the smallest
frames), the bandwidth from each frame as bytes / (transfer - RTT). Both are
smoothed with an EWMA; the estimate the scheduler uses can be the EWMA or a
pessimistic percentile of recent samples (a low bandwidth, a high RTT), which
matters on cellular links whose rate swings from second to second.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

#: payloads below this many bytes are treated as RTT samples (transfer time negligible)
SMALL_BYTES = 2048
MIN_TRANSFER_MS = 0.05


@dataclass(frozen=True)
class LinkState:
    bandwidth_bps: float
    rtt_ms: float
    server_queue_ms: float = 0.0
    samples: int = 0
    forced: bool = False

    def __str__(self) -> str:
        return f"{self.bandwidth_bps / 1e6:.2f} Mbps, RTT {self.rtt_ms:.1f} ms, queue {self.server_queue_ms:.1f} ms"


class LinkEstimator:
    """Thread-safe estimates of uplink bandwidth, RTT and the server's queue."""

    def __init__(self, alpha: float = 0.3, window: int = 20, percentile: float | None = 20.0,
                 initial_bandwidth_bps: float = 10e6, initial_rtt_ms: float = 50.0):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        self.alpha = alpha
        self.percentile = percentile
        self._bw = initial_bandwidth_bps
        self._rtt = initial_rtt_ms
        self._queue = 0.0
        self._bw_samples: deque[float] = deque(maxlen=window)
        self._rtt_samples: deque[float] = deque(maxlen=window)
        self._n = 0
        self._forced: tuple[float | None, float | None] = (None, None)
        self._lock = threading.Lock()
        self.last_traffic = float("-inf")  # never: the first frame triggers a probe

    def observe_rtt(self, rtt_ms: float) -> None:
        """A small exchange (a probe, a tiny frame): its time is the round trip."""
        with self._lock:
            self._rtt_samples.append(rtt_ms)
            self._rtt = min(self._rtt_samples)  # the least-queued recent round trip
            self.last_traffic = time.monotonic()

    def observe_transfer(self, wire_bytes: int, rpc_ms: float, server_ms: float = 0.0, server_queue_ms: float | None = None) -> None:
        """One answered frame: `rpc_ms` from send to answer, `server_ms` spent inside the server."""
        transfer = max(MIN_TRANSFER_MS, rpc_ms - server_ms)
        if wire_bytes < SMALL_BYTES:
            self.observe_rtt(transfer)
        with self._lock:
            if server_queue_ms is not None:
                self._queue = (1 - self.alpha) * self._queue + self.alpha * server_queue_ms
            if wire_bytes >= SMALL_BYTES:
                self._add_bandwidth(self._wire_rate(wire_bytes, transfer))
            self.last_traffic = time.monotonic()

    def observe_probe(self, wire_bytes: int, rpc_ms: float, server_ms: float = 0.0) -> None:
        """A bulk probe, sent because no frame crossed the link for a while: what was learnt before
        is stale, so the bandwidth estimate restarts from this measurement. Without the restart an
        agent that ran all-edge while the link was bad needed many probes (seconds apart) before
        the pessimistic percentile let it offload again once the link recovered."""
        transfer = max(MIN_TRANSFER_MS, rpc_ms - server_ms)
        with self._lock:
            self._add_bandwidth(self._wire_rate(wire_bytes, transfer), restart=True)
            self.last_traffic = time.monotonic()

    def observe_bandwidth(self, bandwidth_bps: float) -> None:
        """A direct bandwidth sample (a bulk probe, a replayed trace)."""
        with self._lock:
            self._add_bandwidth(bandwidth_bps)

    def _wire_rate(self, wire_bytes: int, transfer_ms: float) -> float:
        """bit/s of a transfer that took `transfer_ms` including one round trip (under the lock)."""
        on_wire = max(MIN_TRANSFER_MS, transfer_ms - self._rtt)
        return wire_bytes * 8 / (on_wire / 1000)

    def _add_bandwidth(self, sample_bps: float, restart: bool = False) -> None:
        """Feed the EWMA and the percentile window (under the lock); `restart` forgets both first."""
        if restart:
            self._bw_samples.clear()
        self._bw_samples.append(sample_bps)
        fresh = restart or self._n == 0
        self._bw = sample_bps if fresh else (1 - self.alpha) * self._bw + self.alpha * sample_bps
        self._n += 1

    def force(self, bandwidth_bps: float | None = None, rtt_ms: float | None = None) -> None:
        """Pin the estimate (benchmarks, tests, an operator who knows the link); None releases it."""
        with self._lock:
            self._forced = (bandwidth_bps, rtt_ms)

    def idle_s(self) -> float:
        return time.monotonic() - self.last_traffic

    def estimate(self) -> LinkState:
        with self._lock:
            bw, rtt = self._bw, self._rtt
            if self.percentile is not None and len(self._bw_samples) >= 3:
                # pessimistic: a low percentile of recent samples, never above the EWMA
                bw = min(bw, float(np.percentile(self._bw_samples, self.percentile)))
            fb, fr = self._forced
            return LinkState(
                bandwidth_bps=fb if fb is not None else bw,
                rtt_ms=fr if fr is not None else rtt,
                server_queue_ms=self._queue,
                samples=self._n,
                forced=fb is not None or fr is not None,
            )
