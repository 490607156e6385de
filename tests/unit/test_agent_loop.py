"""The agent loop with fakes: every path a frame can end by, and random interleavings of them.

The real EdgeAgent (its capture, cloud paths, edge work, watchdog, ledger, recorder and
results log) runs against a fake session (it records the requests it is given; the test
decides when each is answered, errored, malformed or its stream ended), fake heads (numpy,
instant), a manual clock, and a local executor that runs a queued job only when the test
says so. No sockets, no sleeps, no threads of the agent's own (the test ticks the watchdog).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import ManualClock
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from edge_node.agent import EdgeAgent
from edge_node.config import EdgeConfig
from edge_node.device_health import DeviceFailedError, DeviceHealth
from edge_node.heads import HeadOutput
from edge_node.recorder import DROP_REASON, Recorder
from edge_node.results_file import rotate_results
from edge_node.run_report import EdgeMetrics, LiveBuffer, RunSummary
from edge_node.session import BACKOFF_START_S, OffloadSession, SessionCallbacks
from edge_node.sources import Frame, FrameReadError
from scheduler.link import LinkEstimator
from scheduler.paths import PathChoice, Timeline
from splitpoint.bundle import TensorSpec
from splitpoint.codec import Quantization, encode
from splitpoint.errors import ConfigError, RemoteError
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import DRAINING_DETAILS

K = 3  # the fake model's layers: split 1 goes to the cloud, split 3 runs wholly here
Q = Quantization((0.5,), (0,), 0)
SCORES = np.array([[0.1, 0.7, 0.1, 0.1]], np.float32)  # label 1
LOCAL_SCORES = np.array([[0.1, 0.1, 0.7, 0.1]], np.float32)  # label 2: tells a local result from a cloud one
OUTPUT = TensorSpec("scores", (1, 4), "float32", None)
MANIFEST = SimpleNamespace(
    num_layers=K, split_ids=[0, 1, K], model_name="fake", model_digest="sha256:fake", labels=["a", "b", "c", "d"],
    output=OUTPUT, outputs=[OUTPUT], detection=None,
    split=lambda k: SimpleNamespace(split=k, cut=[TensorSpec("cut", (1, 2), "int8", Q)]),
)
PREDICTED_MS = 50.0  # the fake policy's latency for split 1: the hedge fires 50 + 20 ms after the head


class FakeHeads:
    splits = [0, 1, K]

    def __init__(self) -> None:
        self.local_runs = 0
        self.fail_local = False
        self.fail_heads = False

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.float32)[None]

    def run(self, k: int, x: np.ndarray) -> HeadOutput:
        if self.fail_heads:
            raise RuntimeError("Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.")
        return HeadOutput(k, np.zeros((1, 2), np.int8), Q, 1.0)

    def run_local_all(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        self.local_runs += 1
        if self.fail_local:
            raise RuntimeError("accelerator gone")
        return [LOCAL_SCORES], 2.0


class FakePolicy:
    name = "fake"

    def __init__(self) -> None:
        self.k = 1
        self.raced = False  # plan k = 0 run here and sent at once (AdaptivePolicy's race)
        self.observed: list[Any] = []

    def choose(self, splits: list[int]) -> int:
        return self.k

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Timeline,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice:
        """Books the frame's head (or local run) and, for a split, its transfer, as the adaptive
        policy does: the agent must release every booking, whichever path ends the frame."""
        timeline.edge_reserved(frame_id, now, 1.0)
        if self.k != K:
            timeline.link_sent(frame_id, 0, now, predicted_transfer_ms=10.0, after_ms=5.0, planned=True)
        return PathChoice(frame_id, self.k, local_ms=2.0, raced=self.raced)

    def hedge_prediction(self, k: int) -> tuple[float, bool, float]:
        return PREDICTED_MS, False, 5.0

    def observe(self, outcome: Any) -> None:
        self.observed.append(outcome)


class ManualExecutor:
    """Local runs wait until the test runs them (one accelerator: in order)."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []
        self.closed = False

    def submit(self, job: Any) -> bool:
        if self.closed:
            return False
        self.jobs.append(job)
        return True

    def run_one(self) -> None:
        self.jobs.pop(0)()

    def run_all(self) -> None:
        while self.jobs:
            self.run_one()

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True
        self.jobs.clear()


class ImmediateExecutor(ManualExecutor):
    def submit(self, job: Any) -> bool:
        if self.closed:
            return False
        job()
        return True


class FakeStream:
    def __init__(self, n: int) -> None:
        self.replica = f"replica-{n}"
        self.end_error: RemoteError | None = None
        self.open = True
        self.accepting = True  # False: set aside, its frames may still be answered
        self.sent: list[offload_pb2.InferRequest] = []

    def send(self, req: offload_pb2.InferRequest) -> bool:
        if not self.open:
            return False
        self.sent.append(req)
        return True

    def cancel(self) -> None:
        self.open = False


class FakeSession:
    address = "fake:1"

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.available = True  # False: backing off, no stream
        self.callbacks: SessionCallbacks | None = None
        self.closed_with: bool | None = None
        self.lost: list[int] = []
        self.given_up: list[tuple[FakeStream, str]] = []
        self.set_aside_calls: list[tuple[FakeStream, str]] = []

    def check_server(self, offloaded: Any = ()) -> None:  # the splits the agent may send
        return None

    def start(self, callbacks: SessionCallbacks) -> None:
        self.callbacks = callbacks

    def current_stream(self) -> FakeStream | None:
        if not self.available:
            return None
        if not self.streams or not self.streams[-1].open or not self.streams[-1].accepting:
            self.streams.append(FakeStream(len(self.streams)))
        return self.streams[-1]

    def reached(self) -> bool:
        return False

    def last_error(self) -> None:
        return None

    def no_stream_reason(self) -> str:
        return "cloud unreachable (waiting to reconnect)"

    def close(self, abandon: bool, timeout_s: float = 2.0) -> None:
        self.closed_with = abandon
        self.close_timeout_s = timeout_s

    def interrupt(self) -> None:
        self.interrupted = True

    def set_aside(self, stream: FakeStream, why: str) -> bool:
        """As OffloadSession with several replicas: no new frame on it; the next opens a new stream."""
        if not stream.accepting:
            return False
        self.set_aside_calls.append((stream, why))
        stream.accepting = False
        return True

    def give_up(self, stream: FakeStream, why: str) -> None:
        """As OffloadSession: the stream is cancelled (it ends, CANCELLED) and no new one is
        handed out while backing off (here: until the test makes one available again)."""
        self.given_up.append((stream, why))
        self.available = False
        self.end(stream, grpc.StatusCode.CANCELLED)

    # ------------------------------------------------------------------ what the test makes the cloud do

    def stream_of(self, fid: int) -> FakeStream:
        return next(s for s in self.streams if any(r.frame_id == fid for r in s.sent))

    def answer(self, fid: int, kind: str = "ok", message: str = "busy") -> None:
        resp = offload_pb2.InferResponse(frame_id=fid)
        if kind == "ok":
            resp.outputs.append(encode(SCORES, name="scores"))
            resp.timing.total_ms, resp.timing.compute_ms = 5.0, 4.0
        elif kind == "malformed":
            resp.outputs.append(encode(np.zeros((1, 3), np.float32), name="scores"))
        else:  # an error answer: kind is the status code's name
            resp.error.code = grpc.StatusCode[kind].value[0]
            resp.error.message = message
        assert self.callbacks is not None
        self.callbacks.answer(self.stream_of(fid), resp)

    def end(self, stream: FakeStream, code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE) -> None:
        stream.open = False
        assert self.callbacks is not None
        self.lost.append(self.callbacks.stream_ended(stream, None if code is None else RemoteError(code, "gone")))


class Harness:
    def __init__(self, results: Path, executor: ManualExecutor | None = None, policy: FakePolicy | None = None,
                 **overrides: Any) -> None:
        conf = dict(bundle="fake", source="fake", results=str(results), results_fsync=False, window=4,
                    hedge="auto", hedge_margin=20.0, frame_deadline_ms=1000, grace_s=1.0)
        self.config = EdgeConfig(**(conf | overrides))
        self.clock = ManualClock(1000.0)
        self.session = FakeSession()
        self.heads = FakeHeads()
        self.policy = policy or FakePolicy()
        self.local = executor or ManualExecutor()
        self.records: list[dict[str, Any]] = []
        recorder = Recorder(MANIFEST.labels, EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None,
                            on_result=self.records.append)
        self.agent = EdgeAgent(self.config, bundle=SimpleNamespace(manifest=MANIFEST), heads=self.heads,
                               session=self.session, link=LinkEstimator(), policy=self.policy, recorder=recorder,
                               local=self.local, clock=self.clock, watchdog_period_s=None)
        self.finishes: Counter[int] = Counter()  # frames whose finish wrote (and freed their slot)
        finish = self.agent.ledger.finish

        def counting(fid: int, write: Any = None) -> bool:
            done = finish(fid, write)
            if done:
                self.finishes[fid] += 1
            return done

        self.agent.ledger.finish = counting  # type: ignore[method-assign]

    def start(self) -> Harness:
        self.agent.start()
        return self

    def feed(self, fid: int, k: int = 1, raced: bool = False) -> None:
        """What the capture loop does with one frame: a slot, admit, process. `raced`: the plan
        runs it here and sends it as k = 0 at once."""
        self.policy.k, self.policy.raced = (0, True) if raced else (k, False)
        assert self.agent.ledger.acquire(timeout=0), "no free window slot"
        self.agent.ledger.admit(fid)
        self.agent.process(Frame(fid, np.zeros((2, 2, 1), np.uint8), None, f"fake#{fid}", time.time_ns()))

    def hedge_time_passes(self) -> None:
        self.clock.t += (PREDICTED_MS + 20.0) / 1000 + 0.001
        self.agent.watchdog.tick()

    def by_id(self) -> dict[int, dict[str, Any]]:
        ids = Counter(r["frame_id"] for r in self.records)
        assert all(n == 1 for n in ids.values()), f"frames with several records: {ids}"
        return {r["frame_id"]: r for r in self.records}

    def idle(self) -> bool:
        ledger = self.agent.ledger
        ledger._invariant()
        return ledger.open_frames == 0 and ledger._free == ledger.window  # every slot released

    def booked(self) -> tuple[list[int], list[int]]:
        """Frames still booked on (the edge, the link) of the planner's timeline."""
        return self.agent.timeline.pending()


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path / "r.jsonl").start()
    yield harness
    harness.agent.close()


