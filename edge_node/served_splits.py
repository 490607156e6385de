"""Which splits the cloud does not serve: an adaptive agent plans without them.

A server started with `cloud --splits 3`, or a replica of the same model partitioned with
other `--splits`, refuses a frame at any other split (NOT_FOUND: `wire_metadata.is_split_not_served`).
An adaptive agent against such a server kept planning split 0 for all 200 frames: each was
refused, ran here, and backed the agent off, and the backoff, never reset by an answer, kept
every frame on the edge (the audit of session 40: "0 cloud, 200 local", where the same agent
with `--splits 3` sent all 200). A split learnt to be unserved - from the server's Describe at
start, or from a refusal - is left out of the plan for the rest of the run (restart the agent
once the servers serve it). With replicas that differ, one refusal leaves the split out for
all of them: a fleet that serves different splits is a deployment mistake the agent warns of.

Thread-safe: refusals arrive on gRPC receive threads, the plan reads on the capture thread; the
set is replaced whole under `_lock` (a leaf) and read without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable
from typing import Any

from splitpoint.bundle import split_ranges

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name


class ServedSplits:
    """The splits the cloud is known not to serve (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # writers only (a leaf)
        self.unserved: frozenset[int] = frozenset()

    def described(self, info: Any, offloaded: Collection[int]) -> None:
        """The server's Describe answer (None: not reached): of the splits the agent may send
        (`offloaded`), those it does not list are not served."""
        if info is not None:
            served = {s.split for s in info.splits}
            self._add((k for k in offloaded if k not in served), None)  # the session warned of them

    def refused(self, split: int, replica: str) -> None:
        """A frame at `split` was refused as a split the server does not serve."""
        self._add((split,), replica)

    def _add(self, splits: Iterable[int], replica: str | None) -> None:
        with self._lock:
            new = set(splits) - self.unserved
            if not new:
                return
            self.unserved = self.unserved | new
        if replica is not None:
                log.warning("split(s) %s not served by %s: an adaptive policy plans without them for the rest of the run "
                        "(a fixed one runs those frames here); serve them on every replica, or leave them out of "
                        "this agent's splits", split_ranges(sorted(new)), replica or "the cloud")

    def candidates(self, splits: list[int], K: int) -> list[int]:
        """`splits` less those not served; K (all on the edge) always stays."""
        unserved = self.unserved  # one read: replaced whole, never changed in place
        return splits if not unserved else [k for k in splits if k == K or k not in unserved]
