"""The agent under faults, as a user runs it: `python -m splitpoint edge` processes, real ports.

What is checked:
  * a results log on a full file system (a 64 KiB tmpfs) ends the agent in under 10 s
    with exit 1 and one message naming the file and the error; the records written
    before stay a valid log;
  * a server answering an empty output tensor, or scores that are not finite: that
    frame runs locally (one record, the reason says why) and the run goes on;
  * SIGTERM while the link is stalled (a server that takes the stream and never
    answers) ends the agent within its grace period; so does stop() in live capture
    with a camera hung in a read; such a server's stream is given up after
    frame_deadline_ms, and the agent backs off instead of sending it every frame;
  * keepalive: an agent with a frame every few seconds and pings in between keeps
    its one stream (intervals scaled down by configuration);
  * a server that misbehaves: SIGTERM while Describe hangs ends the agent within its
    grace, not at connect_timeout_s; one that never ends a half-closed stream does not
    stretch the grace; its error messages reach the log and the records escaped and cut.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import cli_env
from helpers import finish_process as finish

from edge_node.results import read_results
from splitpoint.bundle import load_bundle
from splitpoint.codec import encode
from splitpoint.errors import ConfigError
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

PROC_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 30.0


# ---------------------------------------------------------------- helpers


def edge_process(bundle: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(bundle), *args],
        # faulthandler: a hung agent told SIGABRT prints every thread's stack (see finish)
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env() | {"PYTHONFAULTHANDLER": "1"},
        cwd=cwd,
    )


class FakeOffload(offload_pb2_grpc.OffloadServicer):
    """Describes the real bundle; every Infer request is handed to `answer`, which returns the
    response to send (or None to send nothing)."""

    def __init__(self, bundle: Path, answer: Callable[[offload_pb2.InferRequest], offload_pb2.InferResponse | None]):
        m = load_bundle(bundle, verify=False).manifest
        self.info = offload_pb2.BundleInfo(model_name=m.model_name, model_digest=m.model_digest, num_layers=m.num_layers)
        self.answer = answer
        self.received: list[int] = []
        self.received_changed = threading.Condition()

    def Describe(self, request: Any, context: Any) -> offload_pb2.BundleInfo:  # noqa: N802 - gRPC's name
        return self.info

    def Infer(self, request_iterator: Iterator[offload_pb2.InferRequest], context: Any) -> Iterator[offload_pb2.InferResponse]:  # noqa: N802
        for req in request_iterator:
            with self.received_changed:
                self.received.append(req.frame_id)
                self.received_changed.notify_all()
            resp = self.answer(req)
            if resp is not None:
                yield resp

    def wait_received(self, n: int) -> None:
        with self.received_changed:
            assert self.received_changed.wait_for(lambda: len(self.received) >= n, EVENT_TIMEOUT_S), self.received


@pytest.fixture
def fake_server() -> Iterator[Callable[[FakeOffload], str]]:
    servers: list[grpc.Server] = []

    def start(servicer: FakeOffload) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        offload_pb2_grpc.add_OffloadServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        assert port > 0
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


# ---------------------------------------------------------------- a results log that cannot be written


@pytest.fixture
def full_disk(tmp_path: Path, fmt: str) -> Iterator[Path]:
    """A 256 KiB tmpfs, filled but for room for a few records. SQLite needs its -shm (32 KiB) and
    a WAL page per record: with 24 KiB it wrote none, and the test read an empty log."""
    room = 4096 if fmt == "jsonl" else 96 * 1024
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while fh.write(b"\0" * 4096):
                    pass
            except OSError:
                pass
        filler.write_bytes(b"\0" * (filler.stat().st_size - room))  # leave room for a few records
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_full_results_disk_stops_the_agent_with_one_clear_error(digits_bundle: Path, cloud_server: Any,
                                                                   full_disk: Path, tmp_path: Path, fmt: str) -> None:
    results = full_disk / f"r.{fmt}"
    t0 = time.monotonic()
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:5000", "--cloud", cloud_server.address,
                        "--split", "3", "--results", str(results), "--results-format", fmt)
    out, err = finish(proc)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, (proc.returncode, out, err)
    assert "Traceback" not in err, err
    assert elapsed < 10.0, f"took {elapsed:.1f} s to stop"
    lines = [line for line in err.splitlines() if str(results) in line]
    assert len(lines) == 1, err  # one message, naming the file...
    assert lines[0].startswith("splitpoint edge: error: results log "), lines[0]
    assert "full" in lines[0] or "No space left" in lines[0], lines[0]  # ... and the error
    if fmt == "sqlite":  # the agent left a -wal: reading it needs room for SQLite's -shm
        try:
            read_results(results)
        except ConfigError as exc:  # not "no records", as before
            assert "the disk it is on is full: free some space" in str(exc), exc
    (full_disk / "filler").unlink()  # the operator frees space
    records = read_results(results)  # what was written stays a valid log
    assert records, "the records written before the disk filled are gone"
    if fmt == "jsonl":
        raw = results.read_bytes()
        assert raw.endswith(b"\n") or not raw
        for line in raw.splitlines():
            json.loads(line)
    ids = [r["frame_id"] for r in records]
    assert len(ids) == len(set(ids)) and all(r["status"] == "ok" for r in records)
    assert len(records) < 5000


def test_an_unwritable_results_directory_is_one_clear_error(digits_bundle: Path, tmp_path: Path) -> None:
    # a name the file system refuses (ENAMETOOLONG): cannot be opened, even as root. (A directory
    # at the log's path, or a file where one of its directories should be, is a wrong value
    # instead: exit 2, tests/functional/test_hostile_files.py.)
    log = tmp_path / ("r" * 300 + ".jsonl")
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:3", "--cloud", "127.0.0.1:1",
                        "--results", str(log))
    out, err = finish(proc)
    assert proc.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"splitpoint edge: error: results log {log} cannot be written"), last
    assert "File name too long" in last, last


# ---------------------------------------------------------------- malformed answers


def test_an_empty_output_tensor_is_that_frames_local_fallback(digits_bundle: Path, fake_server: Any,
                                                              tmp_path: Path) -> None:
    m = load_bundle(digits_bundle, verify=False).manifest
    n = int(np.prod([d for d in m.output.shape if d and d > 0]))

    def answer(req: offload_pb2.InferRequest) -> offload_pb2.InferResponse:
        resp = offload_pb2.InferResponse(frame_id=req.frame_id)
        if req.frame_id % 2 == 0:  # an empty output tensor
            resp.outputs.append(encode(np.zeros((0,), np.float32), name="scores"))
        else:  # the right size, but no finite score (the codec refuses it: also malformed)
            resp.outputs.append(encode(np.full((1, n), np.inf, np.float32), name="scores"))
        return resp

    address = fake_server(FakeOffload(digits_bundle, answer))
    results = tmp_path / "r.jsonl"
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:8", "--cloud", address, "--split", "3",
                        "--results", str(results))
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    for line in results.read_text().splitlines():  # strict JSON: no bare Infinity/NaN
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in the results log"))
    records = {r["frame_id"]: r for r in read_results(results)}
    assert sorted(records) == list(range(8))
    for fid, r in records.items():
        assert r["status"] == "ok" and r["where"] == "local", r
        assert "malformed response" in r["fallback_reason"], r
        assert ("non-finite" in r["fallback_reason"]) == (fid % 2 == 1), r
        assert isinstance(r["score"], float)
    assert "8 frames in" in out and "0 cloud, 8 local (8 fallbacks)" in out, out


# ---------------------------------------------------------------- stop while the link is stalled


def test_sigterm_while_the_link_is_stalled_ends_within_grace(digits_bundle: Path, fake_server: Any,
                                                             tmp_path: Path) -> None:
    servicer = FakeOffload(digits_bundle, lambda req: None)  # takes every frame, answers none
    address = fake_server(servicer)
    grace_s = 2.0
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:1000", "--cloud", address, "--split", "3",
                        "--window", "4", "--frame-deadline-ms", "60000", "--grace-s", str(grace_s),
                        "--results", str(tmp_path / "r.jsonl"))
    try:
        servicer.wait_received(4)  # the window is full of frames the link will never answer
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc, timeout_s=grace_s + 15)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert elapsed < grace_s + 4.0, f"the agent took {elapsed:.1f} s to stop (grace {grace_s} s)"
    assert "4 frames in flight got no answer within grace_s" in err, err
    assert read_results(tmp_path / "r.jsonl") == []  # unanswered frames have no record: resume runs them again


def test_sigterm_between_slowly_paced_frames_ends_the_agent_at_once(digits_bundle: Path, tmp_path: Path) -> None:
    """At --fps 0.01 the next frame is due 100 s after the first: SIGTERM in between was heard only
    then (the hostile tester's agent exited 94 s after it, having run one more frame)."""
    results = tmp_path / "r.jsonl"
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:5", "--fps", "0.01", "--results", str(results))
    try:
        deadline = time.monotonic() + PROC_TIMEOUT_S
        while not (results.exists() and read_results(results)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first frame, due at once, is recorded: the agent now waits for the next
        assert read_results(results), "the first frame was never recorded"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc, timeout_s=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert elapsed < 5, f"the agent took {elapsed:.1f} s to stop"
    assert [r["frame_id"] for r in read_results(results)] == [0]  # no frame run after the stop
    assert "1 frames in" in out, out


@pytest.mark.parametrize("replicas", [1, 2], ids=["one-server", "two-replicas"])
def test_a_server_that_takes_frames_and_answers_none_is_backed_off(digits_bundle: Path, fake_server: Any,
                                                                   tmp_path: Path, replicas: int) -> None:
    """A fixed split against a server that accepts every frame and answers none (hung): every
    frame used to be sent to it and wait its whole frame_deadline_ms, for ever. One server: a
    stream silent for 2 x frame_deadline_ms is given up like a failed one (backoff, frames local
    meanwhile). Replicas: at one frame_deadline_ms the stream is set aside for another replica;
    these end a stream the agent half-closes, its frames unanswered, which counts as a failure."""
    servicers = [FakeOffload(digits_bundle, lambda req: None) for _ in range(replicas)]
    address = ",".join(fake_server(s) for s in servicers)
    frames = 60
    proc = edge_process(digits_bundle, tmp_path, "--source", f"synthetic:{frames}", "--fps", "20", "--cloud", address,
                        "--split", "3", "--frame-deadline-ms", "250", "--results", str(tmp_path / "r.jsonl"))
    try:
        out, err = finish(proc, timeout_s=PROC_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    records = read_results(tmp_path / "r.jsonl")
    assert sorted(r["frame_id"] for r in records) == list(range(frames))
    assert {r["where"] for r in records} == {"local"}
    if replicas == 1:
        assert "given up: nothing came back for " in err and "(2 x frame_deadline_ms) while " in err, err
        assert "new frames go on a new stream" not in err, err  # no other server to go to
    else:
        assert "(frame_deadline_ms): new frames go on a new stream" in err, err
        assert "unanswered after answering nothing for frame_deadline_ms; frames run here, a new stream in" in err, err
    reasons = {r["fallback_reason"] for r in records}
    assert "cloud unreachable (waiting to reconnect)" in reasons, reasons  # the backoff's frames ran at once
    assert sum(len(s.received) for s in servicers) < frames, "every frame was sent to servers that answer none"


# ---------------------------------------------------------------- stop while the agent is starting

#: `splitpoint edge` through its real entry (splitpoint.cli.run), held at one point of its start-up
#: until the test has sent its signal: it says "paused" on stderr and waits for a line on stdin
PAUSED_AGENT = """
import sys

from edge_node.agent import EdgeAgent
from splitpoint import cli


def paused(real):
    def wait_for_the_signal(*args, **kwargs):
        print("paused", file=sys.stderr, flush=True)
        sys.stdin.readline()
        return real(*args, **kwargs)

    return wait_for_the_signal


if sys.argv.pop(1) == "reading-the-command-line":  # the gRPC and config classes import
    cli.build_parser = paused(cli.build_parser)
else:  # the agent being made: bundle checked, LiteRT imported, heads loaded
    EdgeAgent.from_config = paused(EdgeAgent.from_config)
cli.run()
"""


def wait_for_line(proc: subprocess.Popen[str], text: str) -> None:
    """Read `proc`'s stderr up to the line `text`; a process that ends or stalls before it fails."""
    timer = threading.Timer(EVENT_TIMEOUT_S, proc.kill)
    timer.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == text:
                return
            seen.append(line)
        raise AssertionError(f"no {text!r} line from the agent (exit {proc.wait()}): {''.join(seen)[-3000:]}")
    finally:
        timer.cancel()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("where", ["reading-the-command-line", "making-the-agent"])
def test_a_stop_while_the_agent_starts_ends_it_before_the_first_frame(digits_bundle: Path, tmp_path: Path,
                                                                     where: str, sig: signal.Signals) -> None:
    """Before the CLI had its handlers, SIGTERM killed the agent (exit 143) and Ctrl-C raised
    KeyboardInterrupt wherever it landed, with no word said; a stop is exit 0 and a line."""
    results = tmp_path / "r.jsonl"
    earlier = json.dumps({"frame_id": 0, "status": "ok", "split": 7, "where": "local", "label": 3}) + "\n"
    results.write_text(earlier)  # an earlier run's log: left exactly as it was
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_AGENT, where, "edge", "--insecure", "--bundle", str(digits_bundle),
         "--source", "synthetic:5", "--results", str(results)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env() | {"PYTHONFAULTHANDLER": "1"}, cwd=tmp_path)
    try:
        wait_for_line(proc, "paused")
        proc.send_signal(sig)
        assert proc.stdin is not None
        proc.stdin.write("go on\n")  # the signal is sent (a dead agent: a broken pipe, failing the test)
        proc.stdin.flush()
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out.splitlines() == [f"stopped before the first frame: {sig.name} came while the agent was starting; "
                                f"no frame was read and the results log {results} was not touched"]
    assert results.read_text() == earlier


# ---------------------------------------------------------------- keepalive


def test_an_agent_with_a_frame_every_few_seconds_keeps_its_stream(digits_bundle: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Scaled down: the server permits a ping every 0.5 s, the agent pings after 1 s of silence,
    frames come every 3.5 s (three pings between two frames). Production: 5 s, 20 s, 40 s."""
    import cloud_server.server as server_module
    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.source_spec import open_source
    from splitpoint import wire_metadata

    monkeypatch.setattr(server_module, "PERMITTED_PING_INTERVAL_MS", 500)
    monkeypatch.setattr(wire_metadata, "PERMITTED_PING_INTERVAL_MS", 500)  # what the agent's config checks against
    server = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", grace_s=5.0, insecure=True)).start()
    try:
        conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:4", cloud=server.address, split=3, insecure=True,
                          results=str(tmp_path / "r.jsonl"), fps=1 / 3.5, keepalive_s=1.0, frame_deadline_ms=5000)
        conf.validate()
        agent = EdgeAgent.from_config(conf)
        streams: list[int] = []
        opened = agent.session.current_stream

        def counting() -> Any:
            stream = opened()
            if stream is not None and stream.id not in streams:
                streams.append(stream.id)
            return stream

        agent.session.current_stream = counting  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO), open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle,
                                                         conf.fps) as source:
            summary = agent.run(source)
    finally:
        server.stop()
    assert summary.cloud == 4 and summary.fallbacks == 0, caplog.text
    assert len(streams) == 1, f"streams opened: {streams}; log:\n{caplog.text}"
    assert "too_many_pings" not in caplog.text and "ended:" not in caplog.text, caplog.text


def test_keepalive_defaults_are_compatible() -> None:
    from edge_node.config import EdgeConfig
    from splitpoint.wire_metadata import PERMITTED_PING_INTERVAL_MS

    conf = EdgeConfig(bundle="b", source="synthetic:1")
    assert conf.keepalive_s * 1000 >= 2 * PERMITTED_PING_INTERVAL_MS  # room for timer jitter on both sides
    assert conf.keepalive_s < 40  # a frame every 40 s has its link checked in between


# ---------------------------------------------------------------- no silent non-runs


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read back, closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_agent_that_never_reached_a_server_says_so(digits_bundle: Path, tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:20", "--cloud", address, "--split", "3",
                        "--results", str(tmp_path / "r.jsonl"))
    out, err = finish(proc)
    assert proc.returncode == 0 and "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if "never reached" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], err
    assert address in warnings[0] and "all 20 frames ran locally" in warnings[0] and "--require-cloud" in warnings[0]
    # one line when frames start running locally, then digests: not one INFO line per frame
    assert sum("ran locally" in line for line in err.splitlines()) <= 3, err
    assert "0 cloud, 20 local (20 fallbacks)" in out, out


def test_require_cloud_makes_an_unreached_server_an_error(digits_bundle: Path, tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:3", "--cloud", address, "--split", "3",
                        "--require-cloud", "--results", str(tmp_path / "r.jsonl"))
    out, err = finish(proc)
    assert proc.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("splitpoint edge: error: require_cloud: never reached the cloud server at " + address), last
    assert "all 3 frames ran locally" in last
    assert len(read_results(tmp_path / "r.jsonl")) == 3  # the frames still have their records


def test_a_rerun_with_every_frame_recorded_says_how_to_start_over(digits_bundle: Path, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    args = ("--source", "synthetic:4", "--cloud", f"127.0.0.1:{closed_port()}", "--results", str(results))
    proc = edge_process(digits_bundle, tmp_path, *args)  # all on the edge (no split): no server needed
    out, err = finish(proc)
    assert proc.returncode == 0 and "nothing to do" not in err, err
    # an all-edge run did not need a server: it neither asks one nor says it never reached one
    assert "never reached" not in err + out and "not reachable" not in err, (out, err)
    proc = edge_process(digits_bundle, tmp_path, *args)
    out, err = finish(proc)
    assert proc.returncode == 0 and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if "nothing to do" in line]
    assert "WARNING" in line and f"all 4 frames of the source are already recorded in {results}" in line, line
    assert "--no-resume" in line and "--results" in line, line
    assert "0 frames in" in out and "4 skipped" in out, out


def test_a_source_that_cannot_be_opened_leaves_no_results_file(digits_bundle: Path, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    proc = edge_process(digits_bundle, tmp_path, "--source", str(tmp_path / "no-such-dir"), "--results", str(results))
    out, err = finish(proc)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "no-such-dir" in err.strip().splitlines()[-1]
    assert not results.exists()


# ---------------------------------------------------------------- one local executor


def test_every_local_run_is_on_the_local_executor(digits_bundle: Path, fake_server: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Error answers (handled on the gRPC receive thread), unanswered frames (the deadline
    watchdog) and k = K frames all run locally, and all on the one local-executor thread."""
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.heads import EdgeHeads
    from edge_node.source_spec import open_source

    def answer(req: offload_pb2.InferRequest) -> offload_pb2.InferResponse | None:
        if req.frame_id % 2:
            return None  # never answered: the watchdog falls back
        resp = offload_pb2.InferResponse(frame_id=req.frame_id)
        resp.error.code = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        resp.error.message = "busy"
        return resp

    address = fake_server(FakeOffload(digits_bundle, answer))
    threads: list[str] = []
    run_local_all = EdgeHeads.run_local_all

    def spying(self: EdgeHeads, x: np.ndarray) -> Any:
        threads.append(threading.current_thread().name)
        return run_local_all(self, x)

    monkeypatch.setattr(EdgeHeads, "run_local_all", spying)
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:8", cloud=address, split=3, insecure=True,
                      results=str(tmp_path / "r.jsonl"), frame_deadline_ms=300)
    conf.validate()
    agent = EdgeAgent.from_config(conf)
    with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
        summary = agent.run(source)
    assert summary.local == 8 and summary.fallbacks == 8
    reasons = [r["fallback_reason"] for r in read_results(tmp_path / "r.jsonl")]
    # the unanswered ones fall back by the deadline, or when the agent leaves the stream of a
    # replica that answered RESOURCE_EXHAUSTED (it moves to another stream)
    assert sum("RESOURCE_EXHAUSTED" in r for r in reasons) == 4
    assert sum("frame_deadline_ms" in r or "stream ended before the answer" in r for r in reasons) == 4
    assert threads and set(threads) == {"local-executor"}, threads
    # k = K (no split) too
    threads.clear()
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:3", cloud=address, insecure=True,
                      results=str(tmp_path / "k.jsonl"))
    agent = EdgeAgent.from_config(conf)
    with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
        assert agent.run(source).local == 3
    assert threads == ["local-executor"] * 3


class HangingCamera:
    """A live source that hands out `n` frames, then hangs in its next read until released."""

    description = "a camera that hangs"

    def __init__(self, shape: tuple[int, ...], n: int):
        self.shape, self.n = shape, n
        self.release = threading.Event()
        self.hanging = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        from edge_node.sources import Frame

        for i in range(self.n):
            yield Frame(i, np.zeros(self.shape, np.uint8), None, f"hang#{i}", time.time_ns())
        self.hanging.set()
        self.release.wait(PROC_TIMEOUT_S)

    def close(self) -> None:
        self.release.set()


def test_stop_with_a_hung_camera_in_live_capture_ends_within_grace(digits_bundle: Path, tmp_path: Path) -> None:
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig

    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", cloud=f"127.0.0.1:{closed_port()}", insecure=True,
                      results=str(tmp_path / "r.jsonl"), capture="live", grace_s=1.0)
    agent = EdgeAgent.from_config(conf)
    p = agent.bundle.manifest.preprocessing
    camera = HangingCamera((p.height, p.width, p.channels), 3)
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.update(summary=agent.run(camera)), daemon=True)
    runner.start()
    try:
        assert camera.hanging.wait(EVENT_TIMEOUT_S)
        t0 = time.monotonic()
        agent.stop()
        runner.join(conf.grace_s + 3.0)
        elapsed = time.monotonic() - t0
        assert not runner.is_alive(), "run() did not return after stop() with the camera hung"
    finally:
        camera.close()
    assert elapsed < conf.grace_s + 3.0
    summary = box["summary"]  # the frames read before the hang have their records (unpaced: some dropped)
    assert summary.frames == 3 and summary.local + summary.dropped == 3
    assert sorted(r["frame_id"] for r in read_results(tmp_path / "r.jsonl")) == [0, 1, 2]


