"""Power meters on fake sysfs trees, power tables, the radio model and the battery level.

Timing: windows are a few hundred milliseconds and every assertion that depends on when a
thread ran only checks bounds that hold whatever the scheduler did (the first and last
samples of a window are taken synchronously).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import meters
from scheduler import rapl as rapl_meter
from scheduler.power import (
    RADIO_DEFAULTS,
    BatteryGauge,
    HwmonMeter,
    PowerMeter,
    PowerTable,
    PowerWindow,
    RadioModel,
    RaplMeter,
    find_meter,
    read_battery_percent,
)
from splitpoint.errors import BackendUnavailableError, ConfigError

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


def put(path: Path, value: object) -> None:
    """Write a sysfs-style attribute atomically, so a reader thread never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def hwmon(root: Path, n: int, name: str | None, **attrs: object) -> Path:
    d = root / f"hwmon{n}"
    d.mkdir(parents=True)
    if name is not None:
        put(d / "name", name)
    for attr, value in attrs.items():
        put(d / attr, value)
    return d


def rapl(root: Path, name: str, energy_uj: int, max_uj: int = 262143328850, label: str = "package-0") -> Path:
    d = root / name
    put(d / "name", label)
    put(d / "energy_uj", energy_uj)
    put(d / "max_energy_range_uj", max_uj)
    return d


# --------------------------------------------------------------------------- hwmon discovery


def test_hwmon_power_input_is_found_and_read_as_microwatts(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "cpu_thermal", temp1_input=45000)
    hwmon(tmp_path, 1, "rpi_volt", in0_lcrit_alarm=0)
    hwmon(tmp_path, 2, "ina219", power1_input=2500000, curr1_input=500, in0_input=1, in1_input=5000)
    meter = HwmonMeter(tmp_path)
    assert meter.description == "ina219 hwmon2 power1"
    assert meter.read_watts() == pytest.approx(2.5)
    assert isinstance(meter, PowerMeter)


def test_hwmon_current_times_voltage_pairs_by_index(tmp_path: Path) -> None:
    # ina3221-style: curr<i> pairs with in<i>; in4 (a shunt voltage) and curr3 (no in3) do not pair.
    hwmon(tmp_path, 0, "ina3221", curr1_input=500, in1_input=5000, curr3_input=100, in4_input=12,
          in1_label="VDD_IN")
    meter = HwmonMeter(tmp_path)
    assert meter.description == "ina3221 hwmon0 curr1*in1 (VDD_IN)"
    assert meter.read_watts() == pytest.approx(2.5)  # 500 mA x 5000 mV


def test_hwmon_negative_current_reads_as_magnitude(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina226", curr1_input=-400, in1_input=5000)
    assert HwmonMeter(tmp_path).read_watts() == pytest.approx(2.0)


def test_hwmon_prefers_rail_monitors_then_power_channels(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "amdgpu", power1_input=30000000)  # a GPU's power, not the board's
    hwmon(tmp_path, 1, "ina226", curr1_input=1000, in1_input=5000)
    hwmon(tmp_path, 2, "ina260", power1_input=4000000)
    assert HwmonMeter(tmp_path).description == "ina260 hwmon2 power1"


def test_hwmon_attributes_under_device_on_old_kernels(tmp_path: Path) -> None:
    d = tmp_path / "hwmon0" / "device"
    put(d / "name", "ina219")
    put(d / "power1_input", 1500000)
    meter = HwmonMeter(tmp_path)
    assert meter.description == "ina219 hwmon0 power1"
    assert meter.read_watts() == pytest.approx(1.5)


def test_hwmon_without_name_file(tmp_path: Path) -> None:
    hwmon(tmp_path, 3, None, power2_input=1000000)
    assert HwmonMeter(tmp_path).description == "? hwmon3 power2"


def test_hwmon_sensor_selection(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina219", power1_input=1000000)
    hwmon(tmp_path, 1, "ina226", power1_input=2000000, power1_label="motors")
    assert HwmonMeter(tmp_path, sensor="hwmon1/power1").read_watts() == pytest.approx(2.0)
    assert HwmonMeter(tmp_path, sensor="ina226").read_watts() == pytest.approx(2.0)
    assert HwmonMeter(tmp_path, sensor="motors").read_watts() == pytest.approx(2.0)
    with pytest.raises(ConfigError) as err:
        HwmonMeter(tmp_path, sensor="hwmon7/power1")
    assert err.value.key == "sensor" and err.value.value == "hwmon7/power1"
    assert "hwmon0/power1" in str(err.value) and "hwmon1/power1" in str(err.value)


def test_hwmon_unreadable_sensor_is_skipped_with_reason(tmp_path: Path) -> None:
    d = hwmon(tmp_path, 0, "ina219")
    (d / "power1_input").mkdir()  # reading a directory fails even as root
    with pytest.raises(BackendUnavailableError) as err:
        HwmonMeter(tmp_path)
    assert str(tmp_path) in str(err.value) and "ina219 hwmon0 power1" in str(err.value)


def test_hwmon_absent(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "cpu_thermal", temp1_input=45000)
    with pytest.raises(BackendUnavailableError, match="no hwmon power/current sensors under"):
        HwmonMeter(tmp_path)
    with pytest.raises(BackendUnavailableError):
        HwmonMeter(tmp_path / "does-not-exist")


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf])
def test_hwmon_bad_interval(tmp_path: Path, interval: float) -> None:
    hwmon(tmp_path, 0, "ina219", power1_input=1000000)
    with pytest.raises(ConfigError) as err:
        HwmonMeter(tmp_path, interval_s=interval)
    assert err.value.key == "interval_s"


