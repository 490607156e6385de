"""Power and battery files a drone operator gets wrong, handed to a real `splitpoint edge` process.

What is checked:
  * a battery file the policy cannot read a level from - "150", empty, a named pipe, /dev/zero:
    every frame still gets its record (status ok), the level counts as unknown, and one WARNING
    names the file. Before, every frame failed with the battery file's error (a pipe blocked the
    frame loop in open(); /dev/zero filled the memory);
  * a power table without a figure for a split the agent may choose: exit 2 before the first
    frame, naming the split, where every frame failed and the run exited 1; a reload to such a
    table is refused and the running policy kept;
  * a power table, radio file or profile that is a named pipe: exit 2 at once, naming the key
    (the agent waited in open() for ever, deaf to SIGTERM);
  * a link type a radio file adds (docs/power.md's [lora]) can be chosen with policy.link;
    errors about the power table and the radio file name the agent's keys, policy.power_table
    and policy.radio, not flags `splitpoint edge` does not have.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env
from helpers import finish_process as finish

from edge_node.agent import EdgeAgent
from edge_node.config import EdgeConfig
from edge_node.results import read_results
from scheduler.objectives import PolicyConfig
from scheduler.reference_profiles import write_reference_profiles
from splitpoint.bundle import load_bundle

FRAMES = 12


@pytest.fixture
def profiles(digits_bundle: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Reference edge and cloud profiles and a power table with every split of the digits bundle."""
    return write_reference_profiles(load_bundle(digits_bundle, verify=False).manifest, tmp_path)


def edge_config(tmp_path: Path, bundle: Path, profiles: tuple[Path, Path, Path], policy: str, frames: int = FRAMES) -> Path:
    edge, cloud, table = profiles
    path = tmp_path / "edge.toml"
    path.write_text(f'bundle = "{bundle}"\nsource = "synthetic:{frames}"\ncloud = "127.0.0.1:1"\ninsecure = true\n'
                    f'results = "{tmp_path / "r.jsonl"}"\n'
                    f'[policy]\nname = "min-latency"\nedge_profile = "{edge}"\ncloud_profile = "{cloud}"\n'
                    f'power_table = "{table}"\n' + policy)
    return path


def edge(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "edge", "--config", str(config), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=config.parent,
        env=cli_env() | {"PYTHONFAULTHANDLER": "1"},
        # 2 GiB of address space (an agent maps under 1 GiB): reading /dev/zero fails fast, not the machine
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)),
    )


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("splitpoint edge: error:")]


# ---------------------------------------------------------------- the battery file


@pytest.mark.parametrize(("kind", "said"), [
    ("150", '= "150": battery level must be between 0 and 100'),
    ("", "is empty"),
    ("fifo", "is a named pipe, not a regular file"),
    ("/dev/zero", "is a character device, not a regular file"),
    ("7" * 100, "is longer than 64 bytes"),
])
def test_a_battery_file_without_a_level_fails_no_frame(digits_bundle: Path, profiles: tuple[Path, Path, Path],
                                                       tmp_path: Path, kind: str, said: str) -> None:
    battery = tmp_path / "battery"
    if kind == "fifo":
        os.mkfifo(battery)  # nothing ever writes to it: open() for reading would wait for ever
    elif kind.startswith("/dev/"):
        battery = Path(kind)
    else:
        battery.write_text(kind)
    config = edge_config(tmp_path, digits_bundle, profiles, f'battery_file = "{battery}"\nbattery_low_pct = 30\n')
    proc = edge(config)
    _, err = finish(proc)
    assert proc.returncode == 0, err
    assert error_lines(err) == []
    records = read_results(tmp_path / "r.jsonl")
    assert [r["status"] for r in records] == ["ok"] * FRAMES, records[0]
    warnings = [line for line in err.splitlines() if "battery level unknown" in line]
    assert len(warnings) == 1, err  # once, not once per frame
    assert str(battery) in warnings[0] and said in warnings[0]


# ---------------------------------------------------------------- the power table


