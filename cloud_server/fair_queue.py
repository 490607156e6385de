"""The tail executor's waiting room: a fair share of the workers for every agent.

Frames wait in one queue per agent identity (cloud_server/admission.py says who is who).
Workers take frames round-robin over the agents that have something waiting, so an agent
sending 100 frames a second cannot starve one sending 5: each gets one turn per round.
A batch starts with the next agent's oldest frame and is filled with the oldest frames of
the same split from the agents after it, one per agent per pass, so batching never lets
one agent jump the line.

Limits are checked on arrival (never an unbounded queue): `max_total` frames in all, and
`max_per_agent` for one agent. A frame over either is refused at once with
RESOURCE_EXHAUSTED, so the agent can run it locally or go to another replica instead of
waiting behind a queue it cannot see.

Not thread-safe on its own: TailExecutor owns it and calls it under its condition's lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

import grpc

from splitpoint.errors import RequestError


class _HasSplit(Protocol):
    split: int


T = TypeVar("T", bound=_HasSplit)


class FairQueue(Generic[T]):
    def __init__(self, max_total: int, max_per_agent: int):
        self.max_total = max_total
        self.max_per_agent = max_per_agent
        #: agent -> its waiting frames, oldest first; the dict's order is the round-robin order
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def agents(self) -> int:
        """Agents with at least one frame waiting."""
        return len(self._queues)

    def push(self, agent: str, item: T) -> None:
        """Queue one frame, or raise RequestError(RESOURCE_EXHAUSTED) saying which limit it hit."""
        if self._total >= self.max_total:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"server overloaded: {self._total} frames queued (max_queue); "
                               "run the frame locally or send it to another replica")
        mine = self._queues.get(agent)
        if mine is not None and len(mine) >= self.max_per_agent:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"this agent already has {len(mine)} frames queued (max_queue_per_agent); "
                               "run the frame locally or send fewer at once")
        if mine is None:
            mine = self._queues[agent] = deque()
        mine.append(item)
        self._total += 1

    def pop_batch(self, max_batch: int) -> list[T]:
        """Up to max_batch frames of one split, fairly; [] when nothing waits."""
        if not self._queues:
            return []
        agents = list(self._queues)
        first_agent = agents[0]
        batch = [self._take(first_agent)]
        split = batch[0].split
        # fill from the other agents in turn (then the first again), one frame per agent per pass
        order = agents[1:] + [first_agent]
        while len(batch) < max_batch:
            took = False
            for agent in order:
                q = self._queues.get(agent)
                if q and q[0].split == split and len(batch) < max_batch:
                    batch.append(self._take(agent))
                    took = True
            if not took:
                break
        # the agent served first goes to the back of the round
        if first_agent in self._queues:
            self._queues.move_to_end(first_agent)
        return batch

    def _take(self, agent: str) -> T:
        q = self._queues[agent]
        item = q.popleft()
        if not q:
            del self._queues[agent]
        self._total -= 1
        return item

    def drain(self) -> Iterator[T]:
        """Every waiting frame, removed (for shutdown)."""
        while self._queues:
            _, q = self._queues.popitem(last=False)
            while q:
                self._total -= 1
                yield q.popleft()
