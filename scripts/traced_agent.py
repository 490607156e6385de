"""`splitpoint ARGS...` under tracemalloc, for a soak that asks where the memory goes.

    python scripts/traced_agent.py --frames N --every S --out DIR -- edge --config ... (splitpoint's argv)

Starts tracemalloc.start(N) before splitpoint is imported, then runs splitpoint's own entry
(splitpoint.cli.run, as `python -m splitpoint` does) with the argv after `--`. A daemon thread
writes, every S seconds (with --frames 0, no tracing: only the line of memory.jsonl):

- DIR/snap-NNNN.tracemalloc: tracemalloc.take_snapshot() (written to a .tmp, then renamed),
  for snapshot.compare_to(older, 'traceback');
- a line of DIR/memory.jsonl: VmRSS, the traced total and tracemalloc's own overhead, glibc's
  mallinfo2 (bytes in use and free in malloc's arenas, mmapped), the count of objects the
  gc tracks and of the types that churn could leave behind (grpc channels, calls,
  threads, exceptions, tracebacks, frames).

So that RSS growth can be told apart: Python's (traced grows with it), malloc's free lists
(fordblks grows), native allocations (uordblks or mmapped grow with traced flat).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from collections import _count_elements  # type: ignore[attr-defined]  # C: no GIL hand-over
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo() -> dict[str, int]:
    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return {}
    fn.restype = _Mallinfo2
    info = fn()
    return {"arena": info.arena, "mmapped": info.hblkhd, "in_use": info.uordblks, "free": info.fordblks}


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


WATCHED = ("Channel", "_MultiThreadedRendezvous", "_Rendezvous", "Thread", "Event", "Condition", "Future",
           "traceback", "frame", "BaseException", "socket", "Logger", "LogRecord", "dict", "list", "function",
           "cell", "method")


def object_counts() -> tuple[int, dict[str, int], list[tuple[str, int]]]:
    # The list gc.get_objects() returns holds a reference to every object while it lives, and
    # LiteRT refuses to invoke() while its interpreter has one more than it expects: the list
    # is made and counted inside one C call (no bytecode in between to hand the GIL over at).
    by_class: dict[type, int] = {}
    _count_elements(by_class, map(type, gc.get_objects()))
    by_type = collections.Counter({f"{t.__module__}.{t.__qualname__}": n for t, n in by_class.items()})
    watched = {name: n for name, n in by_type.items() if name.rsplit(".", 1)[-1] in WATCHED}
    watched["BaseException (any)"] = sum(n for t, n in by_class.items() if issubclass(t, BaseException))
    return sum(by_class.values()), watched, by_type.most_common(40)


def watch(out: Path, every: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t0, n = time.monotonic(), 0
    with open(out / "memory.jsonl", "a") as log:
        while True:
            time.sleep(every)
            current, peak = tracemalloc.get_traced_memory()
            row: dict[str, object] = {
                "t_s": round(time.monotonic() - t0, 1), "rss_kb": rss_kb(), "traced": current, "traced_peak": peak,
                "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(), "malloc": mallinfo()}
            if tracemalloc.is_tracing():  # the snapshot's pickling leaves tens of MB free in malloc's arenas
                snap = tracemalloc.take_snapshot()
                path = out / f"snap-{n:04d}.tracemalloc"
                snap.dump(str(path) + ".tmp")
                os.replace(str(path) + ".tmp", path)
                del snap
                row["snapshot"] = path.name
            row["gc_objects"], row["types"], row["top_types"] = object_counts()
            log.write(json.dumps(row) + "\n")
            log.flush()
            n += 1


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: traced_agent.py --frames N --every S --out DIR -- SPLITPOINT-ARGS...")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10,
                    help="frames kept per traceback (tracemalloc.start(N)); 0: no tracemalloc, no snapshots, only "
                         "memory.jsonl (RSS and malloc's figures without tracing's own cost)")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between snapshots")
    ap.add_argument("--out", required=True, help="directory for the snapshots and memory.jsonl")
    args = ap.parse_args(argv[:cut])
    if args.frames > 0:
        tracemalloc.start(args.frames)
    threading.Thread(target=watch, args=(Path(args.out), args.every), name="traced-agent", daemon=True).start()
    sys.argv = ["splitpoint", *argv[cut + 1:]]
    sys.path.insert(0, str(ROOT))
    from splitpoint.entry import run

    run()


if __name__ == "__main__":
    main()
