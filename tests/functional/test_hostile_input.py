"""Hostile clients against a real in-process server (127.0.0.1, port 0, plaintext).

What is checked (the per-case codes and messages of single bad frames are in
test_serving.py; this file is about volume, idleness and limits):
  * a flood of ~3,000 hostile messages over streams (several at once) and unary
    calls: every one gets its status, the process's RSS does not grow past a
    generous bound after the first 500, the metrics registry does not grow a
    label per forged split, and a good frame still gets the same answer;
  * messages over max_message_mb on unary calls and on a stream;
  * a stream that never sends, and one that goes quiet after its frames: closed
    with DEADLINE_EXCEEDED after stream_idle_timeout_s, its answers delivered first;
    an active slow stream is not closed; 0 never closes; the value is validated;
  * more Infer streams than max_streams (or max_streams_per_agent for one agent): the
    extra one gets RESOURCE_EXHAUSTED naming the limit, health, Describe and unary
    frames are still answered, and the server keeps serving once a slot frees;
  * streams cancelled before they start give their slots back (the agent is not locked out);
  * a client that sends and never reads: the server stops reading that stream
    (bounded backlog) instead of piling responses up, and cleans up on cancel.
"""

from __future__ import annotations

import ctypes
import gc
import math
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_server.config import CloudConfig
from cloud_server.server import CloudServer
from splitpoint.bundle import Manifest, load_bundle
from splitpoint.codec import decode, encode
from splitpoint.errors import ConfigError
from splitpoint.v1 import offload_pb2, offload_pb2_grpc, tensor_pb2

RPC_TIMEOUT_S = 20.0
RSS_BOUND_MB = 60
MAX_MESSAGE_MB = 0.25  # near-limit payloads are ~256 KiB: 3,000 messages take seconds on loopback
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONTRACT_CODES = {INVALID, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                  grpc.StatusCode.RESOURCE_EXHAUSTED}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def manifest(digits_bundle: Path) -> Manifest:
    return load_bundle(digits_bundle).manifest


@pytest.fixture(scope="module")
def raw_inputs(digits_bundle: Path) -> np.ndarray:
    inputs, _ = load_bundle(digits_bundle).validation_data()
    return inputs


@pytest.fixture
def make_server(digits_bundle: Path) -> Iterator[Callable[..., CloudServer]]:
    started: list[CloudServer] = []

    def make(**overrides: Any) -> CloudServer:
        conf = CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0",
                           **{"insecure": True, "grace_s": 2.0, **overrides})
        conf.validate()
        server = CloudServer(conf).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(grace=1.0)


