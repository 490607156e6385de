"""A frame sent to the cloud and waiting for its answer: what the ledger holds for it.

`Pending` is what `CloudPaths.offload` holds in the frame ledger and what a local re-run of
the frame needs (edge_node/cloud_paths.py, edge_node/edge_work.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from .hedge import HedgePlan
from .session_api import Stream
from .sources import Frame


@dataclass
class Pending:
    """An offloaded frame held in the ledger: as sent, and what its paths have done to it."""

    frame: Frame
    split: int
    x: np.ndarray  # preprocessed input, kept for a local re-run
    head_ms: float
    preprocess_ms: float
    wire_bytes: int
    sent: float  # clock()
    deadline: float  # the hedge time (clock()); hedge = off: sent + frame_deadline_ms
    stream: Stream
    hedge: HedgePlan
    hedge_ms: float  # the hedge time as ms after capture, for the record
    server_ms: float  # the time the policy expects the server to take (queue + tail); 0 without a prediction
    #: set by the watchdog when the hedge fired (the local run is queued); read by the other paths
    hedged: bool = False
    #: run locally and sent (k = 0) at once: its local run was queued when it was sent (the plan's)
    raced: bool = False
    #: set by the cloud answer that won: a hedged local run still queued then does not run
    settled: threading.Event = field(default_factory=threading.Event)
    refused_by: str = ""  # the replica whose error answer sent it here (its local record names it)

    @property
    def local_queued(self) -> bool:
        """Its local run is queued (hedged or raced): no other path may queue another."""
        return self.hedged or self.raced
