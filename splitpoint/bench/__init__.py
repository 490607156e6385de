"""`splitpoint bench`: measure every split, the scheduler's choices, real traces, throughput and overhead.

    harness.py      the driver: server + link emulator here, the agent in a pinned worker process
    edge_worker.py  the edge process (`python -m splitpoint.bench.edge_worker`)
    overhead.py     what splitpoint adds per frame over a raw gRPC stream
    report.py       targets (PASS/MISS), markdown tables, PNG plots
    clairvoyant.py  the best a scheduler knowing a trace's future could do (the regret's reference)

See docs/benchmarks.md for what is measured, how, and the latest figures.
"""

from __future__ import annotations

__all__ = ["BenchOptions", "options_from_args", "run_bench"]


def __getattr__(name: str):  # keep `import splitpoint.bench` light: the harness imports on use
    if name in __all__:
        from splitpoint.bench import harness

        return getattr(harness, name)
    raise AttributeError(name)