def test_the_sessions_probe_is_booked_on_the_agents_timeline(h: Harness) -> None:
    """The session reports its bulk probe through the callbacks; the planner's timeline holds
    the link from probe_sent to probe_done (ms here are the clock's seconds x 1000)."""
    assert h.session.callbacks is not None
    h.session.callbacks.probe_sent(32_768, 238.0, 10.0, True)
    assert h.agent.timeline.probing()
    assert h.agent.timeline.free_at(h.clock.t)[1] == pytest.approx(h.clock.t + 0.238)
    h.clock.t += 0.25
    h.session.callbacks.probe_done(True)
    assert not h.agent.timeline.probing() and h.agent.timeline.free_at(h.clock.t)[1] == h.clock.t


def test_cloud_answer(h: Harness) -> None:
    h.feed(0)
    assert [r.frame_id for r in h.session.streams[0].sent] == [0] and not h.records
    h.session.answer(0)
    r = h.by_id()[0]
    assert (r["where"], r["split"], r["label"], r["hedged"], r["replica"]) == ("cloud", 1, 1, False, "replica-0")
    assert r["predicted_ms"] == pytest.approx(r["hedge_ms"] - 20.0)  # the hedge time less its margin
    assert "fallback_reason" not in r and h.idle() and h.finishes == {0: 1}
    assert h.booked() == ([], [])  # the head's end freed the edge, the answer the link
    assert [o.where for o in h.policy.observed] == ["cloud"]
    assert h.agent.margin.samples == 1  # the hedge margin learnt from the answer
    h.session.answer(0)  # a duplicate answer writes nothing
    assert len(h.records) == 1 and h.finishes == {0: 1}


def test_an_answer_on_a_stream_the_frame_was_not_sent_on_is_ignored(h: Harness) -> None:
    """Before, a stream (a replica) answering a frame sent on another had it recorded as its
    own, with the other replica's name - or, malformed, ran it locally; it never had the frame."""
    h.feed(0)
    first = h.session.streams[0]
    first.open = False  # e.g. half-closed after RESOURCE_EXHAUSTED: the next frame opens another
    h.feed(1)
    assert h.session.stream_of(1) is not first
    resp = offload_pb2.InferResponse(frame_id=1)
    resp.outputs.append(encode(SCORES, name="scores"))
    assert h.session.callbacks is not None
    h.session.callbacks.answer(first, resp)
    assert 1 not in h.by_id() and not h.local.jobs  # still waiting for its own stream
    h.session.answer(1)
    assert h.by_id()[1]["replica"] == "replica-1"
    h.session.answer(0)
    assert h.by_id()[0]["replica"] == "replica-0" and h.idle()


def test_all_on_the_edge(h: Harness) -> None:
    h.feed(0, k=K)
    assert not h.session.streams and not h.records  # the local run waits for the executor
    assert h.booked() == ([0], [])  # the plan booked the edge until the local run ends
    h.local.run_all()
    assert h.booked() == ([], [])
    r = h.by_id()[0]
    assert (r["where"], r["split"], r["label"]) == ("local", K, 2) and "fallback_reason" not in r and "hedged" not in r
    assert "predicted_ms" not in r
    assert h.idle() and h.heads.local_runs == 1


def test_hedge_fires_then_the_cloud_wins(h: Harness) -> None:
    h.feed(0)
    h.hedge_time_passes()
    assert len(h.local.jobs) == 1 and not h.records  # hedged: the local run is queued, the frame still held
    h.session.answer(0)
    h.local.run_all()  # the cloud result was recorded first: the queued local run does not even run
    r = h.by_id()[0]
    assert (r["where"], r["hedged"], r.get("fallback_reason")) == ("cloud", True, None)
    assert h.heads.local_runs == 0 and h.idle() and h.finishes == {0: 1}
    assert h.agent.summary.fallbacks == 0


def test_hedge_fires_then_the_local_run_wins(h: Harness) -> None:
    h.feed(0)
    h.hedge_time_passes()
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["split"], r["hedged"]) == ("local", 1, True)
    assert r["fallback_reason"].startswith("hedged: no answer within 70 ms")
    assert h.booked() == ([], [0])  # its answer may still come: the link stays booked (overdue) until then
    assert h.agent.timeline.hedged_in_flight() == 1  # the planner reads a stall in progress
    h.session.answer(0)
    assert h.booked() == ([], []) and h.agent.timeline.hedged_in_flight() == 0
    h.session.answer(0)  # late: it teaches the estimates, the log keeps the local result
    assert len(h.records) == 1 and h.finishes == {0: 1} and h.idle()
    # the hedge firing (no rpc: what scheduler.risk counts), the local result, the late answer
    assert [(o.where, o.hedged, o.rpc_ms is not None) for o in h.policy.observed] == [
        ("cloud", True, False), ("local", False, False), ("cloud", True, True)]
    assert h.agent.summary.fallbacks == 1


def test_no_hedge_while_the_local_run_could_not_win(h: Harness) -> None:
    """An edge busy for 500 ms more and a 100 ms local run cannot beat an answer that is 70 ms
    late; a hedge then only takes the accelerator from the next heads. Once the link has been
    silent longer than the local path needs, the frame is hedged."""
    h.agent.edge.local_ms_guess = 100.0
    h.agent.timeline.edge_reserved(99, h.clock.t, 500.0)  # another frame's run holds the edge
    h.feed(0)
    h.hedge_time_passes()
    assert not h.local.jobs  # past its hedge time, but a local run would finish later than the answer
    h.clock.t += 0.6
    h.agent.watchdog.tick()
    assert len(h.local.jobs) == 1  # the link's silence now outlasts the edge's queue + head(K)


class ChargingPolicy(FakePolicy):
    """Says a local run queued now would delay the following frames by `delay` ms."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.asked: list[float] = []

    def hedge_delay_ms(self, now: float, timeline: Timeline, run_ms: float) -> float:
        self.asked.append(run_ms)
        return self.delay


def test_no_hedge_while_its_local_run_costs_the_next_frames_more_than_it_saves(tmp_path: Path) -> None:
    """The edge is free and the local run (100 ms) can beat the answer, but it would delay the
    frames that follow by 60 ms in all: the hedge waits until the link's silence makes it save
    more than that - sent at s, the answer is expected at 2 now - s, the run ends at now + 0.1,
    so it fires once now > s + 0.16 - and the watchdog wakes for it then."""
    h = Harness(tmp_path / "r.jsonl", policy=ChargingPolicy(60.0)).start()
    try:
        wd = h.agent.watchdog
        wd.period_s = 1.0  # long: only the due time can wake it in time
        h.feed(0)
        h.agent.edge.local_ms_guess = 100.0
        sent = dict(h.agent.ledger.held())[0].sent
        h.clock.t = sent + 0.15  # saves 50 ms, costs 60: no
        wait = wd.tick()
        assert not h.local.jobs and h.policy.asked and h.policy.asked[-1] == 100.0
        assert wait == pytest.approx(0.01, abs=1e-6)  # due at sent + 0.16
        h.clock.t += wait + 0.001
        wd.tick()
        assert len(h.local.jobs) == 1  # saves 62 ms > 60
    finally:
        h.agent.close()


def test_the_watchdog_sleeps_until_the_next_hedge_is_due(h: Harness) -> None:
    """A hedge fires at its time, not up to a watchdog period later: each check returns how long
    the watchdog thread sleeps - the period, or less when a held frame's hedge is due sooner."""
    wd = h.agent.watchdog
    wd.period_s = 0.02  # the thread's period (the harness ticks by hand)
    assert wd.tick() == 0.02  # nothing held
    h.feed(0)
    due = dict(h.agent.ledger.held())[0].deadline  # the hedge time
    assert wd.tick() == 0.02  # due in 70 ms: a period first
    h.clock.t = due - 0.005
    wait = wd.tick()
    assert wait == pytest.approx(0.005) and not h.local.jobs
    h.clock.t += wait + 1e-6  # the thread wakes
    assert wd.tick() == 0.02 and len(h.local.jobs) == 1  # hedged; nothing else due


