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

import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from splitpoint.config import read_toml
from splitpoint.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

HWMON_ROOT = Path("/sys/class/hwmon")
POWERCAP_ROOT = Path("/sys/class/powercap")
POWER_SUPPLY_ROOT = Path("/sys/class/power_supply")

# hwmon chips that sit on the supply rail of a board (TI INA2xx/INA3221 current/power
# monitors). They are preferred over whatever else the kernel exposes a power reading for
# (a GPU, a laptop battery), because they measure what the drone's battery actually feeds.
_RAIL_MONITOR_PREFIXES = ("ina",)


# --------------------------------------------------------------------------- meters


@dataclass
class PowerWindow:
    """What a meter saw over one `with meter.window()` block; filled in when the block exits.

    `mean_watts` stays None when the meter could not take a single good reading during the
    window (a sensor that vanished, a counter that became unreadable), so that callers cannot
    mistake "no data" for "0 W".
    """

    mean_watts: float | None = None
    seconds: float = 0.0
    samples: int = 0

    @property
    def joules(self) -> float | None:
        """Energy over the window (mean power x duration), or None without a mean."""
        return None if self.mean_watts is None else self.mean_watts * self.seconds


@runtime_checkable
class PowerMeter(Protocol):
    """A real meter: the profiler measures a stretch of work, or asks for a reading now."""

    #: short identifier ("hwmon", "rapl")
    name: str
    #: which sensor or counter, in words, for logs and result files ("ina219 hwmon2 power1")
    description: str

    def window(self) -> contextlib.AbstractContextManager[PowerWindow]:
        """A context manager yielding a PowerWindow that is filled in on exit."""
        ...

    def read_watts(self) -> float:
        """Power now (an instantaneous or short-interval reading), W."""
        ...


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read().strip()


