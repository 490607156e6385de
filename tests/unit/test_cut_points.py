"""Candidate cut points on Keras graphs: where one tensor carries all state forward.

Fast: builds Keras graphs only, converts nothing.
"""

from __future__ import annotations

import re

import pytest

keras = pytest.importorskip("keras")
layers = keras.layers

from splitpoint.errors import PartitionError  # noqa: E402
from splitpoint.models import reference_model  # noqa: E402
from splitpoint.partition import as_functional, find_cut_points, parse_splits  # noqa: E402


def _cuts(model):
    cuts, num_layers = find_cut_points(model)
    return {c.split: c.layer for c in cuts}, num_layers, cuts


def _assert_head_tail_sizes(model, cuts, num_layers):
    """The head of split k has exactly k layers and its tail the other K - k."""
    for c in cuts:
        if c.split in (0, num_layers):
            continue
        head = keras.Model(model.inputs, c.tensor)
        tail = keras.Model(c.tensor, model.outputs)
        head_layers = [la for la in head.layers if not isinstance(la, layers.InputLayer)]
        tail_layers = [la for la in tail.layers if not isinstance(la, layers.InputLayer)]
        assert len(head_layers) == c.split, (c.split, c.layer, [la.name for la in head_layers])
        assert len(tail_layers) == num_layers - c.split, (c.split, c.layer)
        assert head_layers[-1].name == c.layer


# --------------------------------------------------------------------------- hand-built graphs


def chain_model():
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    x = layers.ReLU(name="r1")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flat")(x)
    out = layers.Dense(3, name="dense")(x)
    return keras.Model(inp, out, name="chain")


def residual_model():
    inp = keras.Input((8, 8, 4), name="image")
    stem = layers.Conv2D(4, 3, padding="same", name="stem")(inp)  # the block input
    b = layers.Conv2D(4, 3, padding="same", name="branch_1")(stem)
    b = layers.Conv2D(4, 3, padding="same", name="branch_2")(b)
    x = layers.Add(name="add")([b, stem])
    x = layers.Flatten(name="flat")(x)
    out = layers.Dense(3, name="dense")(x)
    return keras.Model(inp, out, name="residual")


def test_chain_every_boundary_is_a_candidate():
    model = chain_model()
    by_split, num_layers, cuts = _cuts(model)
    assert num_layers == 5
    assert by_split == {0: "", 1: "c1", 2: "r1", 3: "pool", 4: "flat", 5: "dense"}
    assert cuts[0].tensor is None
    assert cuts[-1].tensor is model.outputs[0]
    _assert_head_tail_sizes(model, cuts, num_layers)


def test_residual_block_is_not_cut_inside():
    model = residual_model()
    by_split, num_layers, cuts = _cuts(model)
    assert num_layers == 6
    names = set(by_split.values())
    assert "stem" in names  # the block input
    assert "add" in names  # the block output
    assert "branch_1" not in names  # inside: the shortcut still carries `stem`
    assert "branch_2" not in names
    assert by_split == {0: "", 1: "stem", 4: "add", 5: "flat", 6: "dense"}
    _assert_head_tail_sizes(model, cuts, num_layers)


def test_parallel_branches_concatenated():
    inp = keras.Input((8, 8, 3))
    a = layers.Conv2D(2, 1, name="a")(inp)
    b = layers.Conv2D(2, 3, padding="same", name="b1")(inp)
    b = layers.Conv2D(2, 3, padding="same", name="b2")(b)
    x = layers.Concatenate(name="cat")([a, b])
    out = layers.GlobalAveragePooling2D(name="gap")(x)
    by_split, num_layers, _ = _cuts(keras.Model(inp, out))
    assert num_layers == 5
    assert set(by_split.values()) == {"", "cat", "gap"}


def test_residual_on_the_input_leaves_only_the_ends():
    inp = keras.Input((4,))
    x = layers.Dense(4, name="d")(inp)
    out = layers.Add(name="add")([x, inp])
    by_split, num_layers, _ = _cuts(keras.Model(inp, out))
    assert (num_layers, by_split) == (2, {0: "", 2: "add"})


