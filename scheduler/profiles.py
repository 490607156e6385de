"""Measured profiles: how long each split's head takes on the edge and its tail on the server.

A profile is a JSON file with a schema version, the bundle digest it was measured
for, the device it was measured on, and per split the latency distribution
(median, p95, spread) after warm-up, the bytes on the wire, and (edge) the mean
power while the head ran. A profile for another bundle is refused by name.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

import splitpoint
from scheduler.figures import bounded_figure
from scheduler.power_models import MAX_WATTS
from splitpoint.bundle import Bundle
from splitpoint.errors import ConfigError
from splitpoint.files import (
    check_replaceable,
    json_format_is,
    open_regular,
    parse_json,
    write_replacing_named,
)
from splitpoint.wire_metadata import MAX_MESSAGE_MB

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "splitpoint-profile"
WHAT = "a splitpoint profile"
#: an earlier profile (any schema version), which writing a new one to its path may replace
is_profile = json_format_is(FORMAT)


def check_output(path: str | Path, key: str = "profile") -> None:
    """ConfigError, naming `key` and the file, unless a profile may be written to `path`: nothing
    there, or an earlier profile (`Profile.save` replaces only that). Checked before measuring."""
    check_replaceable(path, key, WHAT, is_profile)


@dataclass
class StageStats:
    median_ms: float
    p95_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    samples: int

    @classmethod
    def of(cls, times_ms: list[float]) -> StageStats:
        a = np.asarray(times_ms, dtype=np.float64)
        return cls(
            median_ms=round(float(np.median(a)), 4),
            p95_ms=round(float(np.percentile(a, 95)), 4),
            mean_ms=round(float(a.mean()), 4),
            std_ms=round(float(a.std()), 4),
            min_ms=round(float(a.min()), 4),
            samples=len(times_ms),
        )

    @classmethod
    def constant(cls, ms: float) -> StageStats:
        return cls(ms, ms, ms, 0.0, ms, 0)


@dataclass
class SplitProfile:
    split: int
    wire_bytes: int
    latency: StageStats
    power_w: float | None = None  # mean power while this stage ran (edge only, when metered)


@dataclass
class Profile:
    side: str  # "edge" or "cloud"
    bundle_digest: str
    model_name: str
    device: dict[str, Any]
    splits: dict[int, SplitProfile]
    idle_power_w: float | None = None
    power_source: str = "none"
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def latency_ms(self, k: int, stat: str = "median_ms") -> float:
        sp = self.splits.get(k)
        if sp is None:
            raise ConfigError(f"{self.side} profile", k, f"split {k} was not profiled; profiled: {sorted(self.splits)}")
        return float(getattr(sp.latency, stat))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "side": self.side,
            "bundle_digest": self.bundle_digest,
            "model_name": self.model_name,
            "created": self.created,
            "device": self.device,
            "idle_power_w": self.idle_power_w,
            "power_source": self.power_source,
            "splits": [asdict(s) for s in sorted(self.splits.values(), key=lambda s: s.split)],
        }

    def save(self, path: str | Path, key: str = "profile") -> None:
        """Write the profile to `path`, atomically; an existing file there must be an earlier
        profile (or empty): anything else is refused, naming `key` and the file, and left as it is;
        a write that fails (a full disk) is named likewise (exit 1)."""
        write_replacing_named(path, json.dumps(self.to_dict(), indent=2) + "\n", key, WHAT, is_profile)

    @classmethod
    def from_dict(cls, d: Any, where: str = "profile") -> Profile:
        """The profile in `d` (a file's JSON); ConfigError naming `where` and the field that is wrong."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(where, d.get("format") if isinstance(d, dict) else None,
                              f"not a splitpoint profile (format must be {FORMAT!r})")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(where, d.get("schema_version"), f"profile schema_version must be {SCHEMA_VERSION}")
        try:
            splits: dict[int, SplitProfile] = {}
            if not isinstance(d["splits"], list) or not all(isinstance(s, dict) for s in d["splits"]):
                raise ConfigError(f"{where}: splits", None, "must be a JSON list of one object per split")
            for i, s in enumerate(d["splits"]):
                k = _whole(f"{where}: splits[{i}].split", s["split"])
                at = f"{where}: splits[{k}]"
                if k in splits:
                    raise ConfigError(at, k, "profiled twice: one entry per split")
                splits[k] = SplitProfile(k, _whole(f"{at}.wire_bytes", s["wire_bytes"], MAX_WIRE_BYTES),
                                         _stage_stats(f"{at}.latency", s["latency"]),
                                         _metered(f"{at}.power_w", s.get("power_w")))
            idle = _metered(f"{where}: idle_power_w", d.get("idle_power_w"))
            if not splits:  # the planner takes the highest split for K
                raise ConfigError(f"{where}: splits", None, "no split was profiled")
            side = d["side"]
            if side not in ("edge", "cloud"):
                raise ConfigError(f"{where}: side", side, "must be edge or cloud")
            for key, kind in (("bundle_digest", str), ("model_name", str), ("device", dict), ("created", str)):
                if key in d and not isinstance(d[key], kind):
                    raise ConfigError(f"{where}: {key}", d[key], f"must be a JSON {'string' if kind is str else 'object'}")
            return cls(
                side=side, bundle_digest=d["bundle_digest"], model_name=d.get("model_name", ""),
                device=d.get("device", {}), splits=splits, idle_power_w=idle,
                power_source=str(d.get("power_source", "none")), created=d.get("created", ""),
            )
        except KeyError as exc:
            raise ConfigError(where, None, f"malformed profile: no {exc.args[0]!r} key") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(where, None, f"malformed profile: {type(exc).__name__}: {exc}") from None


