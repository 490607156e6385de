"""Config: defaults < TOML < flags, and every bad value named with its key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloud_server.config import CloudConfig
from edge_node.config import EdgeConfig
from splitpoint import config as cfg
from splitpoint.errors import ConfigError

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


def parse(cls: type, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cfg.add_arguments(p, cls)
    return p.parse_args(["--insecure", *argv])  # plaintext must be asked for


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    return path


def test_flags_override_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'bundle = "b"\nsource = "synthetic:5"\nwindow = 8\nmode = "latency"\n')
    conf = cfg.load(EdgeConfig, parse(EdgeConfig, ["--window", "2"]), path)
    assert conf.window == 2  # flag
    assert conf.mode == "latency"  # file
    assert conf.frame_deadline_ms == 2000  # default
    assert conf.window_size == 1  # latency mode keeps one frame in flight


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ('window = "x"', "window", "x"),
        ('mode = "fast"', "mode", "fast"),
        ('cloud = "nohostport"', "cloud", "nohostport"),
        ("colour = 3", "colour", 3),
        ('device = "tpu"', "device", "tpu"),
        ("fps = -1", "fps", -1),
        ("window = 0", "window", 0),
        ("split = 1.5", "split", 1.5),
        ("cpu_fallback = 3", "cpu_fallback", 3),
    ],
)
def test_bad_values_name_key_and_value(tmp_path: Path, text: str, key: str, value: object) -> None:
    path = write(tmp_path, f'bundle = "b"\nsource = "synthetic:5"\n{text}\n')
    with pytest.raises(ConfigError) as info:
        cfg.load(EdgeConfig, parse(EdgeConfig, []), path)
    assert info.value.key == key
    assert info.value.value == value
    assert key in str(info.value) and repr(value) in str(info.value)


def test_missing_required_key_says_how_to_give_it() -> None:
    with pytest.raises(ConfigError, match="--bundle"):
        cfg.load(CloudConfig, parse(CloudConfig, []))


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(CloudConfig, parse(CloudConfig, []), write(tmp_path, "bundle = \n"))
    with pytest.raises(ConfigError, match="file not found"):
        cfg.load(CloudConfig, parse(CloudConfig, []), tmp_path / "nope.toml")


def test_print_config_round_trips(tmp_path: Path) -> None:
    conf = cfg.load(EdgeConfig, parse(EdgeConfig, ["--bundle", "b", "--source", "camera:0", "--fps", "15"]))
    text = cfg.to_toml(conf)
    again = cfg.load(EdgeConfig, parse(EdgeConfig, []), write(tmp_path, text))
    assert again == conf


def test_cloud_limits_validated() -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--listen", "127.0.0.1:99999"]))
    assert info.value.key == "listen"
    with pytest.raises(ConfigError) as info:
        cfg.load(CloudConfig, parse(CloudConfig, ["--bundle", "b", "--workers", "0"]))
    assert info.value.key == "workers"
