"""`splitpoint edge` as a process whose edge device stops working mid-run.

No machine here has a Coral accelerator to pull off the bus, so a `sitecustomize` on
PYTHONPATH makes the real interpreters' runs raise what a failed Edge TPU invocation raises
once FAKE_DEVICE_RUNS have succeeded (the heads' warm-up runs at load count). Everything else
is real: the CLI, the agent, its LiteRT heads, the server, its results log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import cli_env, finish_process

from splitpoint.bundle import load_bundle

DYING_DEVICE = '''
import os

if "FAKE_DEVICE_RUNS" in os.environ:
    from splitpoint.runtime import litert

    _left = [int(os.environ["FAKE_DEVICE_RUNS"])]
    _run_all = litert.HeadRunner.run_all

    def run_all(self, x):
        if _left[0] <= 0:
            raise RuntimeError("Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.")
        _left[0] -= 1
        return _run_all(self, x)

    litert.HeadRunner.run_all = run_all
'''


def run_agent(bundle: Path, tmp_path: Path, split: int, runs: int, *flags: str) -> tuple[int, str, list[dict]]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DYING_DEVICE)
    env = cli_env()
    env["PYTHONPATH"] = f"{hook}:{env['PYTHONPATH']}"
    env["FAKE_DEVICE_RUNS"] = str(runs)
    results = tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "edge", "--bundle", str(bundle), "--source", "synthetic:200",
         "--split", str(split), "--splits", str(split), "--results", str(results), "--grace-s", "5", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    _, err = finish_process(proc, 120)
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc.returncode, err, sorted(records, key=lambda r: r["frame_id"])


def check_stopped_after_three(code: int, err: str, records: list[dict], what: str) -> None:
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"splitpoint edge: error: the edge device (cpu) failed 3 runs in a row, the last: {what} "
                           "failed on cpu: RuntimeError('Node number 3 (EdgeTpuDelegateForCustomOp) failed to "
                           "invoke.'). Restarting the agent loads the heads again"), err[-3000:]
    statuses = [r["status"] for r in records]
    assert [r["frame_id"] for r in records] == list(range(len(records)))  # one record each, none lost between
    assert statuses[:5] == ["ok"] * 5 and set(statuses[5:]) == {"failed"} and 3 <= len(statuses[5:]) <= 8, statuses


def test_a_device_that_stops_working_ends_the_run_with_one_message(digits_bundle: Path, tmp_path: Path) -> None:
    """All on the edge: five frames run, then every run fails; three in a row stop the agent."""
    k = load_bundle(digits_bundle).manifest.num_layers
    code, err, records = run_agent(digits_bundle, tmp_path, k, 1 + 5)  # its head's warm-up (--splits), five frames
    check_stopped_after_three(code, err, records, "the whole model")


def test_a_head_that_stops_working_is_its_frames_failure_not_a_crash(cloud_server, digits_bundle: Path,
                                                                     tmp_path: Path) -> None:
    """Split 1: the head runs on the capture thread. Its exception killed the agent with a
    traceback and left the frame without a record."""
    code, err, records = run_agent(digits_bundle, tmp_path, 1, 2 + 5, "--cloud", cloud_server.address,
                                   "--insecure")  # warm-ups of head 1 and of the whole model, five frames
    check_stopped_after_three(code, err, records, "head 1")
    assert all(r["where"] == "cloud" for r in records[:5]), records[:5]


def test_a_head_that_loads_but_cannot_run_is_one_line_at_start(digits_bundle: Path, tmp_path: Path) -> None:
    """The heads' warm-up run at load failing (a device that takes the model but fails to run it)
    was a traceback."""
    k = load_bundle(digits_bundle).manifest.num_layers
    code, err, records = run_agent(digits_bundle, tmp_path, k, 0)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(
        f"splitpoint edge: error: head {k} was loaded on the CPU but its first run failed: RuntimeError('Node number 3 "
        "(EdgeTpuDelegateForCustomOp) failed to invoke.'); check the device with `splitpoint doctor`"), err[-3000:]
    assert records == []
