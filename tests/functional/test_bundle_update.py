"""Updating the bundle as docs/field-deployment.md section 10 has it: the server restarts on the
new bundle while an agent still runs the old one. The agent keeps running its frames locally
(the server refuses them, FAILED_PRECONDITION); the journal gets one WARNING about it, then the
fallback digest once a minute - it got a WARNING per frame (twenty lines a second at 20 fps). And it
backs off from that server rather than sending it every frame to be refused (uplink and battery
for nothing): most frames are run here without being sent."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import cli_env, running_server
from helpers import finish_process as finish

from edge_node.results import read_results

WAIT_S = 60.0
BACKED_OFF = 100  # frames run here without being sent, the server known to run another bundle


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read back, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reasons(results: Path) -> list[str]:
    return [r.get("fallback_reason") or "" for r in read_results(results)] if results.exists() else []


def backed_off(results: Path) -> int:
    return reasons(results).count("cloud runs another bundle (waiting to retry)")


def test_a_server_restarted_on_another_bundle_costs_one_warning_not_one_per_frame(digits_bundle: Path,
                                                                                   tmp_path: Path) -> None:
    v2 = tmp_path / "bundle-v2"  # the same files under another model digest: what the server moved to
    shutil.copytree(digits_bundle, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["model"]["digest"] = "sha256:" + "2" * 64
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    port = closed_port()  # the server is down when the agent starts: it checks no digest then
    results = tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(digits_bundle),
         "--source", "synthetic:100000", "--fps", "50", "--cloud", f"127.0.0.1:{port}", "--split", "3",
         "--results", str(results)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=cli_env() | {"PYTHONFAULTHANDLER": "1"},
    )
    try:
        # the agent running (past its start-up check, which would exit 2 on the other digest)
        # before the server comes up: its first records, run here while nothing listens
        deadline = time.monotonic() + WAIT_S
        while len(reasons(results)) < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(reasons(results)) >= 5, proc.communicate(timeout=10) if proc.poll() is not None else "no records"
        with running_server(v2, listen=f"127.0.0.1:{port}"):
            deadline = time.monotonic() + WAIT_S
            while backed_off(results) < BACKED_OFF and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert backed_off(results) >= BACKED_OFF, "the agent did not back off from the other bundle's server"
            proc.send_signal(signal.SIGTERM)
            _, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    said = [line for line in err.splitlines() if "failed in the cloud" in line]
    assert len(said) == 1, said[:5]
    assert "WARNING" in said[0] and "FAILED_PRECONDITION" in said[0] and "different bundles" in said[0]
    records = read_results(results)
    assert all(r["status"] == "ok" for r in records)  # every refused frame ran locally
    sent_and_refused = sum("FAILED_PRECONDITION" in why for why in reasons(results))
    # a stream now and then (the backoff doubles to 5 s) finds the server still on the other bundle
    assert 1 <= sent_and_refused < backed_off(results) / 2, (sent_and_refused, backed_off(results))
    # the end of the run says why no frame went to the cloud although it was reached: the summary
    # line alone read "0 cloud, N local (N fallbacks)"
    (end,) = [line for line in err.splitlines() if "frames ran locally instead of in the cloud" in line]
    assert "WARNING" in end and f"{len(records)} of {len(records)} frames" in end, end
    assert "x cloud runs another bundle" in end, end


def test_an_agent_started_mid_rollout_names_the_replica_on_another_bundle(digits_bundle: Path,
                                                                          tmp_path: Path) -> None:
    """An agent given several replicas (a rollout to a new bundle half done) exits 2 at start when
    the one answering its Describe runs another bundle; the message said "the server runs bundle
    ...", and with a list of replicas the operator could not tell which one."""
    v2 = tmp_path / "bundle-v2"
    shutil.copytree(digits_bundle, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["model"]["digest"] = "sha256:" + "2" * 64
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    with running_server(v2) as a, running_server(v2) as b:
        proc = subprocess.run(
            [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(digits_bundle),
             "--source", "synthetic:3", "--cloud", f"{a.address},{b.address}", "--split", "3",
             "--results", str(tmp_path / "r.jsonl")],
            capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=WAIT_S)
    assert proc.returncode == 2, proc.stderr
    assert any(f"the server {s.address} runs bundle digits-cnn sha256:2222" in proc.stderr for s in (a, b)), proc.stderr


def test_a_replica_without_the_agents_split_is_warned_of_and_backed_off(digits_bundle: Path,
                                                                        tmp_path: Path) -> None:
    """A replica of the same model partitioned with other --splits (the same digest) answered every
    frame at a split it lacks NOT_FOUND, one by one, for the stream's whole lifetime (5 minutes of
    frames sent to be refused), with no word at start."""
    partial = tmp_path / "bundle-no-3"
    shutil.copytree(digits_bundle, partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["splits"] = [s for s in manifest["splits"] if s["split"] != 3]
    (partial / "manifest.json").write_text(json.dumps(manifest))
    results = tmp_path / "r.jsonl"
    with running_server(partial) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(digits_bundle),
             "--source", "synthetic:100", "--fps", "50", "--cloud", server.address, "--split", "3",
             "--results", str(results)],
            capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=WAIT_S)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cloud {server.address} has no tail for split(s) 3 of this bundle" in proc.stderr, proc.stderr
    records = read_results(results)
    assert len(records) == 100 and all(r["status"] == "ok" and r["where"] == "local" for r in records)
    refused = sum("NOT_FOUND" in why for why in reasons(results))
    waited = reasons(results).count("cloud does not serve a split this agent sent (waiting to retry)")
    assert 1 <= refused <= 10 and waited >= 80, (refused, waited)
    assert f"replica {server.address} does not serve that split (split 3 is not in the bundle" in proc.stderr
