"""scripts/plan_cost.py: the figure docs/scheduler.md quotes for what a plan costs is printed by
a script that runs the real planner on real profile files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from helpers import REPO

from scheduler.profiles import Profile, SplitProfile, StageStats

# not edge_side: the script puts the checkout first on sys.path, which in the wheel's Python 3.13
# environment (scripts/ci_edge_py313.sh) would mask the installed package for the tests after it

def _script():  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location("plan_cost", REPO / "scripts" / "plan_cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _profiles(tmp_path: Path) -> tuple[Path, Path]:
    wire, head, tail = [27_600, 6_300, 0], [0.1, 30.0, 77.0], [7.0, 4.0, 0.0]
    paths = []
    for side, ms in (("edge", head), ("cloud", tail)):
        splits = {k: SplitProfile(k, wire[k], StageStats.constant(ms[k])) for k in range(3)}
        path = tmp_path / f"{side}.json"
        Profile(side, "sha256:test", "m", {}, splits).save(path)
        paths.append(path)
    return paths[0], paths[1]


def test_it_times_the_planner_on_the_profiles_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edge, cloud = _profiles(tmp_path)
    assert _script().main([str(edge), str(cloud), "--frames", "200"]) == 0
    out = capsys.readouterr().out
    m = re.fullmatch(r"min-latency over 3 splits: median (\d+\.\d+) ms per plan, p95 (\d+\.\d+) ms "
                     r"\(2 batches of 100\)\n", out)
    assert m is not None, out
    assert 0 < float(m.group(1)) <= float(m.group(2))


def test_a_profile_it_cannot_read_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main([str(tmp_path / "missing.json"), str(tmp_path / "c.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    edge, _ = _profiles(tmp_path)
    (tmp_path / "broken.json").write_text('{"format": "splitpoint-profile", "schema_version": 1, "side": "cloud"}')
    assert _script().main([str(edge), str(tmp_path / "broken.json")]) == 2  # a message, not a traceback
    assert "malformed profile" in capsys.readouterr().err
