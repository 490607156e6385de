"""`splitpoint edge --source camera:0` as a process, with a stand-in for OpenCV's camera.

No machine here has a camera, so a `cv2` module on PYTHONPATH (ahead of the real one) plays a
USB camera that resets: each time it is opened it delivers some frames, then a read fails and it
cannot be opened again for a while (FAKE_CAMERA = "FRAMES,AWAY_S"; AWAY_S < 0: never again).
Everything else is real: the CLI, the agent, its heads, its results logs, its signals.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import cli_env

from splitpoint.bundle import load_bundle

FAKE_CV2 = '''
import os, sys, time
import numpy as np

_frames, _away_s = (float(x) for x in os.environ["FAKE_CAMERA"].split(","))
COLOR_BGR2RGB, COLOR_BGR2GRAY, COLOR_BGRA2RGB, COLOR_BGRA2GRAY = 1, 2, 3, 4
CAP_PROP_FRAME_COUNT = 7
_back_at = 0.0


class VideoCapture:
    def __init__(self, what):
        self.left = int(_frames) if time.monotonic() >= _back_at else -1
        if self.left < 0:  # what a test waits for to know the agent is trying again
            print("fake camera: not there", file=sys.stderr, flush=True)

    def isOpened(self):
        return self.left >= 0

    def read(self):
        global _back_at
        if self.left <= 0:
            _back_at = time.monotonic() + _away_s if _away_s >= 0 else float("inf")
            return False, None
        self.left -= 1
        time.sleep(0.02)  # a 50 fps camera
        return True, np.full((48, 64, 3), 100, np.uint8)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def cvtColor(img, code):
    return img.mean(axis=-1).astype(np.uint8) if code in (2, 4) else img[..., ::-1].copy()
'''


class Agent:
    """`splitpoint edge` on the stand-in camera, all on the edge; its stderr read as it comes."""

    def __init__(self, bundle: Path, tmp_path: Path, camera: str, *flags: str) -> None:
        fake = tmp_path / "fakecv"
        fake.mkdir()
        (fake / "cv2.py").write_text(FAKE_CV2)
        env = cli_env()
        env["PYTHONPATH"] = f"{fake}:{env['PYTHONPATH']}"
        env["FAKE_CAMERA"] = camera
        env["PYTHONFAULTHANDLER"] = "1"  # finish(): a hang ends with every thread's stack
        self.results = tmp_path / "r.jsonl"
        k = load_bundle(bundle).manifest.num_layers  # every frame on the edge: no server needed
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splitpoint", "edge", "--bundle", str(bundle), "--source", "camera:0",
             "--split", str(k), "--results", str(self.results), "--grace-s", "5", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._stderr = threading.Thread(target=self._read, daemon=True)
        self._stderr.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, times: int = 1, timeout_s: float = 60.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: sum(text in line for line in self.lines) >= times
                                          or self.proc.poll() is not None, timeout_s):
                raise AssertionError(f"no {times} x {text!r} within {timeout_s} s:\n{''.join(self.lines[-20:])}")
        assert sum(text in line for line in self.lines) >= times, "".join(self.lines[-20:])

    def finish(self, timeout_s: float = 60.0) -> str:
        """Its stdout once it exits, every stderr line in `lines`. Not communicate(): that reads
        stderr too, beside _read, and a line it took was missing from `lines` (a flaky test)."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: its threads' stacks on stderr
            self.proc.wait(10)
            self._stderr.join(10)
            raise AssertionError(f"no exit within {timeout_s:g} s:\n{''.join(self.lines[-100:])}") from None
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()  # a summary line: it fits the pipe, so the exit did not wait for it
        self._stderr.join(10)
        return out

    def stop(self, timeout_s: float = 30.0) -> tuple[int, float, str]:
        """SIGTERM; (exit code, seconds it took, stdout)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        out = self.finish(timeout_s)
        return self.proc.returncode, time.monotonic() - t0, out

    def records(self) -> list[dict]:
        logs = sorted(self.results.parent.glob("r.*.jsonl")) + [self.results]
        return [json.loads(line) for log in logs for line in log.read_text().splitlines()]


def test_a_camera_that_resets_is_opened_again_and_its_logs_rotate(digits_bundle: Path, tmp_path: Path) -> None:
    """30 frames, then gone for 0.4 s, again and again; a new log every 1.8 s. Every frame read
    is in exactly one log, numbered on through the outages; each outage is one failed frame."""
    agent = Agent(digits_bundle, tmp_path, "30,0.4", "--camera-reopen-s", "10", "--results-rotate-h", "0.0005")
    agent.wait_for("camera 0 delivers frames again after", times=2)
    agent.wait_for("results log rotated (results_rotate_h)")
    code, took, out = agent.stop()
    assert code == 0, out  # a stop asked for, though the outages' frames failed (its last line counts them)
    records = agent.records()
    ids = [r["frame_id"] for r in records]
    assert sorted(ids) == list(range(len(ids))) and len(ids) >= 60, ids
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) >= 2 and all("camera 0 stopped delivering frames; opening it again" in r["error"]
                                    for r in failed), failed
    assert {r["status"] for r in records} == {"ok", "failed"}
    assert "earlier log(s) rotated this run, the first " in out, out
    stderr = "".join(agent.lines)
    assert "Traceback" not in stderr and "did not deliver again" not in stderr, stderr[-3000:]


def test_sigterm_while_the_camera_is_away_ends_the_agent_at_once(digits_bundle: Path, tmp_path: Path) -> None:
    agent = Agent(digits_bundle, tmp_path, "5,-1", "--camera-reopen-s", "3600")
    agent.wait_for("camera 0 stopped delivering frames at frame 5; opening it again for up to 3600 s")
    agent.wait_for("fake camera: not there", times=2)  # inside the wait for the camera, not before it
    code, took, out = agent.stop()
    assert code == 0 and took < 5, (code, took, out)  # not the hour, nor the grace period
    assert "1 failed" in out, out
    assert [r["status"] for r in sorted(agent.records(), key=lambda r: r["frame_id"])] == ["ok"] * 5 + ["failed"]
    assert "did not deliver again" not in "".join(agent.lines)


def test_a_camera_that_does_not_come_back_ends_the_run_within_camera_reopen_s(digits_bundle: Path,
                                                                              tmp_path: Path) -> None:
    agent = Agent(digits_bundle, tmp_path, "5,-1", "--camera-reopen-s", "0.5")
    out = agent.finish(60)
    assert agent.proc.returncode == 1, out
    assert "camera 0 did not deliver again within camera_reopen_s = 0.5 s; the stream ends here" in "".join(agent.lines)
    assert "6 frames" in out and "1 failed" in out, out
