"""What the planner computes with is bounded: a profile's splits within the bundle, its times,
bytes and watts within what a device could measure, and power tables and radio files likewise."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from scheduler.objectives import PolicyConfig
from scheduler.power_models import PowerTable, RadioModel
from scheduler.profiles import Profile, SplitProfile, StageStats, load_profile
from splitpoint.errors import ConfigError

pytestmark = pytest.mark.edge_side

K = 3
DIGEST = "sha256:test"


def profile(side: str) -> Profile:
    splits = {k: SplitProfile(k, 1000 * (K - k), StageStats.of([1.0 + k, 2.0 + k, 3.0 + k])) for k in range(K + 1)}
    return Profile(side, DIGEST, "synthetic", {}, splits)


def saved(tmp_path: Path, side: str, change: Any = None) -> Path:
    path = tmp_path / f"{side}.json"
    profile(side).save(path)
    if change is not None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return path


def test_a_split_beyond_the_bundles_k_is_refused_where_policies_are_built(tmp_path: Path) -> None:
    """The cost model takes the edge profile's highest split for K: split 3 renamed 999 (same
    digest) made k = 3 an offload with a round trip, and `policy explain` and the agent took it."""
    from scheduler.planner import build_cost_model, build_policy

    def rename(d: dict[str, Any]) -> None:
        d["splits"][2]["split"] = 999

    edge, cloud = saved(tmp_path, "edge"), saved(tmp_path, "cloud")
    cfg = PolicyConfig(name="min-latency", edge_profile=str(edge), cloud_profile=str(cloud))
    assert build_policy(cfg, DIGEST, K, None).choose(list(range(K + 1))) in range(K + 1)
    for side in ("edge", "cloud"):
        bad = saved(tmp_path / side, side, rename)
        named = PolicyConfig(name="min-latency", **{"edge_profile": str(edge), "cloud_profile": str(cloud),
                                                     f"{side}_profile": str(bad)})
        said = rf"^{bad}: splits\[2\]\.split = 999: not a split of the bundle \(0-{K}\)$"
        with pytest.raises(ConfigError, match=said):
            build_policy(named, DIGEST, K, None)  # the agent
        with pytest.raises(ConfigError, match=said):
            build_cost_model(named, DIGEST, num_layers=K)  # policy explain
    assert max(load_profile(saved(tmp_path / "show", "edge", rename)).splits) == 999  # no bundle to judge by


@pytest.mark.parametrize(("change", "said"), [
    (lambda d: d["splits"][1].update(wire_bytes=10**400),
     r'splits\[1\]\.wire_bytes = "10000000\.\.\. \(401 digits\)": must be at most 2146435072 \(2047 MiB'),
    (lambda d: d["splits"][1]["latency"].update(median_ms=1e308),
     r"splits\[1\]\.latency\.median_ms = 1e\+308: must be at most 3\.6e\+06 \(ms\), an hour, longer than any split"
     r" of a frame takes$"),
    (lambda d: d["splits"][1]["latency"].update(std_ms=4e6), r"splits\[1\]\.latency\.std_ms = 4000000: must be at most"),
    (lambda d: d["splits"][1]["latency"].update(samples=-1), r"splits\[1\]\.latency\.samples = -1: must be a whole"),
    (lambda d: d["splits"][1]["latency"].update(samples=2.5), r"splits\[1\]\.latency\.samples = 2\.5: must be a whole"),
    (lambda d: d["splits"][1]["latency"].update(p95_ms=0.5),
     r"splits\[1\]\.latency\.p95_ms = 0\.5: is below median_ms \(3\.0\): a 95th percentile is never below"),
    (lambda d: d["splits"][1].update(latency="fast"), r'splits\[1\]\.latency = "fast": must be a JSON object of'),
    (lambda d: d["splits"][1]["latency"].update(typo=1), r"splits\[1\]\.latency\.typo = 1: unknown key"),
    (lambda d: d["splits"][1].update(power_w=1e308),
     r"splits\[1\]\.power_w = 1e\+308: must be at most 1000 \(W\), more than any edge board draws$"),
    (lambda d: d.update(idle_power_w=5e3), r"idle_power_w = 5000: must be at most 1000 \(W\), more than any edge board draws$"),
])
def test_a_profile_figure_out_of_bounds_is_named(tmp_path: Path, change: Any, said: str) -> None:
    """10**400 wire bytes was an OverflowError traceback in the planner; a median of 1e308 ms, -1
    samples and a p95 below the median were taken."""
    path = saved(tmp_path, "edge", change)
    with pytest.raises(ConfigError, match="^" + str(path) + ": " + said):
        load_profile(path, "edge", DIGEST)


@pytest.mark.parametrize(("table", "said"), [
    ({"source": "x", "idle_w": 1e308, "default_head_w": 3},
     r"^idle_w = 1e\+308: must be at most 1000 \(W\), more than any edge board draws in power table$"),
    ({"source": "x", "idle_w": 1, "head_w": [3, 2e3]},
     r"^head_w\[1\] = 2000: must be at most 1000 \(W\), more than any edge board draws in power table$"),
    ({"source": "x", "idle_w": 1, "head_w": {"01": 3, "1": 4}}, r"^head_w\.1 = 4: split 1 is given twice"),
])
def test_a_power_table_beyond_any_board_is_refused(table: dict[str, Any], said: str) -> None:
    """idle_w = 1e308 made every predicted energy inf (`Infinity` in --json); "01" and "1" merged."""
    with pytest.raises(ConfigError, match=said):
        PowerTable.from_dict(table)


@pytest.mark.parametrize(("field", "value", "shown", "most"), [
    ("alpha_mw_per_mbps", 1e308, "1e+308", "100000 (mW/Mbps), 200 times the published LTE slope"),
    ("beta_mw", 2e6, "2000000", "1e+06 (mW), more than any radio draws"),
    ("idle_mw", 2e6, "2000000", "1e+06 (mW), more than any radio draws"),
])
def test_a_radio_beyond_any_board_is_refused(field: str, value: float, shown: str, most: str) -> None:
    said = f"lte.{field} = {shown}: must be at most {most} in radio model"
    with pytest.raises(ConfigError, match=f"^{re.escape(said)}$"):
        RadioModel.from_dict({"lte": {field: value}})
    assert RadioModel.from_dict({"lte": {field: 1.0}}).params("lte")


@pytest.mark.parametrize("text", ["1e308", "1e308bps", "1e300Mbps", "1100Gbps", "1e400Mbps"])
def test_a_rate_faster_than_any_uplink_is_refused_with_or_without_its_unit(text: str) -> None:
    """A bare `1e308` (bit/s) was planned with, and `policy explain --json` wrote "energy_mj": Infinity;
    only `1e308Mbps` (inf) was refused."""
    from scheduler.planner import parse_bandwidth

    with pytest.raises(ConfigError, match=r"is too large to be a rate: above 1e\+12 bit/s \(1Tbps\)"):
        parse_bandwidth(text)
    assert parse_bandwidth("1e12") == parse_bandwidth("1000Gbps") == 1e12


def test_a_profile_that_cannot_be_written_is_named_and_the_old_one_kept(tmp_path: Path) -> None:
    """On a full disk `profile edge -o p.json` said only "No space left on device", after every
    split was measured. A file-size limit makes the write fail for real (EFBIG), without root."""
    import resource
    import signal

    from splitpoint.errors import SplitpointError

    path = saved(tmp_path, "edge")
    before = path.read_bytes()
    big = profile("edge")
    big.device = {"notes": "x" * 100_000}
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, limits[1]))
    try:
        with pytest.raises(SplitpointError) as err:
            big.save(path, "-o")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert str(err.value) == (f'-o = "{path}": could not be written (File too large); what was there is left as it was')
    assert err.value.exit_code == 1 and path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_negative_policy_split_is_refused_when_the_config_is_read() -> None:
    """`policy.split = -1` passed `--print-config`; only the agent's start refused it."""
    with pytest.raises(ConfigError, match=r"^policy\.split = -1: must be a split number >= 0$"):
        PolicyConfig(name="fixed", split=-1).validate()
    PolicyConfig(name="fixed", split=0).validate()


