"""Signals while `splitpoint cloud` or `splitpoint edge` is still starting, as a service manager or
Kubernetes sends them: real processes through the real entry (splitpoint.cli.run), each held at one
point of its start-up until the test has sent its signal (splitpoint/cli_signals.py). The agent's
SIGTERM/SIGINT at start-up: tests/functional/test_agent_faults.py."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env

LINE_TIMEOUT_S = 60.0

#: `splitpoint edge|cloud` held at WHERE (argv[1]) until a line comes on stdin; it says "paused" on stderr
PAUSED = """
import sys

from splitpoint import cli


def paused(real, after=False):
    def wait_for_the_signal(*args, **kwargs):
        result = real(*args, **kwargs) if after else None
        print("paused", file=sys.stderr, flush=True)
        sys.stdin.readline()
        return result if after else real(*args, **kwargs)

    return wait_for_the_signal


where = sys.argv.pop(1)
if where == "reading-the-command-line":  # held by the process's entry
    cli.build_parser = paused(cli.build_parser)
elif where == "making-the-agent":  # the configuration read; the bundle, LiteRT and the heads next
    from edge_node.agent import EdgeAgent

    EdgeAgent.from_config = paused(EdgeAgent.from_config)
elif where == "tails-loaded":  # TensorFlow imported, the bundle checked, the tails warm; nothing bound
    from cloud_server.server import CloudServer

    CloudServer.__init__ = paused(CloudServer.__init__, after=True)
elif where == "first-tail-loaded":  # the first tail warm; the others to load
    from splitpoint.runtime import tails

    tails.TailRunner.__init__ = paused(tails.TailRunner.__init__, after=True)  # pauses once: stdin then closes
elif where == "bound":  # start() has bound and started the gRPC server, serve() has not looked yet
    from cloud_server.server import CloudServer

    CloudServer.start = paused(CloudServer.start, after=True)
