"""The frame ledger and the local executor: every admitted frame finishes exactly once.

A hypothesis state machine drives the ledger through random sequences of what
the agent's threads do (admit, hold, a path claiming a frame, finish from any
path, repeated finishes, slots taken and given back unused); real threads then
race every ending path for the same frames. The local executor runs jobs one at
a time, in order, on its own thread.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge_node.ledger import FrameLedger
from edge_node.local_executor import LocalExecutor

EVENT_TIMEOUT_S = 10.0


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.window = 3
        self.ledger = FrameLedger(self.window)
        self.writes: Counter[int] = Counter()
        self.next_id = 0
        self.admitted: set[int] = set()
        self.held: set[int] = set()
        self.finished: set[int] = set()
        self.claimed: set[int] = set()

    def _write(self, fid: int):
        return lambda: self.writes.update([fid])

    @precondition(lambda self: len(self.admitted - self.finished) < self.window)
    @rule()
    def admit(self) -> None:
        assert self.ledger.acquire(timeout=0)
        self.ledger.admit(self.next_id)
        self.admitted.add(self.next_id)
        self.next_id += 1

    @precondition(lambda self: len(self.admitted - self.finished) < self.window)
    @rule()
    def slot_without_frame(self) -> None:  # end of source, or a read failure
        assert self.ledger.acquire(timeout=0)
        self.ledger.release_unused()

    @precondition(lambda self: len(self.admitted - self.finished) == self.window)
    @rule()
    def window_full(self) -> None:
        assert not self.ledger.acquire(timeout=0)

    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        open_ = sorted(self.admitted - self.finished - self.held)
        if open_:
            fid = data.draw(st.sampled_from(open_))
            self.ledger.hold(fid, ("pending", fid))
            self.held.add(fid)

    @rule(data=st.data())
    def a_path_claims(self, data: st.DataObject) -> None:
        """An answer, the watchdog or a stream end takes the frame (only one ever gets it)."""
        if not self.admitted:
            return
        fid = data.draw(st.sampled_from(sorted(self.admitted)))
        got = self.ledger.claim(fid)
        if fid in self.held and fid not in self.claimed and fid not in self.finished:
            assert got == ("pending", fid)
            self.claimed.add(fid)
        else:
            assert got is None

    @rule(data=st.data())
    def a_path_finishes(self, data: st.DataObject) -> None:
        """Any path ends any frame, also one already ended: only the first call writes."""
        if not self.admitted:
            return
        fid = data.draw(st.sampled_from(sorted(self.admitted)))
        first = self.ledger.finish(fid, self._write(fid))
        assert first == (fid not in self.finished)
        self.finished.add(fid)

    @rule()
    def stop_and_finish_everything(self) -> None:
        for fid in sorted(self.admitted):
            self.ledger.finish(fid, self._write(fid))
        self.finished |= self.admitted
        assert self.ledger.wait_idle(lambda: True)
        assert self.writes == Counter({fid: 1 for fid in self.admitted})

    @invariant()
    def slots_are_conserved(self) -> None:
        self.ledger._invariant()
        assert self.ledger.open_frames == len(self.admitted - self.finished)
        assert all(n == 1 for n in self.writes.values())
        assert set(self.writes) == self.finished


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), window=st.integers(1, 4))
def test_racing_threads_end_each_frame_exactly_once(seed: int, window: int) -> None:
    """The loop admits and holds frames; for each, an answer thread, the watchdog, a stream-end
    handler and a stop all try to end it at once, in a random order."""
    rng = random.Random(seed)
    ledger = FrameLedger(window)
    writes: Counter[int] = Counter()
    writes_lock = threading.Lock()
    threads: list[threading.Thread] = []
    n_frames = 20

    def write(fid: int) -> None:
        with writes_lock:
            writes[fid] += 1

    def claim_then_finish(fid: int) -> None:
        if ledger.claim(fid) is not None:
            ledger.finish(fid, lambda: write(fid))

    def finish(fid: int) -> None:
        ledger.finish(fid, lambda: write(fid))

    for fid in range(n_frames):
        assert ledger.acquire(timeout=EVENT_TIMEOUT_S), "a slot was never given back"
        ledger.admit(fid)
        ledger.hold(fid, fid)
        paths = [claim_then_finish, claim_then_finish, claim_then_finish, finish]
        rng.shuffle(paths)
        for path in paths[: rng.randint(1, len(paths))]:
            t = threading.Thread(target=path, args=(fid,))
            threads.append(t)
            t.start()
    assert ledger.wait_idle(lambda: False)
    for t in threads:
        t.join(EVENT_TIMEOUT_S)
    assert writes == Counter({fid: 1 for fid in range(n_frames)})
    ledger._invariant()
    assert ledger.open_frames == 0


def test_finish_frees_the_slot_even_when_the_write_fails() -> None:
    ledger = FrameLedger(1)
    assert ledger.acquire(timeout=0)
    ledger.admit(0)

    def failing() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        ledger.finish(0, failing)
    assert ledger.acquire(timeout=0)  # the slot came back
    assert not ledger.finish(0)  # and the frame is ended


def test_wait_idle_gives_up_when_told() -> None:
    ledger = FrameLedger(2)
    assert ledger.acquire(timeout=0)
    ledger.admit(7)
    calls = []
    assert ledger.wait_idle(lambda: calls.append(1) or len(calls) >= 3, poll_s=0.001) is False
    assert ledger.open_frames == 1


def test_misuse_is_refused() -> None:
    ledger = FrameLedger(1)
    with pytest.raises(RuntimeError):
        ledger.admit(0)  # no slot acquired
    with pytest.raises(RuntimeError):
        ledger.release_unused()
    assert ledger.acquire(timeout=0)
    ledger.admit(0)
    with pytest.raises(RuntimeError):
        ledger.hold(1, "not admitted")
    with pytest.raises(ValueError):
        FrameLedger(0)


# ---------------------------------------------------------------- the local executor


def test_local_runs_go_one_at_a_time_in_order_on_one_thread() -> None:
    executor = LocalExecutor()
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def job(i: int) -> None:
        seen.append((i, threading.current_thread().name))
        if i == 1:
            raise RuntimeError("a failed job does not stop the next")
        if i == 9:
            done.set()

    try:
        for i in range(10):
            assert executor.submit(lambda i=i: job(i))
        assert done.wait(EVENT_TIMEOUT_S)
    finally:
        executor.close()
    assert [i for i, _ in seen] == list(range(10))
    assert {name for _, name in seen} == {"local-executor"}


def test_close_drops_queued_jobs_and_refuses_new_ones() -> None:
    executor = LocalExecutor()
    running, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def slow() -> None:
        running.set()
        release.wait(EVENT_TIMEOUT_S)
        ran.append(0)

    executor.submit(slow)
    executor.submit(lambda: ran.append(1))
    assert running.wait(EVENT_TIMEOUT_S)
    executor.close(timeout_s=0)  # closed while the job runs: returns at once
    release.set()
    executor._thread.join(EVENT_TIMEOUT_S)
    assert not executor._thread.is_alive()
    assert ran == [0]  # the running job finished, the queued one was dropped
    assert executor.submit(lambda: ran.append(2)) is False
