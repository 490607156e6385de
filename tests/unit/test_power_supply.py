"""A Raspberry Pi's power supply (splitpoint/power_supply.py), read from stand-ins for vcgencmd
(real executables) and for the kernel's rpi_volt hwmon device (real files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.device_health import DeviceHealth
from splitpoint import power_supply
from splitpoint.power_supply import check_power, power_note, read_power

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


def vcgencmd(tmp_path: Path, body: str) -> str:
    script = tmp_path / "vcgencmd"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def hwmon(tmp_path: Path, alarm: str | None) -> Path:
    root = tmp_path / "hwmon"
    (root / "hwmon0").mkdir(parents=True)
    (root / "hwmon0" / "name").write_text("cpu_thermal\n")
    if alarm is not None:
        (root / "hwmon1").mkdir()
        (root / "hwmon1" / "name").write_text("rpi_volt\n")
        (root / "hwmon1" / "in0_lcrit_alarm").write_text(alarm + "\n")
    return root


def test_under_voltage_now_and_since_boot_is_a_warning_naming_each_bit(tmp_path: Path) -> None:
    [check] = check_power(vcgencmd(tmp_path, 'echo "throttled=0x50005"'), hwmon(tmp_path, None))
    assert check.status == "warn" and check.name == "power supply"
    assert check.detail.startswith("under-voltage now, throttled now, under-voltage since boot, throttled since "
                                   "boot (vcgencmd get_throttled = 0x50005): the Coral accelerator may drop off the "
                                   "USB bus"), check.detail


def test_a_supply_that_never_sagged_is_ok(tmp_path: Path) -> None:
    assert [c.line() for c in check_power(vcgencmd(tmp_path, 'echo "throttled=0x0"'), hwmon(tmp_path, "1"))] == [
        "[  ok] power supply: no under-voltage or throttling (vcgencmd get_throttled = 0x0)"]


def test_a_decimal_mask_is_read_too(tmp_path: Path) -> None:
    state, _ = read_power(vcgencmd(tmp_path, 'echo "throttled=065536"'), hwmon(tmp_path, None))
    assert state is not None and state.findings == ["under-voltage since boot"] and state.under_voltage


def test_an_alarm_that_cannot_be_read_is_said(tmp_path: Path) -> None:
    root = hwmon(tmp_path, "1")
    (root / "hwmon1" / "in0_lcrit_alarm").unlink()
    (root / "hwmon1" / "in0_lcrit_alarm").mkdir()  # exists, and reading it fails (EISDIR)
    state, why = read_power(None, root)
    assert state is None and why.startswith(f"no vcgencmd; {root}/hwmon1/in0_lcrit_alarm could not be read (")


def test_the_agent_warns_at_start_of_a_pi_that_reports_under_voltage(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from edge_node import assembly

    script = vcgencmd(tmp_path, 'echo "throttled=0x50000"')
    monkeypatch.setattr(power_supply.shutil, "which", lambda name: script)
    with caplog.at_level("WARNING", logger="edge_node.agent"):
        assembly.warn_of_under_voltage()
    assert [r.getMessage() for r in caplog.records] == [
        "the Pi reports under-voltage since boot, throttled since boot (vcgencmd get_throttled = 0x50000): the "
        "Coral accelerator may drop off the USB bus and fail every run; use the Pi's official supply or a powered "
        "USB hub (docs/field-deployment.md, Power)"]


def test_throttling_alone_warns_of_slower_runs(tmp_path: Path) -> None:
    [check] = check_power(vcgencmd(tmp_path, 'echo "throttled=0x80008"'), hwmon(tmp_path, None))
    assert check.status == "warn" and check.detail == (
        "soft temperature limit now, soft temperature limit since boot (vcgencmd get_throttled = 0x80008): heads "
        "and local runs are slower than profiled while the CPU is throttled; check cooling")


def test_without_a_working_vcgencmd_the_hwmon_alarm_is_read(tmp_path: Path) -> None:
    """vcgencmd without /dev/vcio (a user not in group video) fails; the kernel still says 'now'."""
    failing = vcgencmd(tmp_path, 'echo "VCHI initialization failed" >&2; exit 255')
    state, why = read_power(failing, hwmon(tmp_path, "1"))
    assert state is not None and state.under_voltage and state.findings == ["under-voltage now"]
    assert state.reading == f"{tmp_path}/hwmon/hwmon1/in0_lcrit_alarm = 1" and why == ""
    state, _ = read_power(failing, hwmon(tmp_path / "b", "0"))
    assert state is not None and not state.under_voltage and state.describe().startswith("no under-voltage")


def test_nothing_to_read_is_said_plainly_as_a_skip(tmp_path: Path) -> None:
    failing = vcgencmd(tmp_path, 'echo "VCHI initialization failed" >&2; exit 255')
    assert [c.line() for c in check_power(failing, hwmon(tmp_path, None))] == [
        "[skip] power supply: nothing reports it here (vcgencmd get_throttled said 'VCHI initialization failed' "
        "(it needs /dev/vcio: is this user in group video?); no rpi_volt hwmon device): not a Raspberry Pi?"]
    assert [c.status for c in check_power(None, tmp_path / "none")] == ["skip"]


def test_a_vcgencmd_that_answers_bytes_is_not_a_crash(tmp_path: Path) -> None:
    state, why = read_power(vcgencmd(tmp_path, r"printf '\377\376 garbage'"), hwmon(tmp_path, None))
    assert state is None and why.startswith("vcgencmd get_throttled said '\ufffd\ufffd garbage'"), why


def test_a_vcgencmd_that_hangs_is_given_up(tmp_path: Path) -> None:
    state, why = read_power(vcgencmd(tmp_path, "exec sleep 30"), hwmon(tmp_path, None), timeout_s=0.5)
    assert state is None and why.startswith("vcgencmd could not run (Command ") and "timed out" in why


def test_the_note_for_a_failing_device_names_under_voltage_only(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    script = vcgencmd(tmp_path, 'echo "throttled=0x50000"')
    monkeypatch.setattr(power_supply.shutil, "which", lambda name: script)
    assert power_note() == "; the Pi reports under-voltage since boot, throttled since boot (vcgencmd " \
                           "get_throttled = 0x50000)"
    (tmp_path / "fine").mkdir()
    fine = vcgencmd(tmp_path / "fine", 'echo "throttled=0x0"')
    monkeypatch.setattr(power_supply.shutil, "which", lambda name: fine)
    assert power_note() == ""


def test_a_device_that_stops_says_what_the_supply_reported() -> None:
    health = DeviceHealth("edgetpu:usb:0", lambda: None, limit=1,
                          power=lambda: "; the Pi reports under-voltage since boot (vcgencmd get_throttled = 0x10000)")
    health.failed("head 3", RuntimeError("USB transfer error"))
    assert str(health.fatal).startswith(
        "the edge device (edgetpu:usb:0) failed 1 runs in a row, the last: head 3 failed on edgetpu:usb:0: "
        "RuntimeError('USB transfer error'); the Pi reports under-voltage since boot (vcgencmd get_throttled = "
        "0x10000). A USB accelerator that dropped off the bus")
