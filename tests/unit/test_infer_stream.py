"""One Infer stream's answering loop (cloud_server.infer_stream), driven without a socket.

The loop sleeps until something happens instead of polling; these check that every way a
stream ends wakes it - draining, the client going away, the idle time running out - well
before the SAFETY_WAKE_S net would, and that frames are answered as before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import pytest

from cloud_server.admission import InflightBytes
from cloud_server.infer_stream import SAFETY_WAKE_S, StreamWakers, serve_stream
from splitpoint.errors import RequestError
from splitpoint.v1 import offload_pb2

#: the loop must end within this after the event that ends it: far below the safety net, so that
#: a loop that only noticed on its safety wake fails
PROMPT_S = SAFETY_WAKE_S / 2


class FakeContext:
    def __init__(self) -> None:
        self.active = True
        self.callbacks: list[Any] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def add_callback(self, cb: Any) -> bool:
        self.callbacks.append(cb)
        return True

    def is_active(self) -> bool:
        return self.active

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def terminate(self) -> None:  # what gRPC does when the client cancels
        self.active = False
        for cb in self.callbacks:
            cb()


class Unparseable:
    def error(self) -> RequestError:
        return RequestError(grpc.StatusCode.INVALID_ARGUMENT, "not a message")


class WatchedWakers(StreamWakers):
    def __init__(self) -> None:
        super().__init__()
        self.added = threading.Event()

    def add(self, q: queue.Queue) -> None:
        super().add(q)
        self.added.set()


class Stream:
    """serve_stream on a thread, over requests fed by the test."""

    def __init__(self, requests: Iterator[Any], idle_timeout_s: float = 0.0) -> None:
        self.context = FakeContext()
        self.draining = threading.Event()
        self.wakers = WatchedWakers()
        self.responses: list[offload_pb2.InferResponse] = []
        self.ended = threading.Event()

        def accept(req: offload_pb2.InferRequest, agent: str) -> Future:
            if req.split == 99:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "no split 99")
            fut: Future = Future()
            fut.set_result(None)
            return fut

        def respond(req: offload_pb2.InferRequest, fut: Future | None, err: Any) -> offload_pb2.InferResponse:
            resp = offload_pb2.InferResponse(frame_id=req.frame_id)
            if err is not None:
                resp.error.message = str(err)
            return resp

        def run() -> None:
            try:
                for r in serve_stream(requests, self.context, "drone-1", accept=accept, respond=respond,  # type: ignore[arg-type]
                                      inflight=InflightBytes(1 << 30), max_backlog=4,
                                      idle_timeout_s=idle_timeout_s, draining=self.draining, wakers=self.wakers,
                                      unparseable=Unparseable):
                    self.responses.append(r)
            finally:
                self.ended.set()

        threading.Thread(target=run, daemon=True).start()
        assert self.wakers.added.wait(5), "the stream never started"


def held_open(release: threading.Event, *first: Any) -> Iterator[Any]:
    """A client that sends `first`, then nothing until released."""
    yield from first
    release.wait(30)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def test_draining_wakes_an_idle_stream_at_once(release: threading.Event) -> None:
    s = Stream(held_open(release))
    s.draining.set()
    s.wakers.wake_all()
    assert s.ended.wait(PROMPT_S), "draining did not wake the idle stream"
    assert s.context.code == grpc.StatusCode.UNAVAILABLE
    assert "frames without a response were not accepted" in s.context.details


def test_a_client_that_goes_away_wakes_its_stream(release: threading.Event) -> None:
    s = Stream(held_open(release))
    s.context.terminate()
    assert s.ended.wait(PROMPT_S), "the client's cancel did not wake the stream"


def test_an_idle_stream_ends_when_its_idle_time_runs_out(release: threading.Event) -> None:
    s = Stream(held_open(release), idle_timeout_s=0.05)
    assert s.ended.wait(PROMPT_S), "the idle timeout did not end the stream"
    assert s.context.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no frame for 0.05 s" in s.context.details


def test_frames_are_answered_then_the_stream_ends_when_the_client_half_closes() -> None:
    frames = [offload_pb2.InferRequest(frame_id=i, split=3) for i in range(3)]
    frames.append(offload_pb2.InferRequest(frame_id=3, split=99))  # refused: answered with its error
    s = Stream(iter(frames))
    assert s.ended.wait(PROMPT_S)
    assert sorted(r.frame_id for r in s.responses) == [0, 1, 2, 3]
    assert [r.error.message for r in s.responses if r.frame_id == 3] == ["no split 99"]
    assert s.context.code is None  # OK


def test_an_unparseable_message_ends_the_stream_with_its_status_after_the_answers(release: threading.Event) -> None:
    s = Stream(held_open(release, offload_pb2.InferRequest(frame_id=7, split=3), Unparseable()))
    assert s.ended.wait(PROMPT_S)
    assert [r.frame_id for r in s.responses] == [7]
    assert s.context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert s.context.details == "not a message"
