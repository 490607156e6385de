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


@pytest.mark.parametrize("text", ["\uff13", "3,\uff15", "3-\uff17", "\u0663-7"])
def test_split_numbers_are_ascii_digits(text: str) -> None:
    """partition's and bench's --splits read `\\d`, profile's int(): both took a full-width 3 as 3."""
    from splitpoint.cli_scheduler import _split_list
    from splitpoint.errors import ConfigError, PartitionError
    from splitpoint.partition import parse_splits

    with pytest.raises(PartitionError, match="is not a split number"):
        parse_splits(text)
    if "-" not in text:
        with pytest.raises(ConfigError, match=r"--splits = .* is not a split number"):
            _split_list(text, [3, 5, 7])