def test_the_watchdog_wakes_when_the_local_run_can_win(h: Harness) -> None:
    """With the edge busy the hedge waits until its local run can beat the answer
    (test_no_hedge_while_the_local_run_could_not_win); the watchdog wakes then, not a period
    later, and not before (a wake that cannot hedge would be a wasted check)."""
    wd = h.agent.watchdog
    wd.period_s = 1.0  # long: only the due time can wake it in time
    h.agent.timeline.edge_reserved(99, h.clock.t, 500.0)  # another frame's run holds the edge
    h.feed(0)
    h.agent.edge.local_ms_guess = 100.0  # head(K) (the fake plan said 2 ms)
    h.hedge_time_passes()  # past its hedge time: the edge is the wait now
    wait = wd.tick()
    assert 0.1 < wait < 1.0
    h.clock.t += wait - 0.001
    assert wd.tick() == pytest.approx(0.001, abs=1e-6) and not h.local.jobs
    h.clock.t += 0.001 + 1e-6
    wd.tick()
    assert len(h.local.jobs) == 1


def test_the_due_time_follows_the_edge_queue(h: Harness) -> None:
    """The edge got busier after the watchdog worked out when to wake: it wakes, cannot hedge
    yet, and works the due time out again from the new queue - it does not check every ms."""
    wd = h.agent.watchdog
    wd.period_s = 0.02
    h.feed(0)
    h.agent.edge.local_ms_guess = 100.0  # head(K) (the fake plan said 2 ms)
    h.clock.t = dict(h.agent.ledger.held())[0].sent + 0.099  # the local run could win in 1 ms
    assert wd.tick() == pytest.approx(0.001, abs=1e-6)
    h.agent.timeline.edge_reserved(99, h.clock.t, 500.0)  # now another frame's run holds the edge
    h.clock.t += 0.0011
    assert wd.tick() == 0.02 and not h.local.jobs  # due again in ~0.3 s: the period first


def test_a_hedged_frame_whose_answer_never_comes_frees_the_link_when_forgotten(h: Harness) -> None:
    h.feed(0)
    h.hedge_time_passes()
    h.local.run_all()  # the local result wins; the answer may still come
    assert h.booked() == ([], [0])
    h.clock.t += 2 * h.config.frame_deadline_ms / 1000  # the server has dropped it by now
    h.agent.watchdog.tick()
    assert h.booked() == ([], [])  # else the link would look stalled for ever


# ---------------------------------------------------------------------- raced frames (k = 0 beside a local run)


def test_a_raced_frame_is_sent_and_queued_locally_at_once_and_the_cloud_wins(h: Harness) -> None:
    h.feed(0, raced=True)
    assert [r.split for r in h.session.streams[0].sent] == [0] and len(h.local.jobs) == 1
    assert h.booked() == ([0], [0])  # the edge for its local run, the link for its transfer
    h.session.answer(0)
    h.local.run_all()  # the cloud result came first: the queued local run does not run
    r = h.by_id()[0]
    assert (r["where"], r["split"], r["raced"], r["hedged"]) == ("cloud", 0, True, False)
    assert "fallback_reason" not in r and h.heads.local_runs == 0
    assert h.idle() and h.finishes == {0: 1} and h.booked() == ([], [])
    assert h.agent.summary.fallbacks == 0


def test_a_raced_frame_whose_local_run_wins_still_learns_from_its_answer(h: Harness) -> None:
    h.feed(0, raced=True)
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["split"], r["raced"], r["hedged"]) == ("local", K, True, False)
    assert "fallback_reason" not in r and h.agent.summary.fallbacks == 0  # the plan's choice, not a fallback
    assert h.booked() == ([], [0])  # its answer may still come
    h.session.answer(0)
    assert len(h.records) == 1 and h.finishes == {0: 1} and h.idle() and h.booked() == ([], [])
    # the answer teaches the link estimate and the risk as any offload's (not hedged: counted now)
    cloud = [o for o in h.policy.observed if o.where == "cloud"]
    assert [(o.hedged, o.rpc_ms is not None) for o in cloud] == [(False, True)]
    assert h.agent.margin.samples == 1


def test_a_raced_frame_past_its_hedge_time_runs_once_and_tells_the_planner(h: Harness) -> None:
    """Its local run is queued already: the hedge queues no second one, but the planner hears
    of the stall (the risk's hit, the timeline's hedged transfer) as for any offload - also
    when the local result was recorded before the hedge time. It fires at the hedge time even
    while no new local run could win (test_no_hedge_while_the_local_run_could_not_win)."""
    h.feed(0, raced=True)
    h.agent.edge.local_ms_guess = 100.0
    h.agent.timeline.edge_reserved(99, h.clock.t, 500.0)  # another frame's run holds the edge
    h.hedge_time_passes()
    assert len(h.local.jobs) == 1 and h.agent.timeline.hedged_in_flight() == 1
    h.agent.timeline.edge_done(99, h.clock.t)
    # reported raced: the policy counts its lateness when the answer comes (scheduler/policy.py)
    assert [(o.where, o.hedged, o.rpc_ms, o.raced) for o in h.policy.observed] == [("cloud", True, None, True)]
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["raced"], r["hedged"]) == ("local", True, True) and "fallback_reason" not in r
    assert h.heads.local_runs == 1
    h.feed(1, raced=True)
    h.local.run_all()  # recorded locally first, the answer still out
    h.hedge_time_passes()
    assert h.agent.timeline.hedged_in_flight() == 2 and h.heads.local_runs == 2
    h.clock.t += 2 * h.config.frame_deadline_ms / 1000  # never answered: forgotten, the link freed
    h.agent.watchdog.tick()
    assert h.booked() == ([], []) and h.idle() and h.finishes == {0: 1, 1: 1}
    # ... and each counts then as the hit its hedge did not
    assert sorted(o.frame_id for o in h.policy.observed if o.lost) == [0, 1]


def test_a_hedged_raced_frame_whose_stream_ends_counts_one_hit(h: Harness) -> None:
    """Held in the ledger and in the late frames at once: the stream's end gives up its answer
    once, and the policy hears of it once."""
    h.feed(0, raced=True)
    h.hedge_time_passes()
    h.session.end(h.session.streams[0])
    assert [o.frame_id for o in h.policy.observed if o.lost] == [0]
    h.local.run_all()
    assert h.finishes == {0: 1} and h.idle() and h.booked() == ([], [])


def test_a_raced_frame_loses_its_stream_or_has_none_and_runs_once(h: Harness) -> None:
    h.feed(0, raced=True)
    h.session.end(h.session.streams[0])
    assert h.session.lost == [1] and len(h.local.jobs) == 1  # no fallback run beside the raced one
    assert not any(o.lost for o in h.policy.observed)  # not hedged: its lateness was never news
    h.session.available = False
    h.feed(1, raced=True)  # backing off: the local run the plan booked is all there is
    h.local.run_all()
    by_id = h.by_id()
    assert [(by_id[i]["where"], by_id[i].get("fallback_reason")) for i in (0, 1)] == [("local", None)] * 2
    assert h.heads.local_runs == 2 and h.idle() and h.booked() == ([], [])


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"])
def test_error_answer_falls_back(h: Harness, code: str) -> None:
    h.feed(0)
    h.session.answer(0, code)
    assert not h.records
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["split"], r["fallback_reason"]) == ("local", 1, f"cloud {code}: busy")
    assert r["replica"] == "replica-0"  # the one that refused it, as the log line names it (it was null)
    assert h.idle() and h.booked() == ([], []) and h.agent.metrics.errors.labels(code)._value.get() == 1


def test_a_refused_frame_names_the_replica_of_its_own_stream(h: Harness) -> None:
    """Frames on two streams (two replicas), one refused by each: each record names its refuser;
    a frame that ran here for another reason (its stream ended) names none."""
    h.feed(0)
    h.session.streams[0].accepting = False  # set aside: the next frame opens a new stream (another replica)
    h.feed(1)
    h.feed(2)
    h.session.answer(1, "NOT_FOUND", "split 1 is not in the bundle")
    h.session.answer(0, "RESOURCE_EXHAUSTED")
    h.session.end(h.session.stream_of(2))
    h.local.run_all()
    got = {fid: (r["where"], r.get("replica")) for fid, r in h.by_id().items()}
    assert got == {0: ("local", "replica-0"), 1: ("local", "replica-1"), 2: ("local", None)}, got
    assert h.idle()


def test_a_frame_a_draining_replica_refuses_runs_here_without_a_warning(h: Harness,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A frame sent as its replica began to drain (every rollout) was a WARNING "failed in the
    cloud", beside the INFO that the stream's end is; another refusal of that code still warns."""
    h.feed(0)
    h.feed(1)
    with caplog.at_level(logging.DEBUG, logger="edge_node.agent"):
        h.session.answer(0, "UNAVAILABLE", "server is shutting down; frame not accepted")
        h.session.answer(1, "UNAVAILABLE", "overloaded")
    h.local.run_all()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("frame ")]
    assert said[0] == ("INFO", "frame 0 was refused by replica-0 as it drains (server is shutting down; frame not "
                               "accepted); it runs here"), said
    assert ("WARNING", "frame 1 failed in the cloud: UNAVAILABLE overloaded") in said, said
    assert h.by_id()[0]["fallback_reason"] == "cloud UNAVAILABLE: server is shutting down; frame not accepted"
    assert h.idle()


def test_malformed_answer_falls_back(h: Harness) -> None:
    h.feed(0)
    h.session.answer(0, "malformed")
    h.local.run_all()
    r = h.by_id()[0]
    assert r["where"] == "local" and "replica" not in r  # no refusal: only error answers name their replica
    assert r["fallback_reason"] == ("malformed response: output tensors unreadable: outputs['scores'] = [1, 3]: "
                                    "the manifest says shape [1, 4]")
    assert h.idle() and h.booked() == ([], [])


