"""Models whose output is one value per frame (a binary classifier's sigmoid score, a regressor's
value). Their argmax is 0 on every side, so top-1 agreement was 100% for any split: a split whose
int8 cut had destroyed the only useful feature (the output stuck at 0.5) passed and was written.
They are verified by value agreement (splitpoint/verify.py) instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
layers = keras.layers

from splitpoint.bundle import load_bundle  # noqa: E402
from splitpoint.cli import main  # noqa: E402


def _binary(healthy: bool, final: str = "sigmoid") -> keras.Model:
    """Flatten -> Dense(2) 'feat' -> Dense(1) 'out'. feat[1] = pixel 0 - 0.5 decides the output. Broken:
    feat[0] is the sum of the pixels at a scale of ~1000, so one int8 grid for both rounds feat[1] to 0."""
    inp = keras.Input((8, 8, 1))
    dense = layers.Dense(2, name="feat")
    out = layers.Dense(1, activation=final, name="out")
    model = keras.Model(inp, out(dense(layers.Flatten(name="flat")(inp))))
    w = np.zeros((64, 2), "float32")
    w[:, 0] = 1000 / 64 if healthy is False else 0.0
    w[0, 1] = 1.0
    dense.set_weights([w, np.array([0, -0.5], "float32")])
    out.set_weights([np.array([[0], [10]], "float32"), np.zeros(1, "float32")])
    return model


def _partition(model: keras.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "bin.keras"
    model.save(path)
    rc = main(["partition", str(path), "-o", str(tmp_path / "b"), "--calibration-random", "128"])  # covers pixel 0's range
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_a_binary_classifier_whose_cut_destroys_its_feature_is_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The hostile tester's model: k = 2 and 3 put out 0.5 for every frame, max error 0.49, and
    were written as '100.0%' top-1 agreement."""
    rc, said = _partition(_binary(healthy=False), tmp_path, capsys)
    assert rc == 2, said
    assert "k=2: 0.0%, k=3: 0.0%" in said, said
    assert "on the same side of 0.5" in said and "5% of its range" in said, said
    assert not (tmp_path / "b" / "manifest.json").exists()


@pytest.mark.parametrize("final", ["sigmoid", "linear"], ids=["binary-classifier", "regressor"])
def test_a_healthy_one_value_model_keeps_its_splits(final: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, said = _partition(_binary(healthy=True, final=final), tmp_path, capsys)
    assert rc == 0, said
    assert "verifying splits by value agreement" in said, said
    assert ("same side of 0.5" in said) is (final == "sigmoid"), said
    m = load_bundle(tmp_path / "b").manifest
    assert m.split_ids == [0, 1, 2, 3]
    for s in m.splits:
        v = s.verification
        assert v["passed"] and v["agreement"] == v["value_agreement"] >= 0.98, (s.split, v)
        assert "top1_agreement" not in v and v["value_tolerance"] > 0
    assert "value agree" in said  # the table's column says which agreement it is
    assert "one value per frame" in m.partition["agreement_rule"]


def _partition_labelled(model: keras.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        labels: str) -> tuple[int, str]:
    path = tmp_path / "bin.keras"
    model.save(path)
    rc = main(["partition", str(path), "-o", str(tmp_path / "b"), "--calibration-random", "128",
               "--splits", "2", "--labels", labels])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_two_labels_name_a_binary_classifiers_sides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--labels neg,pos` on a Dense(1, sigmoid) was refused ('1 classes'): a binary classifier
    could not name its classes, and its records said label 0 whatever the score."""
    rc, said = _partition_labelled(_binary(healthy=True), tmp_path, capsys, "neg,pos")
    assert rc == 0, said
    assert load_bundle(tmp_path / "b").manifest.labels == ["neg", "pos"]


@pytest.mark.parametrize("labels, wanted", [
    ("neg,pos", "ranges over"),  # a regressor's value (or a logit): no 0.5 to decide at
    ("a,b,c", "give two labels for a binary classifier"),
])
def test_labels_a_one_value_output_cannot_take_are_refused(labels: str, wanted: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    final = "linear" if wanted == "ranges over" else "sigmoid"
    rc, said = _partition_labelled(_binary(healthy=True, final=final), tmp_path, capsys, labels)
    assert rc == 2, said
    assert f"--labels {labels}" in said or "--labels" in said, said
    assert wanted in said and "Traceback" not in said, said
    assert not (tmp_path / "b" / "manifest.json").exists()