def _read_int(path: Path) -> int:
    """An integer sysfs attribute; ValueError for empty or garbled content, OSError if unreadable."""
    return int(_read_text(path))


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_interval(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(key, value, "must be a finite number of seconds > 0")
    return float(value)


def _trapezoid_mean(times: list[float], watts: list[float]) -> float | None:
    """Time-weighted mean of samples: each interval counts by its length, not by sample count.

    Sampling threads wake late on a busy CPU (exactly when the heads run), so samples are not
    evenly spaced; weighting by time keeps one late sample from counting as much as a long
    stretch. With one sample (or no elapsed time) the plain mean is all there is.
    """
    if not watts:
        return None
    span = times[-1] - times[0]
    if len(watts) == 1 or span < 1e-9:  # below a nanosecond the division is rounding noise
        return sum(watts) / len(watts)
    area = sum((watts[i] + watts[i + 1]) / 2 * (times[i + 1] - times[i]) for i in range(len(watts) - 1))
    return min(max(watts), max(min(watts), area / span))


class _Poller:
    """Calls `fn` every `interval_s` on a daemon thread until stopped.

    The meters read sysfs from a thread so that the measured code runs undisturbed and the
    window's length is whatever the `with` block takes.
    """

    def __init__(self, name: str, interval_s: float, fn: Callable[[], None]):
        self._interval_s = interval_s
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._fn()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class HwmonSensor:
    """One hwmon channel that yields watts: a power*_input, or a curr*_input x in*_input pair."""

    chip: str  # the hwmon `name` file ("ina219"), or "?" when there is none
    hwmon: str  # "hwmon2"
    channel: str  # "power1" or "curr1*in1"
    label: str  # the channel's *_label file, or ""
    power_file: Path | None = None  # microwatts
    current_file: Path | None = None  # milliamps
    voltage_file: Path | None = None  # millivolts

    @property
    def id(self) -> str:
        return f"{self.hwmon}/{self.channel}"

    @property
    def description(self) -> str:
        text = f"{self.chip} {self.hwmon} {self.channel}"
        return f"{text} ({self.label})" if self.label else text

    def read_watts(self) -> float:
        """Raises OSError / ValueError; the callers decide whether that is fatal."""
        if self.power_file is not None:
            return _read_int(self.power_file) / 1e6
        assert self.current_file is not None and self.voltage_file is not None
        # mA x mV = uW. The current can be negative (charging, or a shunt wired backwards);
        # a power meter on a supply rail reports the magnitude.
        return abs(_read_int(self.current_file) * _read_int(self.voltage_file)) / 1e6


def _hwmon_index(path: Path) -> tuple[int, str]:
    m = re.fullmatch(r"hwmon(\d+)", path.name)
    return (int(m.group(1)) if m else 1 << 30, path.name)


def discover_hwmon_sensors(root: Path = HWMON_ROOT) -> tuple[list[HwmonSensor], list[str]]:
    """Every hwmon channel under `root` that reads as watts, best first, and why others were skipped.

    Per hwmonN directory: its power*_input channels (microwatts) if it has any, else every
    curr<i>_input (milliamps) that has an in<i>_input (millivolts) with the same index, the
    way the ina2xx/ina3221 drivers number a rail's bus voltage and current. The attributes live
    in hwmonN itself, or in hwmonN/device on old kernels. Each channel is read once here, so a
    file that exists but cannot be read (permissions, a driver error) is skipped now rather than
    failing in the middle of a measurement.

    Order: rail monitors (chip name starting with "ina") first, then power channels before
    current x voltage pairs, then by hwmon and channel number.
    """
    sensors: list[tuple[tuple, HwmonSensor]] = []
    skipped: list[str] = []
    try:
        dirs = sorted((p for p in root.iterdir() if p.name.startswith("hwmon")), key=_hwmon_index)
    except OSError:
        return [], []
    for hw in dirs:
        attr_dirs = [d for d in (hw, hw / "device") if d.is_dir()]
        chip = "?"
        for d in attr_dirs:
            with contextlib.suppress(OSError):
                chip = _read_text(d / "name") or "?"
                break
        for d in attr_dirs:
            found = _channels_in(d, chip, hw.name)
            if found:
                break
        else:
            continue
        preferred = chip.lower().startswith(_RAIL_MONITOR_PREFIXES)
        for order, sensor in found:
            try:
                sensor.read_watts()
            except (OSError, ValueError) as exc:
                why = _os_reason(exc) if isinstance(exc, OSError) else f"unparsable ({exc})"
                skipped.append(f"{sensor.description}: {why}")
                continue
            key = (not preferred, sensor.power_file is None, _hwmon_index(hw), order)
            sensors.append((key, sensor))
    sensors.sort(key=lambda pair: pair[0])
    return [s for _, s in sensors], skipped


def _label(d: Path, prefix: str) -> str:
    try:
        return _read_text(d / f"{prefix}_label")
    except OSError:
        return ""


def _channels_in(d: Path, chip: str, hwmon: str) -> list[tuple[int, HwmonSensor]]:
    """The watt-yielding channels of one attribute directory, with their index for ordering."""
    try:
        names = {p.name for p in d.iterdir()}
    except OSError:
        return []
    power = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"power(\d+)_input", n)))
    if power:
        return [
            (i, HwmonSensor(chip, hwmon, f"power{i}", _label(d, f"power{i}"), power_file=d / f"power{i}_input"))
            for i in power
        ]
    curr = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"curr(\d+)_input", n)))
    return [
        (
            i,
            HwmonSensor(
                chip, hwmon, f"curr{i}*in{i}", _label(d, f"curr{i}") or _label(d, f"in{i}"),
                current_file=d / f"curr{i}_input", voltage_file=d / f"in{i}_input",
            ),
        )
        for i in curr
        if f"in{i}_input" in names
    ]


