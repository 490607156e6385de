"""Hostile clients: floods of bad messages, idle streams, too many streams. The server answers
each with its status, keeps serving, and does not grow."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from cloud_server.config import CloudConfig
from cloud_server.server import CloudServer
from splitpoint.bundle import load_bundle
from splitpoint.codec import encode
from splitpoint.v1 import offload_pb2, offload_pb2_grpc, tensor_pb2


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")
    return 0.0


def good_request(bundle: Path, frame_id: int = 0) -> offload_pb2.InferRequest:
    m = load_bundle(bundle).manifest
    spec = m.split(3).cut[0]
    x = np.zeros(spec.shape, np.int8)
    req = offload_pb2.InferRequest(frame_id=frame_id, model_digest=m.model_digest, split=3)
    req.tensors.append(encode(x, spec.name, spec.quantization))
    return req


def hostile(bundle: Path, i: int) -> offload_pb2.InferRequest:
    req = good_request(bundle, i)
    t = req.tensors[0]
    kind = i % 8
    if kind == 0:
        req.model_digest = "sha256:evil"
    elif kind == 1:
        req.split = 10_000 + i
    elif kind == 2:
        del t.shape[:]
        t.shape.extend([2**40, 2**40, 2**40])
    elif kind == 3:
        t.data = t.data[:-1]
    elif kind == 4:
        t.dtype = tensor_pb2.DTYPE_FLOAT64
    elif kind == 5:
        t.compression = tensor_pb2.COMPRESSION_ZLIB
        t.data = b"\x78\x9c" + bytes(300)
    elif kind == 6:
        t.data = bytes(60_000)  # near the 64 KiB message limit below, wrong length
    else:
        del t.quantization.scale[:]
    return req


@pytest.fixture
def server(digits_bundle: Path):
    conf = CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True, max_message_mb=0.0625,
                       max_streams=4, stream_idle_timeout_s=1.0, grace_s=2.0)
    conf.validate()
    s = CloudServer(conf).start()
    yield s
    s.stop()


def test_flood_of_hostile_messages_neither_crashes_nor_grows(server, digits_bundle: Path) -> None:
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)

        def stream_batch(start: int, n: int) -> list[offload_pb2.InferResponse]:
            reqs = [hostile(digits_bundle, i) for i in range(start, start + n)]
            return list(stub.Infer(iter(reqs), timeout=60))

        first = stream_batch(0, 500)
        assert len(first) == 500 and all(r.error.code != 0 for r in first)
        base = rss_mb()
        for start in range(500, 2500, 500):
            answers = stream_batch(start, 500)
            assert len(answers) == 500 and all(r.error.code != 0 for r in answers)
        for i in range(2500, 3000):
            with pytest.raises(grpc.RpcError) as info:
                stub.InferFrame(hostile(digits_bundle, i), timeout=10)
            assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED)
        grown = rss_mb() - base
        assert grown < 60, f"server process grew {grown:.0f} MB over 2,500 hostile messages"
        ok = stub.InferFrame(good_request(digits_bundle, 1), timeout=10)
        assert ok.outputs and not ok.HasField("error")


def test_a_stream_that_never_sends_is_closed(server) -> None:
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        never = threading.Event()

        def nothing():
            never.wait(30)
            return
            yield  # pragma: no cover

        t0 = time.monotonic()
        call = stub.Infer(nothing(), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            list(call)
        never.set()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no frame for 1 s" in info.value.details()
        assert time.monotonic() - t0 < 10


def test_more_streams_than_allowed_are_refused_and_the_server_keeps_serving(server, digits_bundle: Path) -> None:
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        hold = threading.Event()

        def slow():
            hold.wait(20)
            return
            yield  # pragma: no cover

        open_calls = [stub.Infer(slow(), timeout=30) for _ in range(4)]
        time.sleep(0.3)
        extra = stub.Infer(iter([good_request(digits_bundle)]), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            list(extra)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        hold.set()
        for c in open_calls:
            try:
                list(c)
            except grpc.RpcError:
                pass
        ok = stub.InferFrame(good_request(digits_bundle, 2), timeout=10)
        assert ok.outputs
