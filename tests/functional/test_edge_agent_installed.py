"""The agent as a Pi runs it, from whatever splitpoint this Python has installed, against a real server process.

In the main suite both sides are this checkout. In CI, scripts/ci_edge_py313.sh runs this file
again on Python 3.13 with only the built wheel and its [edge] extra installed (no TensorFlow):
the server then runs under SPLITPOINT_CLOUD_PYTHON (the main environment, which has TensorFlow)
on a bundle partitioned there (SPLITPOINT_TEST_BUNDLE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
def cloud_address(cloud_process: Callable[..., Any], edge_bundle: Path) -> str:
    """`splitpoint cloud --listen 127.0.0.1:0` in its own process (under SPLITPOINT_CLOUD_PYTHON
    when set: the wheel run has no TensorFlow); its address read from its stdout."""
    python = os.environ.get("SPLITPOINT_CLOUD_PYTHON") or sys.executable
    return cloud_process("--workers", "1", bundle=edge_bundle, python=python).address


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
