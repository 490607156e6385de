"""Bandwidth traces: the real Mahimahi uplink traces against their README table, the simple
`time_s,mbps` format, built-in constant/step traces, and every bad input named with file,
line and text."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from splitpoint.errors import ConfigError, show_value
from splitpoint.traces import (
    MAX_TRACE_S,
    BandwidthTrace,
    constant,
    load_mahimahi,
    load_simple,
    load_trace,
    step,
)

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


# file: (mean Mbps, 10th pct, 90th pct, max) from ../shared/data/traces/README.md (1 s windows)
README_TABLE = {
    "TMobile-LTE-short.up": (13.2, 3.3, 25.3, 29.8),
    "Verizon-LTE-short.up": (5.9, 2.3, 10.6, 13.0),
    "ATT-LTE-driving-2016.up": (1.9, 0.2, 3.7, 12.8),
    "ATT-LTE-driving.up": (0.8, 0.01, 1.2, 1.3),
    "Verizon-EVDO-driving.up": (0.8, 0.2, 1.2, 1.8),
}
README_LENGTH_S = {
    "TMobile-LTE-short.up": 140, "Verizon-LTE-short.up": 140, "ATT-LTE-driving-2016.up": 120,
    "ATT-LTE-driving.up": 1012, "Verizon-EVDO-driving.up": 1065,
}


@pytest.fixture
def real_trace(shared_file: Callable[[str], Path]) -> Callable[[str], Path]:
    """A real trace from ../shared/data/traces (missing: skipped, but a failure in CI)."""
    return lambda name: shared_file(f"data/traces/{name}")


def test_missing_shared_data_fails_in_ci_and_skips_elsewhere(shared_file: Callable[[str], Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-trace.up is missing.*CI=true"):
        shared_file("data/traces/no-such-trace.up")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-such-trace.up is missing"):
        shared_file("data/traces/no-such-trace.up")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- real Mahimahi traces
@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_real_trace_matches_readme(name: str, real_trace: Callable[[str], Path]) -> None:
    trace = load_trace(real_trace(name))
    mean, p10, p90, top = README_TABLE[name]
    assert trace.name == name
    assert trace.repeat
    assert trace.duration_s == pytest.approx(README_LENGTH_S[name], abs=1.0)
    assert trace.mean_bps / 1e6 == pytest.approx(mean, rel=0.10)
    assert trace.percentile_bps(90) / 1e6 == pytest.approx(p90, rel=0.10)
    assert trace.percentile_bps(100) / 1e6 == pytest.approx(top, rel=0.10)
    # the table's 10th percentiles are rounded to one digit: compare loosely
    assert trace.percentile_bps(10) / 1e6 == pytest.approx(p10, rel=0.35, abs=0.06)


def test_named_means(real_trace: Callable[[str], Path]) -> None:
    """The two the benchmark uses most, spelled out."""
    assert load_mahimahi(real_trace("Verizon-LTE-short.up")).mean_bps / 1e6 == pytest.approx(5.9, rel=0.1)
    assert load_mahimahi(real_trace("ATT-LTE-driving-2016.up")).mean_bps / 1e6 == pytest.approx(1.9, rel=0.1)


def test_mahimahi_binning_and_opportunities(real_trace: Callable[[str], Path]) -> None:
    path = real_trace("Verizon-LTE-short.up")
    trace = load_mahimahi(path)
    raw = np.loadtxt(path, dtype=np.int64)
    assert trace.opportunities_s is not None and len(trace.opportunities_s) == len(raw)
    assert trace.opportunities_s[-1] == pytest.approx(raw[-1] / 1000)
    # 100 ms bins: the bin rate is packets * 1500 * 8 / 0.1 s
    packets = int(np.count_nonzero((raw >= 500) & (raw < 600)))
    assert trace.rate_bps(0.55) == pytest.approx(packets * 12000 / 0.1)
    # one period carries exactly every opportunity's packet
    assert trace.bits_between(0, trace.duration_s) == pytest.approx(len(raw) * 12000)
    coarse = load_mahimahi(path, bin_ms=1000)
    assert coarse.mean_bps == pytest.approx(trace.mean_bps)
    assert len(coarse.segments) == 140


def test_trace_repeats(real_trace: Callable[[str], Path]) -> None:
    trace = load_mahimahi(real_trace("ATT-LTE-driving-2016.up"))
    d = trace.duration_s
    for t in (0.05, 3.3, 77.7):
        assert trace.rate_bps(t + d) == trace.rate_bps(t)
        assert trace.rate_bps(t + 5 * d) == trace.rate_bps(t)
    assert trace.bits_between(0, 3 * d) == pytest.approx(3 * trace.bits_between(0, d))


def test_the_longest_outage_a_slice_runs_into(tmp_path: Path, real_trace: Callable[[str], Path]) -> None:
    # 199 packets in 199 ms, then nothing until 600 s: a 1 s slice averages 2.4 Mbps and goes dark
    gap = load_trace(write(tmp_path, "gap.up", "".join(f"{ms}\n" for ms in range(1, 200)) + "600000\n"))
    assert gap.bits_between(0, 1) / 1e6 == pytest.approx(2.39, abs=0.01)
    start, length = gap.longest_outage(0.0, 1.0)
    assert start == pytest.approx(0.2) and length == pytest.approx(599.7)
    assert gap.longest_outage(0.0, 1.0, limit_s=10.0)[1] == pytest.approx(10.8)  # counted to 10 s past the slice
    # a repeating trace wraps; the part before t0 is not counted; an outage starting at t1 is not the slice's
    t = BandwidthTrace([0.0, 1.0, 2.0], [1e6, 0.0, 1e6], duration_s=3.0, repeat=True, name="t")
    assert t.longest_outage(0.0, 3.0) == pytest.approx((1.0, 1.0))
    assert t.longest_outage(1.5, 1.6) == pytest.approx((1.5, 0.5))
    assert t.longest_outage(2.5, 4.5) == pytest.approx((4.0, 1.0))  # 1-2 s of the second period
    assert t.longest_outage(2.5, 4.0) == (2.5, 0.0)  # it starts at t1
    assert t.longest_outage(2.0, 4.0) == (2.0, 0.0)
    assert constant(5).longest_outage(0.0, 100.0) == (0.0, 0.0)
    dark_end = BandwidthTrace([0.0, 1.0], [1e6, 0.0], repeat=False, name="dies")  # the last rate holds
    assert dark_end.longest_outage(0.0, 2.0, limit_s=30.0) == pytest.approx((1.0, 31.0))
    # the real ATT trace's 78 s outage, inside none of the bench's default slices
    att = load_mahimahi(real_trace("ATT-LTE-driving.up"))
    assert att.longest_outage(0.0, att.duration_s, limit_s=0.0) == pytest.approx((787.6, 78.3), abs=0.05)
    assert att.longest_outage(0.0, 20.0)[1] < 8.0


# ---------------------------------------------------------------- small Mahimahi files
def test_mahimahi_one_packet_per_ms_is_12_mbps(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "fixed.up", "1\n"))
    assert trace.mean_bps == pytest.approx(12e6)
    assert trace.rate_bps(123.4567) == pytest.approx(12e6)


def test_mahimahi_repeated_timestamps(tmp_path: Path) -> None:
    # 3 packets at 50 ms, 1 at 150 ms, 200 ms long: bins 0-100 ms: 3, 100-200 ms: 1 (+ the one at 200)
    trace = load_mahimahi(write(tmp_path, "t.down", "50\n50\n50\n150\n200\n"))
    assert trace.duration_s == pytest.approx(0.2)
    assert trace.rate_bps(0.01) == pytest.approx(3 * 12000 / 0.1)
    assert trace.rate_bps(0.15) == pytest.approx(2 * 12000 / 0.1)
    assert trace.mean_bps == pytest.approx(5 * 12000 / 0.2)


@pytest.mark.parametrize(
    ("text", "lineno", "bad", "why"),
    [
        ("1\n2\nabc\n4\n", 3, "abc", "integer"),
        ("1\n2\n2.5\n", 3, "2.5", "integer"),
        ("10\n20\n15\n", 3, "15", "decrease"),
        ("5\n-1\n", 2, "-1", ">= 0"),
        ("1\n\n2\n1 2\n", 4, "1 2", "integer"),
        # past the 6 h cap: an OverflowError traceback, and gigabytes of 100 ms bins before dying
        ("1\n99999999999999999999999\n", 2, "99999999999999999999999", "at most 21600000 ms"),
        ("1\n1000000000\n", 2, "1000000000", "at most 21600000 ms"),
    ],
)
def test_bad_mahimahi_names_file_line_and_text(tmp_path: Path, text: str, lineno: int, bad: str, why: str) -> None:
    path = write(tmp_path, "bad.up", text)
    with pytest.raises(ConfigError) as err:
        load_trace(path)
    assert err.value.key == f"{path}:{lineno}"
    assert err.value.value == bad
    assert why in err.value.reason
    assert str(path) in str(err.value) and show_value(bad) in str(err.value)


def test_a_trace_as_long_as_the_cap_loads(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "long.up", f"0\n{MAX_TRACE_S * 1000}\n"))
    assert trace.duration_s == MAX_TRACE_S and len(trace.segments) == MAX_TRACE_S * 10
    assert load_trace(write(tmp_path, "long.csv", f"7,1\n{MAX_TRACE_S + 7},2\n")).segments[-1][0] == MAX_TRACE_S


@pytest.mark.parametrize("text", ["", "\n\n", "0\n0\n"])
def test_empty_or_zero_length_mahimahi(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty.up", text)
    with pytest.raises(ConfigError) as err:
        load_mahimahi(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_trace(tmp_path / "nope.up")
    assert "nope.up" in str(err.value)


# ---------------------------------------------------------------- simple format
def test_simple_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "link.csv", "# a drone flight\ntime_s,mbps\n0,10\n1.5, 2  # behind a building\n3,0\n4.5,20\n")
    trace = load_trace(path)
    assert trace.name == "link.csv"
    assert trace.rate_bps(0.0) == 10e6
    assert trace.rate_bps(1.49) == 10e6
    assert trace.rate_bps(1.5) == 2e6
    assert trace.rate_bps(3.2) == 0.0
    assert trace.rate_bps(5.0) == 20e6
    # the last rate lasts the median interval (1.5 s), then the trace repeats
    assert trace.duration_s == pytest.approx(6.0)
    assert trace.rate_bps(6.1) == 10e6
    assert trace.mean_bps == pytest.approx((10 + 2 + 0 + 20) * 1.5 / 6.0 * 1e6)
    assert trace.bits_between(1.0, 2.0) == pytest.approx(0.5 * 10e6 + 0.5 * 2e6)


def test_simple_whitespace_and_offset_times(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "link.txt", "100.0   8\n101.0\t4\n\n102.0 8\n"))
    assert trace.rate_bps(0.5) == 8e6 and trace.rate_bps(1.5) == 4e6 and trace.rate_bps(2.5) == 8e6
    assert trace.duration_s == pytest.approx(3.0)


def test_simple_without_repeat_holds_last_rate(tmp_path: Path) -> None:
    trace = load_simple(write(tmp_path, "link.txt", "0 50\n2 2\n4 50\n"), repeat=False)
    assert not trace.repeat
    assert trace.rate_bps(3.0) == 2e6 and trace.rate_bps(1000.0) == 50e6


@pytest.mark.parametrize(
    ("text", "lineno", "bad", "why"),
    [
        ("0,10\n1,x\n", 2, "1,x", "numbers"),
        ("0,10\n1,2,3\n", 2, "1,2,3", "two fields"),
        ("0,10\n1\n", 2, "1", "two fields"),
        ("0,10\n2,5\n1,5\n", 3, "1,5", "increase"),
        ("0,10\n1,-5\n", 2, "1,-5", ">= 0"),
        ("0,10\n1,nan\n", 2, "1,nan", "finite"),
        ("# c\n0,10\n-1,4\n", 3, "-1,4", ">= 0"),
        ("5,10\n21606,4\n", 2, "21606,4", "at most 21600 s"),  # measured from the first line
    ],
)
def test_bad_simple_names_file_line_and_text(tmp_path: Path, text: str, lineno: int, bad: str, why: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(ConfigError) as err:
        load_trace(path)
    assert err.value.key == f"{path}:{lineno}"
    assert err.value.value == bad
    assert why in err.value.reason


@pytest.mark.parametrize("text", ["# nothing\n", "0,0\n1,0\n"])
def test_simple_empty_or_all_zero(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_simple(write(tmp_path, "z.csv", text))


# ---------------------------------------------------------------- constant and step
def test_constant() -> None:
    trace = constant(8)
    assert trace.rate_bps(0) == trace.rate_bps(12345.6) == 8e6
    assert trace.mean_bps == 8e6 and trace.percentile_bps(10) == 8e6
    assert trace.bits_between(0.25, 2.25) == pytest.approx(16e6)
    for bad in (0, -1, math.inf, math.nan, "8"):
        with pytest.raises(ConfigError):
            constant(bad)  # type: ignore[arg-type]


def test_step_50_2_50() -> None:
    trace = step([(0, 50), (2, 2), (4, 50)])
    assert not trace.repeat and trace.duration_s == 4
    assert [trace.rate_bps(t) / 1e6 for t in (0, 1.99, 2, 3.9, 4, 100)] == [50, 50, 2, 2, 50, 50]
    assert trace.mean_bps == pytest.approx(26e6)
    assert trace.bits_between(1, 5) == pytest.approx(50e6 + 4e6 + 50e6)
    looped = step([(0, 50), (2, 2)], period_s=3)
    assert looped.rate_bps(3.5) == 50e6 and looped.rate_bps(5.5) == 2e6


@pytest.mark.parametrize(
    "schedule",
    [[], [(1, 5)], [(0, 5), (0, 6)], [(0, 5), (2, 1), (1, 3)], [(0, -1)], [(0, 0)], [(0, 5, 1)], ["x"]],
)
def test_bad_step(schedule: list) -> None:
    with pytest.raises(ConfigError):
        step(schedule)


def test_window_rates_and_percentiles() -> None:
    trace = step([(0, 10), (1, 20), (2, 30), (3, 40)], period_s=4)
    assert trace.window_rates_bps(1.0).tolist() == pytest.approx([10e6, 20e6, 30e6, 40e6])
    assert trace.window_rates_bps(2.0).tolist() == pytest.approx([15e6, 35e6])
    assert trace.percentile_bps(0) == 10e6 and trace.percentile_bps(100) == 40e6
    with pytest.raises(ConfigError):
        trace.percentile_bps(101)
    with pytest.raises(ConfigError):
        trace.window_rates_bps(0)


def test_trace_constructor_checks() -> None:
    with pytest.raises(ConfigError):
        BandwidthTrace([0.5], [1e6], duration_s=1)
    with pytest.raises(ConfigError):
        BandwidthTrace([0, 1], [1e6, 2e6], duration_s=1)
    with pytest.raises(ConfigError):
        BandwidthTrace([0], [1e6])          # repeating without a period
