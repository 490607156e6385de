"""The server's fair share and admission, without sockets: FairQueue, StreamAdmission, InflightBytes."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import grpc
import pytest

from cloud_server.admission import InflightBytes, StreamAdmission
from cloud_server.fair_queue import FairQueue
from splitpoint.errors import RequestError


@dataclass
class Frame:
    agent: str
    split: int
    n: int


def fill(q: FairQueue[Frame], agent: str, count: int, split: int = 0) -> None:
    for n in range(count):
        q.push(agent, Frame(agent, split, n))


def test_a_flooding_agent_gets_one_turn_per_round() -> None:
    q: FairQueue[Frame] = FairQueue(max_total=1000, max_per_agent=1000)
    fill(q, "flood", 100)
    fill(q, "quiet", 5)
    served = [q.pop_batch(1)[0].agent for _ in range(10)]
    assert served == ["flood", "quiet"] * 5  # not 100 flood frames first
    assert len(q) == 95 and q.agents() == 1


def test_frames_of_one_agent_keep_their_order() -> None:
    q: FairQueue[Frame] = FairQueue(max_total=100, max_per_agent=100)
    fill(q, "a", 6)
    assert [f.n for f in q.pop_batch(4)] == [0, 1, 2, 3]
    assert [f.n for f in q.pop_batch(4)] == [4, 5]
    assert q.pop_batch(4) == [] and len(q) == 0


def test_batches_are_one_split_and_take_one_frame_per_agent_per_pass() -> None:
    q: FairQueue[Frame] = FairQueue(max_total=100, max_per_agent=100)
    fill(q, "a", 3, split=2)
    fill(q, "b", 1, split=5)
    fill(q, "c", 2, split=2)
    batch = q.pop_batch(4)
    assert {f.split for f in batch} == {2}
    assert [(f.agent, f.n) for f in batch] == [("a", 0), ("c", 0), ("a", 1), ("c", 1)]
    # b's split-5 frame was not skipped for long: it starts the next batch
    assert [(f.agent, f.split) for f in q.pop_batch(4)] == [("b", 5)]


def test_limits_refuse_with_resource_exhausted_naming_the_limit() -> None:
    q: FairQueue[Frame] = FairQueue(max_total=5, max_per_agent=3)
    fill(q, "a", 3)
    with pytest.raises(RequestError) as info:
        q.push("a", Frame("a", 0, 3))
    assert info.value.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_queue_per_agent" in str(info.value)
    fill(q, "b", 2)
    with pytest.raises(RequestError) as info:
        q.push("c", Frame("c", 0, 0))
    assert info.value.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_queue" in str(info.value)
    assert len(q) == 5
    assert Counter(f.agent for f in q.drain()) == {"a": 3, "b": 2} and len(q) == 0


def test_shares_over_many_agents_stay_even() -> None:
    q: FairQueue[Frame] = FairQueue(max_total=10_000, max_per_agent=10_000)
    for i in range(50):
        fill(q, f"agent-{i}", 1 + 4 * (i % 7))  # uneven demand
    served: Counter[str] = Counter()
    for _ in range(50):
        served.update(f.agent for f in q.pop_batch(1))
    assert set(served.values()) == {1}  # the first 50 frames: one per agent


def test_stream_admission_counts_total_and_per_agent() -> None:
    adm = StreamAdmission(max_streams=3, max_per_agent=2)
    adm.admit("a")
    adm.admit("a")
    with pytest.raises(RequestError, match="max_streams_per_agent"):
        adm.admit("a")
    adm.admit("b")
    with pytest.raises(RequestError, match="max_streams"):
        adm.admit("c")
    adm.release("a")
    adm.admit("c")
    assert adm.open_streams == 3


def test_inflight_bytes_wait_for_room_and_never_strand_a_big_message() -> None:
    budget = InflightBytes(limit=100)
    assert budget.acquire(60, timeout=0)
    assert not budget.acquire(60, timeout=0.01)  # would exceed: refused after the timeout
    released = threading.Event()

    def later() -> None:
        released.wait(5)
        budget.release(60)

    t = threading.Thread(target=later)
    t.start()
    released.set()
    assert budget.acquire(60, timeout=5)  # room came back
    t.join(5)
    budget.release(60)
    assert budget.acquire(500, timeout=0)  # bigger than the budget, alone: let in
    assert budget.used == 500