def rss_mb() -> float:
    """Resident set of this process (client and server), after the garbage collector and
    glibc's malloc_trim: what is still in use, not what the allocator keeps cached."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS includes the allocator's cache; the bound is generous
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no VmRSS in /proc/self/status")
    raise AssertionError("unreachable")


def good_frame(m: Manifest, raw: np.ndarray, frame_id: int) -> offload_pb2.InferRequest:
    """A valid split-0 frame, quantized as the agent does."""
    q = m.input_wire.quantization
    assert q is not None
    req = offload_pb2.InferRequest(frame_id=frame_id, model_digest=m.model_digest, split=0)
    req.tensors.append(encode(q.quantize(m.preprocessing.apply(raw), m.input_wire.dtype), name=m.input_wire.name,
                              quantization=q))
    return req


def cut_frame(m: Manifest, k: int, frame_id: int, fill: int = 1) -> offload_pb2.InferRequest:
    cut = m.split(k).cut[0]
    req = offload_pb2.InferRequest(frame_id=frame_id, model_digest=m.model_digest, split=k)
    req.tensors.append(encode(np.full(cut.shape, fill, np.dtype(cut.dtype)), name=cut.name,
                              quantization=cut.quantization))
    return req


def output_of(resp: offload_pb2.InferResponse) -> np.ndarray:
    assert resp.error.code == 0, (resp.error.code, resp.error.message)
    assert len(resp.outputs) == 1
    return decode(resp.outputs[0]).dequantized()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.02)


def streams_open(server: CloudServer) -> float:
    return server.registry.get_sample_value("splitpoint_cloud_streams") or 0.0


def frames_answered(server: CloudServer) -> float:
    return sum(s.value for metric in server.registry.collect() if metric.name == "splitpoint_cloud_frames"
               for s in metric.samples if s.name == "splitpoint_cloud_frames_total")


class Hostile:
    """Bad messages of every kind, built once; `get(i)` gives message i and the codes it may get."""

    def __init__(self, m: Manifest, limit: int):
        K = m.num_layers
        near_limit = limit - 4096
        bomb = zlib.compress(bytes(20 * 1024 * 1024), 9)  # 20 MiB of zeros in ~20 KiB

        def make(k: int, mutate: Callable[[offload_pb2.InferRequest], None]) -> offload_pb2.InferRequest:
            req = cut_frame(m, k, 0)
            mutate(req)
            return req

        def shape(*dims: int) -> Callable[[offload_pb2.InferRequest], None]:
            def set_shape(r: offload_pb2.InferRequest) -> None:
                del r.tensors[0].shape[:]
                r.tensors[0].shape.extend(dims)
            return set_shape

        nan = encode(np.full(m.split(6).cut[0].shape, np.nan, np.float32), name="fc1")
        overflow = cut_frame(m, 6, 0, fill=100)
        overflow.tensors[0].quantization.scale[0] = 3e38  # finite scale, infinite values

        self.kinds: list[tuple[str, offload_pb2.InferRequest, set[grpc.StatusCode]]] = [
            ("wrong-digest", make(3, lambda r: setattr(r, "model_digest", "sha256:evil")), {grpc.StatusCode.FAILED_PRECONDITION}),
            ("huge-digest", make(3, lambda r: setattr(r, "model_digest", "x" * near_limit)), {grpc.StatusCode.FAILED_PRECONDITION}),
            ("unknown-split", make(3, lambda r: None), {grpc.StatusCode.NOT_FOUND}),  # split set per message
            ("split-K", make(3, lambda r: setattr(r, "split", K)), {INVALID}),
            ("huge-shape", make(2, shape(2**40, 2**40, 2**40)), {INVALID}),
            ("huge-rank", make(2, shape(*([1] * 60_000))), {INVALID}),
            ("near-limit-data", make(2, lambda r: setattr(r.tensors[0], "data", bytes(near_limit))), {INVALID}),
            ("zlib-bomb", make(2, lambda r: (setattr(r.tensors[0], "compression", tensor_pb2.COMPRESSION_ZLIB),
                                             setattr(r.tensors[0], "data", bomb))), {INVALID}),
            ("wrong-dtype", make(2, lambda r: setattr(r.tensors[0], "dtype", tensor_pb2.DTYPE_FLOAT64)), {INVALID}),
            ("nan-float", make(6, lambda r: r.tensors[0].CopyFrom(nan)), {INVALID}),
            ("scale-overflow", overflow, {INVALID}),
            ("fifty-tensors", make(3, lambda r: r.tensors.extend([r.tensors[0]] * 49)), {INVALID}),
            ("short-data", make(5, lambda r: setattr(r.tensors[0], "data", r.tensors[0].data[:-1])), {INVALID}),
        ]
        for name, req, _ in self.kinds:
            assert req.ByteSize() < limit, f"{name}: {req.ByteSize()} bytes is over the limit {limit}"

    def get(self, i: int) -> tuple[offload_pb2.InferRequest, set[grpc.StatusCode], str]:
        name, template, codes = self.kinds[i % len(self.kinds)]
        req = offload_pb2.InferRequest()
        req.CopyFrom(template)
        req.frame_id = i
        if name == "unknown-split":
            req.split = 1000 + i  # a new value every time: no metrics label per value
        return req, codes, name


def check_answers(answers: list[offload_pb2.InferResponse], hostile: Hostile, ids: range) -> None:
    assert sorted(r.frame_id for r in answers) == list(ids), "a frame without an answer, or answered twice"
    for r in answers:
        _, codes, name = hostile.get(r.frame_id)
        assert r.error.code in {c.value[0] for c in codes}, f"{name}: {r.error.code} {r.error.message!r}"
        assert not r.outputs and 0 < len(r.error.message) < 1000, f"{name}: {len(r.error.message)} chars"


# ---------------------------------------------------------------- 1. a flood of hostile messages


def test_a_flood_of_hostile_messages_neither_crashes_nor_grows(make_server: Callable[..., CloudServer],
                                                                manifest: Manifest, raw_inputs: np.ndarray) -> None:
    m = manifest
    server = make_server(max_message_mb=MAX_MESSAGE_MB, max_streams=16)
    limit = server.config.max_message_bytes
    hostile = Hostile(m, limit)
    per_stream, first, total_streamed, unary = 125, 500, 2500, 500
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 4 * limit)]) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        good = good_frame(m, raw_inputs[0], 1)
        before = output_of(stub.InferFrame(good, timeout=RPC_TIMEOUT_S))

        def stream(start: int) -> None:
            ids = range(start, start + per_stream)
            answers = list(stub.Infer((hostile.get(i)[0] for i in ids), timeout=60))
            check_answers(answers, hostile, ids)

        # four streams at a time, from the start: the baseline includes what the allocator
        # keeps per thread (glibc arenas); what comes after is growth per message
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(stream, range(0, first, per_stream)))
            base = rss_mb()
            list(pool.map(stream, range(first, total_streamed, per_stream)))
        for i in range(total_streamed, total_streamed + unary):
            req, codes, name = hostile.get(i)
            with pytest.raises(grpc.RpcError) as info:
                stub.InferFrame(req, timeout=RPC_TIMEOUT_S)
            assert info.value.code() in codes, f"{name}: {info.value.code()} {info.value.details()!r}"
            assert len(info.value.details() or "") < 1000
        # messages over the limit: refused by gRPC (unary), and they end a stream with the status
        over = cut_frame(m, 2, 9000)
        over.model_digest = "x" * (limit + 1)
        for _ in range(20):
            with pytest.raises(grpc.RpcError) as info:
                stub.InferFrame(over, timeout=RPC_TIMEOUT_S)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Infer(iter([hostile.get(0)[0], over]), timeout=RPC_TIMEOUT_S))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        grown = rss_mb() - base
        assert grown < RSS_BOUND_MB, f"RSS grew {grown:.1f} MB over {total_streamed + unary - first} hostile messages"
        print(f"RSS {base:.0f} MB after the first {first} hostile messages, {base + grown:.0f} MB after "
              f"{total_streamed + unary + 21} (grew {grown:+.1f} MB)")

        # the server is intact: same answer to the same good frame, unary and on a stream
        np.testing.assert_allclose(output_of(stub.InferFrame(good, timeout=RPC_TIMEOUT_S)), before, rtol=1e-5, atol=1e-6)
        [resp] = list(stub.Infer(iter([good]), timeout=RPC_TIMEOUT_S))
        np.testing.assert_allclose(output_of(resp), before, rtol=1e-5, atol=1e-6)
    # one label per split of the bundle plus "other", however many forged split numbers came in
    labels = {s.labels["split"] for metric in server.registry.collect() if metric.name == "splitpoint_cloud_frames"
              for s in metric.samples}
    assert labels <= {str(k) for k in m.split_ids} | {"other"}, sorted(labels)[:10]
    assert server.registry.get_sample_value("splitpoint_cloud_frames_total", {"split": "other", "status": "NOT_FOUND"}) > 0
    wait_for(lambda: streams_open(server) == 0, 5.0, "every stream closed")


# ---------------------------------------------------------------- 2. streams that never send


def test_a_stream_that_never_sends_is_closed(make_server: Callable[..., CloudServer], manifest: Manifest,
                                             raw_inputs: np.ndarray) -> None:
    timeout_s = 0.5
    server = make_server(stream_idle_timeout_s=timeout_s, max_streams=2)
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        release = threading.Event()

        def silent() -> Iterator[offload_pb2.InferRequest]:
            release.wait(30)
            return
            yield

        # two silent streams take both slots; both are closed, so the slots come back
        t0 = time.monotonic()
        calls = [stub.Infer(silent(), timeout=30) for _ in range(2)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                list(call)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert info.value.details() == f"no frame for {timeout_s:g} s: stream closed"
        elapsed = time.monotonic() - t0
        assert timeout_s <= elapsed < timeout_s + 3, elapsed
        release.set()
        wait_for(lambda: streams_open(server) == 0, 5.0, "the closed streams released")

        # a stream that sends two frames, then goes quiet: both answered, then closed
        requests: queue.Queue = queue.Queue()

        def feed() -> Iterator[offload_pb2.InferRequest]:
            while (req := requests.get()) is not None:
                yield req

        for i in range(2):
            requests.put(good_frame(manifest, raw_inputs[i], i))
        call = stub.Infer(feed(), timeout=30)
        answers = []
        with pytest.raises(grpc.RpcError) as info:
            for resp in call:
                answers.append(resp)
        requests.put(None)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert sorted(r.frame_id for r in answers) == [0, 1] and all(r.error.code == 0 for r in answers)

        # a slow but active stream (a frame every 0.3 s for 1.5 s) is not closed
        def slow() -> Iterator[offload_pb2.InferRequest]:
            for i in range(5):
                time.sleep(0.3)
                yield good_frame(manifest, raw_inputs[i], 10 + i)

        call = stub.Infer(slow(), timeout=30)
        answers = list(call)
        assert call.code() == grpc.StatusCode.OK and sorted(r.frame_id for r in answers) == list(range(10, 15))

        # and the server serves as before
        assert stub.InferFrame(good_frame(manifest, raw_inputs[0], 99), timeout=RPC_TIMEOUT_S).error.code == 0


def test_idle_timeout_zero_never_closes(make_server: Callable[..., CloudServer], manifest: Manifest,
                                        raw_inputs: np.ndarray) -> None:
    server = make_server(stream_idle_timeout_s=0)

    def late() -> Iterator[offload_pb2.InferRequest]:
        time.sleep(1.0)
        yield good_frame(manifest, raw_inputs[0], 5)

    with grpc.insecure_channel(server.address) as ch:
        call = offload_pb2_grpc.OffloadStub(ch).Infer(late(), timeout=30)
        answers = list(call)
    assert call.code() == grpc.StatusCode.OK and [r.frame_id for r in answers] == [5]


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_idle_timeout_is_validated(digits_bundle: Path, value: float) -> None:
    conf = CloudConfig(bundle=str(digits_bundle), insecure=True, stream_idle_timeout_s=value)
    with pytest.raises(ConfigError) as info:
        conf.validate()
    assert info.value.key == "stream_idle_timeout_s"
    assert CloudConfig(bundle="b").stream_idle_timeout_s == 120.0


# ---------------------------------------------------------------- 3. too many streams


def refused_streams(server: CloudServer) -> dict[str, float]:
    """splitpoint_cloud_refused_streams_total by limit, as /metrics serves it."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels["limit"]: s.value for family in text_string_to_metric_families(generate_latest(server.registry).decode())
            for s in family.samples if s.name == "splitpoint_cloud_refused_streams_total"}


