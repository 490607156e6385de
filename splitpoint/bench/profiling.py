"""The bench's profiles: `splitpoint profile edge` in the pinned worker and `profile cloud` in a
process of its own, cached per bundle, machine, CPU and run count (and emulated device)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from splitpoint.bench import emulation
from splitpoint.bench.worker_client import BenchError
from splitpoint.errors import ConfigError
from splitpoint.files import write_atomically

if TYPE_CHECKING:
    from splitpoint.bench.harness import Bench


def last_line(log: Path) -> str:
    """The last line of a log, kept in the message: the log itself is in the run's temporary
    directory, removed at the end (without --keep-runs), so naming it alone named nothing."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
            lines = [x.strip() for x in fh.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _failed(what: str, why: str, log: Path, kept: bool) -> BenchError:
    cause = last_line(log)
    return BenchError(f"{what} failed ({why})" + (f": {cause}" if cause else "") + (f"; log: {log}" if kept else ""))


def _cached(p: Path, side: str, digest: str) -> bool:
    """Whether p is a usable cached profile. A stale one (another bundle, an older schema) is
    measured again over it; anything else there is named now: `profile -o` would refuse to
    replace it in the worker, and said why only in the worker's log."""
    from scheduler.profiles import check_output, load_profile

    if not p.exists():
        return False
    try:
        load_profile(p, side, digest)
        return True
    except ConfigError as exc:
        try:
            check_output(p, f"cached {side} profile")
        except ConfigError:
            raise ConfigError(f"cached {side} profile", str(p), f"{exc.reason}; it is left as it is: move it "
                                                                "away, or give another --cache-dir") from None
        return False


def profiles(b: Bench, bundle_path: Path, digest: str) -> tuple[Path, Path]:
    pin = b.result.machine["pinning"]
    key = f"{digest.split(':')[-1][:16]}-{platform.node()}-cpu{pin.get('edge_cpu')}-r{b.opts.profile_runs}"
    pdir = b.opts.cache_path() / "profiles" / key
    # An emulated edge device has an edge profile of its own; the server's tails are the same.
    suffix = emulation.profile_suffix(b.device_path, b.opts.edge_slowdown, b.splits)
    edge_dir = pdir.with_name(key + suffix) if suffix else pdir
    edge_dir.mkdir(parents=True, exist_ok=True)
    pdir.mkdir(parents=True, exist_ok=True)
    edge, cloud = edge_dir / "edge-profile.json", pdir / "cloud-profile.json"
    kept = b.opts.keep_runs is not None
    for p, side in ((edge, "edge"), (cloud, "cloud")):
        if _cached(p, side, digest) and not b.opts.reprofile:
            b.say(f"{side} profile: cached {p}")
            continue
        t = time.monotonic()
        runs = str(b.opts.profile_runs)
        if side == "edge":
            b.say(f"profiling the heads in the pinned edge worker ({runs} runs per split) ...")
            assert b.worker is not None
            # an emulated device's file covers the measured splits, not necessarily the bundle's
            only = ["--splits", ",".join(map(str, b.splits))] if b.device_path is not None else []
            rc, _, err, _ = b.worker.run(["profile", "edge", "--bundle", str(bundle_path), "--threads", "1",
                                          "--runs", runs, "-o", str(p), *only], timeout_s=3600)
            if rc != 0:
                raise _failed("splitpoint profile edge", err or f"exit {rc}", b.worker.log_path, kept)
            emulation.note_too_slow(b, "profile-edge", b.worker.last_emulation)
        else:
            b.say(f"profiling the tails ({runs} runs per split) ...")
            # its own process (on the server's CPUs): the tails it loads are freed when it exits
            cmd = [sys.executable, "-m", "splitpoint", "profile", "cloud", "--bundle", str(bundle_path),
                   "--runs", runs, "-o", str(p)]
            plog = b.runs_dir / "profile-cloud.log"
            with open(plog, "w") as logf:
                try:
                    rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=3600,
                                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")).returncode
                except subprocess.TimeoutExpired:
                    rc = -1
            if rc != 0:
                raise _failed("splitpoint profile cloud", f"exit {rc}", plog, kept)
        b.say(f"{side} profile written to {p} ({time.monotonic() - t:.1f}s)")
    return edge, cloud


def restricted_profiles(b: Bench, edge: Path, cloud: Path, splits: list[int]) -> tuple[Path, Path]:
    """Profiles covering only the measured splits: the adaptive agent chooses among the same set."""
    out = []
    for p in (edge, cloud):
        data = json.loads(p.read_text())
        data["splits"] = [s for s in data["splits"] if s["split"] in splits]
        q = b.runs_dir / f"{p.stem}-subset.json"
        write_atomically(q, json.dumps(data, indent=2).encode())  # a full disk: named, no 0-byte file
        out.append(q)
    return out[0], out[1]
