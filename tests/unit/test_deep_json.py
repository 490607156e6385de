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


@pytest.mark.parametrize("name", ["c.toml", "d.json"])
def test_a_config_or_detection_file_nested_too_deeply_is_named(tmp_path: Path, name: str) -> None:
    """tomllib's parser recurses too: `--config`, a TOML power table or radio file, `--detection`."""
    from splitpoint.config import read_toml
    from splitpoint.detection_config import read_file

    path = tmp_path / name
    path.write_text(("a = " + DEEP) if name.endswith(".toml") else DEEP)
    if name.endswith(".toml"):
        with pytest.raises(ConfigError, match=rf'^--config = "{path}": not valid TOML \(nested too deeply to be read\)$'):
            read_toml(path)
    with pytest.raises(ConfigError, match=rf'^--detection = "{path}": not valid (TOML|JSON)\b.*nested too deeply'):
        read_file(str(path))
