"""`splitpoint bench`: measure every split, the scheduler's choices, real traces, throughput and overhead.

    options.py      BenchOptions: every option once (flags, --config TOML, --print-config)
    harness.py      the driver: set-up (profiles, server, link emulator), the stages in order
    profiling.py    the profiles: measured once per bundle and machine, cached
    worker_client.py  the harness's side of the edge worker; the agent's source-open signal
    conditions.py, step.py, traces_stage.py, throughput.py   one stage each
    results.py      the typed results (JSON written and read back by typed_json.py); trace_results.py: the
                    trace stage's (replays, peers' picks, the clairvoyant bound); stats.py, machine.py: helpers
    edge_worker.py  the edge process (`python -m splitpoint.bench.edge_worker`)
    overhead.py     what splitpoint adds per frame over a raw gRPC stream
    report.py       targets (PASS/MISS), markdown tables, PNG plots
    clairvoyant.py  the best a scheduler knowing a trace's future could do (the regret's reference)
    peers.py        peers' split rules (start-up bandwidth, deadline at nominal); peer_runs.py: their picks per run
    device.py       device files of an emulated edge, the reference power table; emulation.py: the harness's checks

See docs/benchmarks.md for what is measured, how, and the latest figures.
"""

from __future__ import annotations

__all__ = ["BenchOptions", "BenchResult", "run_bench"]


def __getattr__(name: str):  # keep `import splitpoint.bench` light: the harness imports on use
    if name == "BenchOptions":
        from splitpoint.bench.options import BenchOptions

        return BenchOptions
    if name == "BenchResult":
        from splitpoint.bench.results import BenchResult

        return BenchResult
    if name == "run_bench":
        from splitpoint.bench.harness import run_bench

        return run_bench
    raise AttributeError(name)
