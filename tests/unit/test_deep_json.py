"""JSON nested deeper than the parser goes (100,000 `[`) is text that is not JSON, named by its
file as any other: it was a RecursionError traceback in `profile show`, `policy explain` and
`splitpoint results`."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitpoint.errors import ConfigError

pytestmark = pytest.mark.edge_side

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_profile_nested_too_deeply_is_named(tmp_path: Path) -> None:
    from scheduler.profiles import is_profile, load_profile

    path = tmp_path / "edge.json"
    path.write_text(DEEP)
    with pytest.raises(ConfigError, match=rf'^policy\.edge_profile = "{path}": unreadable \(nested too deeply to be read\)$'):
        load_profile(path, "edge", key="policy.edge_profile")
    assert not is_profile(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)  # an -o file: not ours, left as it is


def test_a_power_table_nested_too_deeply_is_named(tmp_path: Path) -> None:
    from scheduler.power_models import PowerTable

    path = tmp_path / "pi.json"
    path.write_text(DEEP)
    with pytest.raises(ConfigError, match=rf'^policy\.power_table = "{path}": not valid JSON \(nested too deeply'):
        PowerTable.load(path, key="policy.power_table")


def test_a_results_line_nested_too_deeply_is_named_by_its_line(tmp_path: Path) -> None:
    from edge_node.results_records import read_results

    path = tmp_path / "r.jsonl"
    path.write_text('{"frame_id": 1, "origin": "a"}\n' + DEEP + "\n")
    with pytest.raises(ConfigError, match=rf'^results = "{path}": is not a results log \(line 2 is not JSON: nested too deeply'):
        read_results(path)