def test_a_deadline_past_an_hour_is_refused_as_profile_times_are() -> None:
    """deadline_ms took anything up to every time key's cap (24.8 days), though no split is planned
    with a time past an hour (MAX_STAGE_MS): the deadline is bounded as the profiles' times are."""
    from scheduler.objectives import MAX_DEADLINE_MS
    from scheduler.profiles import MAX_STAGE_MS

    assert MAX_DEADLINE_MS == MAX_STAGE_MS == 3_600_000
    with pytest.raises(ConfigError, match=r"^policy\.deadline_ms = 3600001: must be at most 3600000 ms \(an hour"):
        PolicyConfig(name="min-energy", deadline_ms=3_600_001, edge_profile="e", cloud_profile="c").validate()
    PolicyConfig(name="min-energy", deadline_ms=3_600_000, edge_profile="e", cloud_profile="c").validate()


def test_an_energy_budget_past_a_kilowatt_hour_is_refused() -> None:
    """energy_budget_mj took any finite number (1e308): 1 kW, more than any edge board may draw
    (MAX_WATTS), for an hour, the longest time a profile plans with, bounds it."""
    from scheduler.objectives import MAX_ENERGY_BUDGET_MJ
    from scheduler.power_models import MAX_WATTS
    from scheduler.profiles import MAX_STAGE_MS

    assert MAX_ENERGY_BUDGET_MJ == MAX_WATTS * MAX_STAGE_MS == 3_600_000_000
    for budget in (3_600_000_001, 1e308):
        with pytest.raises(ConfigError, match=r"^policy\.energy_budget_mj = \S+: must be at most 3600000000 mJ \(1 kWh"):
            PolicyConfig(name="min-latency", energy_budget_mj=budget, edge_profile="e", cloud_profile="c").validate()
    PolicyConfig(name="min-latency", energy_budget_mj=3_600_000_000, edge_profile="e", cloud_profile="c").validate()
