"""Split numbers in messages and logs (splitpoint.bundle.split_ranges): the inverse of --splits."""

from __future__ import annotations

import pytest

from splitpoint.bundle import split_ranges

pytestmark = pytest.mark.edge_side  # no TensorFlow needed


def test_consecutive_splits_read_as_ranges() -> None:
    assert split_ranges(range(156)) == "0-155"  # a MobileNetV2 bundle: not 156 numbers
    assert split_ranges([18, 0, 1, 2, 3, 8, 17, 3]) == "0-3, 8, 17-18"  # any order, repeats once
    assert split_ranges([5]) == "5" and split_ranges([]) == "none"


def test_the_ranges_parse_back_as_the_same_splits() -> None:
    from splitpoint.partition import parse_splits

    for ks in ([0, 8, 17, 26, 53, 89, 115, 142, 150, 154, 155], list(range(3, 40)), [1, 2, 4, 5, 7]):
        assert parse_splits(split_ranges(ks).replace(" ", "")) == ks