def test_more_streams_than_max_streams(make_server: Callable[..., CloudServer], manifest: Manifest,
                                       raw_inputs: np.ndarray) -> None:
    server = make_server(max_streams=2)
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        feeds: list[queue.Queue] = [queue.Queue(), queue.Queue()]

        def feed(q: queue.Queue) -> Iterator[offload_pb2.InferRequest]:
            while (req := q.get()) is not None:
                yield req

        calls = []
        for n, q in enumerate(feeds):
            q.put(good_frame(manifest, raw_inputs[n], n))
            calls.append(stub.Infer(feed(q), timeout=30))
            assert next(calls[-1]).error.code == 0  # the stream is open and served
        # a third Infer stream is refused, explicitly, naming the limit
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Infer(iter([good_frame(manifest, raw_inputs[2], 2)]), timeout=RPC_TIMEOUT_S))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams" in info.value.details()
        assert refused_streams(server) == {"max_streams": 1.0}  # the operator sees it on /metrics
        # only Infer streams count: a unary frame, health and Describe are answered at once
        assert stub.InferFrame(good_frame(manifest, raw_inputs[3], 3), timeout=RPC_TIMEOUT_S).error.code == 0
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert stub.Describe(offload_pb2.DescribeRequest(), timeout=5).model_digest == manifest.model_digest
        # the open streams go on being served
        feeds[0].put(good_frame(manifest, raw_inputs[4], 4))
        assert next(calls[0]).frame_id == 4
        # one stream ends: its slot is free again
        feeds[0].put(None)
        assert list(calls[0]) == [] and calls[0].code() == grpc.StatusCode.OK
        wait_for(lambda: streams_open(server) == 1, 5.0, "the stream slot released")
        again = stub.Infer(iter([good_frame(manifest, raw_inputs[5], 5)]), timeout=RPC_TIMEOUT_S)
        assert [r.frame_id for r in again] == [5]
        feeds[1].put(None)
        assert list(calls[1]) == [] and calls[1].code() == grpc.StatusCode.OK


