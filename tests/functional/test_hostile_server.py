"""The agent's client against a server that answers in ways no splitpoint server does: real
gRPC on loopback port 0, a fake server that sends raw bytes (generic handlers, so that it can
send what no generated servicer would), the real OffloadClient and its streams.

What is checked:
  * bytes that are no InferResponse (or BundleInfo, ProbeResponse) end that call with one
    plain error saying so - no Python traceback in the agent's log (gRPC logged one for every
    such answer), no bare "Exception deserializing response!";
  * the replica name a server puts in its initial metadata reaches the records cut short;
  * a probe answer whose server time is impossible fails the probe (it fed the link estimate);
  * a server without the Offload service, or whose Describe names no bundle, is named as such.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from edge_node.client import INTERRUPT_POLL_S, OffloadClient
from splitpoint.errors import RemoteError
from splitpoint.v1 import offload_pb2
from splitpoint.wire_metadata import REPLICA_METADATA_KEY

EVENT_TIMEOUT_S = 30.0
GARBAGE = b"\xff\xff\xff\x07no protobuf"


def raw_server(infer: Callable[[Iterator[bytes], Any], Iterator[bytes]], describe: Callable[[Any], bytes],
               probe: Callable[[Any], bytes]) -> tuple[grpc.Server, str]:
    """A server of splitpoint.v1.Offload's Infer, Describe and Probe whose handlers return raw bytes."""
    handlers = {
        "Infer": grpc.stream_stream_rpc_method_handler(infer),
        "Describe": grpc.unary_unary_rpc_method_handler(lambda req, ctx: describe(ctx)),
        "Probe": grpc.unary_unary_rpc_method_handler(lambda req, ctx: probe(ctx)),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("splitpoint.v1.Offload", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    servers: list[grpc.Server] = []

    def start(infer: Callable[[Iterator[bytes], Any], Iterator[bytes]],
              describe: Callable[[Any], bytes] = lambda ctx: GARBAGE,
              probe: Callable[[Any], bytes] = lambda ctx: GARBAGE) -> str:
        server, address = raw_server(infer, describe, probe)
        servers.append(server)
        return address

    yield start
    for server in servers:
        server.stop(0)


class Ended:
    """A stream's callbacks: the answers it handed on, and how it ended (an event to wait on)."""

    def __init__(self) -> None:
        self.answers: list[offload_pb2.InferResponse] = []
        self.error: RemoteError | None = None
        self.done = threading.Event()

    def answer(self, stream: Any, resp: offload_pb2.InferResponse) -> None:
        self.answers.append(resp)

    def end(self, stream: Any, error: RemoteError | None) -> None:
        self.error = error
        self.done.set()


def answers_garbage(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for _ in requests:
        yield GARBAGE


def slow_garbage(context: Any) -> bytes:
    """Unreadable, after a few of the client's polls (INTERRUPT_POLL_S): an answer that waits
    takes the client's other way through its wait."""
    time.sleep(3 * INTERRUPT_POLL_S)
    return GARBAGE


def test_answers_that_are_no_message_end_the_call_with_a_plain_error(serve: Callable[..., str],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    client = OffloadClient(serve(answers_garbage, describe=slow_garbage), timeout_s=EVENT_TIMEOUT_S)
    ended = Ended()
    try:
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(RemoteError) as info:
                client.describe()
            stream = client.open_stream(60.0, ended.answer, ended.end)
            assert stream.send(offload_pb2.InferRequest(frame_id=1))
            assert ended.done.wait(EVENT_TIMEOUT_S), "the stream did not end"
    finally:
        client.close()
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert f"the server's answer ({len(GARBAGE)} bytes) is not a splitpoint.v1.BundleInfo" in str(info.value)
    assert "another version, or another service on that address" in str(info.value)
    assert ended.answers == [] and ended.error is not None and ended.error.code == grpc.StatusCode.INTERNAL
    assert "is not a splitpoint.v1.InferResponse" in str(ended.error), ended.error
    # gRPC's own "Exception deserializing message!" came with a traceback, at ERROR
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


def test_a_replica_name_the_server_sends_is_cut_short(serve: Callable[..., str]) -> None:
    """The replica that took a stream is in every cloud record: a server naming itself with 8 KB
    of metadata wrote those 8 KB into each one."""
    answer = offload_pb2.InferResponse(frame_id=1).SerializeToString()

    def named(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        context.send_initial_metadata([(REPLICA_METADATA_KEY, "r" * 8000)])
        for _ in requests:
            yield answer

    client = OffloadClient(serve(named), timeout_s=EVENT_TIMEOUT_S)
    ended = Ended()
    try:
        stream = client.open_stream(60.0, ended.answer, ended.end)
        assert stream.send(offload_pb2.InferRequest(frame_id=1))
        stream.close()
        assert ended.done.wait(EVENT_TIMEOUT_S), "the stream did not end"
    finally:
        client.close()
    assert ended.error is None and len(ended.answers) == 1
    assert stream.replica.startswith("rrrr") and stream.replica.endswith("... (8000 characters)"), stream.replica
    assert len(stream.replica) < 400


def test_a_stream_the_server_ends_leaves_no_thread_behind(serve: Callable[..., str]) -> None:
    """gRPC reads a stream's requests on a thread of its own, which waits for the next request
    until the request iterator ends. A stream that the server (or a reset link) ended with an
    error never ended its iterator: in a soak with the server killed every minute the agent
    held one more thread per failed stream (24 after two minutes), each with its stream."""
    ends = 5
    refuse = refusing(grpc.StatusCode.UNAVAILABLE, "going away")
    client = OffloadClient(serve(refuse), timeout_s=EVENT_TIMEOUT_S)
    before = set(threading.enumerate())
    try:
        for _ in range(ends):
            ended = Ended()
            stream = client.open_stream(60.0, ended.answer, ended.end)
            assert stream.send(offload_pb2.InferRequest(frame_id=1))
            assert ended.done.wait(EVENT_TIMEOUT_S), "the stream did not end"
            assert ended.error is not None and ended.error.code == grpc.StatusCode.UNAVAILABLE
            assert not stream.accepting
        # the agent's threads, not the fake server's (its pool starts workers as calls come)
        new = [t for t in set(threading.enumerate()) - before if not t.name.startswith("ThreadPoolExecutor")]
        deadline = time.monotonic() + EVENT_TIMEOUT_S / 3
        for thread in new:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [t.name for t in new if t.is_alive()]
    finally:
        client.close()
    assert left == [], f"{len(left)} threads of {ends} ended streams still run: {left}"


def session_for(address: str) -> Any:
    from edge_node.config import EdgeConfig
    from edge_node.session import OffloadSession
    from scheduler.link import LinkEstimator

    conf = EdgeConfig(bundle="b", source="synthetic:1", cloud=address, insecure=True, split=1,
                      connect_timeout_s=EVENT_TIMEOUT_S)
    return OffloadSession(conf, "sha256:agent", LinkEstimator())


def test_a_server_without_the_offload_service_is_named_as_such(serve: Callable[..., str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A server that has no splitpoint.v1.Offload (another service, another protocol version)
    answers Describe UNIMPLEMENTED: the agent said only "not reachable (UNIMPLEMENTED: Method
    not found!)", as if it were down."""
    def unimplemented(context: Any) -> bytes:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    session = session_for(serve(answers_garbage, unimplemented))
    try:
        with caplog.at_level(logging.WARNING, logger="edge_node.agent"):
            assert session.check_server() is None  # frames run locally meanwhile: not fatal
    finally:
        session.client.close()
    (line,) = [r.getMessage() for r in caplog.records if "UNIMPLEMENTED" in r.getMessage()]
    assert "does not serve splitpoint.v1.Offload" in line and "another protocol version" in line, line


@pytest.mark.parametrize(("info", "needle"), [
    (offload_pb2.BundleInfo(), "the server names no bundle in its Describe answer: a server of another protocol "
                               "version, or not a splitpoint server"),
    (offload_pb2.BundleInfo(model_name="other\x1b[2J", model_digest="sha256:other"),
     "the server runs bundle other\\x1b[2J sha256:other, this agent sha256:agent: partition once"),
])
def test_a_server_on_another_bundle_or_none_stops_the_agent_with_one_line(serve: Callable[..., str],
                                                                          info: offload_pb2.BundleInfo,
                                                                          needle: str) -> None:
    """Before, a Describe answer without a digest (what a server of another protocol version
    answers if its fields moved) read "the server runs bundle  , this agent sha256:...".
    ConfigError: `splitpoint edge` prints it as one line and exits 2."""
    from splitpoint.errors import ConfigError

    session = session_for(serve(answers_garbage, lambda ctx: info.SerializeToString()))
    try:
        with pytest.raises(ConfigError) as error:
            session.check_server()
    finally:
        session.client.close()
    assert needle in str(error.value), error.value


@pytest.mark.parametrize("server_ms", [math.nan, -5.0, 1e9])
def test_a_probe_answer_with_an_impossible_server_time_fails_the_probe(serve: Callable[..., str],
                                                                       server_ms: float) -> None:
    """The link estimate takes the server's time off a probe's round trip: a NaN (or one longer
    than the round trip) read a 48 KiB probe as 4800 Mbps and restarted the estimate there."""
    answer = offload_pb2.ProbeResponse(server_time_ms=server_ms).SerializeToString()
    client = OffloadClient(serve(answers_garbage, probe=lambda ctx: answer), timeout_s=EVENT_TIMEOUT_S)
    try:
        with pytest.raises(RemoteError) as info:
            client.probe(32 * 1024)
    finally:
        client.close()
    assert f"the probe's answer says the server took {server_ms!r} ms of a " in str(info.value), info.value


def refusing(code: grpc.StatusCode, details: str) -> Callable[[Iterator[bytes], Any], Iterator[bytes]]:
    def infer(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        next(requests, None)  # the first frame, then the refusal
        context.abort(code, details)
        yield b""  # never reached: a generator, as a stream handler is

    return infer


@pytest.mark.parametrize(("code", "details"), [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "full\n" * 1000),
    (grpc.StatusCode.INTERNAL, "\x1b[31mboom\u202e" + "é" * 2000),
    (grpc.StatusCode.UNIMPLEMENTED, "Method not found!"),
    (grpc.StatusCode.DATA_LOSS, "x" * 20_000),  # details over gRPC's metadata limit: it says so itself
])
def test_the_agent_runs_on_when_every_stream_is_refused(digits_bundle: Any, serve: Callable[..., str], tmp_path: Any,
                                                        code: grpc.StatusCode, details: str) -> None:
    """Already so (kept as a regression test): a server that answers Describe but ends every
    Infer stream with an odd status: each frame one local record saying why, no hang."""
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.results import read_results
    from edge_node.source_spec import open_source
    from splitpoint.bundle import load_bundle

    m = load_bundle(digits_bundle, verify=False).manifest
    info = offload_pb2.BundleInfo(model_name=m.model_name, model_digest=m.model_digest).SerializeToString()
    address = serve(refusing(code, details), describe=lambda ctx: info)
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:6", cloud=address, split=3, insecure=True,
                      results=str(tmp_path / "r.jsonl"), grace_s=1.0)
    conf.validate()
    agent = EdgeAgent.from_config(conf)
    box: dict[str, Any] = {}

    def run() -> None:
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
            box["summary"] = agent.run(source)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(EVENT_TIMEOUT_S)
    if runner.is_alive():
        agent.stop()
        runner.join(5.0)
        pytest.fail("the agent did not finish 6 frames against a refusing server")
    records = read_results(tmp_path / "r.jsonl")
    assert sorted(r["frame_id"] for r in records) == list(range(6))
    assert all(r["status"] == "ok" and r["where"] == "local" for r in records), records
    reasons = {r["fallback_reason"] for r in records}
    # the server answered: the frames of the backoff say it refused the stream, not that it is unreachable
    ways = ("cloud refused the stream (", "stream ended before the answer (",
            "stream ended before the frame was sent (", "stream closed before the frame was sent")
    assert all(r.startswith(ways) and len(r) < 400 for r in reasons), reasons
    # the refusal's code (gRPC itself ends a stream whose details are too long RESOURCE_EXHAUSTED)
    assert any(code.name in r or "RESOURCE_EXHAUSTED" in r for r in reasons), reasons
