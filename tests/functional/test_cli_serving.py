"""`splitpoint cloud` and `splitpoint edge` as a user runs them: subprocesses, real ports, signals.

Configuration: --print-config shows the effective TOML (defaults < file < flags);
every bad key or value exits 2 with one line naming it, never a traceback.
Serving: the edge command runs against a real server; the cloud command, sent
SIGTERM with frames in flight, answers every frame it accepted and exits 0
within its grace period.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import CloudProcess, cli_env

from edge_node.results import read_results
from splitpoint.bundle import Manifest, load_bundle
from splitpoint.codec import decode, encode
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

RPC_TIMEOUT_S = 10.0


def splitpoint(*args: str, cwd: Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI; edge and cloud talk plaintext here, which must be asked for with --insecure."""
    if args and args[0] in ("edge", "cloud"):
        args = (args[0], "--insecure", *args[1:])
    return subprocess.run(
        [sys.executable, "-m", "splitpoint", *args],
        capture_output=True, text=True, timeout=timeout_s, env=cli_env(), cwd=cwd,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], command: str, *names: str) -> str:
    """Exit 2, nothing on stdout, one stderr line `splitpoint CMD: error: ...` naming `names`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"splitpoint {command}: error: "), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------- edge configuration


def test_edge_print_config_shows_the_effective_values(digits_bundle: Path, tmp_path: Path) -> None:
    proc = splitpoint("edge", "--print-config", "--bundle", str(digits_bundle), "--source", "synthetic:3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    conf = tomllib.loads(proc.stdout)
    assert conf["bundle"] == str(digits_bundle) and conf["source"] == "synthetic:3"
    assert conf["cloud"] == "127.0.0.1:50051" and conf["mode"] == "throughput" and conf["window"] == 4
    assert conf["frame_deadline_ms"] == 2000 and conf["device"] == "cpu" and conf["results"] == "results.jsonl"
    assert "split" not in conf and "# split = (not set)" in proc.stdout  # unset keys are shown, commented out
    # what it prints is a config file that gives the same config back
    path = tmp_path / "printed.toml"
    path.write_text(proc.stdout)
    again = splitpoint("edge", "--print-config", "--config", str(path), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == proc.stdout


def test_edge_flags_override_the_config_file(digits_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        f'bundle = "{digits_bundle}"\nsource = "synthetic:9"\ncloud = "10.1.2.3:6000"\n'
        'split = 3\nmode = "latency"\nwindow = 2\nframe_deadline_ms = 500\n'
    )
    proc = splitpoint("edge", "--config", str(path), "--print-config", "--window", "8", "--source", "synthetic:3",
                      "--split", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    conf = tomllib.loads(proc.stdout)
    assert (conf["window"], conf["source"], conf["split"]) == (8, "synthetic:3", 5)  # flags
    assert (conf["cloud"], conf["mode"], conf["frame_deadline_ms"]) == ("10.1.2.3:6000", "latency", 500)  # file
    assert conf["connect_timeout_s"] == 5.0  # default


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('window = "x"', ["window", '"x"', "expected an integer, not a string"]),
        ('mode = "fast"', ["mode", '"fast"', "throughput, latency"]),
        ('cloud = "nohostport"', ["cloud", '"nohostport"', "HOST:PORT"]),
        ('cloud = "127.0.0.1:0"', ["cloud", '"127.0.0.1:0"', "out of range"]),
        ('colud = "127.0.0.1:1"', ["colud", "unknown key", "cloud"]),
        ("frame_deadline_ms = 0", ["frame_deadline_ms", "0", "at least 1"]),
        ("split = -1", ["split", "-1"]),
        ("fps = -5", ["fps", "-5"]),
        ('device = "tpu"', ["device", '"tpu"']),
        ("window = [1, 2]", ["window", "[1, 2]"]),
        ("window = ", ["--config", "not valid TOML"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_edge_bad_config_file_exits_2_naming_the_key(toml: str, names: list[str], digits_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f'bundle = "{digits_bundle}"\nsource = "synthetic:3"\n{toml}\n')
    proc = splitpoint("edge", "--config", str(path), "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    assert_one_line_error(proc, "edge", *names)
    assert not (tmp_path / "r.jsonl").exists()  # nothing ran


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--window", "x"], ["window", "'x'"]),
        (["--cloud", "nohostport"], ["cloud", '"nohostport"']),
        (["--split", "two"], ["split", "'two'"]),
    ],
    ids=lambda v: "_".join(v) if isinstance(v, list) and v[0].startswith("--") else None,
)
def test_edge_bad_flag_exits_2_naming_the_key(flags: list[str], names: list[str], digits_bundle: Path,
                                              tmp_path: Path) -> None:
    proc = splitpoint("edge", "--bundle", str(digits_bundle), "--source", "synthetic:3",
                      "--results", str(tmp_path / "r.jsonl"), *flags, cwd=tmp_path)
    assert_one_line_error(proc, "edge", *names)


def test_edge_bad_source_exits_2_naming_it(digits_bundle: Path, tmp_path: Path) -> None:
    # The source is opened (and checked) only once the agent has loaded its heads, so the
    # agent's start-up log lines come first; the error is still the last line, with no traceback.
    proc = splitpoint("edge", "--bundle", str(digits_bundle), "--source", "synthetic:0",
                      "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('splitpoint edge: error: source = "synthetic:0": '), last


def test_edge_bad_choice_flag_is_an_argparse_error(digits_bundle: Path, tmp_path: Path) -> None:
    proc = splitpoint("edge", "--bundle", str(digits_bundle), "--source", "synthetic:3", "--mode", "fast", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--mode" in proc.stderr and "'fast'" in proc.stderr


# ---------------------------------------------------------------- cloud configuration


def test_cloud_print_config_file_and_flags(digits_bundle: Path, tmp_path: Path) -> None:
    proc = splitpoint("cloud", "--print-config", "--bundle", str(digits_bundle), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    conf = tomllib.loads(proc.stdout)
    assert conf["bundle"] == str(digits_bundle) and conf["listen"] == "127.0.0.1:50051"
    assert (conf["workers"], conf["max_batch"], conf["max_message_mb"], conf["grace_s"]) == (2, 8, 32.0, 10.0)

    path = tmp_path / "cloud.toml"
    path.write_text(f'bundle = "{digits_bundle}"\nlisten = "0.0.0.0:6000"\nworkers = 3\nmax_batch = 4\n')
    proc = splitpoint("cloud", "--config", str(path), "--print-config", "--workers", "5", "--grace-s", "2.5",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    conf = tomllib.loads(proc.stdout)
    assert (conf["workers"], conf["grace_s"]) == (5, 2.5)  # flags
    assert (conf["listen"], conf["max_batch"]) == ("0.0.0.0:6000", 4)  # file
    assert conf["max_queue"] == 256  # default


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("workers = 0", ["workers", "0", "at least 1"]),
        ('listen = "nohostport"', ["listen", '"nohostport"']),
        ('listen = "127.0.0.1:99999"', ["listen", "99999"]),
        ("max_message_mb = 0", ["max_message_mb", "0"]),
        ('grace_s = "soon"', ["grace_s", '"soon"']),
        ('log_level = "loud"', ["log_level", '"loud"']),
        ("max_stream = 3", ["max_stream", "unknown key", "max_streams"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cloud_bad_config_file_exits_2_naming_the_key(toml: str, names: list[str], digits_bundle: Path,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text(f'bundle = "{digits_bundle}"\n{toml}\n')
    # (--listen would override the file's listen; every other case gets port 0 in case it starts)
    port0 = [] if toml.startswith("listen") else ["--listen", "127.0.0.1:0"]
    proc = splitpoint("cloud", "--config", str(path), *port0, cwd=tmp_path)
    assert_one_line_error(proc, "cloud", *names)


# ---------------------------------------------------------------- bundles that are not there


@pytest.mark.parametrize("command", ["edge", "cloud"])
@pytest.mark.parametrize("kind", ["missing", "empty-dir", "file"])
def test_a_bad_bundle_dir_is_one_clear_line(command: str, kind: str, tmp_path: Path) -> None:
    bundle = tmp_path / "no-such-bundle"
    if kind == "empty-dir":
        bundle.mkdir()
    elif kind == "file":
        bundle.write_text("not a bundle")
    args = ["--source", "synthetic:3", "--results", str(tmp_path / "r.jsonl")] if command == "edge" \
        else ["--listen", "127.0.0.1:0"]
    proc = splitpoint(command, "--bundle", str(bundle), *args, cwd=tmp_path)
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"splitpoint {command}: error: ") and str(bundle) in lines[0]
    said = {"missing": "does not exist", "empty-dir": "manifest.json is missing", "file": "is a file, not a bundle directory"}
    assert said[kind] in lines[0]


# ---------------------------------------------------------------- serving


def test_edge_command_streams_to_a_server(digits_bundle: Path, cloud_server: Any, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    proc = splitpoint("edge", "--bundle", str(digits_bundle), "--source", "synthetic:20", "--cloud", cloud_server.address,
                      "--split", "3", "--results", str(results), "--log-level", "warning", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "20 frames in" in proc.stdout and "20 cloud, 0 local (0 fallbacks), 0 failed" in proc.stdout, proc.stdout
    records = read_results(results)
    assert sorted(r["frame_id"] for r in records) == list(range(20))
    assert {(r["status"], r["where"], r["split"]) for r in records} == {("ok", "cloud", 3)}


@pytest.fixture(scope="module")
def float_labels(digits_bundle: Path) -> np.ndarray:
    """argmax of the float model (tail_0.keras is split 0's tail: the whole model) per validation input."""
    import keras

    bundle = load_bundle(digits_bundle)
    inputs, _ = bundle.validation_data()
    model = keras.models.load_model(digits_bundle / "cloud" / "tail_0.keras", compile=False)
    return np.asarray(model(bundle.manifest.preprocessing.apply_batch(inputs), training=False)).argmax(axis=1)


def _frame(m: Manifest, inputs: np.ndarray, frame_id: int) -> offload_pb2.InferRequest:
    q = m.input_wire.quantization
    assert q is not None
    x = m.preprocessing.apply(inputs[frame_id % len(inputs)])
    req = offload_pb2.InferRequest(frame_id=frame_id, model_digest=m.model_digest, split=0)
    req.tensors.append(encode(q.quantize(x, m.input_wire.dtype), name=m.input_wire.name, quantization=q))
    return req


GRACE_S = 10.0


@pytest.fixture
def one_worker_server(cloud_process: Callable[..., CloudProcess]) -> CloudProcess:
    """`python -m splitpoint cloud --listen 127.0.0.1:0` with one worker, batches of one and a
    10 s grace period; its address read from its stdout."""
    server = cloud_process("--workers", "1", "--max-batch", "1", "--grace-s", str(GRACE_S))
    host, _, port = server.address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    return server


def test_cloud_sigterm_drains_frames_in_flight_and_exits_0(one_worker_server: CloudProcess, digits_bundle: Path,
                                                           float_labels: np.ndarray) -> None:
    proc: subprocess.Popen = one_worker_server.proc
    m = load_bundle(digits_bundle, side="cloud").manifest
    inputs, _ = load_bundle(digits_bundle, side="cloud").validation_data()
    n = 240  # under max_queue (256): all are queued, none refused for overload
    with grpc.insecure_channel(one_worker_server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=RPC_TIMEOUT_S)
        stub = offload_pb2_grpc.OffloadStub(ch)
        requests: queue.Queue = queue.Queue()

        def gen() -> Iterator[offload_pb2.InferRequest]:
            while (req := requests.get()) is not None:
                yield req

        call = stub.Infer(gen(), timeout=60)
        for i in range(n):
            requests.put(_frame(m, inputs, i))
        responses: list[offload_pb2.InferResponse] = []
        it = iter(call)
        # Wait until the server has accepted every frame: accepted = answered + queued + running
        # (the frame being answered still counts as running). Then SIGTERM, frames in flight.
        while True:
            resp = next(it)
            responses.append(resp)
            load = resp.load
            if len(responses) - 1 + load.queued + load.running >= n:
                break
            assert len(responses) < n, "the frames were never all accepted at once"
        answered_before = len(responses)
        t_kill = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        late = list(range(10_000, 10_005))
        for i in late:  # sent after SIGTERM: answered (before or after the drain began) or refused
            requests.put(_frame(m, inputs, i))
        requests.put(None)
        status = grpc.StatusCode.OK
        try:
            responses.extend(it)
        except grpc.RpcError as err:
            status = err.code()
        rc = proc.wait(timeout=GRACE_S + 10)
        exit_s = time.monotonic() - t_kill

    assert rc == 0, one_worker_server.log.read_text()
    assert exit_s < GRACE_S, exit_s
    assert answered_before < n, "nothing was in flight at SIGTERM: the test proves nothing"
    answers: dict[int, list[offload_pb2.InferResponse]] = {}
    for r in responses:
        answers.setdefault(r.frame_id, []).append(r)
    assert all(len(a) == 1 for a in answers.values()), "a frame answered twice"
    # every frame sent before SIGTERM has its result, with the float model's label
    missing = [i for i in range(n) if i not in answers]
    assert not missing, f"frames sent before SIGTERM without an answer: {missing[:10]}"
    wrong = []
    for i in range(n):
        r = answers[i][0]
        assert r.error.code == 0, (i, r.error)
        if int(np.argmax(decode(r.outputs[0]).dequantized())) != float_labels[i % len(float_labels)]:
            wrong.append(i)
    assert not wrong, f"labels differing from the float model: {wrong}"
    # frames sent after SIGTERM: each answered or refused with UNAVAILABLE, or else the stream
    # itself ended UNAVAILABLE (they arrived after the server stopped reading)
    for i in late:
        if i in answers:
            r = answers[i][0]
            assert r.error.code in (0, grpc.StatusCode.UNAVAILABLE.value[0]), r.error
        else:
            assert status == grpc.StatusCode.UNAVAILABLE, (i, status)
    log_text = one_worker_server.log.read_text()
    assert "Traceback" not in log_text
    assert "received SIGTERM" in log_text and "stopped" in log_text
