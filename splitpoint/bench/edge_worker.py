"""The edge side of `splitpoint bench`: a separate process, one thread, one core where allowed.

    python -m splitpoint.bench.edge_worker [--cpu N] [--slowdown F | --device FILE]

The harness (`splitpoint.bench.harness`) starts this once and sends it commands, one
JSON object per line on stdin:

    {"id": 3, "argv": ["edge", "--bundle", "B", "--split", "2", "--threads", "1", "--insecure", ...]}
    {"id": 4, "argv": ["profile", "edge", "--bundle", "B", "--threads", "1", "-o", "edge.json"]}
    {"quit": true}

Each `argv` is a `splitpoint` command line, run by `splitpoint.cli.main` in this process,
so every run is the real agent (`splitpoint edge`) or the real profiler. Running them in
one long-lived process pays the imports once; each run still builds its agent from
scratch (bundle, heads, channel, results log). Answers go to the harness on the original
stdout, one JSON object per line (`ready`, `start`, `done`); everything the commands print
goes to stderr (the harness keeps it as a log).

Before anything is imported the process pins itself to one CPU with
`os.sched_setaffinity(0, {cpu})` when the platform has it and the CPU is allowed (it is
not on macOS or Windows, nor when a cpuset excludes the CPU), and caps every math
library at one thread. The `ready` line says what was applied and why not.

Two ways to emulate an edge device slower than this core (bench-only: the agent itself has no
such switch). Both stretch every head invocation (`HeadRunner.run_all`: `run` calls it, the agent and the
profiler both use) with a sleep; a sleep holds no CPU, so the pinned core models a slower
device, not a busier one.

* `--device FILE` (device-profile mode): each invocation of split k's head lasts that split's
  time in the device file (splitpoint/bench/device.py: an edge profile, or one all-edge figure
  scaled by a profile's shape). The same file gives the same head times on any machine. The
  split comes from the head's file name (edge/head_<k>....tflite). A run whose native head
  was already slower than the device's time cannot be emulated: the `done` answer says so
  (`emulation.too_slow`), per split.
* `--slowdown F` (factor mode, calibrated in-run): F times that head's median native duration
  over its first invocations in this process. Whatever else runs on the machine during that
  calibration changes the device, so calibrate while nothing else runs, or use a device file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported in main() after pinning: nothing may start threads before that
    from splitpoint.bench.device import DeviceProfile, OverrunCounter

log = logging.getLogger(__name__)

#: thread caps for anything numeric that might start a pool of its own
_ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}


def pin_to_cpu(cpu: int | None) -> dict[str, Any]:
    """Pin this process to `cpu` when allowed; say what happened."""
    info: dict[str, Any] = {"requested_cpu": cpu, "applied": False, "reason": ""}
    get = getattr(os, "sched_getaffinity", None)
    set_ = getattr(os, "sched_setaffinity", None)
    if cpu is None:
        info["reason"] = "no CPU requested"
    elif get is None or set_ is None:
        info["reason"] = f"os.sched_setaffinity is not available on {sys.platform}"
    else:
        try:
            set_(0, {cpu})
            info["applied"] = True
            info["reason"] = f"pinned to CPU {cpu}"
        except OSError as exc:  # EINVAL: not in the cpuset; EPERM: not allowed
            info["reason"] = f"sched_setaffinity(0, {{{cpu}}}) refused: {exc}"
    if get is not None:
        info["affinity"] = sorted(get(0))
    return info


#: invocations of a head whose native durations set its emulated duration
CALIBRATION_RUNS = 20


def emulate_slower_device(factor: float) -> None:
    """Factor mode, calibrated in-run: every head invocation lasts `factor` x that head's median
    native duration (factor >= 1). Whatever else runs during the calibration changes the device;
    a device file (`emulate_device`) does not.

    The median comes from the head's first CALIBRATION_RUNS invocations in this process (the
    profiler's, when the bench profiles). Stretching each invocation by its *own* duration instead
    multiplied interference too: a probe shaped on the other core cost the edge core a few tenths
    of a millisecond, and x75 turned that into 25 ms a frame.
    """
    from splitpoint.runtime.litert import HeadRunner

    if factor == 1.0:
        return
    real_run = HeadRunner.run_all
    native_s: dict[str, list[float]] = {}

    def slowed_run(self: HeadRunner, x: Any) -> Any:
        t0 = time.perf_counter()
        out = real_run(self, x)
        seen = native_s.setdefault(str(getattr(self, "path", id(self))), [])
        if len(seen) < CALIBRATION_RUNS:
            seen.append(time.perf_counter() - t0)
        rest = factor * statistics.median(seen) - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)
        return out

    HeadRunner.run_all = slowed_run  # type: ignore[method-assign]


def _bundle_model_name(head_path: Path) -> str | None:
    """The model name in the manifest of the bundle a head belongs to (bundle/edge/head_k.tflite)."""
    try:
        manifest = json.loads((head_path.parent.parent / "manifest.json").read_text())
        return str(manifest["model"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not in a bundle layout (a test's fake head): nothing to check against


def emulate_device(device: DeviceProfile, overruns: OverrunCounter) -> None:
    """Make every invocation of split k's head last `device.target_ms(k)` (device-profile mode).

    A head whose native run already took longer is left at its native time and counted in
    `overruns` (the worker reports it per command). A head of another model than the device
    file's, or of a split the file has no time for, is a ConfigError: emulating it would be a guess.
    """
    from splitpoint.bench.device import split_of_head
    from splitpoint.errors import ConfigError
    from splitpoint.runtime.litert import HeadRunner

    real_run = HeadRunner.run_all
    checked: dict[str, int] = {}  # head path -> its split, once the path and the model are checked
    warned: set[int] = set()

    def split_of(runner: Any) -> int:
        path = Path(str(getattr(runner, "path", "")))
        key = str(path)
        if key not in checked:
            k = split_of_head(path)
            if k is None:
                raise ConfigError("device", device.path, f"cannot tell which split head {path} runs (expected edge/head_<k>.tflite)")
            model = _bundle_model_name(path)
            if model is not None and device.model_name and model != device.model_name:
                raise ConfigError("device", device.path, f"is a {device.model_name} device file; this bundle is {model}")
            device.target_ms(k)  # a split without a time fails here, before anything is timed
            checked[key] = k
        return checked[key]

    def device_run(self: HeadRunner, x: Any) -> Any:
        k = split_of(self)
        t0 = time.perf_counter()
        out = real_run(self, x)
        native_ms = (time.perf_counter() - t0) * 1000
        target = device.head_ms[k]
        if overruns.record(k, native_ms, target):
            if k not in warned:
                warned.add(k)
                log.warning("head k=%d took %.2f ms natively, over the device's %.2f ms: not emulated on this run",
                            k, native_ms, target)
            return out
        rest = target / 1000 - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)
        return out

    HeadRunner.run_all = device_run  # type: ignore[method-assign]


def _die_with_parent() -> None:
    """Linux: be sent SIGTERM when the harness dies, however it dies (SIGKILL included), so that
    no worker is left running a command for nobody. The command's own SIGTERM handling (an edge
    agent stops within its grace) then ends it; elsewhere a stdin at EOF still ends the loop."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the stdin EOF is what ends the worker
        return
    if os.getppid() == 1:  # the harness died before prctl took hold
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splitpoint.bench.edge_worker",
                                     description="edge worker of `splitpoint bench` (commands on stdin)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin this process to (when allowed)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--slowdown", type=float, default=1.0,
                      help="factor mode: each head lasts this many times its median native time, calibrated "
                           "over its first runs in this process (>= 1; calibrate with nothing else running)")
    mode.add_argument("--device", default=None, metavar="FILE",
                      help="device-profile mode: each head of split k lasts split k's time in FILE (an edge "
                           "profile JSON, or a TOML of all_edge_ms + shape); the same on any machine")
    parser.add_argument("--plan-log", action="store_true",
                        help="log every plan of the adaptive agent (logger scheduler.policy at debug) to stderr")
    args = parser.parse_args(argv)
    _die_with_parent()
    pinning = pin_to_cpu(args.cpu)
    for key, value in _ONE_THREAD_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from splitpoint.bench.device import OverrunCounter, load_device
    from splitpoint.errors import ConfigError

    device = None
    if args.device is not None:
        try:
            device = load_device(args.device)
        except ConfigError as exc:
            parser.error(str(exc))  # exit 2 naming the file and the reason, before the heavy imports

    # The protocol keeps the original stdout; whatever the commands print goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(event: str, **fields: Any) -> None:
        proto.write(json.dumps({"event": event, **fields}) + "\n")
        proto.flush()

    t0 = time.perf_counter()
    import edge_node.agent  # noqa: F401
    import splitpoint.runtime.litert  # noqa: F401
    from splitpoint import cli  # the agent's and the profiler's imports, paid once

    if args.plan_log:  # the logger's own level: each command's setup_logging sets only the root's
        logging.getLogger("scheduler.policy").setLevel(logging.DEBUG)

    slowdown = max(1.0, args.slowdown)
    overruns = OverrunCounter()
    emulation: dict[str, Any]
    if device is not None:
        slowdown = 1.0
        emulate_device(device, overruns)
        emulation = {"mode": "device", **device.to_dict()}
    else:
        emulate_slower_device(slowdown)
        emulation = {"mode": "factor", "factor": slowdown, "calibration_runs": CALIBRATION_RUNS} if slowdown != 1.0 else {"mode": "native"}

    say("ready", pid=os.getpid(), pinning=pinning, slowdown=slowdown, emulation=emulation,
        import_s=round(time.perf_counter() - t0, 3),
        python=sys.version.split()[0], thread_env={k: os.environ.get(k) for k in _ONE_THREAD_ENV})
    for line in sys.stdin:  # ends at EOF; each command ends when its frames are done
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except json.JSONDecodeError as exc:
            say("error", message=f"bad command line: {exc}")
            continue
        if cmd.get("quit"):
            break
        run_id = cmd.get("id")
        cmd_argv = [str(a) for a in cmd.get("argv", [])]
        say("start", id=run_id, t_unix_ns=time.time_ns())
        t_run = time.perf_counter()
        error = None
        try:
            rc = int(cli.main(cmd_argv) or 0)
        except SystemExit as exc:  # argparse errors
            rc = exc.code if isinstance(exc.code, int) else 2
            error = f"exit {exc.code}"
        except BaseException as exc:  # noqa: BLE001 - report, keep serving
            rc = 1
            error = f"{type(exc).__name__}: {exc}"
        sys.stderr.flush()
        extra = {"emulation": overruns.take(device)} if device is not None else {}
        say("done", id=run_id, rc=rc, seconds=round(time.perf_counter() - t_run, 3), error=error, **extra)
    say("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
