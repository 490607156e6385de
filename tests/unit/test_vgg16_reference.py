"""The documented VGG16 result: with a drone-paper-shaped table the energy policy keeps the
fully connected layers off the drone, and picks the split after the convolutional layers
when the uplink cannot carry the input by the deadline (docs/scheduler.md, section 6)."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.cost import CostModel, EnergyModel
from scheduler.link import LinkState
from scheduler.objectives import PolicyConfig, decide
from scheduler.power import PowerTable, RadioModel
from scheduler.reference_profiles import reference_profiles
from splitpoint.bundle import Artifact, Manifest, Preprocessing, SplitSpec, TensorSpec
from splitpoint.codec import Quantization


@pytest.fixture(scope="module")
def vgg16_manifest() -> Manifest:
    """VGG16's cut points and int8 sizes from the Keras graph, without converting anything."""
    from splitpoint.models import reference_model
    from splitpoint.partition import find_cut_points

    model = reference_model("vgg16").model
    cuts, K = find_cut_points(model)
    q = Quantization.per_tensor(0.1, 0)
    splits, params = [], 0
    by_name = {layer.name: layer for layer in model.layers}
    order = [layer.name for layer in model.layers[1:]]  # VGG16 is a chain: k layers = the first k
    for c in cuts:
        if c.split:
            params = sum(
                int(np.prod(w.shape)) * (4 if len(w.shape) == 1 else 1)
                for name in order[: c.split] for w in by_name[name].weights
            )
        shape = (1, 224, 224, 3) if c.split == 0 else tuple(int(d) for d in (1, *c.tensor.shape[1:]))
        cut = [] if c.split == K else [TensorSpec(c.layer or "input", shape, "uint8" if c.split == 0 else "int8", q)]
        art = Artifact("x", "0", 0)
        splits.append(SplitSpec(c.split, c.layer or None, cut, art if c.split else None, params, {}, None,
                                art if c.split < K else None, {}))
    pre = Preprocessing(224, 224, 3, 1 / 127.5, -1.0)
    spec = TensorSpec("input", (1, 224, 224, 3), "float32", None)
    return Manifest("vgg16", "sha256:vgg16", K, "builtin:vgg16@224", [], spec, spec, pre,
                    TensorSpec("output", (1, 1000), "float32", None), splits, None)


def cost_model(m: Manifest) -> CostModel:
    edge, cloud, table = reference_profiles(m)
    power = PowerTable.from_dict(table)
    radio = RadioModel()
    return CostModel(edge, cloud, EnergyModel(power.head_power, power.idle_w, lambda b: radio.tx_watts(b, link="lte")))


def test_fully_connected_layers_dominate_edge_energy(vgg16_manifest: Manifest) -> None:
    edge, _, _ = reference_profiles(vgg16_manifest)
    K = vgg16_manifest.num_layers
    after_conv = next(s.split for s in vgg16_manifest.splits if s.after_layer == "block5_pool")
    e = {k: sp.latency.median_ms * sp.power_w for k, sp in edge.splits.items()}
    assert e[K] - e[after_conv] > e[after_conv]  # fc1..predictions cost more than all 13 conv layers


@pytest.mark.parametrize("mbps", [0.1, 0.2])
def test_energy_policy_with_deadline_prefers_the_split_after_the_conv_layers(vgg16_manifest: Manifest, mbps: float) -> None:
    cm = cost_model(vgg16_manifest)
    cfg = PolicyConfig(name="min-energy", deadline_ms=6000, edge_profile="e", cloud_profile="c")
    d = decide(cm.predict_all(cm.splits, LinkState(mbps * 1e6, 150.0)), "min-energy", cfg)
    assert d.feasible
    assert vgg16_manifest.split(d.split).after_layer == "block5_pool"


def test_on_a_good_link_sending_the_input_costs_least(vgg16_manifest: Manifest) -> None:
    cm = cost_model(vgg16_manifest)
    cfg = PolicyConfig(name="min-energy", deadline_ms=6000, edge_profile="e", cloud_profile="c")
    d = decide(cm.predict_all(cm.splits, LinkState(2e6, 150.0)), "min-energy", cfg)
    assert d.split == 0


@pytest.mark.parametrize("mbps", [0.1, 0.2, 0.5, 1, 2, 5, 10, 50])
def test_fully_connected_layers_are_never_worth_running_on_board(vgg16_manifest: Manifest, mbps: float) -> None:
    cm = cost_model(vgg16_manifest)
    fc1 = next(s.split for s in vgg16_manifest.splits if s.after_layer == "fc1")
    onboard = [p for p in cm.predict_all(cm.splits, LinkState(mbps * 1e6, 150.0)) if p.split > 0]
    best = min(onboard, key=lambda p: p.energy_mj)
    assert best.split < fc1