cli.run()
"""


class Proc:
    """The paused command; stdout and stderr read on threads, so that every wait for a line has its timeout."""

    def __init__(self, where: str, *argv: str, cwd: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", PAUSED, where, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=cli_env() | {"PYTHONFAULTHANDLER": "1"}, cwd=cwd)
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pumped = [threading.Event(), threading.Event()]
        self._ended = 0  # streams whose end wait_for has seen
        for stream, into, done in ((self.proc.stdout, self.out, self._pumped[0]),
                                   (self.proc.stderr, self.err, self._pumped[1])):
            threading.Thread(target=self._pump, args=(stream, into, done), daemon=True).start()

    def _pump(self, stream: Any, into: list[str], done: threading.Event) -> None:
        for line in stream:
            into.append(line)
            self._lines.put(line)
        self._lines.put(None)
        done.set()

    def wait_for(self, text: str) -> None:
        """Up to the next line (stdout or stderr) containing `text`; a process that ends or stalls first fails."""
        while True:
            try:
                line = self._lines.get(timeout=LINE_TIMEOUT_S)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no {text!r} within {LINE_TIMEOUT_S:g} s: {''.join(self.err)[-3000:]}") from None
            if line is None:
                self._ended += 1
                if self._ended < 2:
                    continue
                raise AssertionError(f"no {text!r} (exit {self.proc.wait(10)}): {''.join(self.err)[-3000:]}")
            if text in line:
                return

    def go_on(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go on\n")  # after the signal: a dead process is a broken pipe, failing the test
        self.proc.stdin.flush()

    def finish(self, timeout_s: float = 60.0) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once it exits; a hang fails with every thread's stack."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack on stderr
            self.proc.wait(10)
            self._pumped[1].wait(10)
            raise AssertionError(f"no exit within {timeout_s:g} s: {''.join(self.err)[-10000:]}") from None
        assert all(p.wait(10) for p in self._pumped), "stdout or stderr still open after the process ended"
        return self.proc.returncode, "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def cloud(where: str, bundle: Path, cwd: Path) -> Proc:
    return Proc(where, "cloud", "--insecure", "--bundle", str(bundle), "--listen", "127.0.0.1:0", "--grace-s", "1",
                cwd=cwd)


@pytest.mark.parametrize(("where", "sig"), [("reading-the-command-line", signal.SIGTERM),
                                            ("first-tail-loaded", signal.SIGTERM),
                                            ("tails-loaded", signal.SIGTERM), ("tails-loaded", signal.SIGINT),
                                            ("bound", signal.SIGTERM)])
def test_a_stop_while_the_server_starts_ends_it_before_it_serves(digits_bundle: Path, tmp_path: Path,
                                                                where: str, sig: signal.Signals) -> None:
    """Before, SIGTERM killed it (exit 143) and SIGINT raised KeyboardInterrupt wherever it landed
    (or was swallowed by TensorFlow's import, and the server served on), no word said either way."""
    proc = cloud(where, digits_bundle, tmp_path)
    try:
        proc.wait_for("paused")
        proc.proc.send_signal(sig)
        proc.go_on()
        code, out, err = proc.finish()
    finally:
        proc.kill()
    assert code == 0, (code, err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out.splitlines() == [f"stopped before serving ({sig.name} during start-up)"]
    if where == "first-tail-loaded":  # the rest are left: a big bundle's take minutes, past a pod's grace
        assert err.count("loaded and warm") == 1 and "start-up stopped after 1 of 7 tails" in err, err[-3000:]


def test_sighup_neither_ends_the_server_starting_nor_serving(digits_bundle: Path, tmp_path: Path) -> None:
    """Before, SIGHUP ended it at once (exit 129): undrained while it served. It has nothing to
    reload: logged and ignored, before it serves and after alike; SIGTERM still drains it."""
    proc = cloud("tails-loaded", digits_bundle, tmp_path)
    try:
        proc.wait_for("paused")
        proc.proc.send_signal(signal.SIGHUP)
        proc.go_on()
        proc.wait_for("SIGHUP ignored: the server has nothing to reload")
        # serve()'s line, printed once its stop handler is in place ("serving ..." is logged by
        # start(), before that: a SIGTERM then is a stop before serving, as the "bound" case checks)
        proc.wait_for("splitpoint cloud listening on")
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_for("SIGHUP ignored: the server has nothing to reload")
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for("received SIGTERM")
        code, out, err = proc.finish()
    finally:
        proc.kill()
    assert code == 0, (code, err[-3000:])
    assert out.startswith("splitpoint cloud listening on 127.0.0.1:")
    assert "stopped" in err.splitlines()[-1]


@pytest.mark.parametrize(("where", "reloaded"), [("reading-the-command-line", False), ("making-the-agent", True)])
def test_a_sighup_while_the_agent_starts_is_a_reload_once_it_exists(digits_bundle: Path, tmp_path: Path,
                                                                   where: str, reloaded: bool) -> None:
    """Before, SIGHUP ended the starting agent (exit 129). One that comes after the configuration
    was read may find a newer [policy]: a reload once the agent exists. One before it is dropped:
    the read that follows it sees the file as it is."""
    config = tmp_path / "edge.toml"
    config.write_text('[policy]\nname = "fixed"\n')
    proc = Proc(where, "edge", "--bundle", str(digits_bundle), "--config", str(config), "--source", "synthetic:5",
                "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    try:
        proc.wait_for("paused")
        proc.proc.send_signal(signal.SIGHUP)
        proc.go_on()
        code, out, err = proc.finish()
    finally:
        proc.kill()
    assert code == 0, (code, err[-3000:])
    assert out.startswith("5 frames in ") and ", 0 failed" in out
    assert ("policy reloaded: fixed split 7 -> fixed split 7" in err) is reloaded, err


#: sends the process a signal (argv of the test: SIGHUP or SIGTERM) when it first imports numpy
SIGNAL_AT_NUMPY = """
import os, signal, sys

class _SignalAtNumpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL_AT_NUMPY"]))
        return None

sys.meta_path.insert(0, _SignalAtNumpy())
"""


@pytest.mark.parametrize(("sig", "code", "said"), [
    ("SIGHUP", 0, "5 frames in "),  # held, then dropped: no agent yet to reload
    ("SIGTERM", 0, "stopped before the first frame"),
])
def test_a_signal_during_the_entrys_first_imports_is_held(digits_bundle: Path, tmp_path: Path, sig: str, code: int,
                                                         said: str) -> None:
    """Held only once splitpoint.cli (numpy, grpc: ~0.25 s on a PC, more on a Pi) had been imported,
    a signal in that time met Python's defaults: a `systemctl reload` just after a restart ended
    the agent (exit 129) without a word. A sitecustomize sends it as numpy is first imported."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(SIGNAL_AT_NUMPY)
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join((str(tmp_path / "hook"), env["PYTHONPATH"]))
    proc = subprocess.run([sys.executable, "-m", "splitpoint", "edge", "--bundle", str(digits_bundle), "--source",
                           "synthetic:5", "--results", str(tmp_path / "r.jsonl")], capture_output=True, text=True,
                          env=env | {"SIGNAL_AT_NUMPY": sig}, cwd=tmp_path, timeout=120)
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert said in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_stop_while_the_server_is_asked_leaves_the_results_log_untouched(digits_bundle: Path, tmp_path: Path) -> None:
    """A server that takes the connection and never answers: SIGTERM while the agent asked it
    (Describe, given up at once) then opened the log anyway - its torn last line cut, the file
    changed - and printed '0 frames in 1.7s' instead of 'stopped before the first frame'."""
    import socket

    results = tmp_path / "r.jsonl"
    before = b'{"frame_id":0,"origin":"synthetic:0","status":"ok"}\n{"frame_id":1,"ori'  # a torn last line
    results.write_bytes(before)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "edge", "--bundle", str(digits_bundle), "--source",
                                 "synthetic:5", "--results", str(results), "--cloud", f"127.0.0.1:{port}", "--insecure",
                                 "--split", "0", "--connect-timeout-s", "60"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path)
        try:
            listener.settimeout(LINE_TIMEOUT_S)
            conn, _ = listener.accept()  # the agent is asking the server now (its bundle and heads loaded)
            with conn:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped before the first frame: SIGTERM came while the agent was starting" in out + err, out + err
    assert results.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]