#: the longest stage time a profile may hold, ms (an hour): no split of a frame is planned with more
MAX_STAGE_MS = 3_600_000.0
#: the most bytes a split may put on the wire: the largest message either side can be set to take
MAX_WIRE_BYTES = MAX_MESSAGE_MB << 20
_STAGE_TIMES = tuple(f.name for f in fields(StageStats) if f.name.endswith("_ms"))


def _whole(key: str, value: Any, most: int | None = None) -> int:
    """A split number or a byte count: a JSON integer >= 0 ("3" or 3.5 was read as 3 before), at
    most `most` (10**400 bytes was an OverflowError traceback in the planner)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, value, "must be a whole number >= 0")
    if most is not None and value > most:
        raise ConfigError(key, value if value < 10**20 else f"{str(value)[:8]}... ({len(str(value))} digits)",
                          f"must be at most {most} ({most / (1 << 20):g} MiB, the largest message on the wire)")
    return value


def _metered(key: str, value: Any) -> float | None:
    """A power figure of a profile, W, or None: not metered."""
    return None if value is None else bounded_figure(key, value, MAX_WATTS, "W")


def _stage_stats(at: str, d: Any) -> StageStats:
    """A split's latency figures: each time finite, >= 0 and at most an hour, the sample count a
    whole number, and the 95th percentile no less than the median."""
    if not isinstance(d, dict):
        raise ConfigError(at, d, f"must be a JSON object of {', '.join(_STAGE_TIMES)} and samples")
    unknown = sorted(set(d) - set(_STAGE_TIMES) - {"samples"})
    if unknown:
        raise ConfigError(f"{at}.{unknown[0]}", d[unknown[0]], f"unknown key; known: {', '.join(_STAGE_TIMES)}, samples")
    times = {name: bounded_figure(f"{at}.{name}", d[name], MAX_STAGE_MS, "ms") for name in _STAGE_TIMES}
    if times["p95_ms"] < times["median_ms"]:
        raise ConfigError(f"{at}.p95_ms", d["p95_ms"],
                          f"is below median_ms ({d['median_ms']}): a 95th percentile is never below the median")
    return StageStats(**times, samples=_whole(f"{at}.samples", d["samples"]))


def load_profile(path: str | Path, side: str | None = None, bundle_digest: str | None = None,
                 key: str = "profile", num_layers: int | None = None) -> Profile:
    """Read a profile; refuse the wrong side or a profile of another bundle, naming both (and
    `key`, the config key or flag that named the file), or a split beyond the bundle's K (`num_layers`)."""
    p = Path(path)
    try:  # a regular file only: a named pipe blocked the agent's start in open(), deaf to SIGTERM
        with os.fdopen(open_regular(p, key), "rb") as fh:
            data = parse_json(fh.read())
    except FileNotFoundError:
        raise ConfigError(key, str(p), "file not found") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError (not UTF-8 text), too deep
        raise ConfigError(key, str(p), f"unreadable ({exc})") from None
    prof = Profile.from_dict(data, str(p))
    if side is not None and prof.side != side:
        raise ConfigError(key, str(p), f"is {_an(prof.side)} profile; {_an(side)} profile is needed here")
    if bundle_digest is not None and prof.bundle_digest != bundle_digest:
        raise ConfigError(
            key, str(p),
            f"was measured for bundle digest {prof.bundle_digest}, not this bundle's {bundle_digest}: profile again",
        )
    if num_layers is not None:  # the planner takes the highest split for K: 999 made K an offload with an RTT
        for i, entry in enumerate(data["splits"]):
            if entry["split"] > num_layers:
                raise ConfigError(f"{p}: splits[{i}].split", entry["split"], f"not a split of the bundle (0-{num_layers})")
    return prof


