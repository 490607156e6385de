"""A reader of stdout that goes away (`splitpoint cloud | head -1` once it has the address, a
`tee` killed) stops neither a server nor a run: before, the server's listening line raised
"error: Broken pipe" and it exited 1 without serving, and an agent's summary line turned a
finished run into exit 1. Real processes, their stdout a pipe closed at once."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from helpers import cli_env

from edge_node.results import read_results
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

WAIT_S = 60.0


def without_a_reader(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """`splitpoint ARGS` whose stdout pipe is closed before anything is printed; stderr on a pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader gone before anything is printed
    return proc


def test_the_server_serves_on_when_its_stdout_reader_is_gone(digits_bundle: Path, tmp_path: Path) -> None:
    proc = without_a_reader("cloud", "--insecure", "--bundle", str(digits_bundle), "--listen", "127.0.0.1:0",
                            "--grace-s", "1", cwd=tmp_path)
    text = serve_then_stop(proc, "stderr", re.compile(
        r"stdout is closed \(Broken pipe\): splitpoint cloud listening on (\S+)"))
    assert "Traceback" not in text and "error: Broken pipe" not in text, text


def test_an_agent_s_run_keeps_its_exit_code_when_its_summary_cannot_be_printed(digits_bundle: Path,
                                                                              tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    proc = without_a_reader("edge", "--bundle", str(digits_bundle), "--source", "synthetic:5", "--split", "7",
                            "--results", str(results), "--log-level", "warning", cwd=tmp_path)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr or ()), daemon=True)  # all it says
    reader.start()
    try:
        assert proc.wait(WAIT_S) == 0, "".join(said)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(WAIT_S)  # the process has exited; its last line may still be on its way to `said`
    text = "".join(said)
    assert "Traceback" not in text and "stdout is closed (Broken pipe): 5 frames in" in text, text
    assert len(read_results(results)) == 5



def without(stream: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """`splitpoint ARGS >&-` (or `2>&-`), through a shell as a user types it: the process starts
    without that stream (Python's sys.stdout is None); the other comes back on the pipe."""
    redirect = "2>&1 >&-" if stream == "stdout" else "2>&-"
    return subprocess.Popen(["bash", "-c", f'exec "$@" {redirect}', "bash", sys.executable, "-m", "splitpoint", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=cwd)


def test_a_command_started_without_stdout_or_stderr_ends_with_its_own_exit_code(digits_bundle: Path,
                                                                                 tmp_path: Path) -> None:
    """It ended in `AttributeError: 'NoneType' object has no attribute 'flush'`, exit 1, whatever
    the command's own code was (the final flush met sys.stdout None)."""
    results = str(tmp_path / "r.jsonl")
    for stream in ("stdout", "stderr"):
        for bundle, code in ((str(digits_bundle), 0), (str(tmp_path / "no-bundle"), 1)):  # 1: a FAIL line
            proc = without(stream, "doctor", "--bundle", bundle, "--results", results, cwd=tmp_path)
            out, _ = proc.communicate(timeout=WAIT_S)
            assert proc.returncode == code and "Traceback" not in out, (stream, bundle, out)
            if stream == "stderr":  # stdout still says it
                assert ("no problems found" if code == 0 else "1 problem(s) found") in out, out


#: the server's log line once it serves (stdout, where it says so too, is closed here)
SERVING = re.compile(r"serving \S+ \(sha256:\w+\) on (\S+)")


def serve_then_stop(proc: subprocess.Popen[str], said_on: str, address: re.Pattern[str]) -> str:
    """Read `said_on` (the server's stream still open) until `address` matches, ask the server at
    that address for Describe, stop it with SIGTERM (exit 0) and return all it said."""
    stream = getattr(proc, said_on)
    said: list[str] = []
    found = threading.Event()

    def pump() -> None:
        for line in stream:
            said.append(line)
            if address.search(line):
                found.set()
        found.set()  # ended: the waiter looks at what was said

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert found.wait(WAIT_S), "".join(said)
        match = address.search("".join(said))
        assert proc.poll() is None and match, "".join(said)  # serving
        with grpc.insecure_channel(match.group(1)) as channel:
            assert offload_pb2_grpc.OffloadStub(channel).Describe(offload_pb2.DescribeRequest(), timeout=10).model_digest
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0, "".join(said)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(WAIT_S)
    return "".join(said)


def test_a_server_started_without_stdout_serves_and_drains(digits_bundle: Path, tmp_path: Path) -> None:
    proc = without("stdout", "cloud", "--insecure", "--bundle", str(digits_bundle), "--listen", "127.0.0.1:0",
                   "--grace-s", "1", cwd=tmp_path)
    text = serve_then_stop(proc, "stdout", SERVING)
    assert "stopped" in text and "Traceback" not in text, text


def test_a_server_whose_stdout_takes_no_more_serves_on(digits_bundle: Path, tmp_path: Path) -> None:
    """stdout on a full device (`>/dev/full`; a full disk, an I/O error) stopped a server that was
    already serving, with no drain: `splitpoint cloud: error: No space left on device`, exit 1.
    Now one warning naming stdout, as for a reader gone, and it serves on."""
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(digits_bundle),
                                 "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--grace-s", "1"],
                                stdout=full, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path)
    text = serve_then_stop(proc, "stderr", re.compile(
        r"stdout cannot be written \(No space left on device\): splitpoint cloud listening on (\S+)"))
    # once: the health line after it went to /dev/null
    assert text.count("stdout cannot be written") == 1 and "stopped" in text and "error:" not in text, text


@pytest.mark.parametrize("args,unbuffered", [(["--version"], "1"), (["--version"], ""), ([], ""), (["edge", "--help"], "1")])
def test_output_to_a_full_device_fails_the_command(args: list[str], unbuffered: str, tmp_path: Path) -> None:
    """`splitpoint --version > /dev/full` exited 0 with nothing written (argparse drops the
    OSError; buffered, the last flush's failure was ignored), and the bare overview was a
    traceback. Each now says so and exits 1, as `inspect > /dev/full` did."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "splitpoint", *args], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=dict(cli_env(), PYTHONUNBUFFERED=unbuffered), cwd=tmp_path, timeout=WAIT_S)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "splitpoint: error: the output could not be written: No space left on device"
