"""A frame the agent may send must fit in its own max_message_mb: refused at start (and on a
policy reload), naming the key and the split, not blamed on the server frame after frame."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge_node.assembly import check_message_size
from edge_node.config import EdgeConfig
from edge_node.outputs import request_bytes
from splitpoint.errors import ConfigError

pytestmark = pytest.mark.edge_side


def split(k: int, n: int) -> SimpleNamespace:
    cut = [SimpleNamespace(name=f"cut{k}", shape=(1, n), dtype="int8", quantization=None)] if n else []
    return SimpleNamespace(split=k, wire_bytes=n, cut=cut)


# splits 0-3 of a model with K = 3: 4000, 2048 and 100 tensor bytes
SPLITS = {k: split(k, n) for k, n in ((0, 4000), (1, 2048), (2, 100), (3, 0))}
MANIFEST = SimpleNamespace(num_layers=3, splits=list(SPLITS.values()), split=SPLITS.__getitem__,
                           model_digest="sha256:" + "0" * 64)
FIXED = SimpleNamespace  # a fixed policy: a split and no link (scheduler/policy_base.plans_paths)


def conf(mb: float) -> EdgeConfig:
    return EdgeConfig(bundle="b", source="synthetic:1", max_message_mb=mb)


def test_a_message_is_its_tensor_and_a_little_more() -> None:
    sizes = {k: request_bytes(MANIFEST, k, 1000) for k in (0, 1, 2)}  # type: ignore[arg-type]
    assert all(n < sizes[k] < n + 200 for k, n in ((0, 4000), (1, 2048), (2, 100))), sizes


def test_a_fixed_split_whose_frames_do_not_fit_is_refused_with_what_would() -> None:
    need = request_bytes(MANIFEST, 1, conf(1).frame_deadline_ms)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:  # 2048 bytes and more > 1048 bytes
        check_message_size(conf(0.001), MANIFEST, FIXED(split=1), [0, 1, 2, 3])
    assert err.value.key == "max_message_mb" and err.value.value == 0.001
    assert f"split 1's frames are messages of up to {need} bytes" in str(err.value)
    assert str(err.value).endswith("raise it to at least 0.003")
    check_message_size(conf(0.001), MANIFEST, FIXED(split=3), [0, 1, 2, 3])  # all-edge sends nothing
    check_message_size(conf(0.001), MANIFEST, FIXED(split=2), [0, 1, 2, 3])  # 100 bytes fit (it was refused)
    check_message_size(conf(0.003), MANIFEST, FIXED(split=1), [0, 1, 2, 3])


def test_an_adaptive_policy_names_every_split_it_may_send_that_does_not_fit() -> None:
    adaptive = SimpleNamespace(link=object())
    with pytest.raises(ConfigError) as err:
        check_message_size(conf(0.0025), MANIFEST, adaptive, [0, 1, 2, 3])
    assert "split 0's frames are messages of up to" in str(err.value)  # the largest, and the one over
    assert "raise it to at least 0.004, or leave split 0 out (splits)" in str(err.value)
    with pytest.raises(ConfigError, match=r"or leave splits 0-1 out \(splits\)$"):
        check_message_size(conf(0.002), MANIFEST, adaptive, [0, 1, 2, 3])
    check_message_size(conf(0.0025), MANIFEST, adaptive, [1, 2, 3])  # the splits it loads all fit


def test_a_policy_split_over_another_top_level_split_is_said(caplog: pytest.LogCaptureFixture) -> None:
    from edge_node.assembly import policy_for
    from scheduler.link import LinkEstimator

    manifest = SimpleNamespace(num_layers=3, split_ids=[0, 1, 2, 3], model_name="m", model_digest="sha256:0",
                               splits=MANIFEST.splits, split=SPLITS.__getitem__)
    c = EdgeConfig(bundle="b", source="synthetic:1", split=1)
    c.policy.split = 2
    policy = policy_for(c, manifest, c.policy, LinkEstimator())
    assert getattr(policy, "split", None) == 2  # as documented: policy.split wins
    assert "policy.split = 2 is the split run; split = 1 is only its default" in caplog.text
    caplog.clear()
    c.policy.split = 1
    policy_for(c, manifest, c.policy, LinkEstimator())
    assert "policy.split" not in caplog.text


def test_only_splits_near_the_limit_are_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every start and reload encoded a zeroed request per split (0.13 s for 156 MobileNetV2-sized
    cuts) to find none near the default 32 MiB."""
    import edge_node.assembly as assembly

    encoded: list[int] = []
    real = assembly.request_bytes
    monkeypatch.setattr(assembly, "request_bytes", lambda m, k, d: encoded.append(k) or real(m, k, d))
    check_message_size(conf(32), MANIFEST, SimpleNamespace(link=object()), [0, 1, 2, 3])
    assert encoded == []
    check_message_size(conf(0.0625), MANIFEST, SimpleNamespace(link=object()), [0, 1, 2, 3])  # 64 KiB: all near
    assert encoded == [0, 1, 2]
