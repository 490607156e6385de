"""Split policies: given what the agent knows now, which split should the next frame use?

The agent asks `choose()` once per frame and reports every finished frame to
`observe()`. A policy only picks among `candidates` (splits whose heads are
loaded and warm on the agent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


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


class SplitPolicy(Protocol):
    name: str

    def choose(self, candidates: list[int]) -> int: ...

    def observe(self, outcome: FrameOutcome) -> None: ...


class FixedPolicy:
    """Always the same split."""

    name = "fixed"

    def __init__(self, split: int):
        self.split = split

    def choose(self, candidates: list[int]) -> int:
        return self.split

    def observe(self, outcome: FrameOutcome) -> None:
        pass

    def describe(self) -> str:
        return f"fixed split {self.split}"
