"""An admitted Infer stream gives its slot back exactly once, whatever ends it.

`send_initial_metadata` raises for a call its client has already cancelled; it ran after
`admission.admit()` and before the try/finally that released the slot, so every such call kept
its slot and `splitpoint_cloud_streams` stayed up: after max_streams_per_agent quick cancels that
agent was refused (RESOURCE_EXHAUSTED) until the server restarted, while health said SERVING.
The servicer is driven here as gRPC drives it: its generator, with a stand-in context."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import CollectorRegistry

from cloud_server.admission import StreamAdmission
from cloud_server.infer_stream import SAFETY_WAKE_S
from cloud_server.servicer import CloudMetrics, OffloadServicer
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import AGENT_METADATA_KEY

TIMEOUT_S = 10.0
AGENT = "drone-1"


class Aborted(Exception):
    """What context.abort raises (gRPC raises an exception of its own there too)."""


class FakeContext:
    def __init__(self, cancelled: bool = False) -> None:
        self.cancelled = cancelled
        self.code: grpc.StatusCode | None = None
        self.callbacks: list = []

    def add_callback(self, callback: object) -> bool:
        self.callbacks.append(callback)
        return True

    def terminate(self) -> None:
        """What gRPC does when the RPC ends: run its callbacks (which wake the stream)."""
        for cb in self.callbacks:
            cb()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict:
        return {}

    def invocation_metadata(self) -> tuple:
        return ((AGENT_METADATA_KEY, AGENT),)

    def send_initial_metadata(self, metadata: object) -> None:
        if self.cancelled:  # as grpc's _Context does for a call its client cancelled
            raise grpc.RpcError()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise Aborted(details)

    def is_active(self) -> bool:
        return not self.cancelled

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


class Slots:
    """A servicer with max_streams_per_agent = 2, and what it counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.admission = StreamAdmission(max_streams=8, max_per_agent=2)
        self.ended = 0
        manifest = SimpleNamespace(splits=[], outputs=[])
        executor = SimpleNamespace(max_queue_per_agent=16, postprocess=None, load=lambda: (0, 0, 1))
        self.servicer = OffloadServicer(manifest, executor, 1 << 20, 1 << 20,  # type: ignore[arg-type]
                                        CloudMetrics(self.registry), admission=self.admission,
                                        on_stream_end=self.stream_ended)

    def stream_ended(self) -> None:
        self.ended += 1

    @property
    def gauge(self) -> float | None:
        return self.registry.get_sample_value("splitpoint_cloud_streams")


def test_streams_cancelled_before_they_start_give_their_slots_back() -> None:
    slots = Slots()
    for _ in range(5):  # more than max_streams_per_agent
        stream = slots.servicer.Infer(iter([]), FakeContext(cancelled=True))  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError):
            next(stream)
    assert slots.admission.open_streams == 0  # before: 2, and the 3rd call was refused
    assert slots.gauge == 0.0
    assert slots.ended == 5
    # the same agent still gets a stream; it ends when its (empty) request stream does
    context = FakeContext()
    assert list(slots.servicer.Infer(iter([]), context)) == []  # type: ignore[arg-type]
    assert context.code is None  # OK: not refused
    assert slots.admission.open_streams == 0 and slots.gauge == 0.0 and slots.ended == 6


def test_a_stream_that_fails_midway_gives_its_slot_back_once() -> None:
    slots = Slots()
    context = FakeContext()
    reading, release, reader_done = threading.Event(), threading.Event(), threading.Event()

    def held() -> Iterator[offload_pb2.InferRequest]:
        try:
            reading.set()
            release.wait(TIMEOUT_S)
            yield from ()
        finally:
            reader_done.set()

    def broken() -> bool:
        raise RuntimeError("is_active failed")

    context.is_active = broken  # type: ignore[method-assign]
    # once the reader reads, the RPC ends: the woken stream asks is_active, which fails
    threading.Thread(target=lambda: reading.wait(TIMEOUT_S) and context.terminate(), daemon=True).start()
    stream = slots.servicer.Infer(held(), context)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="is_active failed"):
        next(stream)
    assert reading.is_set()
    assert slots.admission.open_streams == 0 and slots.gauge == 0.0 and slots.ended == 1
    release.set()
    assert reader_done.wait(TIMEOUT_S)
    stream.close()  # closing the ended generator releases nothing more
    assert slots.admission.open_streams == 0 and slots.gauge == 0.0 and slots.ended == 1


def test_a_refused_stream_releases_nothing() -> None:
    slots = Slots()
    slots.admission.admit("name:" + AGENT)
    slots.admission.admit("name:" + AGENT)
    context = FakeContext()
    with pytest.raises(Aborted, match="max_streams_per_agent"):
        next(slots.servicer.Infer(iter([]), context))  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert slots.admission.open_streams == 2 and slots.gauge == 0.0 and slots.ended == 0


def test_draining_ends_an_idle_stream_at_once() -> None:
    """begin_drain wakes every open stream: an idle one ends UNAVAILABLE now, not at its next
    safety wake (SAFETY_WAKE_S), which would hold a terminating pod's drain."""
    slots = Slots()
    context = FakeContext()
    reading, release, ended = threading.Event(), threading.Event(), threading.Event()

    def idle() -> Iterator[offload_pb2.InferRequest]:
        reading.set()  # the stream is admitted and its reader runs
        release.wait(TIMEOUT_S)
        yield from ()

    def serve() -> None:
        list(slots.servicer.Infer(idle(), context))  # type: ignore[arg-type]
        ended.set()

    threading.Thread(target=serve, daemon=True).start()
    try:
        assert reading.wait(TIMEOUT_S)
        slots.servicer.begin_drain()
        assert ended.wait(SAFETY_WAKE_S / 2), "draining did not wake the idle stream"
        assert context.code == grpc.StatusCode.UNAVAILABLE
        assert slots.admission.open_streams == 0
    finally:
        release.set()
