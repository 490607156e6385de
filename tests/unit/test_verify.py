"""Verification of outputs that are not a classifier's scores: one value per frame."""

from __future__ import annotations

import numpy as np
import pytest

from splitpoint.verify import agreement_rule, value_tolerance, verify_outputs


def _scores(n: int = 20) -> np.ndarray:
    """A sigmoid's scores of n frames, spread over (0, 1), none at 0.5."""
    return (1 / (1 + np.exp(-np.linspace(-5, 5, n)))).astype(np.float32).reshape(n, 1)


def test_a_one_value_output_stuck_at_its_middle_does_not_agree() -> None:
    """Its argmax is 0 for the float model and the split alike: 'top-1 agreement' was 100%."""
    ref = _scores()
    v = verify_outputs([np.full_like(ref, 0.5)], [ref], None)
    assert v["agreement"] == v["value_agreement"] == 0.0 and "top1_agreement" not in v, v


def test_a_one_value_output_agrees_within_5_percent_of_its_range() -> None:
    ref = np.linspace(100, 110, 20, dtype=np.float32).reshape(20, 1)  # a regressor's values
    assert value_tolerance(ref) == pytest.approx(0.5)  # 5% of the range, whatever the values' size
    ref = np.linspace(-10, 10, 20, dtype=np.float32).reshape(20, 1)
    assert value_tolerance(ref) == pytest.approx(1.0)  # 5% of the range
    got = ref + 0.9
    assert verify_outputs([got], [ref], None)["agreement"] == 1.0
    got[:5] += 0.2  # 1.1 off on 5 of 20 frames
    v = verify_outputs([got], [ref], None)
    assert (v["value_agreement"], v["value_tolerance"]) == (0.75, pytest.approx(1.0)), v
    assert "within 1 of the float model's" in agreement_rule([ref], None)
    assert "0.5" not in agreement_rule([ref], None)  # not a probability: no decision at 0.5


def test_a_probability_must_also_stay_on_its_side_of_one_half() -> None:
    ref = _scores()
    ref[0] = 0.49
    got = ref.copy()
    got[0] = 0.51  # within the tolerance (~0.05), but the other class
    v = verify_outputs([got], [ref], None)
    assert v["value_agreement"] == 0.95, v
    assert "same side of 0.5" in agreement_rule([ref], None)


def test_a_model_with_a_one_value_output_and_a_classifier_is_held_to_the_worse() -> None:
    ref_scores = np.eye(4, dtype=np.float32)[np.arange(20) % 4]
    ref = _scores()
    v = verify_outputs([ref_scores, np.full_like(ref, 0.5)], [ref_scores, ref], None)
    assert (v["top1_agreement"], v["value_agreement"], v["agreement"]) == (1.0, 0.0, 0.0), v
    v = verify_outputs([ref_scores, ref], [ref_scores, ref], None)
    assert v["agreement"] == 1.0
    rule = agreement_rule([ref_scores, ref], None)
    assert rule.startswith("output 0: top-1 (argmax); output 1: one value per frame"), rule


def test_a_classifier_is_still_verified_by_top1() -> None:
    ref = np.eye(3, dtype=np.float32)[np.arange(10) % 3]
    got = ref.copy()
    got[0] = [0, 1, 0]
    v = verify_outputs([got], [ref], None)
    assert (v["top1_agreement"], v["agreement"]) == (0.9, 0.9) and "value_agreement" not in v, v
    assert agreement_rule([ref], None) == "top-1 (argmax)"


def test_a_regressor_far_from_zero_stuck_at_its_middle_does_not_agree() -> None:
    """Values of 2990-3012 got a tolerance of 1% of 3012 (30), more than their range: a split
    stuck at their middle, 11 off at most, 'agreed' on every frame."""
    ref = np.linspace(2990, 3012, 20, dtype=np.float32).reshape(20, 1)
    assert value_tolerance(ref) == pytest.approx(1.1)
    v = verify_outputs([np.full_like(ref, 3001.0)], [ref], None)
    assert v["value_agreement"] <= 0.15, v  # only the frames within 1.1 of the middle


def test_a_probability_is_held_to_a_twentieth_of_its_unit_range() -> None:
    ref = np.linspace(0.97, 0.99, 20, dtype=np.float32).reshape(20, 1)  # a confident classifier
    assert value_tolerance(ref) == pytest.approx(0.05)  # not 5% of its 0.02 spread
    assert verify_outputs([ref - 0.04], [ref], None)["value_agreement"] == 1.0