def answer_with_timing(h: Harness, fid: int, **timing: float) -> None:
    resp = offload_pb2.InferResponse(frame_id=fid)
    resp.outputs.append(encode(SCORES, name="scores"))
    resp.timing.total_ms, resp.timing.compute_ms = 5.0, 4.0
    for name, value in timing.items():
        setattr(resp.timing, name, value)
    assert h.session.callbacks is not None
    h.session.callbacks.answer(h.session.stream_of(fid), resp)


@pytest.mark.parametrize("timing", [{"queue_ms": math.nan}, {"total_ms": math.inf}, {"compute_ms": -1.0},
                                    {"queue_ms": -1e9}])
def test_an_answer_with_unusable_server_timing_is_malformed(h: Harness, timing: dict[str, float]) -> None:
    """The server's timing feeds the link estimate: one NaN queue_ms left it NaN for good. Such an
    answer is that frame's local fallback, and a late one (after a hedge) teaches nothing."""
    h.feed(0)
    answer_with_timing(h, 0, **timing)
    h.local.run_all()
    r = h.by_id()[0]
    (name, value), = timing.items()
    assert r["where"] == "local" and r["fallback_reason"] == (
        f"malformed response: server timing {name} = {value!r}, not a finite number >= 0"), r
    h.feed(1)
    h.hedge_time_passes()
    h.local.run_all()  # the hedge's local run wins
    answer_with_timing(h, 1, **timing)  # late, and unusable
    assert h.by_id()[1]["where"] == "local" and h.idle()
    assert not [o for o in h.policy.observed if o.rpc_ms is not None], h.policy.observed


def test_stream_end_falls_back_every_frame_on_it(h: Harness) -> None:
    h.feed(0)
    h.feed(1)
    h.session.answer(1)
    h.session.end(h.session.streams[0])
    assert h.session.lost == [1]  # frame 0 was lost; 1 had its answer
    h.local.run_all()
    by_id = h.by_id()
    assert by_id[1]["where"] == "cloud"
    assert (by_id[0]["where"], by_id[0]["fallback_reason"]) == ("local", "stream ended before the answer (UNAVAILABLE: gone)")
    assert h.booked() == ([], [])
    h.feed(2)  # the next frame goes on a new stream
    assert [r.frame_id for r in h.session.streams[1].sent] == [2]


def test_no_stream_while_backing_off_runs_locally(h: Harness) -> None:
    h.session.available = False
    h.feed(0)
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["fallback_reason"]) == ("local", "cloud unreachable (waiting to reconnect)")
    assert "hedged" not in r and h.idle()
    assert h.booked() == ([], [])  # the transfer the plan booked never happened: released at the frame's end


def test_a_stream_that_answers_nothing_for_twice_the_frame_deadline_is_given_up(h: Harness) -> None:
    """A server that takes frames and never answers: without this every frame waited its whole
    frame_deadline_ms, for ever (a fixed policy learns nothing from the silence). The horizon is
    2 x frame_deadline_ms (1000 ms here), as for a hedged frame's late answer."""
    h.feed(0)
    h.clock.t += 1.5
    h.feed(1)
    h.clock.t += 0.5 - 0.001  # frame 0 has waited just under 2 s
    h.agent.watchdog.tick()  # both are hedged (their local runs queued), the stream is kept ...
    assert not h.session.given_up
    # ... but set aside: silent for over frame_deadline_ms, it took every next frame too (a hung
    # replica among healthy ones held each for its full deadline)
    ((aside, why),) = h.session.set_aside_calls
    assert aside is h.session.streams[0] and why == "answered nothing for 1999 ms (frame_deadline_ms)"
    # its hedged frames, late on a replica the agent has left, no longer hold the planner's link
    # as a stall (they kept an adaptive agent on the edge until the stream was given up)
    assert h.booked()[1] == [] and h.agent.timeline.hedged_in_flight() == 0
    h.feed(2)  # on a new stream: round_robin may place it on another replica
    assert [r.frame_id for r in h.session.streams[1].sent] == [2]
    h.clock.t += 0.002
    h.agent.watchdog.tick()
    ((stream, why),) = h.session.given_up
    assert stream is h.session.streams[0]
    assert why == "nothing came back for 2001 ms (2 x frame_deadline_ms) while 2 frame(s) sent on it waited"
    assert h.session.lost == [2]  # the stream ended: its two hedged frames
    h.session.answer(2)
    h.local.run_all()
    by_id = h.by_id()
    assert by_id[0]["hedged"] is True and by_id[1]["hedged"] is True  # their hedges' local runs
    assert by_id[2]["where"] == "cloud"
    assert h.idle() and h.booked() == ([], [])
    h.feed(3)  # backing off: no stream, the frame runs here at once
    h.local.run_all()
    assert h.by_id()[3]["fallback_reason"] == "cloud unreachable (waiting to reconnect)"


def test_a_slow_stream_that_answers_something_is_not_given_up(h: Harness) -> None:
    """Any answer - an error answer too - shows the server is alive; the frames sent after it
    start the count again."""
    h.feed(0)
    h.feed(1)
    h.clock.t += 1.9
    h.session.answer(1, "RESOURCE_EXHAUSTED")  # frame 0 is still owed, but the server is alive
    h.clock.t += 1.0
    h.agent.watchdog.tick()
    assert not h.session.given_up and h.session.streams[0].open
    h.session.answer(0)
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["hedged"]) == ("cloud", True)  # its hedge's local run had not run yet
    h.feed(2)  # sent after the last answer: 2 s of silence from here give the stream up
    h.clock.t += 2.0 - 0.001
    h.agent.watchdog.tick()
    assert not h.session.given_up
    h.clock.t += 0.002
    h.agent.watchdog.tick()
    assert [s for s, _ in h.session.given_up] == [h.session.streams[0]]


def test_a_stream_that_ended_with_an_error_before_the_send_names_it(h: Harness) -> None:
    # a server that refuses the token ends the stream at once: the frame's record said only
    # "stream closed before the frame was sent", hiding the refusal the end-of-run line names
    import grpc

    stream = h.session.current_stream()
    stream.open = False
    stream.end_error = RemoteError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
    h.session.current_stream = lambda: h.session.streams[0]  # type: ignore[method-assign]
    h.feed(0)
    h.local.run_all()
    assert h.by_id()[0]["fallback_reason"] == ("stream ended before the frame was sent "
                                               "(UNAUTHENTICATED: missing or invalid bearer token)") and h.idle()


def test_a_stream_closed_before_the_send_falls_back(h: Harness) -> None:
    h.session.current_stream().open = False
    h.session.current_stream = lambda: h.session.streams[0]  # type: ignore[method-assign]
    h.feed(0)
    h.local.run_all()
    assert h.by_id()[0]["fallback_reason"] == "stream closed before the frame was sent" and h.idle()
    assert h.booked() == ([], [])
    h.clock.t += 10.0  # the stream may have ended already: its silence is no reason to back off
    h.agent.watchdog.tick()
    assert not h.session.given_up


def test_hedge_off_gives_up_at_frame_deadline(tmp_path: Path) -> None:
    h = Harness(tmp_path / "r.jsonl", hedge="off", frame_deadline_ms=300).start()
    h.feed(0)
    h.hedge_time_passes()  # not yet: without hedging the frame waits frame_deadline_ms
    assert not h.local.jobs
    h.clock.t += 0.3
    h.agent.watchdog.tick()
    h.session.answer(0)  # claimed by the watchdog already: ignored
    h.local.run_all()
    r = h.by_id()[0]
    assert (r["where"], r["fallback_reason"]) == ("local", "no answer within frame_deadline_ms = 300")
    assert h.idle() and h.booked() == ([], [])
    assert not h.session.given_up  # the stream answered (late) within 2 x frame_deadline_ms
    assert [s for s, _ in h.session.set_aside_calls] == [h.session.streams[0]]  # silent past the deadline
    h.feed(1)  # on a new stream
    h.clock.t += 0.6  # hedge off too: a stream silent for 2 x frame_deadline_ms is given up
    h.agent.watchdog.tick()
    assert [s for s, _ in h.session.given_up] == [h.session.streams[1]]
    h.local.run_all()
    assert h.by_id()[1]["fallback_reason"] == "no answer within frame_deadline_ms = 300"  # claimed at 300 ms
    h.agent.close()


def test_a_local_run_that_fails_is_a_failure_record(h: Harness) -> None:
    h.heads.fail_local = True
    h.feed(0, k=K)
    h.local.run_all()
    r = h.by_id()[0]
    assert r["status"] == "failed" and "accelerator gone" in r["error"] and h.idle()
    assert h.booked() == ([], [])


# ---------------------------------------------------------------------- a hedge's or race's local run that fails

LOCAL_ERROR = "the whole model failed on the edge: RuntimeError('accelerator gone')"


def local_run_fails_beside_the_cloud(h: Harness, raced: bool = False) -> None:
    """Frame 0 offloaded (hedged, or raced) and its local run failed: it waits for its answer."""
    h.feed(0, raced=raced)
    if not raced:
        h.hedge_time_passes()
    h.heads.fail_local = True
    h.local.run_all()
    assert h.heads.local_runs == 1 and not h.records and h.finishes == {}  # no record yet: the cloud may answer
    assert [fid for fid, _ in h.agent.ledger.held()] == [0] and h.agent.ledger.open_frames == 1