def device_identity(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU model, cores, OS, Python and runtime versions: what a profile was measured on."""
    from splitpoint.runtime.litert import runtime_versions

    try:
        cpu = cpu_name(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = None
    cpu = cpu or platform.processor() or platform.machine()
    ident = {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "splitpoint": splitpoint.__version__,
        "runtimes": runtime_versions(),
    }
    ident.update(extra or {})
    return ident


def _time_runs(fn: Any, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def cpu_name(cpuinfo: str) -> str | None:
    """The CPU's name from /proc/cpuinfo text. x86 names it in `model name` (its `model` line is
    a number); a Raspberry Pi names the board in `Model` and the SoC in `Hardware`."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if key in fields:
            return fields[key]
    return None


def profile_edge(heads: Any, bundle: Bundle, runs: int = 50, warmup: int = 5, meter: Any = None) -> Profile:
    """Time every split's head on this machine (and meter its power when a meter is given).

    `heads` is the agent's loaded heads (edge_node.heads.EdgeHeads): the profile measures
    exactly what the agent runs.
    """
    m = bundle.manifest
    frames, _ = bundle.validation_data()
    xs = [heads.preprocess(f) for f in frames[: max(1, min(len(frames), 16))]]
    idle = None
    if meter is not None:
        with meter.window() as w:
            time.sleep(1.0)
        idle = w.mean_watts
    profiles: dict[int, SplitProfile] = {}
    for k in heads.splits:
        inputs = itertools.cycle(xs)

        def run_once(k: int = k, inputs: Iterator[np.ndarray] = inputs) -> None:
            heads.run(k, next(inputs))

        power = None
        if meter is not None:
            with meter.window() as w:
                times = _time_runs(run_once, runs, warmup)
            power = w.mean_watts
        else:
            times = _time_runs(run_once, runs, warmup)
        profiles[k] = SplitProfile(k, m.split(k).wire_bytes, StageStats.of(times), power)
        log.info("edge split %d: median %.3f ms", k, profiles[k].latency.median_ms)
    ident = device_identity({
        "device": str(heads.device),
        "edgetpu": heads.device.kind == "edgetpu",
        "edgetpu_clock": os.environ.get("SPLITPOINT_EDGETPU_CLOCK", "unknown (std or max runtime package)"),
    })
    return Profile("edge", m.model_digest, m.model_name, ident, profiles, idle,
                   getattr(meter, "description", "none") if meter is not None else "none")


def profile_cloud(bundle: Bundle, runs: int = 50, warmup: int = 5) -> Profile:
    """Time every split's tail on this machine, batch 1, the way the server runs it."""
    from splitpoint.runtime.tails import TailPool, tensorflow_devices

    m = bundle.manifest
    pool = TailPool(bundle)
    profiles: dict[int, SplitProfile] = {}
    for k in pool.servable:
        runner = pool.get(k)
        rng = np.random.default_rng(k)
        # one batch per tail input: a multi-tensor cut's tail takes several
        xs = [rng.standard_normal((1, *shape)).astype(np.float32) for shape in runner.input_shapes]
        times = _time_runs(lambda r=runner, xs=xs: r.run_all(xs), runs, warmup)
        profiles[k] = SplitProfile(k, m.split(k).wire_bytes, StageStats.of(times))
        log.info("cloud split %d: median %.3f ms", k, profiles[k].latency.median_ms)
    profiles[m.num_layers] = SplitProfile(m.num_layers, 0, StageStats.constant(0.0))  # no tail for k = K
    return Profile("cloud", m.model_digest, m.model_name, device_identity({"tensorflow_devices": tensorflow_devices()}), profiles)


def format_profile(p: Profile) -> str:
    """The table `splitpoint profile show` prints."""
    lines = [
        f"{p.side} profile of {p.model_name} ({p.bundle_digest[:23]}...), {p.created}",
        f"device: {p.device.get('device', '')} {p.device.get('cpu', '')}, {p.device.get('cores', '?')} cores"
        + (f"; idle power {p.idle_power_w:.2f} W" if p.idle_power_w is not None else "")
        + f"; power source: {p.power_source}",
        f"{'k':>4} {'wire bytes':>11} {'median ms':>10} {'p95 ms':>9} {'std ms':>8} {'runs':>5} {'power W':>8}",
    ]
    for k in sorted(p.splits):
        s = p.splits[k]
        pw = f"{s.power_w:8.2f}" if s.power_w is not None else f"{'-':>8}"
        lines.append(
            f"{k:>4} {s.wire_bytes:>11} {s.latency.median_ms:>10.3f} {s.latency.p95_ms:>9.3f} "
            f"{s.latency.std_ms:>8.3f} {s.latency.samples:>5} {pw}"
        )
    return "\n".join(lines)


def _an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word
