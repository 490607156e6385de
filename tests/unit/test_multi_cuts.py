"""Multi-tensor cuts (splitpoint/cuts.py) against brute force on small hand-made graphs.

Every offered cut must be valid, the offered cuts must nest, and for each no valid
cut with the same number of edge-side layers may have fewer wire bytes. Brute force
enumerates all 2^K layer sets (K <= 16) and keeps the downward-closed ones.
"""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")
layers = keras.layers

from splitpoint import cuts  # noqa: E402
from splitpoint.cut_points import find_cut_points, layer_nodes, model_graph  # noqa: E402
from splitpoint.errors import PartitionError  # noqa: E402


def fpn():
    """Backbone of three stages, lateral 1x1 convs, top-down upsample + add, one output (13 layers)."""
    inp = keras.Input((32, 32, 3), name="image")
    c1 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    c2 = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(c1)
    c3 = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="c3")(c2)
    p3 = layers.Conv2D(8, 1, name="lat3")(c3)
    l2 = layers.Conv2D(8, 1, name="lat2")(c2)
    l1 = layers.Conv2D(8, 1, name="lat1")(c1)
    u3 = layers.UpSampling2D(name="up3")(p3)
    p2 = layers.Add(name="p2")([u3, l2])
    u2 = layers.UpSampling2D(name="up2")(p2)
    p1 = layers.Add(name="p1")([u2, l1])
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="head")(p1)
    heat = layers.Conv2D(4, 1, activation="sigmoid", name="heatmap")(h)
    size = layers.Conv2D(2, 1, name="size")(h)
    return keras.Model(inp, [heat, size], name="fpn")


def unet():
    """Two-level U-Net: skips from the encoder to the decoder (14 layers)."""
    inp = keras.Input((32, 32, 1), name="image")
    e1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="e1")(inp)
    d1 = layers.MaxPooling2D(name="down1")(e1)
    e2 = layers.Conv2D(16, 3, padding="same", activation="relu", name="e2")(d1)
    d2 = layers.MaxPooling2D(name="down2")(e2)
    b = layers.Conv2D(32, 3, padding="same", activation="relu", name="bottom")(d2)
    u2 = layers.UpSampling2D(name="up2")(b)
    m2 = layers.Concatenate(name="cat2")([u2, e2])
    f2 = layers.Conv2D(16, 3, padding="same", activation="relu", name="dec2")(m2)
    u1 = layers.UpSampling2D(name="up1")(f2)
    m1 = layers.Concatenate(name="cat1")([u1, e1])
    f1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="dec1")(m1)
    f1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="dec1b")(f1)
    out = layers.Conv2D(2, 1, activation="softmax", name="mask")(f1)
    return keras.Model(inp, out, name="unet")


def inception():
    """A stem, one Inception block (four branches) and a classifier (12 layers)."""
    inp = keras.Input((16, 16, 3), name="image")
    s = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    b1 = layers.Conv2D(8, 1, activation="relu", name="b1")(s)
    b2 = layers.Conv2D(4, 1, activation="relu", name="b2_reduce")(s)
    b2 = layers.Conv2D(8, 3, padding="same", activation="relu", name="b2")(b2)
    b3 = layers.Conv2D(2, 1, activation="relu", name="b3_reduce")(s)
    b3 = layers.Conv2D(4, 5, padding="same", activation="relu", name="b3")(b3)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="b4_pool")(s)
    b4 = layers.Conv2D(4, 1, activation="relu", name="b4")(b4)
    x = layers.Concatenate(name="mixed")([b1, b2, b3, b4])
    x = layers.Conv2D(16, 1, activation="relu", name="mix_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="inception")


MODELS = {"fpn": fpn, "unet": unet, "inception": inception}


def _brute_force(graph, max_tensors):
    """{edge-side layer count: fewest wire bytes of any valid cut with that many layers}."""
    best: dict[int, int] = {}
    for mask in range(1 << graph.num_nodes):
        c = cuts.valid_cut(graph, mask, max_tensors)
        if c is not None:
            best[c.size] = min(best.get(c.size, c.wire_bytes), c.wire_bytes)
    return best


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("max_tensors", [1, 2, 4])
def test_offered_cuts_are_a_chain_of_per_size_optima(name, max_tensors):
    model = MODELS[name]()
    graph, _ = model_graph(model, layer_nodes(model))
    assert graph.num_nodes <= 16
    offered = cuts.offered_cuts(graph, max_tensors)
    best = _brute_force(graph, max_tensors)
    assert offered[0].size == 0 and offered[-1].size == graph.num_nodes
    for a, b in zip(offered, offered[1:], strict=False):
        assert a.size < b.size and a.nodes & ~b.nodes == 0, "offered cuts must nest"
    for c in offered:
        assert cuts.valid_cut(graph, c.nodes, max_tensors) == c
        assert len(c.frontier) <= max_tensors
        assert c.wire_bytes == best[c.size], (c.size, c.wire_bytes, best[c.size])
    # the search finds every valid cut brute force finds
    found = cuts.valid_cuts(graph, max_tensors)
    every = {m for m in range(1 << graph.num_nodes) if cuts.valid_cut(graph, m, max_tensors) is not None}
    assert set(found) == every


def test_multi_tensor_cuts_reach_inside_the_pyramid_and_the_block():
    for name, inside in (("fpn", {"lat3", "lat2", "p2", "up2"}), ("unet", {"bottom", "up2", "dec2"}),
                         ("inception", {"b2", "b3", "b4"})):
        model = MODELS[name]()
        single = {c.layer for c in find_cut_points(model, 1)[0]}
        multi, K = find_cut_points(model, 4)
        assert len(multi) > len(single), name
        wide = [c for c in multi if len(c.tensors) > 1 and c.split < K]
        assert wide, f"{name}: no multi-tensor cut offered"
        assert {c.layer for c in multi} & inside, (name, [c.layer for c in multi])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heads_and_tails_of_multi_tensor_cuts_have_the_right_layers(name):
    model = MODELS[name]()
    offered, K = find_cut_points(model, 4)
    for c in offered:
        if c.split in (0, K):
            continue
        head = keras.Model(model.inputs, list(c.tensors))
        tail = keras.Model(list(c.tensors), model.outputs)
        count = lambda m: len([la for la in m.layers if not isinstance(la, layers.InputLayer)])  # noqa: E731
        assert count(head) == c.split, (c.split, c.layer)
        assert count(tail) == K - c.split, (c.split, c.layer)
        assert len(tail.inputs) == len(c.tensors)


def test_max_cut_tensors_below_one_is_refused():
    with pytest.raises(PartitionError, match="--max-cut-tensors 0"):
        find_cut_points(fpn(), 0)