# ---------------------------------------------------------------- a server that misbehaves


def sigterm_when(proc: subprocess.Popen[str], ready: Callable[[], bool], release: threading.Event) -> tuple[str, str, float]:
    """SIGTERM `proc` once `ready()` says the server holds it where the test wants it; (stdout,
    stderr, seconds from the signal to the exit). `release` lets the fake server go at the end."""
    try:
        assert ready(), "the agent never got where the signal was to find it"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc, timeout_s=30)
        return out, err, time.monotonic() - t0
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()


class HangingDescribe(FakeOffload):
    """Accepts Describe and never answers it (until the test ends)."""

    def __init__(self, bundle: Path):
        super().__init__(bundle, lambda req: None)
        self.asked = threading.Event()
        self.release = threading.Event()

    def Describe(self, request: Any, context: Any) -> offload_pb2.BundleInfo:  # noqa: N802 - gRPC's name
        self.asked.set()
        self.release.wait(EVENT_TIMEOUT_S)
        return self.info


def test_sigterm_while_describe_hangs_ends_within_grace_not_the_connect_timeout(digits_bundle: Path,
                                                                                 fake_server: Any,
                                                                                 tmp_path: Path) -> None:
    """The first Describe blocked the agent until connect_timeout_s (27.6 s after SIGTERM with
    30 s): a blocking gRPC call holds the signal handler's effect until it returns."""
    servicer = HangingDescribe(digits_bundle)
    address = fake_server(servicer)
    grace_s = 1.0
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:10", "--cloud", address, "--split", "3",
                        "--connect-timeout-s", "60", "--grace-s", str(grace_s), "--results", str(tmp_path / "r.jsonl"))
    out, err, elapsed = sigterm_when(proc, lambda: servicer.asked.wait(EVENT_TIMEOUT_S), servicer.release)
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err)
    assert elapsed < grace_s + 4.0, f"the agent took {elapsed:.1f} s to stop (grace {grace_s} s, connect timeout 60 s)"
    assert "not reachable" not in err, err  # told to stop, not a link problem


