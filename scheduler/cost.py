"""The cost model: predicted end-to-end latency and edge energy of every split.

For split k with uplink bandwidth B, round-trip time R and server queue Q:

    latency(k) = head(k) + bytes(k) / B + R + Q + tail(k)          (k = K: head(K) only)
    energy(k)  = P_head(k) * head(k) + P_tx(B) * bytes(k) / B + P_idle * (R + Q + tail(k))

head and tail come from measured profiles (median by default, or p95 for a
cautious planner); bytes(k) is the cut tensor plus the per-frame framing; P_head
from the edge profile's meter or a power table, P_tx from the radio model, P_idle
from the profile or the table. Times in ms and powers in W give energy in mJ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.link import LinkState
from scheduler.profiles import Profile
from splitpoint.errors import ConfigError

#: protobuf + gRPC framing per frame beyond the tensor data (measured: about 60-90 bytes)
FRAME_OVERHEAD_BYTES = 96


def wire_bytes(tensor_bytes: int) -> int:
    """Bytes one frame puts on the uplink: the cut tensor plus the per-frame framing."""
    return int(tensor_bytes) + FRAME_OVERHEAD_BYTES


def bits(nbytes: float) -> float:
    """Bits in `nbytes` bytes (the one place the planner, the bench and its bounds convert)."""
    return nbytes * 8.0


def transfer_ms(wire_bytes: int, bandwidth_bps: float) -> float:
    """Serialization time of `wire_bytes` (framing included) at `bandwidth_bps`, ms; inf on a dead link."""
    if bandwidth_bps <= 0:
        return float("inf")
    return bits(wire_bytes) / bandwidth_bps * 1000.0


@dataclass(frozen=True)
class Prediction:
    split: int
    latency_ms: float
    energy_mj: float | None
    head_ms: float
    transfer_ms: float
    rtt_ms: float
    queue_ms: float
    tail_ms: float
    wire_bytes: int

    def with_latency(self, latency_ms: float) -> Prediction:
        """This prediction with another latency: dataclasses.replace, built directly (the planner
        makes about 20 per frame, and replace's introspection cost 0.1 ms of them)."""
        return Prediction(self.split, latency_ms, self.energy_mj, self.head_ms, self.transfer_ms, self.rtt_ms,
                          self.queue_ms, self.tail_ms, self.wire_bytes)


@dataclass
class EnergyModel:
    """Where the watts come from. head_power(k) may raise ConfigError when a split has no figure."""

    head_power: Callable[[int], float]
    idle_w: float
    tx_watts: Callable[[float], float]  # bandwidth in bit/s -> radio power while sending, W
    source: str = ""

    def frame_mj(self, k: int, head_ms: float, transfer_ms: float = 0.0, bandwidth_bps: float = 0.0,
                 idle_ms: float = 0.0) -> float:
        """Edge energy of one frame: P_head(k) x head + P_tx(B) x transfer + P_idle x the waiting (mJ).

        The planner predicts with it and the bench measures with it, so the two cannot disagree."""
        energy = self.head_power(k) * head_ms + self.idle_w * idle_ms
        if transfer_ms > 0:
            energy += self.tx_watts(bandwidth_bps) * transfer_ms
        return energy


@dataclass
class CostModel:
    edge: Profile
    cloud: Profile
    energy: EnergyModel | None = None
    stat: str = "median_ms"
    num_layers: int = field(init=False)

    def __post_init__(self) -> None:
        if self.edge.bundle_digest != self.cloud.bundle_digest:
            raise ConfigError(
                "cloud profile", self.cloud.bundle_digest,
                f"was measured for another bundle than the edge profile ({self.edge.bundle_digest})",
            )
        self.num_layers = max(self.edge.splits)

    @property
    def splits(self) -> list[int]:
        """Splits both profiles cover."""
        return sorted(k for k in self.edge.splits if k == self.num_layers or k in self.cloud.splits)

    def predict(self, k: int, link: LinkState) -> Prediction:
        head = self.edge.latency_ms(k, self.stat)
        if k == self.num_layers:
            energy = None
            if self.energy is not None:
                energy = self.energy.frame_mj(k, head)
            return Prediction(k, head, energy, head, 0.0, 0.0, 0.0, 0.0, 0)
        wire = wire_bytes(self.edge.splits[k].wire_bytes)
        transfer = transfer_ms(wire, link.bandwidth_bps)
        tail = self.cloud.latency_ms(k, self.stat)
        latency = head + transfer + link.rtt_ms + link.server_queue_ms + tail
        energy = None
        if self.energy is not None:
            energy = self.energy.frame_mj(k, head, transfer, link.bandwidth_bps,
                                          link.rtt_ms + link.server_queue_ms + tail)
        return Prediction(k, latency, energy, head, transfer, link.rtt_ms, link.server_queue_ms, tail, wire)

    def predict_all(self, candidates: list[int], link: LinkState) -> list[Prediction]:
        return [self.predict(k, link) for k in candidates if k in self.edge.splits and (k == self.num_layers or k in self.cloud.splits)]