class HwmonMeter:
    """A Linux hwmon power sensor: an INA219/INA226/INA260/INA3221 on the Pi's supply rail.

    These chips report power (or current and bus voltage) continuously; sysfs gives the latest
    conversion. A window therefore samples on a background thread every `interval_s` and takes
    the time-weighted (trapezoid) mean, which is what the energy of the window divided by its
    length would be if power moved linearly between samples. Pick the sampling interval close
    to the chip's conversion time: faster only re-reads the same value.

    `sensor` selects a channel when there are several: a channel id ("hwmon2/power1"), a
    hwmon directory ("hwmon2"), a chip name ("ina219") or a channel label ("VDD_IN"); None
    takes the first in discovery order (see discover_hwmon_sensors).
    """

    name = "hwmon"

    def __init__(self, path_root: Path = HWMON_ROOT, sensor: str | None = None, interval_s: float = 0.01):
        self.interval_s = _check_interval("interval_s", interval_s)
        root = Path(path_root)
        found, skipped = discover_hwmon_sensors(root)
        if not found:
            why = f"no hwmon power/current sensors under {root}"
            if skipped:
                why += f" (unreadable: {'; '.join(skipped)})"
            raise BackendUnavailableError(why)
        if sensor is not None:
            matches = [s for s in found if sensor in (s.id, s.hwmon, s.chip, s.label)]
            if not matches:
                known = ", ".join(f"{s.id} [{s.chip}{', ' + s.label if s.label else ''}]" for s in found)
                raise ConfigError("sensor", sensor, f"no such hwmon power sensor under {root}; found: {known}")
            found = matches
        self.sensor = found[0]
        self.description = self.sensor.description
        if len(found) > 1:
            log.debug("hwmon: using %s; also found %s", self.description, ", ".join(s.description for s in found[1:]))

    def read_watts(self) -> float:
        """The sensor's latest reading, W (the chip's own averaging interval)."""
        try:
            return self.sensor.read_watts()
        except (OSError, ValueError) as exc:
            raise BackendUnavailableError(f"hwmon sensor {self.description} could not be read: {exc}") from None

    @contextlib.contextmanager
    def window(self) -> Iterator[PowerWindow]:
        """Samples from entry to exit (also when the block raises); first and last samples are taken
        synchronously so that even a window shorter than one interval has two readings."""
        result = PowerWindow()
        times: list[float] = []
        watts: list[float] = []
        failures: list[str] = []

        def sample() -> None:
            try:
                w = self.sensor.read_watts()
            except (OSError, ValueError) as exc:
                # A read racing the driver's update can come back empty; skip, do not abort.
                failures.append(str(exc))
                return
            times.append(time.monotonic())
            watts.append(w)

        poller = _Poller(f"hwmon-{self.sensor.id}", self.interval_s, sample)
        start = time.monotonic()
        sample()
        poller.start()
        try:
            yield result
        finally:
            poller.stop()
            sample()
            result.seconds = time.monotonic() - start
            result.samples = len(watts)
            result.mean_watts = _trapezoid_mean(times, watts)
            if failures:
                log.warning("hwmon %s: %d of %d reads failed in a %.3f s window (last: %s)",
                            self.description, len(failures), len(failures) + len(watts), result.seconds, failures[-1])


@dataclass
class _RaplDomain:
    name: str  # "intel-rapl:0"
    label: str  # the domain's `name` file ("package-0")
    energy_file: Path
    max_range_uj: int


