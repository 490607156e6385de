"""The serving path end to end: a real CloudServer on a real port, real agents, real tails.

Every server binds port 0 and is reached at the port it reports; every RPC
has a deadline; agents run in threads that are joined with a timeout, so a
hang fails the test instead of stalling the run.

What is checked:
  * every split of the digits bundle, in throughput and latency mode: one
    record per frame, answered where it should be, with the label of the
    float model (tail_0.keras run on the validation inputs);
  * three agents sharing one server, and the server's stream count;
  * every malformed frame a peer can send: a per-frame error with the right
    code on the Infer stream (which goes on serving good frames), the same
    status from the unary InferFrame; messages over max_message_mb;
    Describe, Probe and the gRPC health service;
  * graceful shutdown with frames in flight: no frame without an answer;
  * the agent's fallbacks: nothing listening, a missed deadline (late
    answers ignored), a malformed (NaN) answer, a server going away mid-run,
    and a server running another bundle (refused at start).
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import splitpoint
from cloud_server.config import CloudConfig
from cloud_server.server import SERVICE_NAME, CloudServer
from cloud_server.servicer import MAX_PROBE_BYTES
from edge_node.agent import EdgeAgent, RunSummary
from edge_node.client import OffloadClient
from edge_node.config import EdgeConfig
from edge_node.results import read_results
from edge_node.source_spec import open_source
from splitpoint.bundle import Manifest, load_bundle
from splitpoint.codec import decode, dtype_enum, encode
from splitpoint.errors import ConfigError, TensorError
from splitpoint.runtime.tails import TailRunner
from splitpoint.v1 import offload_pb2, offload_pb2_grpc, tensor_pb2

RPC_TIMEOUT_S = 10.0
AGENT_TIMEOUT_S = 60.0
OTHER_DIGEST = "sha256:" + "0" * 64


# ---------------------------------------------------------------- fixtures and helpers


@dataclass
class Reference:
    manifest: Manifest
    inputs: np.ndarray  # raw validation inputs (N, H, W, C) uint8
    labels: np.ndarray  # argmax of the FLOAT model on each input

    def label(self, frame_id: int) -> int:
        """Synthetic frame i is validation input i % N."""
        return int(self.labels[frame_id % len(self.inputs)])


@pytest.fixture(scope="module")
def reference(digits_bundle: Path) -> Reference:
    """The float model's answers: cloud/tail_0.keras is the whole float model (split 0)."""
    import keras

    bundle = load_bundle(digits_bundle)
    m = bundle.manifest
    inputs, true_labels = bundle.validation_data()
    model = keras.models.load_model(digits_bundle / "cloud" / "tail_0.keras", compile=False)
    assert tuple(model.inputs[0].shape[1:]) == m.input.shape[1:], "tail_0 does not take the model input"
    scores = np.asarray(model(m.preprocessing.apply_batch(inputs), training=False))
    assert scores.shape == (len(inputs), m.output.shape[-1])
    labels = scores.argmax(axis=1)
    assert true_labels is not None and (labels == true_labels).mean() > 0.9  # sanity: a trained model
    return Reference(m, inputs, labels)


@pytest.fixture
def make_server(digits_bundle: Path) -> Iterator[Callable[..., CloudServer]]:
    """Servers with non-default settings, on 127.0.0.1 port 0; all stopped at teardown."""
    started: list[CloudServer] = []

    def make(**overrides: Any) -> CloudServer:
        conf = CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", **{"grace_s": 5.0, "insecure": True, **overrides})
        conf.validate()
        server = CloudServer(conf).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(grace=1.0)