def ends_once(h: Harness, metrics_where: str, status: str) -> dict[str, Any]:
    """Frame 0's one record; its slot released once, nothing left booked, the summary and the
    metrics counting it once."""
    r = h.by_id()[0]
    assert r["status"] == status and h.finishes == {0: 1} and h.idle() and h.booked() == ([], [])
    s = h.agent.summary
    assert (s.frames, s.failed, s.cloud, s.local, s.fallbacks) == (1, status == "failed", status == "ok", 0, 0)
    assert h.agent.metrics.frames.labels(metrics_where, status)._value.get() == 1
    return r


@pytest.mark.parametrize("raced", [False, True])
def test_a_hedged_frame_whose_local_run_fails_is_recorded_when_its_answer_comes(h: Harness, raced: bool) -> None:
    """Failed at once, it lost a frame the cloud answered a moment later."""
    local_run_fails_beside_the_cloud(h, raced)
    h.session.answer(0)
    r = ends_once(h, "cloud", "ok")
    assert (r["where"], r["hedged"], r.get("raced", False), r["local_error"]) == ("cloud", not raced, raced, LOCAL_ERROR)
    assert "fallback_reason" not in r
    h.session.answer(0)  # a duplicate writes nothing
    assert len(h.records) == 1 and h.finishes == {0: 1}


@pytest.mark.parametrize("raced", [False, True])
def test_a_hedged_frame_whose_local_run_failed_fails_when_its_stream_ends(h: Harness, raced: bool) -> None:
    local_run_fails_beside_the_cloud(h, raced)
    h.session.end(h.session.streams[0])
    r = ends_once(h, "none", "failed")
    assert r["error"] == f"{LOCAL_ERROR}; and no answer from the cloud: stream ended before the answer (UNAVAILABLE: gone)"
    assert h.heads.local_runs == 1  # no second local run
    h.session.answer(0)  # too late: nothing more
    assert len(h.records) == 1 and h.finishes == {0: 1}


@pytest.mark.parametrize("kind", ["RESOURCE_EXHAUSTED", "malformed"])
def test_a_hedged_frame_whose_local_run_failed_fails_on_an_answer_that_is_none(h: Harness, kind: str) -> None:
    local_run_fails_beside_the_cloud(h)
    h.session.answer(0, kind)
    r = ends_once(h, "none", "failed")
    assert r["error"].startswith(f"{LOCAL_ERROR}; and no answer from the cloud: "), r
    assert ("cloud RESOURCE_EXHAUSTED: busy" if kind != "malformed" else "malformed response") in r["error"]
    assert not h.local.jobs and h.heads.local_runs == 1


def test_a_hedged_frame_whose_local_run_failed_fails_at_the_answer_horizon(h: Harness) -> None:
    """The stream answers other frames (it is not silent), but this frame's answer never comes:
    past 2 x frame_deadline_ms after its send no answer is expected (forget_late), and it ends."""
    local_run_fails_beside_the_cloud(h)
    sent = dict(h.agent.ledger.held())[0].sent
    h.feed(1)
    h.clock.t = sent + 0.9
    h.session.answer(1)  # the stream answers: it is alive, and stays (check_silence)
    h.clock.t = sent + 2 * h.config.frame_deadline_ms / 1000 - 0.01
    h.agent.watchdog.tick()
    assert list(h.by_id()) == [1]  # frame 0 still within the horizon
    h.clock.t += 0.02
    h.agent.watchdog.tick()
    assert not h.session.given_up
    r = h.by_id()[0]
    assert r["error"] == f"{LOCAL_ERROR}; and no answer from the cloud: none within 2 x frame_deadline_ms = 2000 ms"
    assert h.finishes == {0: 1, 1: 1} and h.idle() and h.booked() == ([], [])
    assert (h.agent.summary.failed, h.agent.summary.cloud) == (1, 1)
    h.session.answer(0)
    assert len(h.records) == 2 and h.finishes == {0: 1, 1: 1}


def test_a_hedged_frame_whose_local_run_failed_is_answered_in_the_grace_or_abandoned_at_its_end(h: Harness) -> None:
    """Stopped, the agent still waits grace_s for its frames at the cloud; one still unanswered
    then is abandoned as every other such frame: no record, so resume runs it again (a failure
    record written at the stop made resume skip a frame neither side had run)."""
    local_run_fails_beside_the_cloud(h)
    h.feed(1)
    h.hedge_time_passes()
    h.local.run_all()  # frame 1's local run fails too: both wait
    h.agent.stop()
    assert not h.agent._grace_over()
    h.session.answer(1)  # within the grace: recorded
    h.clock.t += h.config.grace_s + 0.01
    h.agent.drain()
    assert h.agent.summary.abandoned == 1
    h.agent.close()
    by_id = h.by_id()
    assert list(by_id) == [1] and (by_id[1]["where"], by_id[1]["local_error"]) == ("cloud", LOCAL_ERROR)
    assert h.finishes == {1: 1} and h.agent.summary.failed == 0


def test_a_hedged_frame_whose_local_run_failed_is_abandoned_when_the_agent_closes(h: Harness) -> None:
    """close() without a drain (the run ended by an error): no record, as for every frame unanswered."""
    local_run_fails_beside_the_cloud(h)
    h.agent.close()
    assert h.records == [] and h.finishes == {}
    h.session.answer(0)  # too late: the log is closed
    assert h.records == []


@pytest.mark.parametrize("raced", [False, True])
def test_a_hedged_frame_given_up_on_before_its_local_run_fails_fails_then(h: Harness, raced: bool) -> None:
    """The other order: its stream ends while the hedge's run is queued (the run is left to end
    it), then the run fails: no answer can come any more, so it fails at once, with both reasons."""
    h.feed(0, raced=raced)
    if not raced:
        h.hedge_time_passes()
    h.session.end(h.session.streams[0])
    assert not h.records and len(h.local.jobs) == 1
    h.heads.fail_local = True
    h.local.run_all()
    r = ends_once(h, "none", "failed")
    assert r["error"] == f"{LOCAL_ERROR}; and no answer from the cloud: stream ended before the answer (UNAVAILABLE: gone)"


def test_a_local_run_no_cloud_answer_can_follow_fails_at_once(h: Harness) -> None:
    """A fallback after an error answer, a run while backing off: nothing is left to wait for."""
    h.heads.fail_local = True
    h.feed(0)
    h.session.answer(0, "RESOURCE_EXHAUSTED")
    h.session.available = False
    h.feed(1)
    h.session.available = True
    h.feed(2, raced=True)
    h.session.end(h.session.streams[0])  # frame 2 raced, its stream gone before its local run
    h.local.run_all()
    assert {fid: r["error"] for fid, r in h.by_id().items()} == {0: LOCAL_ERROR, 1: LOCAL_ERROR, 2: (
        f"{LOCAL_ERROR}; and no answer from the cloud: stream ended before the answer (UNAVAILABLE: gone)")}
    assert h.finishes == {0: 1, 1: 1, 2: 1} and h.idle() and h.booked() == ([], [])


def test_a_head_that_fails_is_its_frames_failure_record_and_the_run_goes_on(h: Harness) -> None:
    """A head raising on the capture thread (an accelerator gone mid-run) killed the agent with a
    traceback and left its frame without a record; now the frame fails and the next one runs."""
    h.heads.fail_heads = True
    h.feed(0, k=1)
    r = h.by_id()[0]
    assert r["status"] == "failed" and r["error"] == ("head 1 failed on the edge: RuntimeError('Node number 3 "
                                                      "(EdgeTpuDelegateForCustomOp) failed to invoke.')"), r
    assert h.idle() and h.booked() == ([], []) and not h.session.streams  # nothing was sent
    h.heads.fail_heads = False
    h.feed(1, k=1)
    assert [req.frame_id for req in h.session.streams[0].sent] == [1]


def test_runs_that_fail_in_a_row_end_the_run_with_one_message(tmp_path: Path) -> None:
    """A device that fails every run (heads on the capture thread, whole-model runs on the local
    executor) stops the agent after three in a row, rather than fail every frame of a flight;
    a run that succeeds in between starts the count again."""
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor())
    h.start()
    h.heads.fail_heads = h.heads.fail_local = True
    h.feed(0, k=1)
    h.feed(1, k=K)
    h.heads.fail_heads = h.heads.fail_local = False
    h.feed(2, k=K)  # works: the count starts again
    h.heads.fail_heads = h.heads.fail_local = True
    h.feed(3, k=K)
    h.feed(4, k=1)
    assert h.agent._fatal is None and not h.agent._stop.is_set()
    h.feed(5, k=1)
    fatal = h.agent._fatal
    assert isinstance(fatal, DeviceFailedError) and h.agent._stop.is_set()
    assert str(fatal).startswith("the edge device (the edge) failed 3 runs in a row, the last: head 1 failed on the "
                                 "edge: RuntimeError('Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.'). "
                                 "Restarting the agent loads the heads again"), fatal
    assert [r["status"] for r in h.records] == ["failed", "failed", "ok", "failed", "failed", "failed"]
    assert h.idle()
    h.agent.close()