def test_one_agent_cannot_take_every_stream(make_server: Callable[..., CloudServer], manifest: Manifest,
                                            raw_inputs: np.ndarray) -> None:
    server = make_server(max_streams=8, max_streams_per_agent=2)
    named = [("splitpoint-agent", "drone-7")]
    with grpc.insecure_channel(server.address) as ch, grpc.insecure_channel(server.address) as other:
        stub = offload_pb2_grpc.OffloadStub(ch)
        gates = [threading.Event(), threading.Event()]

        def held(gate: threading.Event, n: int) -> Iterator[offload_pb2.InferRequest]:
            yield good_frame(manifest, raw_inputs[n], n)
            gate.wait(30)

        calls = [stub.Infer(held(g, n), timeout=30, metadata=named) for n, g in enumerate(gates)]
        assert [next(c).frame_id for c in calls] == [0, 1]
        with pytest.raises(grpc.RpcError) as info:  # the same agent, a third stream
            list(stub.Infer(iter([good_frame(manifest, raw_inputs[2], 2)]), timeout=RPC_TIMEOUT_S, metadata=named))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams_per_agent" in info.value.details()
        assert refused_streams(server) == {"max_streams_per_agent": 1.0}
        # another agent (another name, or another connection without one) is served
        resp = list(offload_pb2_grpc.OffloadStub(other).Infer(iter([good_frame(manifest, raw_inputs[3], 3)]),
                                                               timeout=RPC_TIMEOUT_S, metadata=[("splitpoint-agent", "drone-8")]))
        assert [r.frame_id for r in resp] == [3]
        for g in gates:
            g.set()
        for c in calls:
            assert list(c) == []