class RaplMeter:
    """Intel (and recent AMD) RAPL package energy counters under /sys/class/powercap.

    A development aid on x86 machines: RAPL counts the CPU packages' energy (cores, caches,
    uncore; not the whole machine). Top-level domains `intel-rapl:N` are packages; their
    sub-zones (`intel-rapl:N:M`, cores/uncore/dram) are inside a package's count or would be
    double-counted, so only packages are summed.

    A window is energy delta / time. The counters wrap at `max_energy_range_uj`; a poller reads
    them every `poll_s` so that a wrap is seen between two reads even in a long window (one
    wrap between reads is corrected, more would need a counter range smaller than
    poll_s x power, which real ranges (~262 kJ) are not).

    Since Linux 5.10 `energy_uj` is readable by root only (CVE-2020-8694); a package that cannot
    be read is treated as absent, with that reason.
    """

    name = "rapl"

    def __init__(self, root: Path = POWERCAP_ROOT, poll_s: float = 1.0):
        self.poll_s = _check_interval("poll_s", poll_s)
        self.root = Path(root)
        self.domains: list[_RaplDomain] = []
        problems: list[str] = []
        try:
            entries = sorted(
                (p for p in self.root.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name)),
                key=lambda p: int(p.name.split(":")[1]),
            )
        except OSError:
            entries = []
        for d in entries:
            energy = d / "energy_uj"
            try:
                _read_int(energy)
                max_range = _read_int(d / "max_energy_range_uj")
            except PermissionError:
                problems.append(f"{d.name}/energy_uj: permission denied (root only since Linux 5.10)")
                continue
            except (OSError, ValueError) as exc:
                why = _os_reason(exc) if isinstance(exc, OSError) else f"unparsable ({exc})"
                problems.append(f"{d.name}: {why}")
                continue
            if max_range <= 0:
                problems.append(f"{d.name}/max_energy_range_uj: {max_range} is not a positive range")
                continue
            try:
                label = _read_text(d / "name")
            except OSError:
                label = d.name
            self.domains.append(_RaplDomain(d.name, label, energy, max_range))
        if not self.domains:
            why = f"no readable RAPL counters under {self.root}"
            if problems:
                why += f" ({'; '.join(problems)})"
            raise BackendUnavailableError(why)
        if problems:
            log.warning("rapl: skipping %s", "; ".join(problems))
        self.description = "RAPL " + " + ".join(f"{d.label} ({d.name})" for d in self.domains)

    def _read_all(self) -> list[int]:
        return [_read_int(d.energy_file) for d in self.domains]

    def _delta_uj(self, before: list[int], after: list[int]) -> int:
        total = 0
        for d, e0, e1 in zip(self.domains, before, after, strict=True):
            total += e1 - e0 if e1 >= e0 else e1 + d.max_range_uj - e0
        return total

    def read_watts(self, interval_s: float = 0.1) -> float:
        """Mean power over a short interval: RAPL has no instantaneous reading."""
        with self.window() as w:
            time.sleep(interval_s)
        if w.mean_watts is None:
            raise BackendUnavailableError(f"{self.description} could not be read")
        return w.mean_watts

    @contextlib.contextmanager
    def window(self) -> Iterator[PowerWindow]:
        """Energy counted between entry and exit, over the time between the two reads."""
        result = PowerWindow()
        state: dict[str, Any] = {"last": None, "uj": 0, "reads": 0, "t_first": None, "t_last": None}
        errors: list[str] = []
        lock = threading.Lock()

        def read() -> None:
            try:
                now = self._read_all()
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
                return
            t = time.monotonic()
            with lock:
                if state["last"] is not None:
                    state["uj"] += self._delta_uj(state["last"], now)
                else:
                    state["t_first"] = t
                state["last"], state["t_last"] = now, t
                state["reads"] += 1

        poller = _Poller("rapl", self.poll_s, read)
        start = time.monotonic()
        read()
        poller.start()
        try:
            yield result
        finally:
            poller.stop()
            read()
            result.seconds = time.monotonic() - start
            result.samples = state["reads"]
            span = (state["t_last"] - state["t_first"]) if state["reads"] >= 2 else 0.0
            result.mean_watts = state["uj"] / 1e6 / span if span > 0 else None
            if errors:
                log.warning("rapl: %d reads failed in a %.3f s window (last: %s)", len(errors), result.seconds, errors[-1])


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
        "energy objectives need a power table (--power-table FILE)"
    )
    log.info("power: %s", why)
    return None, why


# --------------------------------------------------------------------------- files


def _load_mapping(path: str | Path, key: str) -> dict[str, Any]:
    """A TOML or JSON file (by suffix: .json is JSON, anything else TOML) as a dict."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        try:
            return read_toml(p)
        except ConfigError as exc:
            raise ConfigError(key, str(p), exc.reason) from None
    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(key, str(p), "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(key, str(p), f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise ConfigError(key, str(p), f"unreadable ({_os_reason(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(key, str(p), "expected a JSON object at the top level")
    return data


def _number(key: str, value: Any, where: str, unit: str) -> float:
    """A finite, non-negative number (bools are not numbers here, though Python says so)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(key, value, f"must be a finite number >= 0 ({unit}) in {where}")
    return float(value)


def _text(key: str, value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, value, f"expected a string in {where}")
    return value


def _check_keys(data: dict[str, Any], known: tuple[str, ...], prefix: str, where: str) -> None:
    for k, v in data.items():
        if k not in known:
            raise ConfigError(prefix + k, v, f"unknown key in {where}; known keys: {', '.join(known)}")