def test_sequential_is_rebuilt_as_functional():
    seq = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, name="c1"),
            layers.Flatten(name="flat"),
            layers.Dense(3, name="dense"),
        ],
        name="seq",
    )
    model = as_functional(seq)
    assert not isinstance(model, keras.Sequential)
    assert model.name == "seq"
    assert tuple(model.inputs[0].shape) == (None, 8, 8, 1)
    # The same layers (weights shared), not copies.
    assert [la for la in model.layers if not isinstance(la, layers.InputLayer)] == seq.layers
    by_split, num_layers, cuts = _cuts(model)
    assert by_split == {0: "", 1: "c1", 2: "flat", 3: "dense"}
    _assert_head_tail_sizes(model, cuts, num_layers)


def test_functional_model_is_returned_as_is():
    model = chain_model()
    assert as_functional(model) is model


def test_unbuilt_sequential_is_a_partition_error():
    seq = keras.Sequential([layers.Dense(3)], name="unbuilt")
    with pytest.raises(PartitionError, match="not built"):
        as_functional(seq)


def test_subclassed_model_is_a_partition_error():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(PartitionError, match="subclassed"):
        as_functional(Sub())


def test_two_inputs_is_a_partition_error():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    out = layers.Dense(2)(layers.Concatenate()([a, b]))
    with pytest.raises(PartitionError, match="2 inputs and 1 outputs"):
        find_cut_points(keras.Model([a, b], out, name="two_in"))


def test_a_shared_layer_or_a_repeated_output_is_a_partition_error():
    """find_cut_points refuses them too (a built-in, or partition() given a model), naming the model;
    they once reached the tail's build and Keras' "Output with path 0 is not connected to inputs"."""
    inp = keras.Input((4,))
    dense = layers.Dense(4, name="twice")
    with pytest.raises(PartitionError, match=r"^model 'shared': layer 'twice' is called 2 times"):
        find_cut_points(keras.Model(inp, dense(dense(inp)), name="shared"))
    out = layers.Dense(2, name="o")(inp)
    with pytest.raises(PartitionError, match=r"^model 'dup': its outputs 1 and 2 are one tensor \(of layer 'o'\)"):
        find_cut_points(keras.Model(inp, [out, out], name="dup"))


def test_two_outputs_are_cut_before_both_heads():
    inp = keras.Input((4,))
    x = layers.Dense(4, name="trunk")(inp)
    model = keras.Model(inp, [layers.Dense(2, name="o1")(x), layers.Dense(3, name="o2")(x)], name="two_out")
    by_split, num_layers, cuts = _cuts(model)
    # Cutting after o1 alone would compute a model output on the edge: not offered.
    assert (num_layers, by_split) == (3, {0: "", 1: "trunk", 3: "o2"})
    assert cuts[-1].tensors == tuple(model.outputs)


# --------------------------------------------------------------------------- reference DAGs


@pytest.fixture(scope="module")
def resnet50():
    return as_functional(reference_model("resnet50", input_size=32).model)


@pytest.fixture(scope="module")
def mobilenetv2():
    return as_functional(reference_model("mobilenetv2", input_size=32).model)


def _check_basic(model):
    by_split, num_layers, cuts = _cuts(model)
    splits = [c.split for c in cuts]
    assert len(splits) > 2
    assert splits[0] == 0 and splits[-1] == num_layers
    assert all(a < b for a, b in zip(splits, splits[1:], strict=False))
    assert num_layers == len(model.layers) - 1  # one node per layer, minus the InputLayer
    assert cuts[-1].layer == model.layers[-1].name
    return by_split, num_layers, cuts


def test_resnet50_cuts_only_between_residual_blocks(resnet50):
    by_split, num_layers, cuts = _check_basic(resnet50)
    names = set(by_split.values())
    all_names = [la.name for la in resnet50.layers]
    inner = re.compile(r"conv\d_block\d+_\d_(conv|bn|relu)$")
    inside = [n for n in all_names if inner.match(n)]
    assert "conv2_block1_1_conv" in inside and "conv2_block1_2_conv" in inside
    assert not names & set(inside), sorted(names & set(inside))
    # Every block output (and the add feeding it) is a candidate.
    outs = [n for n in all_names if re.fullmatch(r"conv\d_block\d+_(out|add)", n)]
    assert len(outs) == 2 * 16  # 3 + 4 + 6 + 3 bottleneck blocks
    assert set(outs) <= names
    assert {"pool1_pool", "avg_pool", "predictions"} <= names
    assert "conv2_block1_out" in names and "conv2_block1_1_conv" not in names
    # Between the stem and the end, only add/out pairs.
    assert len(cuts) == 1 + 6 + 32 + 2
    heads = [c for c in cuts if c.layer in ("conv2_block1_out", "conv3_block2_add", "conv5_block3_out")]
    _assert_head_tail_sizes(resnet50, heads, num_layers)


