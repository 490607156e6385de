"""What every split policy is, and the simplest one.

`SplitPolicy` is what the agent asks for each frame's split (`choose`, or `plan` over
the timeline of the edge and the uplink) and tells of every finished frame (`observe`,
with a `FrameOutcome`). `FixedPolicy` always answers the same split; the adaptive
policy, which predicts, is in scheduler/policy.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from scheduler.paths import PathChoice, Timeline


@dataclass
class FrameOutcome:
    """What the agent learned from one finished frame."""

    frame_id: int
    split: int
    where: str  # "cloud" or "local"
    ok: bool
    head_ms: float = 0.0
    wire_bytes: int = 0
    rpc_ms: float | None = None  # send -> response, as the agent saw it
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    server_total_ms: float | None = None
    server_queued: int | None = None
    extra: dict = field(default_factory=dict)
    #: the frame's hedge fired: reported when it fires (no rpc_ms: nothing crossed yet), and
    #: again, for the link's sake only, if its answer comes
    hedged: bool = False
    #: how long after the frame's hedge time its answer came (0: in time; hedged or not: without
    #: a hedge the local run could not have won)
    late_ms: float = 0.0
    at: float | None = None  # when (the agent's clock, s): what scheduler.risk counts in its window
    #: sent as k = 0 beside its own local run (a race): its hedge firing is news of a stall for
    #: the planner, not a hit; its answer counts by how late it came, as a plain late answer's
    raced: bool = False
    #: a hedged raced frame whose answer will never come (its stream ended, or it was forgotten):
    #: that counts as the hit its hedge did not
    lost: bool = False


class SplitPolicy(Protocol):
    name: str

    def choose(self, candidates: list[int]) -> int: ...

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Timeline,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice: ...

    def observe(self, outcome: FrameOutcome) -> None: ...


class FixedPolicy:
    """Always the same split."""

    name = "fixed"

    def __init__(self, split: int):
        self.split = split

    def choose(self, candidates: list[int]) -> int:
        return self.split

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Timeline,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice:
        """Always the fixed split (the benchmark's fixed splits must stay fixed); books nothing,
        it has no profiles to predict with."""
        return PathChoice(frame_id, self.split, reason=f"fixed split {self.split}")

    def observe(self, outcome: FrameOutcome) -> None:
        pass

    def describe(self) -> str:
        return f"fixed split {self.split}"


def may_offload(policy: SplitPolicy, K: int) -> bool:
    """Whether `policy` may send a frame to a server: all but a fixed policy at k = K (the agent
    then asks no server anything and needs no TLS settings: edge_node/config.py)."""
    return plans_paths(policy) or getattr(policy, "split", None) != K


def offload_splits(policy: SplitPolicy, splits: list[int], K: int) -> list[int]:
    """The splits `policy` may send to a server, of the bundle's `splits`: a fixed policy's own
    (none at k = K), an adaptive one's every split but K."""
    if plans_paths(policy):
        return [k for k in splits if k != K]
    split = getattr(policy, "split", None)
    return [split] if isinstance(split, int) and split != K else []


def plans_paths(policy: SplitPolicy) -> bool:
    """Whether the policy predicts (an adaptive one): the agent then plans each frame's path, and
    frames may be in flight on the link while the next runs on the edge, also in latency mode."""
    return hasattr(policy, "link")
