"""`splitpoint partition` as a forked child under a parent that outlives its native crashes.

The TFLite converter can die by a signal instead of raising (splitpoint/split_workers.py). Splits
built in spawned workers are told by name when they do, but a worker costs ~5 s (a fresh Python,
TensorFlow's import, the model's load), so small models without control flow are built in the
partitioner's own process - where such a crash ended `splitpoint partition` with no word (exit
139, nothing printed but the shell's "Segmentation fault").

A fork before TensorFlow is imported costs next to nothing (measured at a few milliseconds: the
parent has imported only the command line), so the command itself runs in a child and the
parent only waits: a child that dies by a signal becomes the same one line as a worker's death
("the TFLite converter crashed (SIGSEGV) while building split 3 of m.keras; ..."), exit 1, with
its staging directory removed so -o is left as it was. The child notes which split it is building
(`building`) and dumps its Python stack on a crash (faulthandler), which is how the line can name
the split and what crashed.

Only for the process's own command line (splitpoint.cli.run), on a system with fork, before
TensorFlow is imported (a fork after would copy its threads' locks): a program or test calling
splitpoint.cli.main() keeps running the command in its own process.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from splitpoint.partition_output import discard_builds
from splitpoint.split_workers import crash_error

log = logging.getLogger("splitpoint.partition")

#: the child's notes: "building" (the split being built, while one is), "fault" (faulthandler's dump)
_notes: Path | None = None


#: set by splitpoint.cli.run: this process is the command line's, not a program calling main()
ENTRY = threading.Event()


def can_isolate() -> bool:
    """A fork is cheap and safe here: the process is the command's, the system has fork, and
    TensorFlow is not loaded yet."""
    return ENTRY.is_set() and hasattr(os, "fork") and "tensorflow" not in sys.modules


def building(split: int | None) -> None:
    """Say which split this process is building now (None: none); a no-op outside the guard."""
    if _notes is not None:
        (_notes / "building").write_text("" if split is None else str(split))


def isolated(run: Callable[[], int], model: str, output: Path) -> int:
    """run() in a forked child; its exit code, or WorkerCrashError when it died by a signal."""
    global _notes
    notes = Path(tempfile.mkdtemp(prefix="splitpoint-partition-"))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: the command, then out, as splitpoint.cli.run would end it
        code = 1
        try:
            _notes = notes
            fault = open(notes / "fault", "w")  # noqa: SIM115 - open until the process ends
            faulthandler.enable(fault)
            code = run()
        except BaseException:  # what the command line's handlers do not catch is a bug: show where
            traceback.print_exc()
        finally:
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)
    try:
        status, stopped = _wait(pid)
        if not os.WIFSIGNALED(status):
            return os.waitstatus_to_exitcode(status)
        discard_builds(output, pid)  # what its staging directory's cleanup would have done
        sig = os.WTERMSIG(status)
        if sig == stopped or sig in _STOPS:  # stopped, not crashed: this process ends the same way
            shutil.rmtree(notes, ignore_errors=True)
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        dump = (notes / "fault").read_text(errors="replace").strip()
        if dump:
            log.debug("the partitioner (pid %d) died; its stack:\n%s", pid, dump)
        split = (notes / "building").read_text().strip() if (notes / "building").exists() else ""
        doing = f"while building split {split} of {model}" if split else f"while partitioning {model}"
        raise crash_error(-sig, dump, doing, "", "the partitioner")
    finally:
        shutil.rmtree(notes, ignore_errors=True)


#: signals that stop a run (a user's, a supervisor's), not crashes to explain
_STOPS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _wait(pid: int) -> tuple[int, int | None]:
    """Wait for the child: (its wait status, the signal passed on to it, if any). Ctrl-C reaches the
    child from the terminal itself (it cleans up and says "interrupted"), so the parent ignores it;
    a SIGTERM sent to the parent alone is passed on, so `kill` stops the run as it always did."""
    stopped: list[int] = []

    def pass_on(sig: int, frame: FrameType | None) -> None:
        stopped.append(sig)
        os.kill(pid, sig)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, pass_on)}
    try:
        _, status = os.waitpid(pid, 0)  # retried after a handled signal (PEP 475)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status, stopped[-1] if stopped else None
