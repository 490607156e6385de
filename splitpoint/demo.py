"""`splitpoint demo`: the whole path on one machine, with the bundled digits model.

1. partition the shipped digits CNN into a bundle (once; reused afterwards),
2. start `splitpoint cloud` as a real process on a free loopback port,
3. run the edge agent here on the bundle's held-out digits, taking turns over
   every split (or one fixed split), printing a line per frame,
4. print a summary (splits used, stage timings, accuracy) and stop the server.
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scheduler.paths import PathChoice
from splitpoint import native_logs
from splitpoint.cli_signals import Held
from splitpoint.errors import BundleError, ConfigError, SplitpointError

log = logging.getLogger(__name__)

SERVER_START_TIMEOUT_S = 120.0


def default_workdir() -> Path:
    """Where the demo keeps its bundle (built once) and results: the user's cache, never the
    current directory (a clone of the repository stays clean)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "splitpoint" / "demo"


class TakeTurns:
    """Demo policy: frame n uses split candidates[n % len]."""

    name = "take-turns"

    def __init__(self) -> None:
        self.n = 0

    def choose(self, candidates: list[int]) -> int:
        k = candidates[self.n % len(candidates)]
        self.n += 1
        return k

    def plan(self, frame_id: int, candidates: list[int], now: float, timeline: Any,
             arrived: float | None = None, next_arrival: float | None = None) -> PathChoice:
        """The next split in turn; it predicts nothing, so it books nothing (as a fixed policy)."""
        return PathChoice(frame_id, self.choose(candidates), reason="take turns")

    def observe(self, outcome: Any) -> None:
        pass


def stop_server(server: subprocess.Popen) -> int:
    """SIGTERM the demo's server and wait for its drain; its exit code (-9 if it had to be killed).
    A Ctrl-C or SIGTERM meanwhile is held until the server is gone, then handled as it would have
    been (the demo's first interrupts, exit 130; later ones are ignored: cmd_demo's
    sigterm_interrupts(once=True)): raised in the wait, it left the server running."""
    held = Held()
    held.hold()
    try:
        server.send_signal(signal.SIGTERM)
        try:
            return server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
            return -9
    finally:
        held.release()


def ensure_bundle(path: Path, rebuild: bool = False, model: str = "digits-cnn") -> Path:
    """The bundle of built-in `model` at `path`: reused when valid, else partitioned (once)."""
    from splitpoint.bundle import MANIFEST, load_bundle

    if not rebuild:
        try:
            m = load_bundle(path).manifest
        except BundleError:
            pass
        else:
            if m.source == f"builtin:{model}":
                print(f"using the bundle in {path}", flush=True)
                return path
            if not m.source.startswith("builtin:"):
                # a bundle of the user's own model: not one the demo wrote (the README's promise),
                # left as it is unless asked (it was replaced, and files put beside it with it)
                raise ConfigError("--workdir", str(path.parent), f"{path.name} in it is a bundle of {m.source or m.model_name}, "
                                  f"not one the demo wrote: the demo leaves it as it is; move it away, give another "
                                  "--workdir, or --rebuild to replace it")
            print(f"the bundle in {path} is of {m.source}, not {model}", flush=True)  # a demo's: rebuilt
    from splitpoint.partition import PartitionOptions, load_model_source, partition
    from splitpoint.partition_target import check_target, is_splitpoint_manifest

    try:  # partition's own words name its -o, which the demo has not
        check_target(path, force=True)
    except SplitpointError as err:
        # partition's words name -o and --force, flags the demo has not; and `--rebuild` on a bundle holding
        # the user's notes was told "is not a bundle"
        what = ("is a bundle that also holds other files" if is_splitpoint_manifest(path / MANIFEST)
                else "is not a bundle")
        raise ConfigError("--workdir", str(path.parent), f"{path.name} in it {what}; the demo leaves it as "
                                                         "it is: move it away, or give another --workdir") from err
    print(f"partitioning the bundled {model} into {path} ...", flush=True)
    t0 = time.perf_counter()
    partition(load_model_source(model), PartitionOptions(output=path, force=True))
    print(f"bundle ready in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def demo_bundle(workdir: Path, name: str, model: str, split: int | None, rebuild: bool) -> Path:
    """The demo's bundle of `model` in `workdir`/`name`, after checking what the user gave:
    --workdir a directory that can be made, --split one of the bundle's (before a server starts)."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError("--workdir", str(workdir), "is a file, not a directory")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("--workdir", str(workdir), f"cannot be created: {err.strerror or err}") from err
    path = ensure_bundle(workdir / name, rebuild, model=model)
    from splitpoint.bundle import load_bundle, split_ranges

    m = load_bundle(path, side="edge", verify=False).manifest
    if split is not None and split not in m.split_ids:
        raise ConfigError("--split", split, f"not a split of {m.model_name}; its splits: {split_ranges(m.split_ids)}")
    return path


def start_server(bundle: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`splitpoint cloud` in its own process; returns it and the address it printed."""
    cmd = [sys.executable, "-m", "splitpoint", "cloud", "--bundle", str(bundle), "--listen", "127.0.0.1:0", "--log-level", "warning",
           "--insecure"]  # loopback only: nothing leaves this machine
    proc: subprocess.Popen | None = None
    # Ctrl-C or SIGTERM (cmd_demo makes it an interrupt) while it starts must not leave it running,
    # nor one that lands inside Popen, after the fork: held there, it acts once `proc` is known
    held = Held()
    try:
        held.hold()
        try:
            with open(log_path, "w") as log_fh:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_fh, text=True,
                                        env=native_logs.child_env(dict(os.environ, PYTHONUNBUFFERED="1")))
        finally:
            held.release()
        assert proc.stdout is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("splitpoint cloud listening on "):
                return proc, line.rsplit(" ", 1)[1].strip()
    except BaseException:
        if proc is not None:
            stop_server(proc)
        raise
    proc.kill()
    proc.wait(timeout=30)
    raise SplitpointError(f"the server did not start; its log: {log_path}\n{log_path.read_text()[-2000:]}")