def test_a_power_table_missing_a_split_is_refused_before_the_first_frame(
        digits_bundle: Path, profiles: tuple[Path, Path, Path], tmp_path: Path) -> None:
    K = load_bundle(digits_bundle, verify=False).manifest.num_layers
    table = tmp_path / "pi.toml"
    table.write_text(f'source = "USB meter"\nidle_w = 2.0\n[head_w]\n"0" = 2.0\n"3" = 4.0\n"{K}" = 4.5\n')
    config = edge_config(tmp_path, digits_bundle, profiles[:2] + (table,), "")
    proc = edge(config)
    _, err = finish(proc)
    assert proc.returncode == 2, err
    assert error_lines(err) == [f"splitpoint edge: error: head_w.1: split 1 has no figure in {table} "
                                f"(measured: 0, 3, {K}) and no default_head_w is set"]
    assert not (tmp_path / "r.jsonl").exists()  # refused before the results log was opened
    # an agent that loads only the splits measured (K always) has every figure it needs
    proc = edge(config, "--splits", "0,3")
    _, err = finish(proc)
    assert proc.returncode == 0, err
    assert [r["status"] for r in read_results(tmp_path / "r.jsonl")] == ["ok"] * FRAMES


def test_a_reload_to_a_power_table_missing_a_split_keeps_the_running_policy(
        digits_bundle: Path, profiles: tuple[Path, Path, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    edge_p, cloud_p, _ = profiles
    table = tmp_path / "pi.toml"
    table.write_text('source = "USB meter"\nidle_w = 2.0\n[head_w]\n"0" = 2.0\n"3" = 4.0\n')
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", cloud="127.0.0.1:9", split=3, insecure=True,
                      results=str(tmp_path / "r.jsonl"))
    agent = EdgeAgent.from_config(conf)
    try:
        before = agent.policy
        agent.on_reload(lambda: PolicyConfig(name="min-energy", edge_profile=str(edge_p), cloud_profile=str(cloud_p),
                                             power_table=str(table)))
        agent.request_reload()
        with caplog.at_level(logging.ERROR, logger="edge_node.agent"):
            agent._maybe_reload()
        assert agent.policy is before
        assert f"policy reload refused, keeping fixed split 3: head_w.1: split 1 has no figure in {table}" in caplog.text
    finally:
        agent.close()


@pytest.mark.parametrize("key", ["power_table", "radio", "edge_profile"])
def test_a_policy_file_that_is_a_named_pipe_is_refused_at_once(digits_bundle: Path, profiles: tuple[Path, Path, Path],
                                                               tmp_path: Path, key: str) -> None:
    """It was opened like a file: the agent waited in open() for a writer, for ever, and SIGTERM
    did not end it (systemd's SIGKILL did, 30 s later, and then the next start hung too)."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    config = edge_config(tmp_path, digits_bundle, profiles, "")
    proc = edge(config, f"--policy-{key.replace('_', '-')}", str(pipe))
    _, err = finish(proc)
    assert proc.returncode == 2, err
    assert error_lines(err) == [f'splitpoint edge: error: policy.{key} = "{pipe}": is a named pipe, not a regular file']


# ---------------------------------------------------------------- the radio model


def test_a_link_type_a_radio_file_adds_can_be_chosen(digits_bundle: Path, profiles: tuple[Path, Path, Path],
                                                     tmp_path: Path) -> None:
    radio = tmp_path / "radio.toml"
    radio.write_text("[lora]\nalpha_mw_per_mbps = 9000.0\nbeta_mw = 400.0\n")
    config = edge_config(tmp_path, digits_bundle, profiles, f'radio = "{radio}"\nlink = "lora"\n')
    proc = edge(config)
    _, err = finish(proc)
    assert proc.returncode == 0, err
    assert [r["status"] for r in read_results(tmp_path / "r.jsonl")] == ["ok"] * FRAMES
    for flags, said in ((["--policy-link", "lroa"], 'policy.link = "lroa": unknown link type; known: lora, lte, wifi'),
                        (["--policy-link", "lora", "--policy-radio", ""],
                         'policy.link = "lora": unknown link type; known: lte, wifi (a policy.radio file may add one)'),
                        (["--policy-radio", str(tmp_path / "none.toml")],
                         f'policy.radio = "{tmp_path / "none.toml"}": file not found'),
                        (["--policy-power-table", str(tmp_path / "none.toml")],
                         f'policy.power_table = "{tmp_path / "none.toml"}": file not found')):
        proc = edge(config, *flags)
        _, err = finish(proc)
        assert proc.returncode == 2, (flags, err)
        assert error_lines(err) == [f"splitpoint edge: error: {said}"], flags
