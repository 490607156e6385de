"""The harness's side of the edge worker: start it, send it command lines, wait for answers.

The worker (`python -m splitpoint.bench.edge_worker`, pinned to one CPU) runs one `splitpoint`
command line at a time and answers with JSON lines (`ready`, `start`, `done`) on its stdout.
SourceOpenWatch follows the `--events` file of one `splitpoint edge` run for its explicit
`source-open` line, so the harness can restart a trace at the agent's first frame.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import splitpoint
from splitpoint.errors import SplitpointError

log = logging.getLogger("splitpoint.bench")

#: the line `splitpoint edge --events FILE` writes when its frame source has opened
SOURCE_OPEN = "source-open"


class BenchError(SplitpointError):
    pass


@dataclass
class RunOutcome:
    records: list[dict[str, Any]]
    rc: int | None
    seconds: float
    error: str | None
    started_unix_ns: int | None
    results: Path


class EdgeWorker:
    """The pinned edge process; runs `splitpoint` command lines one at a time."""

    def __init__(self, cpu: int | None, log_path: Path, slowdown: float = 1.0, device: Path | None = None,
                 plan_log: bool = False):
        self.cpu = cpu
        self.plan_log = plan_log
        self.slowdown = slowdown
        self.device = device
        #: the last `done` answer's emulation report (device mode: head runs slower than the device)
        self.last_emulation: dict[str, Any] | None = None
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._started: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}
        self._next_id = 0
        self.restarts = 0
        self._running = False  # a command is running (stop() then asks it to end first)

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "splitpoint.bench.edge_worker"]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        if self.device is not None:  # never together with --slowdown (the options refuse both)
            cmd += ["--device", str(self.device)]
        elif self.slowdown != 1.0:
            cmd += ["--slowdown", repr(self.slowdown)]
        if self.plan_log:
            cmd += ["--plan-log"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        root = str(Path(splitpoint.__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True,
                                     env=env, bufsize=1)
        logf.close()
        self._events = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self._events), daemon=True, name="edge-worker-reader").start()
        ev = self._wait("ready", None, timeout_s)
        if ev is None or ev.get("event") != "ready":
            self.kill()
            raise BenchError(f"the edge worker did not start within {timeout_s:.0f} s; log: {self.log_path}")
        self.ready = ev
        return ev

    @staticmethod
    def _read(proc: subprocess.Popen, events: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(json.loads(line))
            except json.JSONDecodeError:
                log.debug("edge worker: %s", line.rstrip())
        events.put({"event": "eof"})

    def _wait(self, event: str, run_id: int | None, timeout_s: float,
              on_poll: Callable[[], None] | None = None, poll_s: float = 0.05) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self._events.get(timeout=min(poll_s, left))
            except queue.Empty:
                if on_poll is not None:
                    on_poll()
                continue
            if ev.get("event") == "eof":
                return {"event": "eof"}
            if ev.get("event") == event and (run_id is None or ev.get("id") == run_id):
                return ev
            if ev.get("event") == "start" and ev.get("id") == run_id:
                self._started = ev
            if on_poll is not None:
                on_poll()

    def run(self, argv: list[str], timeout_s: float,
            on_poll: Callable[[], None] | None = None) -> tuple[int | None, float, str | None, int | None]:
        """(rc, seconds, error, start time) of one command; kills the worker on a timeout (restarted on the next run)."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.restarts += 1
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        run_id = self._next_id
        self._started = {}
        self.last_emulation = None
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps({"id": run_id, "argv": argv}) + "\n")
        self.proc.stdin.flush()
        self._running = True
        ev = self._wait("done", run_id, timeout_s, on_poll)  # a KeyboardInterrupt leaves _running set
        self._running = False
        seconds = time.perf_counter() - t0
        start_ns = self._started.get("t_unix_ns")
        if ev is None:
            self.kill()
            return None, seconds, f"timed out after {timeout_s:.0f} s (worker killed)", start_ns
        if ev.get("event") == "eof":
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            return None, seconds, f"the edge worker exited (code {self.proc.returncode}); log: {self.log_path}", start_ns
        self.last_emulation = ev.get("emulation")
        return ev.get("rc"), seconds, ev.get("error"), start_ns

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # our own child, by its handle
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """Quit the worker. Interrupted mid-command (SIGTERM or Ctrl-C to the harness), it is sent
        SIGTERM first: its `splitpoint edge` stops within its grace (records of the frames in
        flight written), where a quit line would wait for the command's last frame."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self._running:
                self.proc.terminate()  # our own child, by its handle
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.kill()
        self.proc = None


class SourceOpenWatch:
    """Calls `on_open()` once, when the agent's `--events` file gets its `source-open` line.

    `splitpoint edge` writes that line once its frame source is open and the agent has started
    (the server check and an adaptive agent's first probe are done: EdgeAgent.run's on_ready),
    right before its first frame is asked for, so a trace restarted then
    meets every run, fixed or adaptive, at the same frame whatever the run's start-up took. It is
    an explicit signal: no log line is read, so rewording the agent's logs cannot break it.
    Without the line (an agent that failed before opening its source) nothing is called.
    """

    def __init__(self, events_path: Path, on_open: Callable[[], None]):
        self.events_path = events_path
        self.on_open = on_open
        self.opened: dict[str, Any] | None = None
        self.t_set_ns = time.time_ns()  # when the trace was (re)started: now, or at the signal
        self._offset = 0

    def poll(self) -> None:
        if self.opened is not None:
            return
        try:
            with open(self.events_path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:  # not written yet
            return
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("events file %s: not a JSON line: %r", self.events_path, line[:200])
                continue
            if isinstance(event, dict) and event.get("event") == SOURCE_OPEN:
                self.on_open()
                self.t_set_ns = time.time_ns()
                self.opened = event
                return

    @property
    def synced(self) -> bool:
        return self.opened is not None