@dataclass
class PowerTable:
    """Edge power figures measured with an external meter (a USB power meter between the
    supply and the Pi), for when the board has no sensor of its own.

    `head_w[k]` is the mean power of the whole board while head k runs (the first k layers,
    on the Edge TPU), `idle_w` the board's power while it waits (for the radio or the server).
    A split that was not measured is an error unless `default_head_w` is given: guessing
    between splits would hide that the table is incomplete, and head power is not monotone in k.
    """

    idle_w: float
    source: str
    head_w: dict[int, float] = field(default_factory=dict)
    device: str | None = None
    default_head_w: float | None = None
    path: str | None = None

    _KEYS = ("idle_w", "source", "device", "head_w", "default_head_w")

    @classmethod
    def load(cls, path: str | Path) -> PowerTable:
        """Read and check a power table (TOML, or JSON if the name ends in .json)."""
        return cls.from_dict(_load_mapping(path, "--power-table"), where=f"power table {path}", path=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "power table", path: str | None = None) -> PowerTable:
        """Build from a file-shaped dict; every problem is a ConfigError naming the key and value."""
        _check_keys(data, cls._KEYS, "", where)
        for required in ("idle_w", "source"):
            if required not in data:
                raise ConfigError(required, None, f"is required in {where}")
        idle_w = _number("idle_w", data["idle_w"], where, "W")
        source = _text("source", data["source"], where)
        device = _text("device", data["device"], where) if "device" in data else None
        default = _number("default_head_w", data["default_head_w"], where, "W") if "default_head_w" in data else None
        raw = data.get("head_w", {})
        heads: dict[int, float] = {}
        if isinstance(raw, list):
            for k, v in enumerate(raw):
                heads[k] = _number(f"head_w[{k}]", v, where, "W")
        elif isinstance(raw, dict):
            for k, v in raw.items():
                if not (isinstance(k, str) and k.isascii() and k.isdigit()):
                    raise ConfigError(f"head_w.{k}", v, f"keys of head_w must be split numbers (\"0\", \"1\", ...) in {where}")
                heads[int(k)] = _number(f"head_w.{k}", v, where, "W")
        else:
            raise ConfigError("head_w", raw, f"expected a table of split -> W or a list in {where}")
        if not heads and default is None:
            raise ConfigError("head_w", raw, f"needs at least one split's figure, or default_head_w, in {where}")
        return cls(idle_w=idle_w, source=source, head_w=heads, device=device, default_head_w=default, path=path)

    @property
    def splits(self) -> list[int]:
        """The splits that were measured."""
        return sorted(self.head_w)

    def head_power(self, k: int) -> float:
        """Mean board power while head k runs, W."""
        if k in self.head_w:
            return self.head_w[k]
        if self.default_head_w is not None:
            return self.default_head_w
        measured = ", ".join(map(str, self.splits)) or "none"
        raise ConfigError(
            f"head_w.{k}", None,
            f"split {k} has no figure in {self.path or 'the power table'} (measured: {measured}) and no default_head_w is set",
        )


# --------------------------------------------------------------------------- radio


@dataclass(frozen=True)
class RadioParams:
    """Linear transmit-power model of one link type: P_tx(B) = alpha * B + beta while sending.

    `idle_mw` is what the radio draws when not sending but still connected (the LTE "tail"):
    it is paid after every upload whatever the split, so it matters for the energy of sending
    at all, not for choosing between splits.
    """

    alpha_mw_per_mbps: float
    beta_mw: float
    idle_mw: float = 0.0
    source: str = ""


# Huang, Qian, Gerber, Mao, Sen, Spatscheck: "A close examination of performance and power
# characteristics of 4G LTE networks", MobiSys 2012: the uplink slope alpha_u and base beta of
# its throughput power model, and its LTE tail base power (1060 mW). Measured on smartphones
# on a commercial network: published averages for phones, not figures for this drone's modem.
# WiFi idle is left at 0 (not modelled): no WiFi tail figure is taken over from the paper.
RADIO_DEFAULTS: dict[str, RadioParams] = {
    "lte": RadioParams(438.39, 1288.04, 1060.0, "Huang et al., MobiSys 2012 (LTE uplink; tail base 1060 mW)"),
    "wifi": RadioParams(283.17, 132.86, 0.0, "Huang et al., MobiSys 2012 (WiFi uplink; idle not modelled)"),
}


