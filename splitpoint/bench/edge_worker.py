"""The edge side of `splitpoint bench`: a separate process, one thread, one core where allowed.

    python -m splitpoint.bench.edge_worker [--cpu N] [--slowdown F]

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

`--slowdown F` emulates an edge device F times slower than this core: every head invocation
(`HeadRunner.run`, which the agent and the profiler both use) is stretched by a sleep to F times
that head's median native duration, calibrated over its first invocations. A sleep holds no CPU,
so the pinned core models a slower device, not a busier one. Bench-only: the agent itself has no
such switch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

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
    """Make every head invocation last `factor` x that head's median native duration (factor >= 1).

    The median comes from the head's first CALIBRATION_RUNS invocations in this process (the
    profiler's, when the bench profiles). Stretching each invocation by its *own* duration instead
    multiplied interference too: a probe shaped on the other core cost the edge core a few tenths
    of a millisecond, and x75 turned that into 25 ms a frame.
    """
    from splitpoint.runtime.litert import HeadRunner

    if factor == 1.0:
        return
    real_run = HeadRunner.run
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

    HeadRunner.run = slowed_run  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splitpoint.bench.edge_worker",
                                     description="edge worker of `splitpoint bench` (commands on stdin)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin this process to (when allowed)")
    parser.add_argument("--slowdown", type=float, default=1.0, help="emulate a device this many times slower (>= 1)")
    args = parser.parse_args(argv)
    pinning = pin_to_cpu(args.cpu)
    for key, value in _ONE_THREAD_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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

    slowdown = max(1.0, args.slowdown)
    emulate_slower_device(slowdown)

    say("ready", pid=os.getpid(), pinning=pinning, slowdown=slowdown, import_s=round(time.perf_counter() - t0, 3),
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
        say("done", id=run_id, rc=rc, seconds=round(time.perf_counter() - t_run, 3), error=error)
    say("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
