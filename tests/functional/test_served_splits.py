"""`CloudConfig.splits`: a server that serves only some splits loads only their tails (what
`splitpoint bench --splits` gives its server), refuses frames for the others with NOT_FOUND,
and names a split the bundle does not have (exit 2 from the CLI, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from helpers import zero_frame

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
        assert [s.split for s in info.splits if s.warm] == [0, 2]
        resp = stub.InferFrame(zero_frame(digits_bundle, 2), timeout=RPC_TIMEOUT_S)
        assert resp.frame_id == 2 and len(resp.outputs) == 1
        other = next(s.split for s in m.splits if s.tail is not None and s.split not in (0, 2))
        with pytest.raises(grpc.RpcError) as err:
            stub.InferFrame(zero_frame(digits_bundle, other), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"split {other} has no tail on this server" in err.value.details() and "[0, 2]" in err.value.details()
    assert sorted(two_split_server.tails.warm()) == [0, 2]  # the refused split was not loaded either


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