# --------------------------------------------------------------------------- hwmon windows


def test_window_constant_power(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina219", power1_input=2500000)
    meter = HwmonMeter(tmp_path, interval_s=0.005)
    with meter.window() as w:
        assert w.mean_watts is None  # filled in on exit
        time.sleep(0.1)
    assert w.mean_watts == pytest.approx(2.5)
    assert w.samples >= 2
    assert w.seconds >= 0.1
    assert w.joules == pytest.approx(2.5 * w.seconds)


def test_window_constant_power_from_current_and_voltage(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina226", curr1_input=500, in1_input=5000)
    with HwmonMeter(tmp_path, interval_s=0.005).window() as w:
        time.sleep(0.05)
    assert w.mean_watts == pytest.approx(2.5)


def test_window_step_change_from_another_thread(tmp_path: Path) -> None:
    d = hwmon(tmp_path, 0, "ina219", power1_input=1000000)
    meter = HwmonMeter(tmp_path, interval_s=0.005)
    with meter.window() as w:
        time.sleep(0.1)
        writer = threading.Thread(target=put, args=(d / "power1_input", 3000000))
        writer.start()
        writer.join()
        time.sleep(0.1)
    assert w.mean_watts is not None
    assert 1.0 < w.mean_watts < 3.0
    assert w.samples >= 2


def test_window_is_filled_in_when_the_block_raises(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina219", power1_input=2000000)
    with pytest.raises(RuntimeError):
        with HwmonMeter(tmp_path).window() as w:
            raise RuntimeError("head failed")
    assert w.mean_watts == pytest.approx(2.0)


def test_window_without_any_good_reading_is_none_not_zero(tmp_path: Path) -> None:
    d = hwmon(tmp_path, 0, "ina219", power1_input=2000000)
    meter = HwmonMeter(tmp_path)
    (d / "power1_input").unlink()  # the sensor went away after discovery
    with meter.window() as w:
        time.sleep(0.02)
    assert w.mean_watts is None and w.samples == 0
    with pytest.raises(BackendUnavailableError, match="ina219 hwmon0 power1"):
        meter.read_watts()


@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 100.0)), min_size=1, max_size=30))
def test_trapezoid_mean_lies_between_min_and_max(points: list[tuple[float, float]]) -> None:
    times, watts = [], []
    t = 0.0
    for dt, w in points:
        t += dt
        times.append(t)
        watts.append(w)
    mean = meters._trapezoid_mean(times, watts)
    assert mean is not None
    assert min(watts) - 1e-9 <= mean <= max(watts) + 1e-9


