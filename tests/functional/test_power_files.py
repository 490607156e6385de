"""Power and battery files a drone operator gets wrong, handed to a real `splitpoint edge` process.

What is checked:
  * a battery file the policy cannot read a level from - "150", empty, a named pipe, /dev/zero,
    a long file: every frame still gets its record (status ok), the level counts as unknown, and
    one WARNING names the file. Before, every frame failed with the battery file's error (a pipe
    blocked the frame loop in open(); /dev/zero filled the memory).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env
from helpers import finish_process as finish

from edge_node.results import read_results
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