def test_streams_cancelled_before_they_start_do_not_keep_their_slots(
        make_server: Callable[..., CloudServer], manifest: Manifest, raw_inputs: np.ndarray,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream its client cancels at once: gRPC raises from send_initial_metadata, and the slot
    the stream was admitted to was kept - after max_streams_per_agent such cancels, the agent
    was refused until a restart. Each handler here is held until the cancel has reached the
    server, so that every stream takes that path (unheld, about 1 in 25 did on loopback)."""
    import cloud_server.servicer as servicer_module

    server = make_server(max_streams=8, max_streams_per_agent=2)
    named = [("splitpoint-agent", "drone-7")]
    entered, cancelled = threading.Event(), threading.Event()
    real_identity = servicer_module.agent_identity

    def held_identity(context: grpc.ServicerContext) -> str:
        entered.set()
        assert cancelled.wait(RPC_TIMEOUT_S)
        wait_for(lambda: not context.is_active(), RPC_TIMEOUT_S, "the client's cancel to reach the server")
        return real_identity(context)

    monkeypatch.setattr(servicer_module, "agent_identity", held_identity)
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        for _ in range(3):  # more than max_streams_per_agent
            entered.clear()
            cancelled.clear()
            call = stub.Infer(iter(()), timeout=RPC_TIMEOUT_S, metadata=named)
            assert entered.wait(RPC_TIMEOUT_S), "the stream never reached the servicer"
            call.cancel()
            cancelled.set()
            wait_for(lambda: server.servicer.admission.open_streams == 0, 5.0, "the cancelled stream's slot released")
        assert streams_open(server) == 0
        monkeypatch.undo()
        resp = list(stub.Infer(iter([good_frame(manifest, raw_inputs[0], 0)]), timeout=RPC_TIMEOUT_S, metadata=named))
        assert [r.frame_id for r in resp] == [0] and resp[0].error.code == 0  # admitted, and served
    assert refused_streams(server) == {}
    wait_for(lambda: streams_open(server) == 0, 5.0, "the last stream's slot released")


# ---------------------------------------------------------------- 4. a client that never reads


def test_a_client_that_never_reads_is_held_back(make_server: Callable[..., CloudServer], manifest: Manifest) -> None:
    backlog, sent_max = 16, 20_000
    server = make_server(max_queue_per_agent=backlog)  # a stream is read no further past its share
    assert server.servicer.max_stream_backlog == backlog
    hostile = Hostile(manifest, server.config.max_message_bytes)
    bad = next(req for name, req, _ in hostile.kinds if name == "wrong-digest")
    sent = [0]

    def flood() -> Iterator[offload_pb2.InferRequest]:
        for i in range(sent_max):
            sent[0] = i + 1
            yield bad

    # without BDP probing the client's receive window stays at its initial 64 KiB: the
    # unread responses fill it quickly, and the server's sends block
    with grpc.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as ch:
        call = offload_pb2_grpc.OffloadStub(ch).Infer(flood(), timeout=60)  # responses never read
        counts = [-1.0]
        deadline = time.monotonic() + 20
        while (now := frames_answered(server)) != counts[-1] or len(counts) < 3:
            assert time.monotonic() < deadline, f"the server kept reading a stream nobody reads: {counts[-5:]}"
            counts.append(now)
            time.sleep(0.5)
        answered = counts[-1]
        # the server stopped reading: no more answers (nor responses piling up), the client's sends block
        assert answered < sent_max / 2 and sent[0] < sent_max, (answered, sent[0])
        call.cancel()
        wait_for(lambda: streams_open(server) == 0, 5.0, "the cancelled stream cleaned up")
    print(f"client sent {sent[0]} frames, server answered {answered:.0f} before holding back")


# ---------------------------------------------------------------- 5. bytes that are not a message


def test_bytes_that_are_not_a_message(make_server: Callable[..., CloudServer], manifest: Manifest,
                                      raw_inputs: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    from cloud_server.servicer import add_to_server

    server = make_server()
    garbage = b"\xff\xff\xff\xff"  # not protobuf: a truncated varint
    good = good_frame(manifest, raw_inputs[0], 1)
    # The Offload service registered with add_to_server: unparseable bytes are INVALID_ARGUMENT
    # (gRPC's own deserializer answers INTERNAL and logs a traceback per message).
    bare = grpc.server(ThreadPoolExecutor(8))
    add_to_server(server.servicer, bare)
    port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            for method in ("InferFrame", "Describe", "Probe"):
                call = ch.unary_unary(f"/splitpoint.v1.Offload/{method}")  # no serializers: raw bytes
                with pytest.raises(grpc.RpcError) as info:
                    call(garbage, timeout=RPC_TIMEOUT_S)
                assert info.value.code() == INVALID, (method, info.value.code(), info.value.details())
                assert "is not a valid splitpoint.v1." in (info.value.details() or "")
            # on a stream: frames before it are answered, then the stream ends with the status
            # (the bytes carry no frame_id a response could name)
            infer = ch.stream_stream("/splitpoint.v1.Offload/Infer")
            answers = []
            with pytest.raises(grpc.RpcError) as info:
                for raw in infer(iter([good.SerializeToString(), garbage, good.SerializeToString()]),
                                 timeout=RPC_TIMEOUT_S):
                    answers.append(offload_pb2.InferResponse.FromString(raw))
            assert info.value.code() == INVALID and "4 bytes" in (info.value.details() or "")
            assert [(r.frame_id, r.error.code) for r in answers] == [(1, 0)]
            # and the service goes on
            assert offload_pb2_grpc.OffloadStub(ch).InferFrame(good, timeout=RPC_TIMEOUT_S).error.code == 0
    finally:
        bare.stop(0)
    assert not [r for r in caplog.records if "deserializ" in r.getMessage()], "a traceback logged per bad message"
    # The server as CloudServer wires it survives such bytes too, and keeps serving.
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/splitpoint.v1.Offload/InferFrame")(garbage, timeout=RPC_TIMEOUT_S)
        assert info.value.code() in (INVALID, grpc.StatusCode.INTERNAL)
        assert offload_pb2_grpc.OffloadStub(ch).InferFrame(good, timeout=RPC_TIMEOUT_S).error.code == 0
    wait_for(lambda: streams_open(server) == 0, 5.0, "every stream closed")