class NeverEndsTheStream(FakeOffload):
    """Answers every frame with an error (it falls back locally) and, once the agent half-closes
    its stream, never ends the call."""

    def __init__(self, bundle: Path, message: str = "busy"):
        super().__init__(bundle, lambda req: offload_pb2.InferResponse(
            frame_id=req.frame_id, error=offload_pb2.FrameError(code=14, message=message)))
        self.release = threading.Event()

    def Infer(self, request_iterator: Iterator[offload_pb2.InferRequest], context: Any) -> Iterator[offload_pb2.InferResponse]:  # noqa: N802
        yield from super().Infer(request_iterator, context)
        self.release.wait(EVENT_TIMEOUT_S)  # the agent closed its side; this one stays open


def test_a_server_that_never_ends_the_stream_does_not_stretch_the_grace(digits_bundle: Path, fake_server: Any,
                                                                        tmp_path: Path) -> None:
    servicer = NeverEndsTheStream(digits_bundle)
    address = fake_server(servicer)
    grace_s = 0.5
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:100000", "--fps", "20", "--cloud", address,
                        "--split", "3", "--grace-s", str(grace_s), "--results", str(tmp_path / "r.jsonl"))
    out, err, elapsed = sigterm_when(proc, lambda: servicer.wait_received(5) or True, servicer.release)
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err)
    # the half-closed stream got what was left of the grace, not 2 s more on top of it
    assert elapsed < grace_s + 1.2, f"the agent took {elapsed:.1f} s to stop (grace {grace_s} s)"


