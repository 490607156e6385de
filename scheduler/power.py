"""Power: meters that measure the edge's draw, and models for what cannot be measured.

Interface used by the profiler:

    meter, why = find_meter()            # best available real meter, or None and the reason why
    with meter.window() as w:            # measure while something runs
        run_heads()
    w.mean_watts                         # mean power over the window, W

Kinds: HwmonMeter (Linux hwmon power*_input, or curr*_input x in*_input: INA219/INA226/INA260
boards on a Pi), RaplMeter (Intel RAPL energy counters under /sys/class/powercap), and
PowerTable (figures measured with an external USB meter, from a file).

What cannot be measured on the drone is modelled: RadioModel gives the radio's transmit power
as a function of uplink throughput (published phone averages, see docs/power.md), and
read_battery_percent says how much energy is left, so the scheduler can weigh energy against
latency.

Every sysfs root is a parameter so that the tests (and unusual boards) can point the meters at
a different tree; nothing here needs root or writes to sysfs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scheduler.hwmon import HwmonMeter, HwmonSensor, discover_hwmon_sensors
from scheduler.meters import HWMON_ROOT, POWER_SUPPLY_ROOT, POWERCAP_ROOT, PowerMeter, PowerWindow
from scheduler.power_models import (
    RADIO_DEFAULTS,
    BatteryGauge,
    PowerTable,
    RadioModel,
    RadioParams,
    read_battery_percent,
)
from scheduler.rapl import RaplMeter
from splitpoint.errors import BackendUnavailableError

__all__ = ["HWMON_ROOT", "POWERCAP_ROOT", "POWER_SUPPLY_ROOT", "RADIO_DEFAULTS", "BatteryGauge", "HwmonMeter", "HwmonSensor",
           "PowerMeter", "PowerTable", "PowerWindow", "RadioModel", "RadioParams", "RaplMeter",
           "discover_hwmon_sensors", "find_meter", "read_battery_percent"]

log = logging.getLogger(__name__)


def find_meter(hwmon_root: Path = HWMON_ROOT, rapl_root: Path = POWERCAP_ROOT) -> tuple[PowerMeter | None, str]:
    """The best real meter on this machine and a sentence saying what it is or why there is none.

    hwmon first: a rail monitor measures the whole board, which is what the battery pays for;
    RAPL only counts an x86 CPU package, useful when developing on a laptop. Never raises for a
    missing meter: most machines have none, and the caller falls back to a power table.
    """
    reasons: list[str] = []
    for make in (lambda: HwmonMeter(hwmon_root), lambda: RaplMeter(rapl_root)):
        try:
            meter: PowerMeter = make()
        except BackendUnavailableError as exc:
            reasons.append(str(exc))
            continue
        why = f"using {meter.name} meter: {meter.description}"
        log.info("power: %s", why)
        return meter, why
    why = (
        f"no power meter found: {' and '.join(reasons)}; "
        "energy objectives need a power table (policy.power_table = FILE in the agent's config; docs/power.md)"
    )
    log.info("power: %s", why)
    return None, why
