"""Quiet by default: no TensorFlow, absl, XNNPACK or OpenCV chatter on a normal run; -v shows it.

Every command runs as a user runs it: a real process whose environment has
none of the knobs (TF_CPP_MIN_LOG_LEVEL, OPENCV_LOG_LEVEL, SPLITPOINT_NATIVE_LOGS)
set, so splitpoint itself must do the quieting. The chatter patterns below are
written independently of splitpoint/native_logs.py, so a change there that lets
a line through fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import cli_env

#: what the native libraries print on their own: absl/glog-format lines, the absl
#: InitializeLog warning, TensorFlow's oneDNN and CPU-feature notices, LiteRT's
#: XNNPACK line, OpenCV's "[ WARN:0@0.012] global cap_v4l.cpp" lines
CHATTER = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|absl::InitializeLog|oneDNN|cpu_feature_guard|XNNPACK|TensorFlow Lite"
    r"|^\[ ?(?:WARN|INFO|ERROR):\d+@|VIDEOIO|cap_v4l|(?i:tensorflow)",
    re.MULTILINE,
)


def user_env(**extra: str) -> dict[str, str]:
    """The tests' subprocess environment without the knobs that would quiet the libraries."""
    env = cli_env()
    for knob in ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL", "SPLITPOINT_NATIVE_LOGS", "GRPC_VERBOSITY"):
        env.pop(knob, None)
    env.update(extra)
    return env


def run(*args: str, cwd: Path, timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout_s,
                          env=user_env(**env), cwd=cwd)


def chatter(text: str) -> list[str]:
    return [line for line in text.splitlines() if CHATTER.search(line)]


def test_demo_is_quiet_and_verbose_shows_native_logs(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    # From scratch: the demo partitions in-process (TensorFlow import, LiteRT interpreters),
    # starts `splitpoint cloud` as a child (its stderr goes to cloud.log) and runs the agent.
    quiet = run("-m", "splitpoint", "demo", "--workdir", str(workdir), "--frames", "4", cwd=tmp_path, timeout_s=600)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "4 frames in" in quiet.stdout
    assert chatter(quiet.stdout + quiet.stderr) == []
    assert chatter((workdir / "cloud.log").read_text()) == []  # the child inherited the choice

    loud = run("-m", "splitpoint", "-v", "demo", "--workdir", str(workdir), "--frames", "4", cwd=tmp_path, timeout_s=600)
    assert loud.returncode == 0, loud.stdout + loud.stderr
    assert "using the bundle in" in loud.stdout  # the second run reuses the bundle
    assert any("XNNPACK" in line for line in chatter(loud.stdout + loud.stderr)), loud.stderr
    assert any("absl::InitializeLog" in line or "oneDNN" in line
               for line in chatter((workdir / "cloud.log").read_text()))  # -v reaches the server too


def test_edge_with_missing_camera_prints_only_the_clear_error(digits_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    number = next(n for n in range(7, 64) if not Path(f"/dev/video{n}").exists())
    proc = run("-m", "splitpoint", "edge", "--insecure", "--bundle", str(digits_bundle), "--source", f"camera:{number}",
               "--results", str(tmp_path / "results.jsonl"), cwd=tmp_path, timeout_s=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"camera {number} did not open" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(line.startswith("[ WARN") for line in proc.stderr.splitlines()), proc.stderr
    assert chatter(proc.stdout + proc.stderr) == []


def test_partition_stderr_has_no_absl_or_onednn_line(tmp_path: Path) -> None:
    # --jobs 2: the split workers are spawned processes that import TensorFlow themselves
    proc = run("-m", "splitpoint", "partition", "digits-cnn", "-o", str(tmp_path / "bundle"), "--splits", "1",
               "--jobs", "2", cwd=tmp_path, timeout_s=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bundle written to" in proc.stdout
    assert chatter(proc.stderr) == [], proc.stderr
    assert "absl" not in proc.stderr and "oneDNN" not in proc.stderr


_FILTER_SCRIPT = textwrap.dedent("""
    import os, sys
    from splitpoint import native_logs
    mode = sys.argv[1]
    try:
        with native_logs.filtered_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1.2   42 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"native: something that matters\\n")
            print("python: also kept", file=sys.stderr)
            if mode == "raise":
                raise RuntimeError("the native call failed")
    except RuntimeError:
        pass
    os.write(2, b"after\\n")
""")


@pytest.mark.parametrize("mode", ["ok", "raise", "verbose"])
def test_filtered_stderr_drops_only_known_chatter(tmp_path: Path, mode: str) -> None:
    extra = {"SPLITPOINT_NATIVE_LOGS": "1"} if mode == "verbose" else {}
    proc = run("-c", _FILTER_SCRIPT, mode, cwd=tmp_path, timeout_s=60, **extra)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-3:] == ["native: something that matters", "python: also kept", "after"]
    if mode == "ok":
        assert lines == lines[-3:]  # the three chatter lines are gone, nothing else
    else:  # a failing call keeps its native explanation; -v keeps everything
        assert len(lines) == 6 and "XNNPACK" in lines[2]



def test_a_peer_sending_junk_to_the_tls_port_writes_no_line_per_handshake(digits_bundle: Path, tmp_path: Path) -> None:
    """gRPC core logged an INFO line for every failed TLS handshake ('ssl_transport_security.cc ...
    Handshake failed ... HTTP_REQUEST'): any peer could flood the journal. gRPC reads its log
    level as it is imported, so splitpoint.entry sets it before that."""
    import socket

    from splitpoint.certs import make_dev_certs

    certs = make_dev_certs(tmp_path / "certs", ["localhost", "127.0.0.1"])
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "cloud", "--bundle", str(digits_bundle), "--listen",
                             "127.0.0.1:0", "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env(), cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "splitpoint cloud listening on HOST:PORT" (or EOF if it died)
        assert "listening on" in line, line
        port = int(line.rsplit(":", 1)[1])
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
                peer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                peer.settimeout(10)
                while peer.recv(4096):  # until the server closes the failed handshake's connection
                    pass
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Handshake failed" not in err, err[-3000:]
    assert not re.search(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", err, re.MULTILINE), err[-3000:]  # no native line at all