def test_a_servers_error_message_cannot_forge_log_lines_or_fill_the_disk(digits_bundle: Path, fake_server: Any,
                                                                         tmp_path: Path) -> None:
    message = "x\n12:00:00 CRITICAL edge_node.agent: forged\x1b[31m\x00\u202e" + "y" * 1_000_000
    servicer = NeverEndsTheStream(digits_bundle, message)
    servicer.release.set()  # this one ends its streams
    address = fake_server(servicer)
    results = tmp_path / "r.jsonl"
    proc = edge_process(digits_bundle, tmp_path, "--source", "synthetic:5", "--cloud", address, "--split", "3",
                        "--results", str(results))
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "forged" in err and not any(line.startswith("12:00:00 CRITICAL") for line in err.splitlines()), err[-2000:]
    assert "\x1b" not in err and "\x00" not in err and "\u202e" not in err
    assert len(err) < 20_000, len(err)  # 5 frames' warnings, not 5 MB
    records = read_results(results)
    assert len(records) == 5 and all(r["where"] == "local" for r in records)
    reason = records[0]["fallback_reason"]
    assert reason.startswith("cloud UNAVAILABLE: x\\n12:00:00 CRITICAL") and reason.endswith(f"... ({len(message)} characters)")
    assert results.stat().st_size < 20_000
