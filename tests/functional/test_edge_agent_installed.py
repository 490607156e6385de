"""The agent as a Pi runs it, from whatever splitpoint this Python has installed, against a real server process.

In the main suite both sides are this checkout. In CI, scripts/ci_edge_py313.sh runs this file
again on Python 3.13 with only the built wheel and its [edge] extra installed (no TensorFlow):
the server then runs under SPLITPOINT_CLOUD_PYTHON (the main environment, which has TensorFlow)
on a bundle partitioned there (SPLITPOINT_TEST_BUNDLE).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.edge_side

ROOT = Path(__file__).resolve().parents[2]
#: set by scripts/ci_edge_py313.sh: splitpoint must then come from the wheel, not from ROOT
WHEEL_RUN = os.environ.get("SPLITPOINT_EDGE_WHEEL_RUN") == "1"


@pytest.fixture
def edge_bundle(request: pytest.FixtureRequest) -> Path:
    given = os.environ.get("SPLITPOINT_TEST_BUNDLE")
    if given:
        return Path(given)
    assert not WHEEL_RUN, "SPLITPOINT_TEST_BUNDLE must name a bundle: this environment cannot partition"
    return request.getfixturevalue("digits_bundle")


@pytest.fixture
def cloud_address(edge_bundle: Path, tmp_path: Path) -> Iterator[str]:
    """`splitpoint cloud --listen 127.0.0.1:0` in its own process; its address read from its stdout."""
    python = os.environ.get("SPLITPOINT_CLOUD_PYTHON") or sys.executable
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "cloud.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [python, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(edge_bundle),
             "--listen", "127.0.0.1:0", "--workers", "1"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=tmp_path,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="cloud-stdout", daemon=True).start()
    prefix = "splitpoint cloud listening on "
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no 'listening' line within 90 s; log:\n{log_path.read_text()}") from None
            assert line is not None, f"the server exited ({proc.wait()}); log:\n{log_path.read_text()}"
            if line.startswith(prefix):
                yield line[len(prefix):].strip()
                return
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_splitpoint_comes_from_the_installation_under_test(tmp_path: Path) -> None:
    # cwd is a temporary directory: `python -c` puts it, not the checkout, first on sys.path
    proc = subprocess.run([sys.executable, "-c", "import edge_node, splitpoint; print(edge_node.__file__); "
                           "print(splitpoint.__version__)"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where, version = proc.stdout.split()
    import splitpoint

    assert version == splitpoint.__version__
    if WHEEL_RUN:
        assert not Path(where).resolve().is_relative_to(ROOT), f"edge_node imported from the checkout: {where}"
        assert not Path(splitpoint.__file__).resolve().is_relative_to(ROOT), splitpoint.__file__


def test_agent_offloads_to_a_server_process(cloud_address: str, edge_bundle: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(edge_bundle),
         "--cloud", cloud_address, "--source", "synthetic:6", "--split", "3", "--results", str(results)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["frame_id"] for r in records) == list(range(6))
    assert all(r["status"] == "ok" and r["where"] == "cloud" and r["split"] == 3 for r in records)
