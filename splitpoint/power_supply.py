"""A Raspberry Pi's power supply as its firmware reports it: under-voltage and throttling.

A Coral USB accelerator draws up to about 500 mA; on a weak supply the Pi's voltage sags, the
accelerator drops off the bus and every run on it fails (edge_node/device_health.py). The
firmware keeps the evidence as a bit mask, `vcgencmd get_throttled` (`throttled=0x50005`):
the low bits say what holds now, bits 16-19 what has happened since boot. Where vcgencmd is
missing or cannot reach the firmware (it needs /dev/vcio: group video), the kernel's
`rpi_volt` hwmon device still says whether the voltage is low now (`in0_lcrit_alarm`).
Anywhere else (not a Pi) there is nothing to read, and `read_power` says so.

`splitpoint doctor` prints what it finds (`check_power`); the agent adds it to the message
with which a failing device stops it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from splitpoint.doctor_checks import Check

#: the bits of `vcgencmd get_throttled` (the kernel's firmware property GET_THROTTLED)
THROTTLED_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "ARM frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}
UNDER_VOLTAGE = (1 << 0) | (1 << 16)
#: what under-voltage means for splitpoint, and what to do
UNDER_VOLTAGE_ADVICE = ("the Coral accelerator may drop off the USB bus and fail every run; use the Pi's official "
                        "supply or a powered USB hub (docs/field-deployment.md, Power)")
HWMON_ROOT = Path("/sys/class/hwmon")
_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+|\d+)")


@dataclass
class PowerState:
    reading: str  # what was read, as a person would type it: "vcgencmd get_throttled = 0x50005"
    findings: list[str]  # THROTTLED_BITS set, in bit order; empty: nothing to report
    under_voltage: bool

    def describe(self) -> str:
        return f"{', '.join(self.findings) or 'no under-voltage or throttling'} ({self.reading})"


def read_power(vcgencmd: str | None = "", hwmon_root: Path = HWMON_ROOT,
               timeout_s: float = 5.0) -> tuple[PowerState | None, str]:
    """(the supply's state, "") or (None, why it could not be read); never raises. `vcgencmd`:
    its path; "" looks it up on PATH, None: do not use it."""
    why = []
    path = shutil.which("vcgencmd") if vcgencmd == "" else vcgencmd
    if path:
        try:
            done = subprocess.run([path, "get_throttled"], capture_output=True, text=True, errors="replace",
                                  timeout=timeout_s, check=False)
            found = _THROTTLED.search(done.stdout)
            if done.returncode == 0 and found:
                mask = int(found[1], 16) if found[1].startswith("0x") else int(found[1])
                bits = [text for bit, text in THROTTLED_BITS.items() if mask & (1 << bit)]
                return PowerState(f"vcgencmd get_throttled = {mask:#x}", bits, bool(mask & UNDER_VOLTAGE)), ""
            said = " ".join((done.stdout + done.stderr).split())[:160] or f"exit {done.returncode}"
            why.append(f"vcgencmd get_throttled said {said!r} (it needs /dev/vcio: is this user in group video?)")
        except (OSError, subprocess.SubprocessError) as exc:
            why.append(f"vcgencmd could not run ({exc})")
    else:
        why.append("no vcgencmd")
    alarm = _rpi_volt_alarm(hwmon_root)
    if alarm is None:
        why.append("no rpi_volt hwmon device")
        return None, "; ".join(why)
    try:
        low = alarm.read_text().strip() == "1"
    except (OSError, UnicodeDecodeError) as exc:
        why.append(f"{alarm} could not be read ({exc})")
        return None, "; ".join(why)
    return PowerState(f"{alarm} = {int(low)}", ["under-voltage now"] if low else [], low), ""


def _rpi_volt_alarm(root: Path) -> Path | None:
    try:
        for dev in sorted(root.iterdir()):
            try:
                if (dev / "name").read_text().strip() == "rpi_volt" and (dev / "in0_lcrit_alarm").exists():
                    return dev / "in0_lcrit_alarm"
            except (OSError, UnicodeDecodeError):
                continue
    except OSError:
        pass
    return None


def check_power(vcgencmd: str | None = "", hwmon_root: Path = HWMON_ROOT) -> list[Check]:
    """The doctor's line: warn on under-voltage or throttling, now or since boot; skip when
    there is nothing to read (not a Raspberry Pi)."""
    state, why = read_power(vcgencmd, hwmon_root)
    if state is None:
        return [Check("skip", "power supply", f"nothing reports it here ({why}): not a Raspberry Pi?")]
    if state.under_voltage:
        return [Check("warn", "power supply", f"{state.describe()}: {UNDER_VOLTAGE_ADVICE}")]
    if state.findings:
        return [Check("warn", "power supply", f"{state.describe()}: heads and local runs are slower than "
                                              "profiled while the CPU is throttled; check cooling")]
    return [Check("ok", "power supply", state.describe())]


def power_note() -> str:
    """A clause for an error about a failing device: the supply's state when it reports one
    that explains it, else ""."""
    state, _ = read_power(timeout_s=2.0)
    return f"; the Pi reports {state.describe()}" if state is not None and state.under_voltage else ""
