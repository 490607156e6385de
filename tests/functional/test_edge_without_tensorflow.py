"""The Pi installs without TensorFlow: the agent must run with TensorFlow unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run the CLI with tensorflow and keras made unimportable (as on a Pi with only splitpoint[edge]).
BLOCK_TF = (
    "import sys\n"
    "sys.modules['tensorflow'] = None\n"
    "sys.modules['keras'] = None\n"
    "from splitpoint.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "assert 'tensorflow' not in [m for m, v in sys.modules.items() if v is not None]\n"
    "sys.exit(code)\n"
)


def test_edge_agent_runs_without_tensorflow(cloud_server, digits_bundle: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TF, "edge", "--insecure", "--bundle", str(digits_bundle), "--cloud", cloud_server.address,
         "--source", "synthetic:6", "--split", "3", "--results", str(results)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["frame_id"] for r in records) == list(range(6))  # out of order is fine
    assert all(r["status"] == "ok" and r["where"] == "cloud" and r["split"] == 3 for r in records)
    assert "6 frames" in proc.stdout


def test_partition_without_tensorflow_says_what_to_install(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TF, "partition", "digits-cnn", "-o", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode != 0
    assert "pip install '.[cloud]' from a splitpoint checkout, or the splitpoint wheel with [cloud]" in proc.stderr
    assert "Traceback" not in proc.stderr
