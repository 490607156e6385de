"""A command leaves nothing in the temp directory. The command line ends its process with
os._exit, which runs no atexit handler, so TensorFlow's generated code
(`__autograph_generated_file*.py`, removed at exit by atexit) stayed in /tmp: four files per
partition of the digits CNN, more per server start. Real processes, TMPDIR a fresh directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from helpers import cli_env

WAIT_S = 120.0


def test_partition_leaves_no_temp_file(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-m", "splitpoint", "partition", "digits-cnn", "-o", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=WAIT_S, env=cli_env() | {"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp)) == []


def test_a_server_leaves_no_temp_file(digits_bundle: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(digits_bundle),
                             "--listen", "127.0.0.1:0", "--grace-s", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=cli_env() | {"TMPDIR": str(tmp)})
    try:
        serving = threading.Event()

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if "listening on" in line:
                    serving.set()
            serving.set()

        threading.Thread(target=read, daemon=True).start()
        assert serving.wait(WAIT_S) and proc.poll() is None
        assert any(p.is_file() for p in tmp.rglob("*")), "the server made no temp file: this test shows nothing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert sorted(os.listdir(tmp)) == []


def test_an_agent_leaves_no_temp_file(digits_bundle: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-m", "splitpoint", "edge", "--bundle", str(digits_bundle), "--source",
                           "synthetic:3", "--split", "7", "--results", str(tmp_path / "r.jsonl")],
                          capture_output=True, text=True, timeout=WAIT_S, env=cli_env() | {"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp)) == []