def test_trapezoid_weights_by_time() -> None:
    # 1 W for 9 s, then a ramp to 3 W over the last second: mean = (9*1 + 1*2) / 10.
    assert meters._trapezoid_mean([0.0, 9.0, 10.0], [1.0, 1.0, 3.0]) == pytest.approx(1.1)
    assert meters._trapezoid_mean([], []) is None


# --------------------------------------------------------------------------- RAPL


def test_rapl_sums_packages_and_ignores_subzones(tmp_path: Path) -> None:
    p0 = rapl(tmp_path, "intel-rapl:0", 1_000_000)
    p1 = rapl(tmp_path, "intel-rapl:1", 5_000_000, label="package-1")
    rapl(tmp_path, "intel-rapl:0:0", 0, label="core")
    rapl(tmp_path, "intel-rapl-mmio:0", 0)
    meter = RaplMeter(tmp_path)
    assert meter.description == "RAPL package-0 (intel-rapl:0) + package-1 (intel-rapl:1)"
    with meter.window() as w:
        time.sleep(0.1)
        put(p0 / "energy_uj", 2_000_000)  # +1 J
        put(p1 / "energy_uj", 8_000_000)  # +3 J
        time.sleep(0.1)
    assert w.joules == pytest.approx(4.0, rel=0.2)  # span between reads vs. the with block
    assert w.mean_watts is not None and 4.0 / (w.seconds * 1.2) < w.mean_watts < 4.0 / (w.seconds * 0.8)
    assert w.samples >= 2


def test_rapl_wrap_around(tmp_path: Path) -> None:
    p0 = rapl(tmp_path, "intel-rapl:0", 900_000, max_uj=1_000_000)
    with RaplMeter(tmp_path).window() as w:
        time.sleep(0.05)
        put(p0 / "energy_uj", 100_000)  # wrapped: 100 000 to the top, 100 000 after it
    assert w.joules == pytest.approx(0.2, rel=0.2)
    assert w.mean_watts is not None and w.mean_watts > 0


def test_rapl_read_watts_of_an_idle_counter(tmp_path: Path) -> None:
    rapl(tmp_path, "intel-rapl:0", 123)
    assert RaplMeter(tmp_path).read_watts(interval_s=0.01) == 0.0


def test_rapl_unreadable_counter_is_absent_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rapl(tmp_path, "intel-rapl:0", 1)
    rapl(tmp_path, "intel-rapl:1", 1, label="package-1")
    real = rapl_meter._read_int

    def deny_package_0(path: Path) -> int:  # chmod does not stop root, so fake the kernel's refusal
        if path.parent.name == "intel-rapl:0" and path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl_meter, "_read_int", deny_package_0)
    meter = RaplMeter(tmp_path)
    assert meter.description == "RAPL package-1 (intel-rapl:1)"
    (tmp_path / "intel-rapl:1" / "energy_uj").unlink()
    (tmp_path / "intel-rapl:1").rename(tmp_path / "not-rapl")
    with pytest.raises(BackendUnavailableError) as err:
        RaplMeter(tmp_path)
    assert "intel-rapl:0/energy_uj: permission denied" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_rapl_absent(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="no readable RAPL counters under"):
        RaplMeter(tmp_path)


# --------------------------------------------------------------------------- find_meter


def test_find_meter_none_names_both_paths(tmp_path: Path) -> None:
    hw, pc = tmp_path / "hwmon", tmp_path / "powercap"
    hw.mkdir()
    meter, why = find_meter(hwmon_root=hw, rapl_root=pc)
    assert meter is None
    assert why.startswith("no power meter found: ")
    assert f"under {hw}" in why and f"under {pc}" in why
    assert "policy.power_table = FILE" in why  # the agent's key: `splitpoint edge` has no --power-table


def test_find_meter_prefers_hwmon_then_rapl(tmp_path: Path) -> None:
    hw, pc = tmp_path / "hwmon", tmp_path / "powercap"
    rapl(pc, "intel-rapl:0", 1)
    meter, why = find_meter(hwmon_root=hw, rapl_root=pc)
    assert isinstance(meter, RaplMeter) and "RAPL package-0" in why
    hwmon(hw, 0, "ina219", power1_input=1)
    meter, why = find_meter(hwmon_root=hw, rapl_root=pc)
    assert isinstance(meter, HwmonMeter) and "ina219 hwmon0 power1" in why