def test_frames_at_the_cloud_when_the_device_fails_are_still_recorded(h: Harness) -> None:
    """A failed device stops the agent as SIGTERM does: the results log still works, so a frame
    the cloud has not answered yet gets grace_s for its answer. Waiting not at all (as for a log
    that cannot be written) left it without a record (CI, stop 46: frame 4 lost between 3 and 5)."""
    h.feed(0, k=1)  # at the cloud
    h.heads.fail_heads = True
    for fid in (1, 2, 3):
        h.feed(fid, k=1)
    assert isinstance(h.agent._fatal, DeviceFailedError) and h.agent._stop.is_set()
    assert not h.agent._grace_over()  # frame 0 is waited for...
    h.session.answer(0)
    h.agent.drain()
    assert h.agent.summary.abandoned == 0
    assert [(fid, r["status"]) for fid, r in sorted(h.by_id().items())] == [(0, "ok"), (1, "failed"), (2, "failed"),
                                                                            (3, "failed")]
    h.clock.t += h.config.grace_s + 0.01
    assert h.agent._grace_over()  # ...for grace_s at most


def test_frames_sent_whole_do_not_hide_a_device_that_fails_every_run(tmp_path: Path) -> None:
    """k = 0 runs nothing on the device (it quantizes the input): frames sent whole between
    failing local runs must not start the count again, or a dead accelerator behind an adaptive
    policy that sends some frames whole would never be declared dead."""
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor())
    h.start()
    h.heads.fail_local = True
    for fid in range(3):
        h.feed(2 * fid, k=K)
        h.feed(2 * fid + 1, k=0)
    assert isinstance(h.agent._fatal, DeviceFailedError)
    h.agent.close()


def test_a_device_that_fails_every_run_stops_the_agent_with_exit_1(tmp_path: Path) -> None:
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor())
    h.heads.fail_local = True
    h.policy.k = K
    with pytest.raises(DeviceFailedError) as info:
        h.agent.run(ListSource(50, False))
    assert info.value.exit_code == 1
    assert [r["status"] for r in h.records] == ["failed"] * 3  # then it stopped reading frames


def test_device_health_counts_failures_in_a_row_and_is_fatal_once() -> None:
    told: list[bool] = []
    health = DeviceHealth("edgetpu:usb:0", lambda: told.append(True), limit=2)
    assert health.failed("head 4", OSError("x")) == "head 4 failed on edgetpu:usb:0: OSError('x')"
    health.ok()
    health.failed("head 4", OSError("x"))
    assert health.fatal is None and not told
    health.failed("the whole model", OSError("y"))
    health.failed("the whole model", OSError("z"))
    assert told == [True] and str(health.fatal).startswith(
        "the edge device (edgetpu:usb:0) failed 2 runs in a row, the last: the whole model failed on edgetpu:usb:0: "
        "OSError('y'). A USB accelerator that dropped off the bus fails every run until it is opened again: check "
        "the power supply and cable")


@pytest.mark.parametrize("k", [K, 1])
def test_a_result_no_record_can_be_made_of_is_a_failure_record(h: Harness, monkeypatch: pytest.MonkeyPatch,
                                                                k: int) -> None:
    # a detector's decoder raising on a local run's maps (or on a cloud answer's boxes) left the
    # frame claimed and unfinished: the agent hung on its window slot until killed
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise IndexError("list index out of range")

    monkeypatch.setattr(h.agent.edge.recorder, "ok", broken)
    h.feed(0, k=k)
    if k != K:
        h.session.answer(0)
    h.local.run_all()
    r = h.by_id()[0]
    where = "local" if k == K else "cloud"
    assert r["status"] == "failed" and r["error"] == f"{where} result could not be recorded: IndexError('list index out of range')"
    assert h.idle() and h.booked() == ([], [])


def test_survey_run_with_a_read_failure(tmp_path: Path) -> None:
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor(), window=2)
    h.policy.k = K

    frames = [Frame(i, np.zeros((2, 2, 1), np.uint8), None, f"fake#{i}", time.time_ns()) for i in (0, 1, 3)]

    class ReadFails:
        """next() gives 0, 1, a read failure for 2, then 3 (as a source does)."""

        description = "fake"

        def __iter__(self) -> Any:
            return self

        def __init__(self) -> None:
            self.n = 0

        def __next__(self) -> Frame:
            self.n += 1
            if self.n == 3:
                raise FrameReadError(2, "fake#2", "truncated")
            if not frames:
                raise StopIteration
            return frames.pop(0)

    summary = h.agent.run(ReadFails())
    by_id = h.by_id()
    assert sorted(by_id) == [0, 1, 2, 3]
    assert by_id[2]["status"] == "failed" and "truncated" in by_id[2]["error"]
    assert all(by_id[i]["where"] == "local" for i in (0, 1, 3))
    assert summary.frames == 4 and summary.failed == 1 and summary.local == 3
    assert [json.loads(line)["frame_id"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    assert h.session.closed_with is False and h.local.closed


def test_on_ready_comes_after_the_sessions_start_and_before_the_first_frame(tmp_path: Path) -> None:
    """A driver restarts a link trace on it: it must come after the session's first probe
    (session.start), or an adaptive run meets the trace shifted by that probe's time, and
    before the first frame is asked for (when a paced source's clock starts)."""
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor())
    h.policy.k = K
    order: list[str] = []
    start = h.session.start

    def starting(callbacks: SessionCallbacks) -> None:
        order.append("session started")
        start(callbacks)

    h.session.start = starting  # type: ignore[method-assign]

    class Source:
        description = "fake"

        def __iter__(self) -> Any:
            order.append("first frame asked for")
            return iter([Frame(0, np.zeros((2, 2, 1), np.uint8), None, "fake#0", time.time_ns())])

    h.agent.run(Source(), on_ready=lambda: order.append("ready"))
    assert order == ["session started", "ready", "first frame asked for"]
    assert [r["frame_id"] for r in h.records] == [0]


class CameraLike:
    """A source that numbers its frames from 0 each time it is opened, as a camera does."""

    description = "fake camera"
    restarts_numbering = True

    def __init__(self, n: int) -> None:
        self.n, self.first = n, 0

    def number_from(self, first: int) -> None:
        self.first = first

    def __iter__(self) -> Any:
        return iter([Frame(i, np.zeros((2, 2, 1), np.uint8), None, f"camera:9#{i}", time.time_ns())
                     for i in range(self.first, self.first + self.n)])


def test_a_camera_resumes_after_the_highest_id_of_the_log(tmp_path: Path) -> None:
    """A camera numbers its frames from 0 each time it opens: a resumed run numbers them after the
    log's highest id (one of another source's records too), and checks no origin against it."""
    log = tmp_path / "r.jsonl"
    log.write_text("".join(f'{{"frame_id":{i},"origin":"camera:9#{i}","status":"ok"}}\n' for i in range(5))
                   + '{"origin": "img_0.png", "frame_id": 40}\n')
    h = Harness(log, executor=ImmediateExecutor())
    h.policy.k = K
    h.agent.run(CameraLike(3))
    assert [r["frame_id"] for r in h.records] == [41, 42, 43]
    assert [json.loads(line)["frame_id"] for line in log.read_text().splitlines()] == [0, 1, 2, 3, 4, 40, 41, 42, 43]


class HoursCamera(CameraLike):
    """A camera whose frames come an hour apart on the agent's clock."""

    def __init__(self, n: int, clock: ManualClock) -> None:
        super().__init__(n)
        self.clock = clock

    def __iter__(self) -> Any:
        for frame in super().__iter__():
            yield frame
            self.clock.t += 3600


def test_a_cameras_run_rotates_its_log_and_resumes_after_the_newest(tmp_path: Path) -> None:
    """results_rotate_h = 2: a log every two hours of frames, each frame in exactly one; a
    restart numbers after the newest log's records, as after any resume."""
    log = tmp_path / "r.jsonl"
    h = Harness(log, executor=ImmediateExecutor(), results_rotate_h=2)
    h.policy.k = K
    h.agent.recorder._clock = h.clock
    h.agent.run(HoursCamera(5, h.clock))
    rotated = h.agent.recorder.rotated
    assert len(rotated) == 2 and all(p.parent == tmp_path and p.suffix == ".jsonl" for p in rotated), rotated
    logs = [[json.loads(line)["frame_id"] for line in p.read_text().splitlines()] for p in [*rotated, log]]
    assert logs == [[0, 1], [2, 3], [4]], logs
    again = Harness(log, executor=ImmediateExecutor(), results_rotate_h=2)
    again.policy.k = K
    again.agent.run(CameraLike(2))
    assert [r["frame_id"] for r in again.records] == [5, 6]
    # stopped right after a rotation, before the new log had a record: numbered after the renamed log
    rotate_results(log)
    log.touch()
    third = Harness(log, executor=ImmediateExecutor(), results_rotate_h=2)
    third.policy.k = K
    third.agent.run(CameraLike(2))
    assert [r["frame_id"] for r in third.records] == [7, 8]
    # ... and with resume off, from 0 as ever
    fresh = Harness(tmp_path / "fresh.jsonl", executor=ImmediateExecutor(), results_rotate_h=2, resume=False)
    fresh.policy.k = K
    fresh.agent.run(CameraLike(1))
    assert [r["frame_id"] for r in fresh.records] == [0]
    with pytest.raises(ConfigError, match="rotates the results log of a camera's run only"):
        Harness(tmp_path / "other.jsonl", executor=ImmediateExecutor(), results_rotate_h=2).agent.run(ListSource(2, False))
    assert not (tmp_path / "other.jsonl").exists()  # refused before the log was made


class AwayCamera:
    """Two frames, then a wait of its own - a camera being opened again (edge_node/video_sources.py) -
    that only the reader's stop ends (stop_when)."""

    description = "fake camera, unplugged"

    def __init__(self) -> None:
        self.stopping: Any = lambda: False
        self.away = threading.Event()

    def stop_when(self, check: Any) -> None:
        self.stopping = check

    def __iter__(self) -> Any:
        for i in range(2):
            yield Frame(i, np.zeros((2, 2, 1), np.uint8), None, f"camera:9#{i}", time.time_ns())
        self.away.set()
        deadline = time.monotonic() + 10
        while not self.stopping():
            assert time.monotonic() < deadline, "the reader's stop never reached the source"
            time.sleep(0.01)


@pytest.mark.parametrize("capture", ["survey", "live"])
def test_sigterm_while_the_camera_is_away_ends_the_run(tmp_path: Path, capture: str) -> None:
    """A camera opened again for up to camera_reopen_s (30 s by default) waits inside the source:
    the agent's stop must reach that wait, or SIGTERM would wait out the camera, past grace_s."""
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor(), capture=capture)
    h.policy.k = K
    camera = AwayCamera()
    ended: list[object] = []

    def go() -> None:
        try:
            ended.append(h.agent.run(camera))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            ended.append(exc)

    run = threading.Thread(target=go, daemon=True)
    run.start()
    assert camera.away.wait(10)
    h.agent.stop()
    run.join(10)
    assert not run.is_alive(), "the run did not end"
    assert isinstance(ended[0], RunSummary), ended
    assert sorted(r["frame_id"] for r in h.records) == [0, 1]