class RadioModel:
    """Transmit power of the drone's radio as a function of uplink throughput, per link type.

    The drone's modem has no power sensor of its own that we can read, and its draw depends on
    throughput, so it is modelled rather than measured. Defaults are RADIO_DEFAULTS; a file
    overrides any field of a known link type or adds a link type (then alpha and beta are
    required).
    """

    _FIELDS = ("alpha_mw_per_mbps", "beta_mw", "idle_mw", "source")

    def __init__(self, links: dict[str, RadioParams] | None = None):
        self.links: dict[str, RadioParams] = dict(RADIO_DEFAULTS if links is None else links)

    @classmethod
    def load(cls, path: str | Path) -> RadioModel:
        """Defaults overridden by a TOML/JSON file with one table per link type:

            [lte]
            alpha_mw_per_mbps = 500.0
            beta_mw = 1200.0
        """
        return cls.from_dict(_load_mapping(path, "--radio"), where=f"radio model {path}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "radio model") -> RadioModel:
        links = dict(RADIO_DEFAULTS)
        for link, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(link, table, f"expected a table of {', '.join(cls._FIELDS)} in {where}")
            _check_keys(table, cls._FIELDS, f"{link}.", where)
            base = links.get(link)
            if base is None:
                for required in ("alpha_mw_per_mbps", "beta_mw"):
                    if required not in table:
                        raise ConfigError(f"{link}.{required}", None, f"is required for a new link type in {where}")
            values: dict[str, Any] = {}
            for name in ("alpha_mw_per_mbps", "beta_mw", "idle_mw"):
                if name in table:
                    values[name] = _number(f"{link}.{name}", table[name], where, "mW/Mbps" if name.startswith("alpha") else "mW")
                elif base is not None:
                    values[name] = getattr(base, name)
            values["source"] = _text(f"{link}.source", table["source"], where) if "source" in table else where
            links[link] = RadioParams(**values)
        return cls(links)

    def params(self, link: str) -> RadioParams:
        try:
            return self.links[link]
        except KeyError:
            raise ConfigError("link", link, f"unknown link type; known: {', '.join(sorted(self.links))}") from None

    def tx_watts(self, bandwidth_bps: float, link: str = "lte") -> float:
        """Radio power while sending at `bandwidth_bps` (uplink throughput, bit/s), W."""
        if isinstance(bandwidth_bps, bool) or not isinstance(bandwidth_bps, (int, float)) or not math.isfinite(bandwidth_bps) or bandwidth_bps < 0:
            raise ConfigError("bandwidth_bps", bandwidth_bps, "must be a finite number of bit/s >= 0")
        p = self.params(link)
        return (p.alpha_mw_per_mbps * bandwidth_bps / 1e6 + p.beta_mw) / 1000.0

    def idle_watts(self, link: str = "lte") -> float:
        """Radio power while connected but not sending (the tail), W."""
        return self.params(link).idle_mw / 1000.0


# --------------------------------------------------------------------------- battery


def _parse_percent(key: str, text: str) -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1] if raw.endswith("%") else raw)
    except ValueError:
        raise ConfigError(key, text, "expected a battery level in percent (a number from 0 to 100)") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise ConfigError(key, text, "battery level must be between 0 and 100 (percent)")
    return value


def read_battery_percent(
    path: str | Path | None = None, *, power_supply_root: Path = POWER_SUPPLY_ROOT
) -> tuple[float | None, str]:
    """The battery level in percent and where it came from, or None and why there is none.

    With `path`: that file holds a number (optionally with '%'), e.g. written by a flight
    controller bridge; a missing file is "no level yet" (None), bad content is a ConfigError
    naming the file and the content, since it means the writer and reader disagree.
    Without: the first power_supply whose `type` is Battery and whose `scope` is not Device
    (a Bluetooth mouse's battery is not the drone's). A kernel battery whose capacity cannot
    be read is skipped, and said so.
    """
    if path is not None:
        p = Path(path)
        try:
            text = _read_text(p)
        except FileNotFoundError:
            return None, f"battery file {p} does not exist (yet)"
        except OSError as exc:
            return None, f"battery file {p} unreadable ({_os_reason(exc)})"
        return _parse_percent(str(p), text), f"battery file {p}"

    root = Path(power_supply_root)
    skipped: list[str] = []
    try:
        supplies = sorted(root.iterdir())
    except OSError:
        supplies = []
    for d in supplies:
        try:
            if _read_text(d / "type") != "Battery":
                continue
        except OSError:
            continue
        with contextlib.suppress(OSError):
            if _read_text(d / "scope") == "Device":
                continue
        capacity = d / "capacity"
        try:
            return _parse_percent(str(capacity), _read_text(capacity)), f"power_supply {d.name} ({capacity})"
        except OSError as exc:
            skipped.append(f"{d.name}: capacity {_os_reason(exc)}")
        except ConfigError as exc:
            skipped.append(f"{d.name}: {exc}")
    why = f"no battery under {root} (no supply of type Battery with a readable capacity)"
    if skipped:
        why += f"; skipped {'; '.join(skipped)}"
    return None, why + "; give a file the flight controller writes the level into"