def test_find_meter_on_this_machine_does_not_crash() -> None:
    meter, why = find_meter()
    assert isinstance(why, str) and why
    if meter is not None:
        assert isinstance(meter, PowerMeter)
        with meter.window() as w:
            time.sleep(0.02)
        assert isinstance(w, PowerWindow)


# --------------------------------------------------------------------------- power table


def test_power_table_toml(tmp_path: Path) -> None:
    path = tmp_path / "pi.toml"
    path.write_text(
        'device = "Raspberry Pi 4 + Coral USB"\n'
        'source = "USB-C meter between supply and Pi, 60 s per split"\n'
        "idle_w = 3.1\n"
        '[head_w]\n"0" = 3.1\n"1" = 4.4\n"2" = 4.9\n'
    )
    table = PowerTable.load(path)
    assert table.idle_w == 3.1 and table.device == "Raspberry Pi 4 + Coral USB"
    assert table.splits == [0, 1, 2]
    assert table.head_power(1) == 4.4
    with pytest.raises(ConfigError) as err:
        table.head_power(5)
    assert err.value.key == "head_w.5"
    assert "split 5" in str(err.value) and "0, 1, 2" in str(err.value)


def test_power_table_json_list_and_default(tmp_path: Path) -> None:
    path = tmp_path / "pi.json"
    path.write_text(json.dumps({"idle_w": 2, "source": "bench", "head_w": [2.5, 3], "default_head_w": 4}))
    table = PowerTable.load(path)
    assert table.device is None
    assert table.head_power(0) == 2.5 and table.head_power(1) == 3.0
    assert table.head_power(9) == 4.0