@pytest.fixture
def channel(cloud_server: CloudServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(cloud_server.address) as ch:
        yield ch


def slow_tails(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every tail call takes `seconds` longer (patch after the server warmed its tails)."""
    original = TailRunner.run

    def slow(self: TailRunner, batch: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        return original(self, batch)

    monkeypatch.setattr(TailRunner, "run", slow)


def frame_request(m: Manifest, frame_id: int, ref: Reference, index: int | None = None) -> offload_pb2.InferRequest:
    """A good split-0 frame: validation input `index` (default frame_id), quantized as the agent does."""
    raw = ref.inputs[(frame_id if index is None else index) % len(ref.inputs)]
    q = m.input_wire.quantization
    assert q is not None
    x = m.preprocessing.apply(raw)
    req = offload_pb2.InferRequest(frame_id=frame_id, model_digest=m.model_digest, split=0)
    req.tensors.append(encode(q.quantize(x, m.input_wire.dtype), name=m.input_wire.name, quantization=q))
    return req


def response_label(resp: offload_pb2.InferResponse) -> int:
    assert len(resp.outputs) == 1, resp
    return int(np.argmax(decode(resp.outputs[0]).dequantized()))


def assert_good_response(resp: offload_pb2.InferResponse, frame_id: int, ref: Reference, index: int | None = None) -> None:
    assert resp.frame_id == frame_id
    assert resp.error.code == 0, f"frame {frame_id}: {resp.error.code} {resp.error.message}"
    assert response_label(resp) == ref.label(frame_id if index is None else index)
    assert resp.timing.batch_size >= 1 and resp.timing.total_ms >= resp.timing.compute_ms >= 0


class RawStream:
    """One Infer call driven by hand: send() requests, next() responses, finish() half-closes."""

    def __init__(self, stub: offload_pb2_grpc.OffloadStub, timeout_s: float = 60.0):
        self._requests: queue.Queue = queue.Queue()
        self._responses: queue.Queue = queue.Queue()
        self.received: list[offload_pb2.InferResponse] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self.call = stub.Infer(self._iter(), timeout=timeout_s)
        self._thread = threading.Thread(target=self._receive, name="raw-stream", daemon=True)
        self._thread.start()

    def _iter(self) -> Iterator[offload_pb2.InferRequest]:
        while (req := self._requests.get()) is not None:
            yield req

    def _receive(self) -> None:
        try:
            for resp in self.call:
                self.received.append(resp)
                self._responses.put(resp)
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.ended.set()

    def send(self, req: offload_pb2.InferRequest) -> None:
        self._requests.put(req)

    def next(self, timeout_s: float = RPC_TIMEOUT_S) -> offload_pb2.InferResponse:
        try:
            return self._responses.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no response within {timeout_s}s (stream ended: {self.ended.is_set()}, {self.error})") from None

    def close_send(self) -> None:
        """Half-close: no more requests."""
        self._requests.put(None)

    def finish(self, timeout_s: float = RPC_TIMEOUT_S) -> grpc.StatusCode:
        """Half-close, wait for the call to end, return its status code."""
        self.close_send()
        assert self.ended.wait(timeout_s), "the stream did not end after the half-close"
        return self.call.code()

    def wait_end(self, timeout_s: float = RPC_TIMEOUT_S) -> grpc.StatusCode:
        assert self.ended.wait(timeout_s), "the stream did not end"
        return self.call.code()


def run_in_thread(fn: Callable[[], Any], timeout_s: float = AGENT_TIMEOUT_S) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=target, name="agent-run", daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"did not finish within {timeout_s}s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def make_agent(bundle: Path | str, address: str, split: int | None, frames: int, results: Path,
               on_result: Callable[[dict[str, Any]], None] | None = None, **overrides: Any) -> EdgeAgent:
    conf = EdgeConfig(bundle=str(bundle), source=f"synthetic:{frames}", cloud=address, split=split, insecure=True,
                      results=str(results), **overrides)
    conf.validate()
    return EdgeAgent.from_config(conf, on_result=on_result)


def run_agent(agent: EdgeAgent, timeout_s: float = AGENT_TIMEOUT_S) -> tuple[RunSummary, list[dict[str, Any]]]:
    conf = agent.config

    def go() -> RunSummary:
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
            return agent.run(source)

    summary = run_in_thread(go, timeout_s)
    return summary, read_results(conf.results)


def check_one_record_per_frame(records: list[dict[str, Any]], frames: int, ref: Reference) -> dict[int, dict[str, Any]]:
    ids = [r["frame_id"] for r in records]
    assert sorted(ids) == list(range(frames)), f"frames without a record or with two: {sorted(ids)}"
    by_id = {r["frame_id"]: r for r in records}
    wrong = {i: (r.get("label"), ref.label(i)) for i, r in by_id.items() if r.get("label") != ref.label(i)}
    assert all(r["status"] == "ok" for r in records), [r for r in records if r["status"] != "ok"][:3]
    assert not wrong, f"labels differing from the float model (got, want): {wrong}"
    return by_id


def frames_counted(server: CloudServer, split: int, status: str = "OK") -> float:
    value = server.registry.get_sample_value("splitpoint_cloud_frames_total", {"split": str(split), "status": status})
    return value or 0.0


def streams_open(server: CloudServer) -> float:
    return server.registry.get_sample_value("splitpoint_cloud_streams") or 0.0


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.02)


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0).status


# ---------------------------------------------------------------- 1. every split, both modes


@pytest.mark.parametrize(("mode", "frames"), [("throughput", 360), ("latency", 40)])
def test_every_split_gives_the_float_models_label(
    mode: str, frames: int, digits_bundle: Path, cloud_server: CloudServer, reference: Reference, tmp_path: Path
) -> None:
    m = reference.manifest
    K = m.num_layers
    assert m.split_ids == list(range(K + 1))
    for k in m.split_ids:
        before = frames_counted(cloud_server, k)
        agent = make_agent(digits_bundle, cloud_server.address, k, frames, tmp_path / f"{mode}-{k}.jsonl", mode=mode)
        assert agent.config.window_size == (4 if mode == "throughput" else 1)
        summary, records = run_agent(agent)
        by_id = check_one_record_per_frame(records, frames, reference)
        where = "cloud" if k < K else "local"
        assert {r["where"] for r in records} == {where}, f"split {k}"
        assert {r["split"] for r in records} == {k}
        assert not any("fallback_reason" in r for r in records), f"split {k}: {records[0]}"
        assert summary.frames == frames and summary.fallbacks == 0 and summary.failed == 0
        assert (summary.cloud, summary.local) == ((frames, 0) if k < K else (0, frames))
        # the server computed each frame exactly once (nothing for k = K)
        assert frames_counted(cloud_server, k) - before == (frames if k < K else 0), f"split {k}"
        if k < K:
            t = by_id[0]["timings_ms"]
            assert {"head", "transfer", "server_queue", "server_compute", "rpc", "end_to_end"} <= set(t)


# ---------------------------------------------------------------- 2. three agents, one server


def test_three_agents_share_one_server(
    digits_bundle: Path, cloud_server: CloudServer, channel: grpc.Channel, reference: Reference, tmp_path: Path
) -> None:
    splits, frames = (0, 3, 6), 120
    stub = offload_pb2_grpc.OffloadStub(channel)
    seen: dict[str, Any] = {}

    def while_all_three_stream() -> None:
        # Runs when every agent has had its first answer: all three streams are open.
        seen["gauge"] = streams_open(cloud_server)
        seen["load"] = stub.InferFrame(frame_request(reference.manifest, 9999, reference), timeout=RPC_TIMEOUT_S).load

    barrier = threading.Barrier(len(splits), action=while_all_three_stream, timeout=30)

    agents = []
    for k in splits:
        first = threading.Event()

        def on_result(record: dict[str, Any], first: threading.Event = first) -> None:
            if not first.is_set():
                first.set()
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    seen["broken"] = True

        agents.append(make_agent(digits_bundle, cloud_server.address, k, frames, tmp_path / f"agent-{k}.jsonl",
                                 on_result=on_result, frame_deadline_ms=10_000))
    before = {k: frames_counted(cloud_server, k) for k in splits}
    boxes: list[dict[str, Any]] = [{} for _ in agents]

    def run(agent: EdgeAgent, box: dict[str, Any]) -> None:
        box["result"] = run_agent(agent)

    threads = [threading.Thread(target=run, args=(a, b), daemon=True) for a, b in zip(agents, boxes, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(AGENT_TIMEOUT_S)
        assert not t.is_alive(), "an agent did not finish"
    assert "broken" not in seen, "the agents never had their streams open at the same time"
    for k, box in zip(splits, boxes, strict=True):
        summary, records = box["result"]
        check_one_record_per_frame(records, frames, reference)
        assert {r["where"] for r in records} == {"cloud"}, f"split {k}: {[r for r in records if r['where'] != 'cloud'][:2]}"
        assert {r["split"] for r in records} == {k}
        assert summary.cloud == frames
        probe = 1 if k == 0 else 0  # the InferFrame sent while the three streams were open
        assert frames_counted(cloud_server, k) - before[k] == frames + probe
    # the server saw the three streams at once, and says so on the wire too
    assert seen["gauge"] == 3
    assert seen["load"].streams == 3 and seen["load"].workers == cloud_server.config.workers
    wait_for(lambda: streams_open(cloud_server) == 0, 5.0, "the streams to close")


# ---------------------------------------------------------------- 3. bad requests


@dataclass
class BadCase:
    id: str
    mutate: Callable[[offload_pb2.InferRequest, Manifest], None]
    code: grpc.StatusCode
    says: Callable[[Manifest], list[str]]  # substrings the message must contain


def _set_shape(req: offload_pb2.InferRequest, shape: list[int]) -> None:
    del req.tensors[0].shape[:]
    req.tensors[0].shape.extend(shape)


def _float_nan(req: offload_pb2.InferRequest, m: Manifest) -> None:
    # No split of this bundle takes a float tensor, so a float tensor (NaN or not) is
    # refused by the dtype check, before the codec's NaN check could run.
    req.tensors[0].CopyFrom(encode(np.full(m.input_wire.shape, np.nan, np.float32), name="input"))


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_CASES = [
    BadCase("wrong-digest", lambda r, m: setattr(r, "model_digest", OTHER_DIGEST),
            grpc.StatusCode.FAILED_PRECONDITION, lambda m: [OTHER_DIGEST, m.model_digest]),
    BadCase("empty-digest", lambda r, m: setattr(r, "model_digest", ""),
            grpc.StatusCode.FAILED_PRECONDITION, lambda m: ["(empty)", m.model_digest]),
    BadCase("unknown-split", lambda r, m: setattr(r, "split", 99), grpc.StatusCode.NOT_FOUND, lambda m: ["split 99"]),
    BadCase("negative-split", lambda r, m: setattr(r, "split", -1), grpc.StatusCode.NOT_FOUND, lambda m: ["split -1"]),
    BadCase("split-K", lambda r, m: setattr(r, "split", m.num_layers), INVALID,
            lambda m: [f"split {m.num_layers}", "no tail"]),
    BadCase("wrong-dtype", lambda r, m: setattr(r.tensors[0], "dtype", tensor_pb2.DTYPE_INT8), INVALID,
            lambda m: ["tensors[0].dtype", "int8", "uint8"]),
    BadCase("unknown-dtype", lambda r, m: setattr(r.tensors[0], "dtype", 99), INVALID, lambda m: ["dtype", "99"]),
    BadCase("unspecified-dtype", lambda r, m: setattr(r.tensors[0], "dtype", tensor_pb2.DTYPE_UNSPECIFIED), INVALID,
            lambda m: ["tensors[0].dtype", "unknown dtype"]),
    BadCase("wrong-shape", lambda r, m: _set_shape(r, [1, 8, 8, 2]), INVALID, lambda m: ["tensors[0].shape", "[1, 8, 8, 2]"]),
    BadCase("wrong-rank", lambda r, m: _set_shape(r, [64]), INVALID, lambda m: ["tensors[0].shape", "[64]"]),
    BadCase("huge-shape", lambda r, m: _set_shape(r, [1 << 40, 1 << 40, 1 << 40]), INVALID,
            lambda m: ["tensors[0].shape", str(1 << 40)]),
    BadCase("short-data", lambda r, m: setattr(r.tensors[0], "data", r.tensors[0].data[:-1]), INVALID,
            lambda m: ["tensors[0].data", f"{m.input_wire.nbytes - 1} bytes", f"needs {m.input_wire.nbytes} bytes"]),
    BadCase("long-data", lambda r, m: setattr(r.tensors[0], "data", r.tensors[0].data + b"\0"), INVALID,
            lambda m: ["tensors[0].data", f"{m.input_wire.nbytes + 1} bytes"]),
    BadCase("missing-quantization", lambda r, m: r.tensors[0].ClearField("quantization"), INVALID,
            lambda m: ["tensors[0].quantization is missing"]),
    BadCase("zero-scale", lambda r, m: r.tensors[0].quantization.scale.__setitem__(0, 0.0), INVALID,
            lambda m: ["tensors[0].quantization.scale", "finite and > 0"]),
    BadCase("zero-point-out-of-range", lambda r, m: r.tensors[0].quantization.zero_point.__setitem__(0, 300), INVALID,
            lambda m: ["tensors[0].quantization.zero_point", "300"]),
    BadCase("float-nan", _float_nan, INVALID, lambda m: ["tensors[0].dtype", "float32"]),
    BadCase("bad-zlib", lambda r, m: setattr(r.tensors[0], "compression", tensor_pb2.COMPRESSION_ZLIB), INVALID,
            lambda m: ["tensors[0].data", "zlib"]),
    BadCase("unknown-compression", lambda r, m: setattr(r.tensors[0], "compression", 7), INVALID,
            lambda m: ["tensors[0].compression", "7"]),
    BadCase("two-tensors", lambda r, m: r.tensors.append(r.tensors[0]), INVALID, lambda m: ["tensors: 2 given"]),
    BadCase("no-tensors", lambda r, m: r.ClearField("tensors"), INVALID, lambda m: ["tensors: 0 given"]),
]


def bad_request(case: BadCase, frame_id: int, ref: Reference) -> offload_pb2.InferRequest:
    req = frame_request(ref.manifest, frame_id, ref)
    case.mutate(req, ref.manifest)
    return req


def test_bad_frames_get_errors_and_the_stream_goes_on(cloud_server: CloudServer, channel: grpc.Channel,
                                                      reference: Reference) -> None:
    m = reference.manifest
    stream = RawStream(offload_pb2_grpc.OffloadStub(channel))
    problems = []
    for i, case in enumerate(BAD_CASES):
        bad_id, good_id = 100 + i, 1000 + i
        stream.send(bad_request(case, bad_id, reference))
        resp = stream.next()
        if resp.frame_id != bad_id or resp.error.code != case.code.value[0] or resp.outputs:
            problems.append(f"{case.id}: got frame {resp.frame_id} code {resp.error.code} {resp.error.message!r}")
        missing = [s for s in case.says(m) if s not in resp.error.message]
        if missing:
            problems.append(f"{case.id}: message {resp.error.message!r} does not name {missing}")
        assert resp.load.workers == cloud_server.config.workers
        # the next good frame on the same stream is served normally
        stream.send(frame_request(m, good_id, reference))
        assert_good_response(stream.next(), good_id, reference)
    assert not problems, "\n".join(problems)
    assert stream.finish() == grpc.StatusCode.OK
    assert stream.error is None and len(stream.received) == 2 * len(BAD_CASES)
    assert frames_counted(cloud_server, 0) == len(BAD_CASES)
    assert frames_counted(cloud_server, 0, "INVALID_ARGUMENT") == sum(c.code == INVALID and c.id != "split-K" for c in BAD_CASES)


def test_bad_frames_abort_infer_frame_with_their_status(channel: grpc.Channel, reference: Reference) -> None:
    stub = offload_pb2_grpc.OffloadStub(channel)
    problems = []
    for i, case in enumerate(BAD_CASES):
        try:
            resp = stub.InferFrame(bad_request(case, i, reference), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() != case.code:
                problems.append(f"{case.id}: {exc.code()} {exc.details()!r}, want {case.code}")
            missing = [s for s in case.says(reference.manifest) if s not in (exc.details() or "")]
            if missing:
                problems.append(f"{case.id}: details {exc.details()!r} do not name {missing}")
        else:
            problems.append(f"{case.id}: accepted ({resp.error})")
        # and the server still answers a good frame
        assert_good_response(stub.InferFrame(frame_request(reference.manifest, 500 + i, reference), timeout=RPC_TIMEOUT_S),
                             500 + i, reference)
    assert not problems, "\n".join(problems)


def test_codec_refuses_nan_in_a_float_tensor() -> None:
    # What the float-nan case above cannot reach on this bundle: the codec's own check.
    msg = encode(np.array([[1.0, np.nan, 2.0]], np.float32), name="t")
    with pytest.raises(TensorError, match="NaN or infinity"):
        decode(msg, field="tensors[0]")
    msg = encode(np.array([np.inf], np.float16))
    with pytest.raises(TensorError, match=r"tensor\.data"):
        decode(msg)


def test_a_failing_tail_fails_its_frames_not_the_server(cloud_server: CloudServer, channel: grpc.Channel,
                                                        reference: Reference, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = offload_pb2_grpc.OffloadStub(channel)

    def broken(self: TailRunner, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("tail exploded")

    monkeypatch.setattr(TailRunner, "run", broken)
    with pytest.raises(grpc.RpcError) as info:
        stub.InferFrame(frame_request(reference.manifest, 1, reference), timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INTERNAL and "tail 0 failed: RuntimeError" in info.value.details()
    stream = RawStream(stub)
    stream.send(frame_request(reference.manifest, 2, reference))
    resp = stream.next()
    assert resp.error.code == grpc.StatusCode.INTERNAL.value[0] and not resp.outputs
    monkeypatch.undo()
    stream.send(frame_request(reference.manifest, 3, reference))
    assert_good_response(stream.next(), 3, reference)
    assert stream.finish() == grpc.StatusCode.OK


def test_messages_over_max_message_mb(make_server: Callable[..., CloudServer], reference: Reference) -> None:
    m = reference.manifest
    server = make_server(max_message_mb=0.001)  # 1048 bytes: split 2's cut (2048 bytes int8) is over it
    limit = server.config.max_message_bytes
    cut = m.split(2).cut[0]
    assert cut.nbytes > limit > frame_request(m, 0, reference).ByteSize()

    def split2(frame_id: int, compression: int) -> offload_pb2.InferRequest:
        req = offload_pb2.InferRequest(frame_id=frame_id, model_digest=m.model_digest, split=2)
        req.tensors.append(encode(np.zeros(cut.shape, np.dtype(cut.dtype)), name=cut.name,
                                  quantization=cut.quantization, compression=compression))
        return req

    big = split2(1, tensor_pb2.COMPRESSION_NONE)
    assert big.ByteSize() > limit
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        # unary: the call fails with RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            stub.InferFrame(big, timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # stream: a message over the limit is a stream-level fault: the stream ends with the status
        stream = RawStream(stub)
        stream.send(big)
        assert stream.wait_end() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # compressed, the message fits, but the tensor it declares does not: a per-frame error
        small = split2(2, tensor_pb2.COMPRESSION_ZLIB)
        assert small.ByteSize() < limit
        stream = RawStream(stub)
        stream.send(small)
        resp = stream.next()
        assert resp.frame_id == 2 and resp.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert f"declares {cut.nbytes} bytes, over the limit of {limit}" in resp.error.message
        # ... and the server still serves, on that stream, a new stream and unary calls
        stream.send(frame_request(m, 3, reference))
        assert_good_response(stream.next(), 3, reference)
        assert stream.finish() == grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError) as info:
            stub.InferFrame(small, timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert_good_response(stub.InferFrame(frame_request(m, 4, reference), timeout=RPC_TIMEOUT_S), 4, reference)
        assert stub.Describe(offload_pb2.DescribeRequest(), timeout=RPC_TIMEOUT_S).max_message_bytes == limit


def test_describe_probe_and_health(cloud_server: CloudServer, channel: grpc.Channel, reference: Reference) -> None:
    m = reference.manifest
    stub = offload_pb2_grpc.OffloadStub(channel)
    info = stub.Describe(offload_pb2.DescribeRequest(), timeout=RPC_TIMEOUT_S)
    assert (info.model_name, info.model_digest, info.num_layers) == (m.model_name, m.model_digest, m.num_layers)
    assert info.server_version == splitpoint.__version__
    assert info.max_message_bytes == cloud_server.config.max_message_bytes
    assert [s.split for s in info.splits] == [k for k in m.split_ids if k != m.num_layers]  # K has no tail to serve
    for s in info.splits:
        spec = m.split(s.split)
        assert s.wire_bytes == spec.wire_bytes
        assert [(c.name, c.dtype, tuple(c.shape)) for c in s.cut] == [(c.name, dtype_enum(c.dtype), c.shape) for c in spec.cut]
        for c, want in zip(s.cut, spec.cut, strict=True):
            assert want.quantization is not None
            assert list(c.quantization.scale) == pytest.approx(list(want.quantization.scale))
            assert list(c.quantization.zero_point) == list(want.quantization.zero_point)
        assert s.warm  # every tail preloaded (warm_tails = 0)

    resp = stub.Probe(offload_pb2.ProbeRequest(payload=b"\1" * 1000, response_bytes=5000), timeout=RPC_TIMEOUT_S)
    assert resp.received_bytes == 1000 and len(resp.payload) == 5000 and resp.server_time_ms >= 0
    client = OffloadClient(cloud_server.address, timeout_s=RPC_TIMEOUT_S)  # the agent's client: 32 MiB messages
    try:
        rtt_ms, resp = client.probe(payload_bytes=10, response_bytes=MAX_PROBE_BYTES)
    finally:
        client.close()
    assert len(resp.payload) == MAX_PROBE_BYTES and resp.received_bytes == 10 and rtt_ms > 0
    with pytest.raises(grpc.RpcError) as info_err:
        stub.Probe(offload_pb2.ProbeRequest(response_bytes=MAX_PROBE_BYTES + 1), timeout=RPC_TIMEOUT_S)
    assert info_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_PROBE_BYTES + 1) in info_err.value.details()

    SERVING = health_pb2.HealthCheckResponse.SERVING
    assert health_status(cloud_server.address) == SERVING
    assert health_status(cloud_server.address, SERVICE_NAME) == SERVING


# ---------------------------------------------------------------- 4. graceful shutdown


def test_stop_with_frames_in_flight_answers_every_frame(make_server: Callable[..., CloudServer], reference: Reference,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    m = reference.manifest
    server = make_server(workers=1, max_batch=1, grace_s=10.0)
    slow_tails(monkeypatch, 0.2)  # 8 frames in flight take 1.6 s: the drain is observable
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(server.address) as ch:
        stub = offload_pb2_grpc.OffloadStub(ch)
        stream = RawStream(stub)
        in_flight = list(range(8))
        for i in in_flight:
            stream.send(frame_request(m, i, reference))
        first = stream.next()
        # every frame is already accepted: this one is running, the rest queued
        assert first.load.running + first.load.queued == len(in_flight), first.load

        stopper = threading.Thread(target=server.stop, name="stop", daemon=True)
        t0 = time.monotonic()
        stopper.start()
        wait_for(lambda: health_status(server.address) == NOT_SERVING, 5.0, "health NOT_SERVING")
        assert health_status(server.address, SERVICE_NAME) == NOT_SERVING
        # new frames are refused explicitly while the accepted ones finish
        with pytest.raises(grpc.RpcError) as info:
            stub.InferFrame(frame_request(m, 50, reference), timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        late = [100, 101, 102]
        for i in late:
            stream.send(frame_request(m, i, reference))
        assert stream.finish(timeout_s=15) == grpc.StatusCode.OK  # half-closed by us, every frame answered
        stopper.join(15)
        assert not stopper.is_alive()
        assert time.monotonic() - t0 < server.config.grace_s

    answers: dict[int, list[offload_pb2.InferResponse]] = {}
    for resp in stream.received:
        answers.setdefault(resp.frame_id, []).append(resp)
    assert sorted(answers) == in_flight + late
    assert all(len(a) == 1 for a in answers.values()), "a frame answered twice"
    for i in in_flight:
        assert_good_response(answers[i][0], i, reference)
    for i in late:
        err = answers[i][0].error
        assert err.code == grpc.StatusCode.UNAVAILABLE.value[0] and "shutting down" in err.message

    t1 = time.monotonic()
    server.stop()  # the second stop is a no-op
    assert time.monotonic() - t1 < 0.5
    with pytest.raises(grpc.RpcError) as info:
        health_status(server.address)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_stop_ends_an_idle_stream_with_unavailable(make_server: Callable[..., CloudServer], reference: Reference) -> None:
    server = make_server()
    with grpc.insecure_channel(server.address) as ch:
        stream = RawStream(offload_pb2_grpc.OffloadStub(ch))
        for i in range(2):
            stream.send(frame_request(reference.manifest, i, reference))
            assert_good_response(stream.next(), i, reference)
        stoppers = [threading.Thread(target=server.stop, daemon=True) for _ in range(2)]  # stop twice, at once
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(10)
            assert not t.is_alive()
        # we never half-closed: shutdown ends the stream with a status, so frames we might still
        # send are known to be unanswered (an OK end would look like a normal end of stream)
        assert stream.wait_end() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (stream.call.details() or "")
        assert len(stream.received) == 2
    server.stop()


def test_stop_with_short_grace_fails_unrun_frames_explicitly(make_server: Callable[..., CloudServer],
                                                             reference: Reference, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server(workers=1, max_batch=1, grace_s=0.5)
    slow_tails(monkeypatch, 0.1)  # 12 frames need 1.2 s; the grace is 0.5 s
    frames = list(range(12))
    with grpc.insecure_channel(server.address) as ch:
        stream = RawStream(offload_pb2_grpc.OffloadStub(ch))
        for i in frames:
            stream.send(frame_request(reference.manifest, i, reference))
        stream.close_send()
        first = stream.next()
        assert first.load.running + first.load.queued == len(frames)
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 2 * server.config.grace_s + 1
        assert stream.wait_end() == grpc.StatusCode.OK  # we had half-closed: every frame answered
    answers = {r.frame_id: r for r in stream.received}
    assert sorted(answers) == frames and len(stream.received) == len(frames)
    done = [i for i in frames if answers[i].error.code == 0]
    refused = [i for i in frames if answers[i].error.code != 0]
    assert done and refused, (done, refused)
    for i in done:
        assert_good_response(answers[i], i, reference)
    for i in refused:
        assert answers[i].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "shut down before this frame ran" in answers[i].error.message


# ---------------------------------------------------------------- 5. agent fallbacks


def test_agent_runs_locally_when_nothing_listens(digits_bundle: Path, reference: Reference, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        frames = 12
        agent = make_agent(digits_bundle, address, 3, frames, tmp_path / "r.jsonl", connect_timeout_s=2.0)
        t0 = time.monotonic()
        summary, records = run_agent(agent, timeout_s=30)
        assert time.monotonic() - t0 < 15
    by_id = check_one_record_per_frame(records, frames, reference)
    for r in by_id.values():
        assert r["where"] == "local" and r["split"] == 3
        assert r["fallback_reason"], r
    assert summary.cloud == 0 and summary.local == frames and summary.fallbacks == frames


def test_agent_falls_back_on_missed_deadlines_and_ignores_late_answers(
    digits_bundle: Path, cloud_server: CloudServer, reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every computed answer comes about 100 ms after the frame's deadline, within 2 x frame_deadline_ms:
    # a server that slow still answers, so its stream is kept (a silent one is given up:
    # tests/functional/test_agent_faults.py)
    frames, deadline_ms = 6, 200
    slow_tails(monkeypatch, 0.3)
    agent = make_agent(digits_bundle, cloud_server.address, 2, frames, tmp_path / "r.jsonl",
                       frame_deadline_ms=deadline_ms, window=2)
    answers: list[offload_pb2.InferResponse] = []
    on_response = agent.cloud.on_answer  # spy: the late answers do reach the agent

    def spy(stream: Any, resp: offload_pb2.InferResponse) -> None:
        answers.append(resp)
        on_response(stream, resp)

    agent.cloud.on_answer = spy  # type: ignore[method-assign]
    summary, records = run_agent(agent)
    by_id = check_one_record_per_frame(records, frames, reference)
    for r in by_id.values():
        assert r["where"] == "local" and r["split"] == 2
        assert r["fallback_reason"] == f"no answer within frame_deadline_ms = {deadline_ms}"
    # every frame was answered by the server, after its fallback, and the answer was dropped
    wait_for(lambda: len(answers) == frames, 5.0, "the late answers")
    assert sorted(a.frame_id for a in answers) == list(range(frames))
    assert len(read_results(agent.config.results)) == frames
    assert summary.frames == frames and summary.fallbacks == frames and summary.cloud == 0
    # the server ran the frame it got to in time and refused the ones whose budget ran out queued
    assert frames_counted(cloud_server, 2) + frames_counted(cloud_server, 2, "DEADLINE_EXCEEDED") == frames


def test_agent_falls_back_on_a_malformed_answer(digits_bundle: Path, cloud_server: CloudServer, reference: Reference,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_tail(self: TailRunner, batch: np.ndarray) -> np.ndarray:
        return np.full((len(batch), 10), np.nan, np.float32)

    monkeypatch.setattr(TailRunner, "run", nan_tail)
    frames = 5
    agent = make_agent(digits_bundle, cloud_server.address, 4, frames, tmp_path / "r.jsonl")
    summary, records = run_agent(agent)
    by_id = check_one_record_per_frame(records, frames, reference)
    for r in by_id.values():
        assert r["where"] == "local"
        assert r["fallback_reason"].startswith("malformed response:") and "NaN" in r["fallback_reason"], r
    assert summary.fallbacks == frames


def test_agent_keeps_going_when_the_server_stops_mid_run(digits_bundle: Path, make_server: Callable[..., CloudServer],
                                                         reference: Reference, tmp_path: Path) -> None:
    server = make_server(grace_s=2.0)
    frames = 60
    got_some = threading.Event()
    count = [0]

    def on_result(record: dict[str, Any]) -> None:
        count[0] += 1
        if count[0] == 15:
            got_some.set()

    agent = make_agent(digits_bundle, server.address, 3, frames, tmp_path / "r.jsonl", on_result=on_result,
                       fps=50.0, connect_timeout_s=2.0)
    stopper = threading.Thread(target=lambda: (got_some.wait(30), server.stop()), daemon=True)
    stopper.start()
    summary, records = run_agent(agent)
    stopper.join(10)
    by_id = check_one_record_per_frame(records, frames, reference)
    cloud = [i for i, r in by_id.items() if r["where"] == "cloud"]
    local = [i for i, r in by_id.items() if r["where"] == "local"]
    assert len(cloud) >= 15 and local, (len(cloud), len(local))
    assert all(by_id[i]["fallback_reason"] for i in local)
    assert not any("fallback_reason" in by_id[i] for i in cloud)
    assert summary.cloud == len(cloud) and summary.failed == 0


def test_agent_refuses_a_server_with_another_bundle(digits_bundle: Path, cloud_server: CloudServer,
                                                    reference: Reference, tmp_path: Path) -> None:
    other = tmp_path / "other-bundle"
    shutil.copytree(digits_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["digest"] = OTHER_DIGEST  # load_bundle checks the artifacts, not the manifest itself
    (other / "manifest.json").write_text(json.dumps(manifest))
    agent = make_agent(other, cloud_server.address, 3, 4, tmp_path / "r.jsonl")
    with pytest.raises(ConfigError) as info:
        run_agent(agent)
    err = info.value
    assert err.key == "cloud"
    assert OTHER_DIGEST in str(err) and reference.manifest.model_digest in str(err)
    # refused before the results log was opened: no log made (nor, with resume off, an old one
    # moved aside) for a run that never ran
    assert not (tmp_path / "r.jsonl").exists() and agent.results is None
    assert frames_counted(cloud_server, 3) == 0
