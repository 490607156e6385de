"""`CloudConfig.splits`: a server that serves only some splits loads only their tails (what
`splitpoint bench --splits` gives its server), refuses frames for the others with NOT_FOUND,
and names a split the bundle does not have (exit 2 from the CLI, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from helpers import cli_env, zero_frame

from cloud_server.config import CloudConfig
from cloud_server.server import CloudServer
from splitpoint.bundle import load_bundle
from splitpoint.errors import ConfigError
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
RPC_TIMEOUT_S = 30.0


@pytest.fixture
def two_split_server(digits_bundle: Path) -> Iterator[CloudServer]:
    server = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True, grace_s=2.0,
                                     splits=[0, 2])).start()
    try:
        yield server
    finally:
        server.stop()


def test_only_the_given_splits_are_loaded_and_served(two_split_server: CloudServer, digits_bundle: Path) -> None:
    m = load_bundle(digits_bundle, verify=False).manifest
    assert len([s for s in m.splits if s.tail is not None]) > 2  # the bundle has more tails than we serve
    assert sorted(two_split_server.tails.warm()) == [0, 2] and two_split_server.tails.servable == [0, 2]
    with grpc.insecure_channel(f"127.0.0.1:{two_split_server.port}") as channel:
        stub = offload_pb2_grpc.OffloadStub(channel)
        info = stub.Describe(offload_pb2.DescribeRequest(), timeout=RPC_TIMEOUT_S)
        assert [(s.split, s.warm) for s in info.splits] == [(0, True), (2, True)]  # what it serves, not the bundle
        resp = stub.InferFrame(zero_frame(digits_bundle, 2), timeout=RPC_TIMEOUT_S)
        assert resp.frame_id == 2 and len(resp.outputs) == 1
        other = next(s.split for s in m.splits if s.tail is not None and s.split not in (0, 2))
        with pytest.raises(grpc.RpcError) as err:
            stub.InferFrame(zero_frame(digits_bundle, other), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"split {other} has no tail on this server; servable: 0, 2"
    assert sorted(two_split_server.tails.warm()) == [0, 2]  # the refused split was not loaded either


def test_an_agent_at_a_split_the_server_does_not_serve_is_told_at_start_and_backs_off(
        two_split_server: CloudServer, digits_bundle: Path, tmp_path: Path) -> None:
    """An agent at split 3 against a server started with --splits 0,2: Describe listed every
    split of the bundle, so it started with no word, and all 30 of its frames were sent there and
    refused NOT_FOUND one by one. Now it is warned at start, and a refusal that says the split is
    not served counts as another bundle's: a backoff, its frames run here meanwhile."""
    results = tmp_path / "r.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(digits_bundle), "--device", "cpu",
         "--cloud", f"127.0.0.1:{two_split_server.port}", "--source", "synthetic:30", "--fps", "50", "--split", "3",
         "--results", str(results)], capture_output=True, text=True, timeout=120, env=cli_env(), cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (f"cloud 127.0.0.1:{two_split_server.port} has no tail for split(s) 3 of this bundle (it serves 0, 2)"
            in done.stderr), done.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["frame_id"] for r in records) == list(range(30)) and {r["where"] for r in records} == {"local"}
    refused = [r for r in records if "has no tail on this server" in r.get("fallback_reason", "")]
    assert 1 <= len(refused) <= 10, [r.get("fallback_reason") for r in records]  # was 30 of 30


def test_a_split_the_bundle_lacks_is_a_config_error(digits_bundle: Path) -> None:
    with pytest.raises(ConfigError) as err:
        CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True, splits=[2, 99]))
    assert err.value.key == "splits" and err.value.value == [99]
    with pytest.raises(ConfigError) as neg:
        CloudConfig(bundle=str(digits_bundle), splits=[-1]).validate()
    assert neg.value.key == "splits"


def test_only_split_k_leaves_no_tail_to_serve_and_is_refused(digits_bundle: Path) -> None:
    """--splits 7 (K: all on the edge) started a server that logged 'tails loaded: none' at INFO
    and answered NOT_FOUND to every frame."""
    K = load_bundle(digits_bundle).manifest.num_layers
    with pytest.raises(ConfigError, match=rf"^splits = \[{K}\]: no tail to serve: split {K} runs wholly on the edge"):
        CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True, splits=[K]))


def test_cli_flag_and_its_errors(digits_bundle: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    base = [sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(digits_bundle),
            "--listen", "127.0.0.1:0"]
    shown = subprocess.run([*base, "--splits", "0,2", "--print-config"], capture_output=True, text=True,
                           timeout=120, env=env, cwd=tmp_path)
    assert shown.returncode == 0 and "splits = [0, 2]" in shown.stdout, shown.stderr
    bad = subprocess.run([*base, "--splits", "2,99"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    assert "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert "splits" in last and "99" in last, last
    word = subprocess.run([*base, "--splits", "two"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert word.returncode == 2 and "Traceback" not in word.stderr
    assert "splits" in word.stderr.strip().splitlines()[-1] and "two" in word.stderr, word.stderr