class PlanningPolicy(FakePolicy):
    """Plans paths as an adaptive policy does (it has a link estimate); remembers next_arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.link = LinkEstimator()
        self.next_arrivals: list[float | None] = []

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Timeline,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice:
        self.next_arrivals.append(next_arrival)
        return super().plan(frame_id, candidates, now, timeline, arrived, next_arrival)


class CandidatesPolicy(PlanningPolicy):
    """An adaptive policy that remembers the splits each plan was offered."""

    def __init__(self) -> None:
        super().__init__()
        self.offered: list[list[int]] = []

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Timeline,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice:
        self.offered.append(list(candidates))
        return super().plan(frame_id, candidates, now, timeline, arrived, next_arrival)


def test_a_split_the_cloud_does_not_serve_is_left_out_of_the_plan(tmp_path: Path) -> None:
    """An adaptive agent against a server started with `cloud --splits 0` kept planning split 1:
    every frame was refused NOT_FOUND, ran here, and backed the agent off ("0 cloud, 200
    local"). The refusal takes split 1 out of the plan for the rest of the run; K always stays."""
    policy = CandidatesPolicy()
    h = Harness(tmp_path / "r.jsonl", policy=policy).start()
    try:
        h.feed(0)
        h.session.answer(0, "NOT_FOUND", "split 1 has no tail on this server; servable: 0")
        h.local.run_all()
        h.feed(1, k=0)
        h.session.answer(1, "NOT_FOUND", "tail 0 not found")  # another NOT_FOUND: not a split left out
        h.local.run_all()
        h.feed(2, k=0)
        assert policy.offered == [[0, 1, K], [0, K], [0, K]]
        assert h.by_id()[0]["fallback_reason"] == "cloud NOT_FOUND: split 1 has no tail on this server; servable: 0"
    finally:
        h.agent.close()


def test_splits_a_described_server_lacks_are_left_out_of_the_plan_from_the_start() -> None:
    from edge_node.served_splits import ServedSplits

    served = ServedSplits()
    served.described(None, [0, 1, 2])  # not reached: nothing learnt
    assert served.candidates([0, 1, 2, K], K) == [0, 1, 2, K]
    served.described(SimpleNamespace(splits=[SimpleNamespace(split=1)]), [0, 1, 2])
    assert served.candidates([0, 1, 2, K], K) == [1, K]
    served.refused(1, "10.0.0.5:50051")
    assert served.candidates([0, 1, 2, K], K) == [K]  # all on the edge: K is never left out


class ListSource:
    def __init__(self, n: int, paced: bool) -> None:
        self.description = "fake"
        self.paced = paced
        self.frames = [Frame(i, np.zeros((2, 2, 1), np.uint8), None, f"fake#{i}", time.time_ns()) for i in range(n)]

    def __iter__(self) -> Any:
        return iter(self.frames)


@pytest.mark.parametrize("paced", [False, True])
def test_latency_mode_keeps_one_unpaced_frame_in_flight_and_overlaps_paced_ones(tmp_path: Path, paced: bool) -> None:
    policy = PlanningPolicy()
    policy.k = K
    h = Harness(tmp_path / "r.jsonl", executor=ImmediateExecutor(), policy=policy, mode="latency", window=4)
    assert h.agent.ledger.window == 4  # an adaptive policy may overlap frames in latency mode...
    summary = h.agent.run(ListSource(3, paced))
    assert summary.frames == 3 and sorted(h.by_id()) == [0, 1, 2]
    # ...when they come at a camera's pace; an unpaced source's frame read early would only wait
    assert h.agent.ledger.window == (4 if paced else 1)
    assert policy.next_arrivals == ([None] * 3 if paced else [math.inf] * 3)


def test_live_capture_drops_the_oldest_when_behind(h: Harness) -> None:
    buffer = LiveBuffer(1)
    frames = iter([Frame(i, np.zeros((2, 2, 1), np.uint8), None, f"fake#{i}", time.time_ns()) for i in range(3)])
    h.agent.capture._read_live(frames, buffer)  # the reader thread's body, here on the test's thread
    assert [(r["frame_id"], r["status"], r["reason"]) for r in h.records] == [(0, "dropped", DROP_REASON),
                                                                            (1, "dropped", DROP_REASON)]
    assert buffer.get().index == 2 and h.agent.summary.dropped == 2


def test_stop_abandons_what_the_link_never_answers_within_grace(h: Harness) -> None:
    h.feed(0)
    h.feed(1)
    h.session.answer(1)
    h.agent.stop()
    h.clock.t += h.config.grace_s + 0.01  # the grace period passes with frame 0 unanswered
    h.agent.drain()
    assert h.agent.summary.abandoned == 1
    h.agent.close()
    assert h.session.closed_with is True and h.local.closed  # its stream is cancelled
    h.session.answer(0)  # too late: the log is closed
    h.local.run_all()
    assert list(h.by_id()) == [1]


def test_the_session_moves_off_a_busy_replica_and_backs_off_after_a_stream_error() -> None:
    """OffloadSession's own decisions, with a stand-in for the client and its streams."""
    opened: list[Any] = []

    def open_stream(lifetime: float, on_response: Any, on_end: Any) -> Any:
        stream = SimpleNamespace(accepting=True, age_s=0.0, replica="r", closed=False)
        stream.close = lambda: setattr(stream, "accepting", False)
        opened.append(stream)
        return stream

    client = SimpleNamespace(address="fake:1", open_stream=open_stream)
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", LinkEstimator(), client=client,
                             jitter=lambda backoff: 60.0)  # a wait no test outlives
    answers: list[int] = []
    session.start(SessionCallbacks(lambda s, r: answers.append(r.frame_id), lambda s, e: 1))
    stream = session.current_stream()
    assert session.current_stream() is stream and not session.reached()
    busy = offload_pb2.InferResponse(frame_id=7)
    busy.error.code = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    session._on_response(stream, busy)
    assert answers == [7] and session.reached() and not stream.accepting  # moved off that replica
    second = session.current_stream()
    assert second is not stream and len(opened) == 2
    second.accepting = False  # as an InferStream that ended
    session._on_stream_end(second, RemoteError(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    assert session.current_stream() is None  # backing off
    assert session._backoff == 2 * BACKOFF_START_S
    assert session.no_stream_reason() == "cloud unreachable (waiting to reconnect)"
    session._on_stream_end(second, RemoteError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token"))
    # reached, and refused: not "unreachable" in the records of the frames run meanwhile
    assert session.no_stream_reason() == "cloud refused this agent (UNAUTHENTICATED) (waiting to retry)"
    session._on_response(second, offload_pb2.InferResponse(frame_id=8))  # the link works again
    assert session._backoff == BACKOFF_START_S
    # a stream given up as silent is cancelled, and the session backs off as after an error
    session._retry_at = 0.0
    third = session.current_stream()
    third.cancel = lambda: setattr(third, "accepting", False)
    session.give_up(third, "1 frame(s) waited frame_deadline_ms = 2000 and nothing came back")
    assert not third.accepting and session.current_stream() is None
    assert session._backoff == 2 * BACKOFF_START_S
    assert session.no_stream_reason() == "cloud unreachable (waiting to reconnect)"  # silence: not the refusal


@pytest.mark.parametrize("details, rotation", [
    ("max connection age", True),
    ("server is shutting down; frames without a response were not accepted", True),  # the servicer's words
    ("connection reset", False), ("the server is shutting down", False)])
def test_a_stream_the_server_ended_on_purpose_is_no_failure(details: str, rotation: bool,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A stream aged out or ended by a draining replica is replaced at once (no backoff, an INFO);
    any other UNAVAILABLE end backs off. The drain's status text is the server's DRAINING_DETAILS."""
    assert DRAINING_DETAILS == "server is shutting down"  # the prefix agents of older versions match
    client = SimpleNamespace(address="fake:1", open_stream=lambda *a: SimpleNamespace(accepting=True, age_s=0.0))
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", LinkEstimator(), client=client,
                             jitter=lambda backoff: 60.0)
    session.start(SessionCallbacks(lambda s, r: None, lambda s, e: 2))
    stream = SimpleNamespace(replica="replica-0")
    with caplog.at_level(logging.INFO, logger="edge_node.agent"):
        session._on_stream_end(stream, RemoteError(grpc.StatusCode.UNAVAILABLE, details))
    assert (session.current_stream() is not None) == rotation
    ended = [r for r in caplog.records if "stream to replica-0 ended" in r.getMessage()]
    assert [r.levelname for r in ended] == (["INFO"] if rotation else ["WARNING"]), [r.getMessage() for r in ended]


def test_the_session_logs_streams_that_keep_failing_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    """A server down for an hour, retried every 5 s: a WARNING per failed stream was ~24 lines a
    minute in a soak (35,000 a day on a drone's journal); now one a minute, and a line when an
    answer comes again."""
    clock = ManualClock()
    client = SimpleNamespace(address="fake:1", open_stream=None)
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", LinkEstimator(), client=client,
                             clock=clock)
    session.start(SessionCallbacks(lambda s, r: None, lambda s, e: 1))
    stream = SimpleNamespace(replica="r", accepting=False)
    with caplog.at_level(logging.INFO, logger="edge_node.agent"):
        for _ in range(720):
            session._on_stream_end(stream, RemoteError(grpc.StatusCode.UNAVAILABLE, "connection refused"))
            clock.t += 5.0
        session._on_response(stream, offload_pb2.InferResponse(frame_id=1))
    lines = [r for r in caplog.records if r.name == "edge_node.agent"]
    assert sum(r.levelno == logging.WARNING for r in lines) == 60, [r.getMessage() for r in lines]
    assert lines[-1].getMessage() == "streams work again after 720 failed in 3600 s"


def test_grpc_tries_to_connect_again_as_often_as_the_session_does() -> None:
    """The session retries a failed stream within BACKOFF_MAX_S, but a stream opened while the
    channel waits out gRPC's own reconnect backoff (120 s by default) fails at once: after a
    4-minute link loss the first frame was offloaded 22 s after the link came back."""
    from edge_node.client import OffloadClient
    from edge_node.session import BACKOFF_MAX_S

    client = OffloadClient("127.0.0.1:1")
    try:
        options = dict(client.channels._options)
    finally:
        client.close()
    assert options.get("grpc.max_reconnect_backoff_ms", 120_000) <= BACKOFF_MAX_S * 1000


def test_the_session_backs_off_from_a_server_on_another_bundle() -> None:
    """A server restarted on another bundle refused every frame (FAILED_PRECONDITION), and the agent
    went on sending each one - uplink and battery for nothing - since any answer reset its backoff."""
    opened: list[Any] = []

    def open_stream(lifetime: float, on_response: Any, on_end: Any) -> Any:
        stream = SimpleNamespace(accepting=True, age_s=0.0, replica="r")
        stream.close = lambda: setattr(stream, "accepting", False)
        opened.append(stream)
        return stream

    clock = ManualClock(100.0)
    session = OffloadSession(EdgeConfig(bundle="b", source="s"), "sha256:fake", LinkEstimator(),
                             client=SimpleNamespace(address="fake:1", open_stream=open_stream),
                             jitter=lambda backoff: backoff, clock=clock)
    answers: list[int] = []
    session.start(SessionCallbacks(lambda s, r: answers.append(r.frame_id), lambda s, e: 1))
    refused = offload_pb2.InferResponse(frame_id=1)
    refused.error.code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    refused.error.message = ("model_digest 'sha256:fake' does not match the server's bundle 'sha256:other' "
                             "(digits-cnn): agent and server run different bundles")  # cloud_server/validation.py
    waits = []
    for _ in range(5):
        stream = session.current_stream()
        assert stream is not None
        session._on_response(stream, refused)
        assert not stream.accepting and session.current_stream() is None  # frames run here meanwhile
        assert session.no_stream_reason() == "cloud runs another bundle (waiting to retry)"
        waits.append(session._retry_at - clock.t)
        clock.t = session._retry_at
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0] and len(answers) == 5  # each refused frame still answered (falls back)
    session._on_response(session.current_stream(), offload_pb2.InferResponse(frame_id=2))  # the bundle is back
    assert session._backoff == BACKOFF_START_S and session.current_stream() is opened[-1]
    # a tail of this bundle the server cannot load is FAILED_PRECONDITION too, and that frame's alone: it
    # was taken for another bundle ("cloud runs another bundle") and every split backed off
    bad_tail = offload_pb2.InferResponse(frame_id=3)
    bad_tail.error.code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    bad_tail.error.message = ("tail of split 3 not loaded: cloud/tail_3.keras takes (None, 8, 8, 16), the manifest's "
                              "split 3 cuts (1, 4, 4, 32): the file belongs to another split or bundle; partition again")
    stream = session.current_stream()
    session._on_response(stream, bad_tail)
    assert stream.accepting and session.current_stream() is stream and len(answers) == 7  # answered: falls back
    assert session._backoff == BACKOFF_START_S


# ---------------------------------------------------------------------- random interleavings


class AgentLoopMachine(RuleBasedStateMachine):
    """Frames fed, answered (well, with errors, malformed, twice), their streams ended, hedges
    fired, local runs run (or failed: the edge device errs), and stop - in any order. Every
    frame ends in at most one record, and once everything settles in exactly one, with its slot
    released exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="agent-loop-"))
        self.h = Harness(self.dir / "r.jsonl", window=3).start()
        self.next_id = 0
        self.fed: list[int] = []
        self.stopped = False

    def _sent(self) -> list[int]:
        return sorted({r.frame_id for s in self.h.session.streams for r in s.sent})

    @precondition(lambda self: not self.stopped)
    @rule(k=st.sampled_from([1, 1, K, "raced"]), backing_off=st.booleans())
    def feed(self, k: int | str, backing_off: bool) -> None:
        if not self.h.agent.ledger.acquire(timeout=0):
            return  # the window is full: the capture loop would wait
        self.h.agent.ledger.release_unused()
        self.h.session.available = not backing_off
        self.h.feed(self.next_id, 0 if k == "raced" else int(k), raced=k == "raced")
        self.fed.append(self.next_id)
        self.next_id += 1

    @rule(data=st.data(), kind=st.sampled_from(["ok", "ok", "malformed", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"]))
    def answer(self, data: st.DataObject, kind: str) -> None:
        sent = self._sent()
        if sent:
            self.h.session.answer(data.draw(st.sampled_from(sent)), kind)

    @rule(data=st.data())
    def answer_a_waiting_frame(self, data: st.DataObject) -> None:
        """A frame still held for its answer gets it: also one hedged or raced whose local run failed."""
        held = sorted(fid for fid, _ in self.h.agent.ledger.held())
        if held:
            self.h.session.answer(data.draw(st.sampled_from(held)))

    @rule(data=st.data(), code=st.sampled_from([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, None]))
    def end_stream(self, data: st.DataObject, code: grpc.StatusCode | None) -> None:
        live = [s for s in self.h.session.streams if s.open]
        if live:
            self.h.session.end(data.draw(st.sampled_from(live)), code)

    @rule()
    def hedge_time_passes(self) -> None:
        self.h.hedge_time_passes()

    @rule()
    def frame_deadline_passes(self) -> None:  # a stream still owing its frames is given up
        self.h.clock.t += self.h.config.frame_deadline_ms / 1000 + 0.001
        self.h.agent.watchdog.tick()

    @rule()
    def run_a_local_job(self) -> None:
        if self.h.local.jobs:
            self.h.local.run_one()

    @rule()
    def hedges_fire_and_the_device_fails_the_queued_runs(self) -> None:
        """The edge device errs on every local run queued once the hedges due have fired: a hedge's
        or race's leaves its frame waiting for its answer, any other fails its frame; three in a
        row stop the agent (its stop(), as SIGTERM)."""
        self.h.hedge_time_passes()
        self.h.heads.fail_local = True
        self.h.local.run_all()
        self.h.heads.fail_local = False

    @precondition(lambda self: not self.stopped)
    @rule()
    def stop(self) -> None:
        self.stopped = True
        self.h.agent.stop()
        self.h.clock.t += self.h.config.grace_s + 0.01
        self.h.agent.drain()
        self.h.agent.close()

    @invariant()
    def at_most_one_record_and_one_release_per_frame(self) -> None:
        self.h.agent.ledger._invariant()
        self.h.by_id()
        assert all(n == 1 for n in self.h.finishes.values()), self.h.finishes
        assert set(self.h.finishes) <= set(self.fed)

    def teardown(self) -> None:
        try:
            h = self.h
            if not self.stopped:
                for s in [s for s in h.session.streams if s.open]:  # whatever is still waiting ends
                    h.session.end(s)
                h.clock.t += 10.0
                h.agent.watchdog.tick()
                h.local.run_all()
                assert sorted(h.by_id()) == self.fed, "every frame ends in exactly one record"
                assert sorted(h.finishes) == self.fed and h.idle()
                # every booking the plans made was released: a forgotten one would look like a
                # stalled transfer for ever and send every later frame local
                assert h.booked() == ([], []), h.booked()
            else:
                recorded = set(h.by_id())
                assert recorded <= set(self.fed)
                assert h.agent.summary.abandoned == len(self.fed) - len(recorded)  # the rest: no record
            h.agent.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


TestAgentLoopMachine = AgentLoopMachine.TestCase
TestAgentLoopMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
