"""`splitpoint demo` stopped by SIGTERM or Ctrl-C, and a workdir holding what the demo did not write.

The demo starts `splitpoint cloud` as a process of its own. SIGTERM met Python's default and
ended the demo at once (exit -15, no word), and Ctrl-C while the server started raised outside
the try that stops it: either way the server went on running, reparented to init. Real
processes throughout: the demo, its server, the signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_env, finish_process

LINE_TIMEOUT_S = 300.0
#: how long after the first stop signal the impatient second comes (the stimulus, not a wait)
SECOND_PRESS_S = 0.05
#: how long into the server's start the first one comes
SERVER_STARTING_S = 1.0


def servers_of(workdir: Path) -> list[int]:
    """Pids of `splitpoint cloud` processes serving a bundle under `workdir` (the demo's only)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"cloud" in argv and any(str(workdir).encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def start_demo(digits_bundle: Path, workdir: Path) -> subprocess.Popen[str]:
    workdir.mkdir()
    shutil.copytree(digits_bundle, workdir / "bundle")  # the demo's own bundle: no partitioning here
    return subprocess.Popen([sys.executable, "-m", "splitpoint", "demo", "--workdir", str(workdir),
                             "--frames", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), cwd=workdir,
                            # SIGINT as a terminal's Ctrl-C delivers it, even under a runner that ignores it
                            # (a shell's background job starts with SIGINT ignored, and Python keeps that)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def read_until(proc: subprocess.Popen[str], start: str) -> str:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith(start):
            return line
    raise AssertionError(f"the demo ended before printing {start!r}: {finish_process(proc, 30)}")


@pytest.mark.parametrize(("sig", "when", "times"), [
    (signal.SIGTERM, "cloud server (pid", 1),  # while the agent runs frames
    (signal.SIGINT, "starting the cloud server", 1),  # while the server starts (TensorFlow loading)
    # an impatient second one: it cut short the wait for the server, which then ran on for seconds
    (signal.SIGTERM, "starting the cloud server", 2),
])
def test_a_stopped_demo_stops_its_server(digits_bundle: Path, tmp_path: Path, sig: int, when: str,
                                         times: int) -> None:
    workdir = tmp_path / "work"
    demo = start_demo(digits_bundle, workdir)
    read_until(demo, when)
    if times > 1:  # the stimulus, not a wait: the server well into its start, its own signals held
        time.sleep(SERVER_STARTING_S)
    for n in range(times):
        if n:  # a second press, not one the kernel merges with the first (a pending signal is not queued twice)
            time.sleep(SECOND_PRESS_S)
        demo.send_signal(sig)
    try:
        out, err = finish_process(demo, 60)
    finally:
        left = servers_of(workdir)  # stopped and waited for by the demo: not even a zombie left
        for pid in left:  # a failing run leaves nothing running either
            os.kill(pid, signal.SIGKILL)
    assert left == []
    assert demo.returncode == 130, out[-2000:] + err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err[-3000:]


AGENT_RECORD = '{"frame_id": 0, "origin": "/data/flight7/0001.jpg", "status": "ok"}\n'


@pytest.mark.parametrize(("place", "content", "said"), [
    ("bundle/notes.txt", "my notes\n", "bundle in it is not a bundle; the demo leaves it as it is"),
    ("results.jsonl", "my notes\n", "results.jsonl in it is not the demo's results; it is left as it is"),
    # a results log, but an agent's: "a results log of either format" was taken for the demo's own
    ("results.jsonl", AGENT_RECORD, "results.jsonl in it is not the demo's results; it is left as it is"),
])
def test_the_demo_does_not_delete_what_it_did_not_write(digits_bundle: Path, tmp_path: Path, place: str,
                                                        content: str, said: str) -> None:
    """results.jsonl was deleted whatever it was; a non-bundle `bundle` directory was refused
    naming `-o`, a flag the demo has not."""
    workdir = tmp_path / "work"
    if place.startswith("results"):
        shutil.copytree(digits_bundle, workdir / "bundle")
    (workdir / place).parent.mkdir(parents=True, exist_ok=True)
    (workdir / place).write_text(content)
    proc = subprocess.run([sys.executable, "-m", "splitpoint", "demo", "--workdir", str(workdir), "--frames", "2"],
                          capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f'splitpoint demo: error: --workdir = "{workdir}": {said}: '
                                                   "move it away, or give another --workdir")
    assert (workdir / place).read_text() == content
    assert "cloud server" not in proc.stdout  # none started


def test_the_demo_replaces_its_own_earlier_results(digits_bundle: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(digits_bundle, workdir / "bundle")
    for frames in ("3", "2"):
        proc = subprocess.run([sys.executable, "-m", "splitpoint", "demo", "--workdir", str(workdir), "--frames", frames],
                              capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len((workdir / "results.jsonl").read_text().splitlines()) == 2  # the second run's, not appended