def test_mobilenetv2_inner_layers_of_residual_blocks_are_not_cuts(mobilenetv2):
    by_split, num_layers, cuts = _check_basic(mobilenetv2)
    names = set(by_split.values())
    all_names = [la.name for la in mobilenetv2.layers]
    # The names this test relies on, as Keras builds them.
    for n in ("block_1_project_BN", "block_2_expand", "block_2_depthwise", "block_2_project",
              "block_2_project_BN", "block_2_add", "block_3_expand"):
        assert n in all_names, n
    # block_2_add sums block_2's branch with block_1's output: nothing in between is a cut.
    assert "block_2_project_BN" not in names
    assert "block_2_project" not in names
    assert "block_2_expand" not in names
    assert "block_1_project_BN" in names  # block 2's input
    assert "block_2_add" in names
    blocks_with_add = {int(m.group(1)) for n in all_names if (m := re.fullmatch(r"block_(\d+)_add", n))}
    assert blocks_with_add == {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}
    for n in all_names:
        m = re.fullmatch(r"block_(\d+)_(\w+)", n)
        if not m:
            continue
        block, part = int(m.group(1)), m.group(2)
        if block in blocks_with_add:
            assert (n in names) == (part == "add"), n
        else:  # a block without a shortcut is a chain: every layer is a cut
            assert n in names, n
    heads = [c for c in cuts if c.layer in ("block_1_project_BN", "block_2_add", "block_13_depthwise")]
    assert len(heads) == 3
    _assert_head_tail_sizes(mobilenetv2, heads, num_layers)


def test_cut_points_are_deterministic(mobilenetv2):
    a, _, _ = _cuts(mobilenetv2)
    b, _, _ = _cuts(mobilenetv2)
    assert a == b


# --------------------------------------------------------------------------- parse_splits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", [3]),
        ("3,5,8-10", [3, 5, 8, 9, 10]),
        (" 10 , 2 ,2", [2, 10]),
        ("4-4", [4]),
        ("1-3,2-5", [1, 2, 3, 4, 5]),
        ("0", [0]),
        ("7,", [7]),
    ],
)
def test_parse_splits(text, expected):
    assert parse_splits(text) == expected


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("3,x,5", "'x'"),
        ("-3", "'-3'"),
        ("3-", "'3-'"),
        ("1.5", "'1.5'"),
        ("2,3-4-5", "'3-4-5'"),
        ("5-3", "'5-3'"),
        ("1 2", "'1 2'"),
        ("", "'' names no split"),  # --splits "" built every split
        (" , ", "' , ' names no split"),
        ("1-99999999999", "99999999999 is more layers than any model has"),  # expanded first: out of memory
    ],
)
def test_parse_splits_names_the_bad_item(text, bad):
    with pytest.raises(PartitionError) as info:
        parse_splits(text)
    assert bad in str(info.value)
    assert str(info.value).startswith("--splits:")


def test_parse_splits_backwards_range_says_so():
    with pytest.raises(PartitionError, match="runs backwards"):
        parse_splits("9-2")


def _transfer_model() -> keras.Model:
    backbone = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, name="conv_a"),
                                 layers.Conv2D(4, 3, name="conv_b")], name="backbone")
    inp = keras.Input((8, 8, 3))
    return keras.Model(inp, layers.Dense(3, name="head")(layers.Flatten()(backbone(inp))))


def test_a_keras_without_its_private_functional_keeps_nested_models_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """inline_nested walks Keras' private graph API: a Keras that moved it must cost the splits
    inside a backbone, not every partition of a model holding one (an ImportError)."""
    import sys

    from splitpoint.cut_points import inline_nested

    model = _transfer_model()
    assert inline_nested(model)[1] == ["backbone"]
    monkeypatch.setitem(sys.modules, "keras.src.models.functional", None)  # import raises ImportError
    assert inline_nested(model) == (model, [])
