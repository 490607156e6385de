"""Shared fixtures: a digits bundle made once per test session, servers on port 0."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: the shared data next to the checkout (../shared): the real bandwidth traces
SHARED = Path(__file__).resolve().parents[2] / "shared"


def require_shared(relpath: str) -> Path:
    """SHARED/relpath; missing, a skip on a developer's machine but a failure in CI (CI=true),
    where a silently skipped trace test would let the benchmark's inputs go untested."""
    path = SHARED / relpath
    if not path.exists():
        msg = f"{path} is missing: the shared data set (../shared next to the checkout) is needed"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " and CI=true", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_file() -> Callable[[str], Path]:
    """`shared_file("data/traces/X")`: the path, or a skip (a failure in CI) when it is missing."""
    return require_shared


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped digits CNN partitioned at every split (about 5 s)."""
    from splitpoint.models import reference_model
    from splitpoint.partition import PartitionOptions, partition

    out = tmp_path_factory.mktemp("bundles") / "digits"
    partition(reference_model("digits-cnn"), PartitionOptions(output=out, edgetpu_compiler=None), progress=_quiet)
    return out


class _QuietProgress:
    def update(self, label: str, advance: int = 1) -> None:
        logging.getLogger("tests").debug("partition progress: %s", label)


def _quiet(total: int) -> _QuietProgress:
    return _QuietProgress()


@pytest.fixture
def cloud_server(digits_bundle: Path) -> Iterator[object]:
    """A real server on 127.0.0.1, port 0 (the port it bound is `.port`)."""
    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer

    server = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", grace_s=5.0, insecure=True)).start()
    try:
        yield server
    finally:
        server.stop()


class CloudProcess:
    """`splitpoint cloud` as a real process; `.address` is what it printed it listens on."""

    def __init__(self, bundle: Path, listen: str, log: Path, extra: list[str]):
        import os
        import subprocess
        import sys

        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(bundle), "--listen", listen,
             *extra],
            stdout=subprocess.PIPE, stderr=open(log, "a"), text=True, cwd=root,
            env=dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1"),
        )
        self.log = log
        self.address = ""
        # stdout is read on a thread so that the start-up deadline holds even when the
        # server prints nothing at all
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="cloud-stdout", daemon=True).start()
        deadline = time.monotonic() + 120
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.proc.kill()
                raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")
            if line.startswith("splitpoint cloud listening on "):
                self.address = line.rsplit(" ", 1)[1].strip()
                return

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def cloud_process(digits_bundle: Path, tmp_path: Path) -> Iterator[Callable[..., CloudProcess]]:
    """Start real `splitpoint cloud` processes on the digits bundle: make(*flags, listen=...)."""
    started: list[CloudProcess] = []

    def make(*extra: str, listen: str = "127.0.0.1:0") -> CloudProcess:
        proc = CloudProcess(digits_bundle, listen, tmp_path / f"cloud-{len(started)}.log", list(extra))
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