def clear_earlier_results(path: Path) -> None:
    """Remove the results of the demo's earlier run at `path`, before anything else is done.
    Anything else there (a directory, someone's notes, an agent's results log) is refused by name
    and left as it is: `--workdir` may be a directory the user keeps other files in."""
    if not os.path.lexists(path):
        return
    if path.is_dir() or not path.is_file():
        raise ConfigError("--workdir", str(path.parent), f"{path.name} in it is not a file; the demo writes its "
                                                         "results there: move it away, or give another --workdir")
    if path.stat().st_size and not _demo_wrote(path):
        raise ConfigError("--workdir", str(path.parent), f"{path.name} in it is not the demo's results; it is "
                                                         "left as it is: move it away, or give another --workdir")
    path.unlink()


def _demo_wrote(path: Path) -> bool:
    """`path` is a JSONL results log whose first record is of the demo's source (synthetic#N):
    any results log would not do (an agent's own SQLite or JSONL log at that name was deleted)."""
    from edge_node.results_records import check_log_start
    from splitpoint.files import json_object

    try:
        if check_log_start(path) != "jsonl":
            return False
        with open(path, "rb") as fh:
            first = json_object(fh.readline(64 * 1024)) or {}
    except (ConfigError, OSError):
        return False
    return str(first.get("origin", "")).startswith("synthetic#")


def run_demo(workdir: Path, frames: int = 24, split: int | None = None, rebuild: bool = False) -> int:
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.source_spec import open_source

    results = workdir / "results.jsonl"
    clear_earlier_results(results)  # refused now, not after minutes of partitioning
    bundle = demo_bundle(workdir, "bundle", "digits-cnn", split, rebuild)
    print("starting the cloud server ...", flush=True)
    server, address = start_server(bundle, workdir / "cloud.log")
    try:
        print(f"cloud server (pid {server.pid}) listening on {address}\n", flush=True)
        conf = EdgeConfig(bundle=str(bundle), source=f"synthetic:{frames}", cloud=address, split=split, insecure=True,
                          results=str(results), mode="latency", log_level="warning")
        conf.validate()
        header = f"{'frame':>5} {'split':>5} {'where':<6} {'label':>5} {'true':>5}  {'head ms':>8} {'transfer':>8} {'server':>8} {'e2e ms':>8}"
        print(header)
        print("-" * len(header))

        def show(r: dict) -> None:
            if r["status"] != "ok":
                print(f"{r['frame_id']:>5} FAILED: {r['error']}")
                return
            t = r["timings_ms"]
            server_ms = t.get("server_queue", 0) + t.get("server_compute", 0)
            mark = "" if r["true_label"] is None else (" ok" if r["label"] == r["true_label"] else " WRONG")
            print(
                f"{r['frame_id']:>5} {r['split']:>5} {r['where']:<6} {r['label']:>5} {str(r['true_label']):>5}  "
                f"{t.get('head', 0) + t.get('local', 0):>8.2f} {t.get('transfer', 0):>8.2f} {server_ms:>8.2f} "
                f"{t['end_to_end']:>8.2f}{mark}",
                flush=True,
            )

        agent = EdgeAgent.from_config(conf, policy=None if split is not None else TakeTurns(), on_result=show)
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
            summary = agent.run(source)
        print()
        _print_summary(results, summary, agent.K)
    finally:
        code = stop_server(server)
        print(f"cloud server stopped (exit {code})")
    print(f"bundle and results.jsonl in {workdir}")
    return 0 if summary.failed == 0 else 1


def _print_summary(results: Path, summary: Any, K: int) -> None:
    from edge_node.results import read_results

    rows = [r for r in read_results(results) if r["status"] == "ok"]
    print(f"{summary.frames} frames in {summary.seconds:.2f}s: {summary.cloud} answered by the cloud, "
          f"{summary.local} run locally ({summary.fallbacks} fallbacks), {summary.failed} failed")
    if summary.accuracy is not None:
        print(f"accuracy against the true labels: {summary.accuracy:.1%} ({summary.correct}/{summary.labelled})")
    print(f"\nmedian stage timings (ms) by split  [k = 0: all cloud, k = {K}: all edge]")
    print(f"{'split':>5} {'frames':>6} {'head':>8} {'transfer':>8} {'queue':>8} {'compute':>8} {'e2e':>8}")
    for k in sorted({r["split"] for r in rows}):
        mine = [r["timings_ms"] for r in rows if r["split"] == k]

        def med(key: str, mine: list = mine) -> str:
            vals = [t[key] for t in mine if key in t]
            return f"{statistics.median(vals):8.2f}" if vals else f"{'-':>8}"

        head = med("head") if k != K else med("local")
        print(f"{k:>5} {len(mine):>6} {head} {med('transfer')} {med('server_queue')} {med('server_compute')} {med('end_to_end')}")
