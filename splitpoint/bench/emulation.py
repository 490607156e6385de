"""The harness's side of an emulated edge device (--edge-device FILE, or --edge-slowdown F).

The edge worker does the emulating (splitpoint/bench/edge_worker.py); here the bench checks a
device file against the bundle before the worker starts (a mismatch would otherwise fail the
first head run, deep in a stage), keys the cached edge profile by the emulated device, files the
runs the device could not be emulated on, and says in one line what the report's header shows.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitpoint.errors import ConfigError

if TYPE_CHECKING:
    from splitpoint.bench.harness import Bench

log = logging.getLogger("splitpoint.bench")


def check_device(path: Path, model_name: str, splits: list[int]) -> None:
    """A ConfigError (exit 2) naming --edge-device when the file is not for this bundle's model or
    lacks a head time for a measured split (split 0 runs no head)."""
    from splitpoint.bench.device import load_device

    device = load_device(path)
    if device.model_name and device.model_name != model_name:
        raise ConfigError("--edge-device", str(path), f"is a {device.model_name} device file; the bundle is {model_name}")
    missing = sorted(set(splits) - {0} - set(device.head_ms))
    if missing:
        raise ConfigError("--edge-device", str(path), f"has no head time for the measured splits {missing} "
                                                      f"(it has {len(device.head_ms)} splits): give --splits among "
                                                      "its splits or a device file for this bundle")


def profile_suffix(device_path: Path | None, slowdown: float, splits: list[int] | None = None) -> str:
    """What the edge profile's cache directory adds for the emulated device: the device file's
    content (the same file under another name or path is the same device) and the splits profiled
    (a device file need not cover every split of a bundle: only the measured ones are profiled),
    or the factor."""
    if device_path is not None:
        digest = hashlib.sha256(device_path.read_bytes())
        digest.update(repr(sorted(splits or [])).encode())
        return f"-dev{digest.hexdigest()[:12]}"
    return f"-x{slowdown:g}" if slowdown != 1.0 else ""


def note_too_slow(b: Bench, run_name: str, emulation: dict[str, Any] | None) -> None:
    """A run whose native heads were already slower than the device's: not a run of the device.
    Kept in machine.emulation.too_slow_runs (the report lists them) and said now."""
    too_slow = (emulation or {}).get("too_slow") or {}
    if not too_slow:
        return
    splits = ", ".join(f"k={k}: {v['slower_than_target']}/{v['runs']} head runs over {v['target_ms']} ms "
                       f"(worst {v['worst_native_ms']} ms)" for k, v in too_slow.items())
    b.result.machine.setdefault("emulation", {}).setdefault("too_slow_runs", []).append(
        {"run": run_name, "too_slow": too_slow})
    b.say(f"  {run_name}: {emulation.get('note', 'native head slower than the device')}: {splits}")  # type: ignore[union-attr]
    log.warning("run %s: heads slower than the emulated device: %s", run_name, splits)


def header_lines(emulation: dict[str, Any] | None) -> list[str]:
    """The report header's lines about the emulated device (none when the edge ran natively)."""
    emu = emulation or {}
    if emu.get("mode") != "device":
        return []
    head = emu.get("head_ms") or {}
    all_edge = head[max(head, key=int)] if head else None
    lines = [f"- **emulated edge device from `{Path(str(emu.get('path', '?'))).name}`** ({emu.get('description')}; "
             f"all-edge {all_edge} ms; {emu.get('how')}): every head run lasts its split's time in the file (the "
             "link, the server and the agent are real)"]
    for r in emu.get("too_slow_runs") or []:
        ks = ", ".join(f"k={k} ({v['slower_than_target']}/{v['runs']} over {v['target_ms']} ms)"
                       for k, v in r["too_slow"].items())
        lines.append(f"  - run `{r['run']}` is not of the emulated device: this machine's native head was slower "
                     f"on {ks}")
    return lines
