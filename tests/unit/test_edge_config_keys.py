"""The agent's robustness keys: grace_s, keepalive_s, require_cloud - defaults and bad values."""

from __future__ import annotations

import pytest

from edge_node.config import EdgeConfig
from splitpoint.errors import ConfigError


def conf(**kw: object) -> EdgeConfig:
    return EdgeConfig(bundle="b", source="synthetic:1", insecure=True, **kw)  # type: ignore[arg-type]


def test_defaults() -> None:
    c = conf()
    c.validate()
    assert (c.grace_s, c.keepalive_s, c.require_cloud) == (10.0, 20.0, False)


@pytest.mark.parametrize(("key", "value"), [("grace_s", -1.0), ("keepalive_s", 0.5), ("keepalive_s", 0.0),
                                                   ("keepalive_s", 4.9)])
def test_bad_values_name_the_key_and_value(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        conf(**{key: value}).validate()
    assert info.value.key == key and info.value.value == value
