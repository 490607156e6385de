"""What cannot be measured on the drone, modelled: PowerTable (edge figures measured with an
external meter, from a file), RadioModel (the radio's transmit power as a function of uplink
throughput, published figures: docs/power.md) and read_battery_percent (how much energy is left).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.figures import bounded_figure
from scheduler.meters import POWER_SUPPLY_ROOT, _os_reason, _read_text
from splitpoint.config import read_toml
from splitpoint.errors import ConfigError
from splitpoint.files import open_regular, parse_json

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- files


def _load_mapping(path: str | Path, key: str) -> dict[str, Any]:
    """A TOML or JSON file (by suffix: .json is JSON, anything else TOML) as a dict. Opened as
    a regular file only: a named pipe blocked the agent's start in open(), deaf to SIGTERM."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        try:
            return read_toml(p)
        except ConfigError as exc:
            raise ConfigError(key, str(p), exc.reason) from None
    try:
        with os.fdopen(open_regular(p, key), "rb") as fh:
            data = parse_json(fh.read())
    except FileNotFoundError:
        raise ConfigError(key, str(p), "file not found") from None
    except OSError as exc:
        raise ConfigError(key, str(p), f"unreadable ({_os_reason(exc)})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, nested too deeply
        raise ConfigError(key, str(p), f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(key, str(p), "expected a JSON object at the top level")
    return data


#: the most power any figure of an edge board may be, W (a Jetson AGX Orin draws 60 W at most): a
#: table's idle_w = 1e308 made every predicted energy inf, and the choice among them arbitrary
MAX_WATTS = 1000.0
#: the most a radio's figures may be: mW (1 kW) and mW per Mbit/s (100 W more per Mbit/s, 200 times
#: the published LTE slope); at the fastest link planned for (1 Tbit/s) still a finite energy
MAX_RADIO_MW = 1e6
MAX_RADIO_MW_PER_MBPS = 1e5


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
    def load(cls, path: str | Path, key: str = "--power-table") -> PowerTable:
        """Read and check a power table (TOML, or JSON if the name ends in .json); `key`: what
        names the file in errors (the agent's policy.power_table, bench's --power-table)."""
        return cls.from_dict(_load_mapping(path, key), where=f"power table {path}", path=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "power table", path: str | None = None) -> PowerTable:
        """Build from a file-shaped dict; every problem is a ConfigError naming the key and value."""
        _check_keys(data, cls._KEYS, "", where)
        for required in ("idle_w", "source"):
            if required not in data:
                raise ConfigError(required, None, f"is required in {where}")
        idle_w = bounded_figure("idle_w", data["idle_w"], MAX_WATTS, "W", where)
        source = _text("source", data["source"], where)
        device = _text("device", data["device"], where) if "device" in data else None
        default = bounded_figure("default_head_w", data["default_head_w"], MAX_WATTS, "W", where) if "default_head_w" in data else None
        raw = data.get("head_w", {})
        heads: dict[int, float] = {}
        if isinstance(raw, list):
            for k, v in enumerate(raw):
                heads[k] = bounded_figure(f"head_w[{k}]", v, MAX_WATTS, "W", where)
        elif isinstance(raw, dict):
            for k, v in raw.items():
                if not (isinstance(k, str) and k.isascii() and k.isdigit()):
                    raise ConfigError(f"head_w.{k}", v, f"keys of head_w must be split numbers (\"0\", \"1\", ...) in {where}")
                if int(k) in heads:  # "01" and "1": one of them was dropped without a word
                    raise ConfigError(f"head_w.{k}", v, f"split {int(k)} is given twice in {where}")
                heads[int(k)] = bounded_figure(f"head_w.{k}", v, MAX_WATTS, "W", where)
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
    def load(cls, path: str | Path, key: str = "--radio") -> RadioModel:
        """Defaults overridden by a TOML/JSON file with one table per link type:

            [lte]
            alpha_mw_per_mbps = 500.0
            beta_mw = 1200.0
        """
        return cls.from_dict(_load_mapping(path, key), where=f"radio model {path}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "radio model") -> RadioModel:
        links = dict(RADIO_DEFAULTS)
        for link, table in data.items():
            if not link.strip():  # TOML's [""]: a link type `link = ""` alone could pick, never named in a message
                raise ConfigError("link type", link, f"is empty in {where}: name each table after its link type, "
                                                     "e.g. [lte] or [lora]")
            if not link.isprintable():  # ["\u200b"] looks empty in every message that names it
                raise ConfigError("link type", link, f"holds characters that do not print in {where}: name each "
                                                     "table after its link type, e.g. [lte] or [lora]")
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
                    slope = name.startswith("alpha")
                    most, unit = (MAX_RADIO_MW_PER_MBPS, "mW/Mbps") if slope else (MAX_RADIO_MW, "mW")
                    values[name] = bounded_figure(f"{link}.{name}", table[name], most, unit, where)
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


#: a battery file holds a few characters ("73.5%"); a longer one is not a level, and is not read whole
BATTERY_FILE_MAX_BYTES = 64


def _parse_percent(key: str, text: str) -> float:
    raw = text.strip()
    if not raw.isprintable():  # a line break or escape in the file must not break (or forge) a log line
        raw = raw.encode("unicode_escape").decode("ascii")
    if not raw:  # what a writer that truncates and then writes leaves for a moment
        raise ConfigError(key, None, "is empty: expected a battery level in percent (a number from 0 to 100), "
                                     "written atomically (a temporary file, then rename)")
    try:
        value = float(raw[:-1] if raw.endswith("%") else raw)
    except ValueError:
        raise ConfigError(key, raw, "expected a battery level in percent (a number from 0 to 100)") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise ConfigError(key, raw, "battery level must be between 0 and 100 (percent)")
    return value


def _read_battery_file(p: Path) -> str:
    """The text of a battery file: a regular file (a named pipe would block its reader in open()
    for as long as nothing writes to it), of at most BATTERY_FILE_MAX_BYTES."""
    fd = open_regular(p, "battery_file", why=": the level is read from a file (write a temporary file, then rename it)")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(BATTERY_FILE_MAX_BYTES + 1)
    if len(data) > BATTERY_FILE_MAX_BYTES:
        raise ConfigError(str(p), None, f"is longer than {BATTERY_FILE_MAX_BYTES} bytes: expected a battery level "
                                        "in percent (a number from 0 to 100)")
    return data.decode("ascii", errors="replace")


def read_battery_percent(
    path: str | Path | None = None, *, power_supply_root: Path = POWER_SUPPLY_ROOT
) -> tuple[float | None, str]:
    """The battery level in percent and where it came from, or None and why there is none.

    With `path`: that file holds a number (optionally with '%'), e.g. written by a flight
    controller bridge; a missing file is "no level yet" (None), bad content (or a file that is
    not a regular one) is a ConfigError naming the file and the content, since it means the
    writer and reader disagree.
    Without: the first power_supply whose `type` is Battery and whose `scope` is not Device
    (a Bluetooth mouse's battery is not the drone's). A kernel battery whose capacity cannot
    be read is skipped, and said so.
    """
    if path is not None:
        p = Path(path)
        try:
            text = _read_battery_file(p)
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


class BatteryGauge:
    """The battery level a running policy decides with: `read_battery_percent` at each call,
    never an exception. A level that cannot be had (no file yet, unreadable, content that is
    not a percentage) is None, "unknown", which does not switch to min-energy: a flight
    controller bridge writing something odd must not fail the frames it is asked about. Why
    is logged as a WARNING when the level becomes unknown, and when the reason changes at
    most once every `quiet_s`; the level is logged (INFO) when first read and when it can be
    read again."""

    def __init__(self, path: str | Path | None = None, *, power_supply_root: Path = POWER_SUPPLY_ROOT,
                 quiet_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self._root = power_supply_root
        self.quiet_s = quiet_s
        self._clock = clock
        self._lock = threading.Lock()
        self._known: bool | None = None  # None: never read
        self._why = ""
        self._warned_at = -math.inf

    def __call__(self) -> float | None:
        try:
            level, where = read_battery_percent(self.path, power_supply_root=self._root)
        except ConfigError as exc:
            level, where = None, str(exc)
        with self._lock:
            if level is not None:
                if self._known is not True:
                    log.info("battery level %g%% (%s)", level, where)
                self._known = True
                return level
            now = self._clock()
            if self._known is not False or (where != self._why and now - self._warned_at >= self.quiet_s):
                log.warning("battery level unknown, so no switch to min-energy on a low battery: %s", where)
                self._why, self._warned_at = where, now
            self._known = False
            return None
