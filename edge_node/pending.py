"""A frame sent to the cloud and waiting for its answer: what the ledger holds for it.

`Pending` is what `CloudPaths.offload` holds in the frame ledger and what a local re-run of
the frame needs (edge_node/cloud_paths.py, edge_node/edge_work.py).

A hedged or raced frame also runs here while its answer may still come. When that local run
fails (the edge device raised), the frame keeps waiting for its answer: the cloud may still
answer it. Two threads then decide its end, the local run's and the one path that claimed
the frame from the ledger and gave up on its answer (a stream end, an error answer, the
answer horizon; at the agent's stop it is abandoned with no record, as every frame still
unanswered then, so that resume runs it again). Each tells the held frame what it knows under the frame's
own lock (`local_failed`, `left_to_local`) and learns what the other told it, so exactly one
of them ends the frame failed, with both reasons (`failed_both`); a cloud answer that comes
first is recorded (`where: "cloud"`, `local_error` naming the failed run).

Locks: `Pending._ends` is a leaf: nothing else is taken while it is held.
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
    #: the error of its hedge's or race's local run, which failed: it waits for its answer meanwhile
    local_error: str | None = None
    #: why no answer will come: set by the path that claimed it and left its end to that local run
    no_answer: str | None = None
    _ends: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the two above (a leaf)

    @property
    def local_queued(self) -> bool:
        """Its local run is queued (hedged or raced): no other path may queue another."""
        return self.hedged or self.raced

    def local_failed(self, error: str) -> str | None:
        """Its local run beside the cloud failed with `error`. None: the frame waits for its answer
        (whoever claims it ends it); else why no answer will come, and the caller ends it failed."""
        with self._ends:
            self.local_error = error
            return self.no_answer

    def left_to_local(self, reason: str) -> str | None:
        """The path that claimed it gives up on its answer (`reason`) and leaves its end to the local
        run queued beside it. None: that run has not failed (it ends the frame); else its error, and
        the caller ends the frame failed."""
        with self._ends:
            self.no_answer = reason
            return self.local_error


def failed_both(local_error: str, no_answer: str) -> str:
    """The failure record's error of a frame whose local run failed and whose answer never came."""
    return f"{local_error}; and no answer from the cloud: {no_answer}"