def test_power_table_nan_in_json(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"source": "m", "idle_w": 1, "head_w": {"0": NaN}}')
    with pytest.raises(ConfigError) as err:
        PowerTable.load(path)
    assert err.value.key == "head_w.0" and math.isnan(err.value.value)
    assert str(err.value) == f"head_w.0 = nan: must be a finite number >= 0 (W) in power table {path}"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.toml", None, "file not found"),
        ("bad.toml", "idle_w = = 1", "not valid TOML"),
        ("bad.json", "{idle_w: 1}", "not valid JSON"),
        ("list.json", "[1, 2]", "JSON object"),
        ("missing.json", None, "file not found"),
    ],
)
def test_power_table_bad_files(tmp_path: Path, name: str, content: str | None, reason: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        PowerTable.load(path)
    assert err.value.key == "--power-table" and err.value.value == str(path)
    assert reason in err.value.reason


# --------------------------------------------------------------------------- radio model


def test_radio_defaults_match_the_paper() -> None:
    radio = RadioModel()
    assert radio.tx_watts(5e6, "lte") == pytest.approx((438.39 * 5 + 1288.04) / 1000)
    assert radio.tx_watts(5e6) == radio.tx_watts(5e6, "lte")
    assert radio.tx_watts(2e6, "wifi") == pytest.approx((283.17 * 2 + 132.86) / 1000)
    assert radio.tx_watts(0, "lte") == pytest.approx(1.28804)
    assert radio.idle_watts("lte") == pytest.approx(1.06)
    assert radio.idle_watts("wifi") == 0.0
    assert "MobiSys 2012" in RADIO_DEFAULTS["lte"].source


def test_radio_overrides_and_new_link_types(tmp_path: Path) -> None:
    path = tmp_path / "radio.toml"
    path.write_text(
        "[lte]\nalpha_mw_per_mbps = 500.0\n\n"
        '[lora]\nalpha_mw_per_mbps = 10000\nbeta_mw = 400\nsource = "datasheet"\n'
    )
    radio = RadioModel.load(path)
    assert radio.tx_watts(1e6, "lte") == pytest.approx((500.0 + 1288.04) / 1000)  # beta kept
    assert radio.idle_watts("lte") == pytest.approx(1.06)
    assert radio.params("lte").source == f"radio model {path}"
    assert radio.tx_watts(1e5, "lora") == pytest.approx((1000 + 400) / 1000)
    assert radio.params("lora").source == "datasheet" and radio.idle_watts("lora") == 0.0
    assert radio.tx_watts(1e6, "wifi") == RadioModel().tx_watts(1e6, "wifi")  # untouched


def test_radio_json(tmp_path: Path) -> None:
    path = tmp_path / "radio.json"
    path.write_text(json.dumps({"wifi": {"beta_mw": 200, "idle_mw": 50}}))
    radio = RadioModel.load(path)
    assert radio.tx_watts(0, "wifi") == pytest.approx(0.2) and radio.idle_watts("wifi") == pytest.approx(0.05)


#: (file, text, key, value): a power table's or a radio file's bad figure or key, named with its value
_BAD_VALUES = [
    *[("t.toml", text, key, value) for text, key, value in [
        ('source = "m"\nidle_w = -1\nhead_w = [1]', "idle_w", -1),
        ('source = "m"\nidle_w = "3"\nhead_w = [1]', "idle_w", "3"),
        ('source = "m"\nidle_w = true\nhead_w = [1]', "idle_w", True),
        ('source = "m"\nidle_w = inf\nhead_w = [1]', "idle_w", math.inf),
        ('source = "m"\nidle_w = 1\nhead_w = [1, -0.5]', "head_w[1]", -0.5),
        ('source = "m"\nidle_w = 1\n[head_w]\n"3" = "x"', "head_w.3", "x"),
        ('source = "m"\nidle_w = 1\n[head_w]\nfirst = 2.0', "head_w.first", 2.0),
        ('source = "m"\nidle_w = 1\nhead_w = 3', "head_w", 3),
        ('source = "m"\nidle_w = 1', "head_w", {}),
        ('source = "m"\nidle_w = 1\ndefault_head_w = -2', "default_head_w", -2),
        ('source = "m"\nidle_w = 1\nhead_w = [1]\nwatts = 3', "watts", 3),
        ('idle_w = 1\nhead_w = [1]', "source", None),
        ('source = "m"\nhead_w = [1]', "idle_w", None),
        ('source = 5\nidle_w = 1\nhead_w = [1]', "source", 5),
        ('source = "m"\ndevice = 1\nidle_w = 1\nhead_w = [1]', "device", 1),
    ]],
    *[("radio.toml", text, key, value) for text, key, value in [
        ("[lte]\nbeta_mw = -5", "lte.beta_mw", -5),
        ('[lte]\nalpha_mw_per_mbps = "fast"', "lte.alpha_mw_per_mbps", "fast"),
        ("[wifi]\nidle_mw = nan", "wifi.idle_mw", math.nan),
        ("[wifi]\npower = 3", "wifi.power", 3),
        ("lte = 5", "lte", 5),
        ("[sat]\nalpha_mw_per_mbps = 1", "sat.beta_mw", None),
        ("[lte]\nsource = 3", "lte.source", 3),
    ]],
]


@pytest.mark.parametrize(("name", "text", "key", "value"), _BAD_VALUES)
def test_bad_values_name_the_key_and_value(tmp_path: Path, name: str, text: str, key: str, value: object) -> None:
    """A power table (t.toml) and a radio file (radio.toml) refuse a bad figure or key alike: a
    ConfigError naming the key and the value as read (nan as nan: it equals nothing)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        (PowerTable.load if name == "t.toml" else RadioModel.load)(path)
    assert err.value.key == key
    got = err.value.value
    if isinstance(value, float) and math.isnan(value):
        assert isinstance(got, float) and math.isnan(got)
    else:
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("text", "shown"), [('[""]\nalpha_mw_per_mbps = 1\nbeta_mw = 2', "link type: "),
                                           ('[" "]\nalpha_mw_per_mbps = 1\nbeta_mw = 2', 'link type = " ": '),
                                           ('[""]\nbeta_mw = 2', "link type: ")])
def test_a_radio_link_type_without_a_name_is_refused_naming_the_file(tmp_path: Path, text: str, shown: str) -> None:
    """[""] added a link type named "" (`link = ""` then planned with it), and with fields left
    out said '.beta_mw: is required', naming no link."""
    path = tmp_path / "radio.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        RadioModel.load(path)
    assert str(err.value) == f"{shown}is empty in radio model {path}: name each table after its link type, e.g. [lte] or [lora]"
    assert err.value.key == "link type"


def test_a_radio_link_type_that_does_not_print_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "radio.toml"
    path.write_text('["\\u200b"]\nalpha_mw_per_mbps = 1\nbeta_mw = 2')  # a zero-width space: looks empty
    with pytest.raises(ConfigError, match=r"holds characters that do not print in radio model .*radio\.toml"):
        RadioModel.load(path)


def test_radio_bad_arguments() -> None:
    radio = RadioModel()
    with pytest.raises(ConfigError) as err:
        radio.tx_watts(1e6, "5g")
    assert err.value.key == "link" and "lte, wifi" in str(err.value)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError) as err:
            radio.tx_watts(bad)
        assert err.value.key == "bandwidth_bps"
    with pytest.raises(ConfigError, match="--radio = "):
        RadioModel.load("/nonexistent/radio.toml")


# --------------------------------------------------------------------------- battery


def supply(root: Path, name: str, **attrs: object) -> None:
    for attr, value in attrs.items():
        put(root / name / attr, value)


def test_battery_from_power_supply(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online=1)
    supply(tmp_path, "hid-mouse-battery", type="Battery", scope="Device", capacity=10)
    supply(tmp_path, "BAT0", type="Battery", capacity=73)
    percent, where = read_battery_percent(power_supply_root=tmp_path)
    assert percent == 73.0
    assert "BAT0" in where and str(tmp_path / "BAT0" / "capacity") in where


def test_battery_absent_and_skipped(tmp_path: Path) -> None:
    percent, why = read_battery_percent(power_supply_root=tmp_path / "none")
    assert percent is None and str(tmp_path / "none") in why
    supply(tmp_path, "BAT0", type="Battery", capacity="unknown")
    supply(tmp_path, "BAT1", type="Battery")
    percent, why = read_battery_percent(power_supply_root=tmp_path)
    assert percent is None
    assert "BAT0" in why and '"unknown"' in why and "BAT1" in why


@pytest.mark.parametrize(("content", "expected"), [("55.5\n", 55.5), ("87%", 87.0), ("0", 0.0), ("100", 100.0)])
def test_battery_from_file(tmp_path: Path, content: str, expected: float) -> None:
    path = tmp_path / "battery"
    path.write_text(content)
    percent, where = read_battery_percent(str(path))
    assert percent == expected and str(path) in where


@pytest.mark.parametrize("content", ["abc", "150", "-3", "nan"])
def test_bad_battery_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "battery"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        read_battery_percent(path)
    assert err.value.key == str(path) and err.value.value == content


def test_a_battery_file_is_shown_on_one_line(tmp_path: Path) -> None:
    """Its newline made the WARNING two lines ("= \"150<newline>\": battery level ..."); a
    line break inside could have forged a log line."""
    path = tmp_path / "battery"
    for content, shown in (("150\n", '"150"'), ("7\n12:00:00 CRITICAL x", '"7\\\\n12:00:00 CRITICAL x"')):
        path.write_text(content)
        with pytest.raises(ConfigError) as err:
            read_battery_percent(path)
        assert "\n" not in str(err.value) and f"{path} = {shown}: " in str(err.value), str(err.value)


def test_an_empty_battery_file_says_it_is_empty(tmp_path: Path) -> None:
    """It said "expected a battery level", not naming what it found (the empty value is not shown)."""
    path = tmp_path / "battery"
    path.write_text("\n")
    with pytest.raises(ConfigError, match=f"^{path}: is empty: expected a battery level"):
        read_battery_percent(path)


def test_a_battery_gauge_never_raises_and_says_why_once_per_change(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """What the running policy reads the level with: a bad battery file is "unknown" (no switch),
    never an exception that fails the frame being planned."""
    from helpers import ManualClock

    path = tmp_path / "battery"
    clock = ManualClock()
    gauge = BatteryGauge(path, quiet_s=60.0, clock=clock)

    def read(content: str | None) -> tuple[float | None, list[str]]:
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(content)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="scheduler.power_models"):
            level = gauge()
        return level, [f"{r.levelname} {r.getMessage()}" for r in caplog.records]

    assert read(None) == (None, [f"WARNING battery level unknown, so no switch to min-energy on a low battery: "
                                 f"battery file {path} does not exist (yet)"])
    assert read(None) == (None, [])  # the same reason: said once
    clock.t += 10
    assert read("150") == (None, [])  # another reason within quiet_s: not yet
    clock.t += 60
    level, said = read("151")
    assert level is None and len(said) == 1 and f'{path} = "151": battery level must be between 0 and 100' in said[0]
    assert read("73%") == (73.0, [f"INFO battery level 73% (battery file {path})"])
    assert read("72") == (72.0, [])
    level, said = read("")  # known -> unknown is said at once
    assert level is None and len(said) == 1 and "is empty" in said[0]


def test_battery_file_not_written_yet(tmp_path: Path) -> None:
    percent, why = read_battery_percent(tmp_path / "battery")
    assert percent is None and str(tmp_path / "battery") in why


# --------------------------------------------------------------------------- the shipped reference table


def test_reference_power_table_loads_and_gives_the_cost_model_its_energy() -> None:
    """The shipped Pi 4 + Coral + LTE table through the real loaders (PowerTable via the planner's
    energy_model, the built-in lte radio model) and the cost model, on a case worked out by hand:
    split 1, 10 ms head, 19,904 + 96 = 20,000 bytes at 5 Mbit/s = 32 ms, RTT 50 ms, tail 4 ms:
        5.625 W x 10 ms + (438.39 x 5 + 1288.04) mW x 32 ms + 2.7 W x (50 + 4) ms = 313.41 mJ,
    and all-edge (k = 2, 60 ms) 5.625 W x 60 ms = 337.5 mJ."""
    from scheduler.cost import FRAME_OVERHEAD_BYTES, CostModel
    from scheduler.link import LinkState
    from scheduler.objectives import PolicyConfig
    from scheduler.planner import energy_model
    from scheduler.profiles import Profile, SplitProfile, StageStats
    from splitpoint.bench.device import REFERENCE_POWER_TABLE

    table = PowerTable.load(REFERENCE_POWER_TABLE)
    assert (table.idle_w, table.head_power(0), table.head_power(1), table.head_power(155)) == (2.7, 2.7, 5.625, 5.625)
    assert "not metered" in table.source and "Huang" in table.source
    text = REFERENCE_POWER_TABLE.read_text()
    assert "NOT METERED" in text and "438.39" in text and "1288.04" in text  # the radio figures it relies on ...
    assert RADIO_DEFAULTS["lte"].alpha_mw_per_mbps == 438.39 and RADIO_DEFAULTS["lte"].beta_mw == 1288.04  # ... are the built-in ones

    def prof(side: str, ms: dict[int, float]) -> Profile:
        return Profile(side, "sha256:t", "t", {}, {k: SplitProfile(k, 20_000 - FRAME_OVERHEAD_BYTES, StageStats.constant(t))
                                                   for k, t in ms.items()})

    edge = prof("edge", {0: 0.0, 1: 10.0, 2: 60.0})
    energy = energy_model(PolicyConfig(power_table=str(REFERENCE_POWER_TABLE), link="lte"), edge)
    assert energy is not None
    cost = CostModel(edge, prof("cloud", {0: 6.0, 1: 4.0}), energy)
    pred = cost.predict(1, LinkState(5e6, 50.0))
    assert pred.transfer_ms == pytest.approx(32.0)
    assert pred.energy_mj == pytest.approx(5.625 * 10 + (438.39 * 5 + 1288.04) / 1000 * 32 + 2.7 * 54)
    assert pred.energy_mj == pytest.approx(313.41, abs=0.01)
    assert cost.predict(2, LinkState(5e6, 50.0)).energy_mj == pytest.approx(337.5)


def test_reference_files_are_package_data() -> None:
    """The wheel ships them: pyproject's package-data covers the reference table and the device files."""
    import tomllib

    from splitpoint.bench.device import DATA_DIR, REFERENCE_POWER_TABLE

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["splitpoint"]
    shipped = [REFERENCE_POWER_TABLE, *sorted((DATA_DIR / "devices").iterdir())]
    for path in shipped:
        rel = path.relative_to(DATA_DIR.parent)
        assert any(rel.match(p) for p in patterns), (rel, patterns)
