"""An agent that runs every frame on the drone (a fixed policy at k = K) asks no server anything,
so it needs neither TLS settings nor --insecure; one that may offload, or require_cloud, still
does. A SIGHUP reload that would make such an agent offload is refused, the old policy kept."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env
from helpers import finish_process as finish

from edge_node.agent import EdgeAgent
from edge_node.client import NoLink
from edge_node.config import EdgeConfig
from edge_node.results import read_results
from scheduler.objectives import PolicyConfig
from splitpoint.bundle import load_bundle
from splitpoint.errors import ConfigError
from splitpoint.security import ClientSecurity

NO_TRANSPORT = ("splitpoint edge: error: insecure = false: no tls_ca to verify the server with: give tls_ca (and "
                "tls_cert/tls_key for mutual TLS), or --insecure to talk plaintext (development only)")


def edge(bundle: Path, cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "edge", "--bundle", str(bundle), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env() | {"PYTHONFAULTHANDLER": "1"}, cwd=cwd)
    out, err = finish(proc)
    return proc.returncode, out, err


@pytest.mark.parametrize("split", [None, "K"])
def test_an_all_edge_agent_needs_no_tls_settings(digits_bundle: Path, tmp_path: Path, split: str | None) -> None:
    """Refused before with the 'no tls_ca' error (exit 2), though it never talks to a server."""
    K = load_bundle(digits_bundle, verify=False).manifest.num_layers
    extra = [] if split is None else ["--split", str(K)]
    code, out, err = edge(digits_bundle, tmp_path, "--source", "synthetic:5", "--results", "r.jsonl", *extra)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "never reached" not in out
    assert out.startswith("5 frames in ") and ": 0 cloud, 5 local (0 fallbacks), 0 failed" in out
    assert {r["where"] for r in read_results(tmp_path / "r.jsonl")} == {"local"}


@pytest.mark.parametrize("args", [["--split", "3"], ["--require-cloud"]])
def test_an_agent_that_may_talk_to_a_server_still_chooses_tls_or_plaintext(digits_bundle: Path, tmp_path: Path,
                                                                           args: list[str]) -> None:
    code, out, err = edge(digits_bundle, tmp_path, "--source", "synthetic:5", "--results", "r.jsonl", *args)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == NO_TRANSPORT
    assert not (tmp_path / "r.jsonl").exists()


def test_an_all_edge_agent_builds_no_channel_and_refuses_a_reload_that_would_offload(
        digits_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", results=str(tmp_path / "r.jsonl"))
    conf.validate()
    agent = EdgeAgent.from_config(conf)
    try:
        assert isinstance(agent.session.client, NoLink)  # type: ignore[attr-defined]
        before = agent.policy
        agent.on_reload(lambda: PolicyConfig(name="fixed", split=3))
        agent.request_reload()
        with caplog.at_level(logging.ERROR, logger="edge_node.agent"):
            agent._maybe_reload()
        assert agent.policy is before
        [line] = [r.getMessage() for r in caplog.records if r.name == "edge_node.agent"]
        assert line.startswith("policy reload refused, keeping fixed split 7: policy: the new policy sends frames "
                               "to the cloud") and "set tls_ca" in line and "restart the agent" in line
        agent.on_reload(lambda: PolicyConfig(name="fixed"))  # still all on the edge: accepted
        agent.request_reload()
        agent._maybe_reload()
        assert agent.policy is not before
    finally:
        agent.close()


def test_an_all_edge_agent_with_plaintext_chosen_may_reload_into_offloading(digits_bundle: Path,
                                                                             tmp_path: Path) -> None:
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", results=str(tmp_path / "r.jsonl"),
                      cloud="127.0.0.1:9", insecure=True)
    agent = EdgeAgent.from_config(conf)
    try:
        assert not isinstance(agent.session.client, NoLink)  # type: ignore[attr-defined]
        agent.on_reload(lambda: PolicyConfig(name="fixed", split=3))
        agent.request_reload()
        agent._maybe_reload()
        assert getattr(agent.policy, "split", None) == 3
    finally:
        agent.close()


def test_tls_and_plaintext_together_are_refused_even_without_a_server_to_talk_to() -> None:
    ClientSecurity().validate(talks=False)  # neither: fine until a server is to be contacted
    with pytest.raises(ConfigError, match="cannot be combined with tls_ca"):
        ClientSecurity(tls_ca="ca.pem", insecure=True).validate(talks=False)
    with pytest.raises(ConfigError, match="no tls_ca to verify the server with"):
        ClientSecurity().validate()
