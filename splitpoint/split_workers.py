"""Where the partitioner builds its splits: in its own process, or in spawned workers whose death is
told, not suffered.

TensorFlow's TFLite converter does not always fail with an exception: on some models it dies by a
signal (TensorFlow 2.21's int8 calibration segfaults on the while loop of a GRU or LSTM that is not
unrolled). In the partitioner's own process that killed `splitpoint partition` outright (exit 139,
its staging directory left beside -o); in a process pool it was a BrokenProcessPool traceback
naming no split. Here a worker that dies is a WorkerCrashError naming the split it was building,
what it died of (SIGSEGV, ...), what was running (the converter, read from the worker's
faulthandler dump) and what to try; the partitioner's staging directory is then removed as on
any failure, so -o is left as it was.

Why not always build in a worker: a spawned worker costs a fresh interpreter, TensorFlow's import
and the model's load before its first split - measured at 5.0-6.0 s on a shared 2-core x86-64
machine (4.0-4.8 s of it TensorFlow's import, 0.1 s loading the digits CNN), against 7-9 s for a
whole in-process partition of that model. Small models, partitioned in-process by default (and in
many tests), would pay that on every run for a crash they cannot have. So `where_to_build` keeps
them in-process unless their graph has control flow (While, If, Case: what the converter's
calibration is known to crash on), found by tracing the model once (0.03 s for the digits CNN,
0.2 s for a GRU model); --jobs 2 or more, the default over 5 M parameters, always builds in
workers. A model without control flow that still crashes the converter in-process ends that
process, which under the command line is a forked child whose parent tells the death the same
way (splitpoint/partition_guard.py: a fork before TensorFlow's import costs milliseconds).
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import pickle
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import TracebackType
from typing import Any

from splitpoint.errors import PartitionError, SplitpointError
from splitpoint.split_build import Job, build_split, init_worker

log = logging.getLogger("splitpoint.partition")

#: builds one split (splitpoint/split_build.py); a worker gets it pickled, so a module-level callable
Build = Callable[[Job], dict]

#: graph operations whose int8 calibration has crashed TensorFlow's TFLite converter
CONTROL_FLOW_OPS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase"})

#: how long workers get to exit after being told to, before they are killed
_EXIT_WAIT_S = 10.0


class WorkerCrashError(PartitionError):
    """A worker died (a signal, an exit) instead of answering: the run failed, not the command."""

    exit_code = 1


def control_flow_ops(tf: Any, model: Any) -> set[str]:
    """The control-flow operation types in `model`'s traced graph (every head is a part of it).
    A model this trace cannot take is looked at no further (none found: built in-process, as
    before): the trace only chooses where to build, and the build says what is wrong."""
    try:
        fn = tf.function(lambda x: model(x, training=False))
        graph = fn.get_concrete_function(tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32)).graph
    except Exception as exc:  # noqa: BLE001 - a hint, never a reason to fail
        log.debug("could not trace the model for control flow (%s: %s); building in-process", type(exc).__name__, exc)
        return set()
    return {op.type for op in graph.get_operations()} & CONTROL_FLOW_OPS


def converter_advice(flow: set[str]) -> str:
    """What to try when the converter crashed on a model with this control flow ("" for none)."""
    if flow & {"While", "StatelessWhile"}:
        return ("the model runs a while loop (a recurrent layer such as GRU or LSTM that is not unrolled), "
                "which TFLite's int8 calibration is known to crash on: build such layers with unroll=True "
                "(a fixed sequence length) and save the model again")
    if flow:
        return (f"the model has control flow ({', '.join(sorted(flow))}), which TFLite's int8 calibration is "
                "known to crash on: a model without it converts")
    return ""


def crash_error(code: int | None, dump: str, doing: str, converter_advice: str, who: str) -> WorkerCrashError:
    """The one line for a process (`who`) that died `doing` something: `code` is its exit code, negative
    for a signal; `dump` its faulthandler output, which says what crashed (the converter, ...)."""
    how = _signal_name(-code) if code is not None and code < 0 else f"exit status {code}"
    what = ("the TFLite converter" if "convert_head" in dump else
            "the LiteRT interpreter" if "runtime/litert.py" in dump else who)
    advice = (converter_advice if what == "the TFLite converter" and converter_advice else
              "the kernel's out-of-memory killer sends SIGKILL: try fewer --jobs or more memory" if how == "SIGKILL"
              else "-v shows the stack it crashed in")
    return WorkerCrashError(f"{what} crashed ({how}) {doing}; {advice}")


class InProcess:
    """Builds the splits one after another in this process (the caller has called use_in_process)."""

    def __init__(self, build: Build = build_split):
        self.build = build

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[int, dict]]:
        from splitpoint import partition_guard  # it imports this module

        for job in jobs:
            partition_guard.building(job.split)  # what the guard names if this process dies in it
            result = self.build(job)
            partition_guard.building(None)
            yield job.split, result

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Workers:
    """`count` spawned processes (TensorFlow does not survive fork), each initialised with
    split_build.init_worker(*init_args), building one job at a time; results come back as they
    complete. `name` (the model) goes into the message when one dies, and `converter_advice` when
    what died was the converter."""

    def __init__(self, count: int, init_args: tuple, fault_dir: Path, name: str, converter_advice: str = "",
                 build: Build = build_split):
        self.count, self.init_args, self.fault_dir, self.build = count, init_args, fault_dir, build
        self.name, self.converter_advice = name, converter_advice
        self._workers: list[_Worker] = []

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[int, dict]]:
        todo = deque(jobs)
        while True:
            for w in self._workers:
                if w.job is None and todo:
                    w.job = todo.popleft()
                    try:
                        w.conn.send(w.job)
                    except OSError:  # it died idle (in its initialisation, say): its sentinel says how
                        raise self._died(w) from None
            busy = [w for w in self._workers if w.job is not None]
            if not busy:
                return
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
            for w in busy:
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):  # it died while answering: its sentinel says how
                        raise self._died(w) from None
                    if msg[0] == "ready":
                        w.ready = True
                        continue
                    job, w.job = w.job, None
                    assert job is not None  # busy
                    if msg[0] == "error":
                        log.debug("split %d failed in worker %s:\n%s", job.split, w.proc.name, msg[2])
                        raise msg[1]
                    yield job.split, msg[1]
                elif w.proc.sentinel in ready:
                    raise self._died(w)

    def _died(self, w: _Worker) -> WorkerCrashError:
        w.proc.join(_EXIT_WAIT_S)
        dump = w.fault.read_text(errors="replace").strip() if w.fault.exists() else ""
        if dump:
            log.debug("worker %s (split %s) died (exit code %s); its stack:\n%s", w.proc.name, w.job and w.job.split,
                      w.proc.exitcode, dump)
        doing = (f"while building split {w.job.split} of {self.name}" if w.ready and w.job is not None
                 else f"while loading {self.name} to build its splits")
        return crash_error(w.proc.exitcode, dump, doing, self.converter_advice, "a worker process")

    def __enter__(self) -> Workers:
        ctx = multiprocessing.get_context("spawn")
        try:
            for i in range(self.count):
                parent, child = ctx.Pipe()
                fault = self.fault_dir / f"worker-{i}.fault"
                proc = ctx.Process(target=_worker_main, args=(child, self.init_args, str(fault), self.build),
                                   name=f"splitpoint-split-worker-{i}", daemon=True)
                try:
                    proc.start()
                finally:
                    child.close()  # the worker's end: its own copy is all it needs
                self._workers.append(_Worker(proc, parent, fault))
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Told to stop after a clean run; killed after a failure (their splits are not wanted)."""
        for w in self._workers:
            if kind is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            elif w.proc.is_alive():
                w.proc.kill()
        for w in self._workers:
            w.proc.join(_EXIT_WAIT_S)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()


class _Worker:
    def __init__(self, proc: Any, conn: Connection, fault: Path):
        self.proc, self.conn, self.fault = proc, conn, fault
        self.job: Job | None = None
        self.ready = False  # initialised: a death before is the model's load, not a split's build


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _worker_main(conn: Connection, init_args: tuple, fault_path: str, build: Build) -> None:
    """A worker: initialise, say so, then build each job sent until told to stop (None)."""
    with open(fault_path, "w") as fault:  # a native crash's Python stack: what the parent names
        faulthandler.enable(fault)
        try:
            init_worker(*init_args)
        except BaseException as exc:
            conn.send(("error", _portable(exc), traceback.format_exc()))
            return
        conn.send(("ready",))
        while (job := conn.recv()) is not None:
            try:
                conn.send(("done", build(job)))
            except BaseException as exc:
                conn.send(("error", _portable(exc), traceback.format_exc()))
                return


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (a PartitionError does); else a PartitionError saying the same
    (a ConfigError's (key, value, reason) do not come back through its message alone)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        if isinstance(exc, SplitpointError):
            same = PartitionError(str(exc))
            same.exit_code = exc.exit_code
            return same
        return PartitionError(f"{type(exc).__name__}: {exc}")
    return exc
