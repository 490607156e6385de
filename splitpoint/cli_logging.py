"""Logging for the `splitpoint` command line: the root logger to stderr, and put back as it was
when an in-process main() returns (tests and scripts call it)."""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record is written, not as it was when logging was set
    up: a caller running main() in-process (pytest's capture, for one) swaps sys.stderr and closes
    the old one, and a thread still logging afterwards must not write to a closed file."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr (StreamHandler.__init__ assigns one)


def setup_logging(level: str = "info") -> None:
    """The root logger to stderr at `level`, in place of whatever handlers it had (main() puts
    those back when it returns)."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


@contextmanager
def logging_restored() -> Iterator[None]:
    """The root logger's handlers and level as they were, once the block ends: an in-process
    main() (tests, scripts) leaves no handler of its own behind."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


#: the exit code of a command whose output's reader went away, as of a process a closed pipe ends (SIGPIPE)
PIPE_CLOSED_EXIT = 128 + 13


def stdout_gone() -> bool:
    """True when stdout's reader has gone (every read end of its pipe closed: POLLERR on the write
    end); stdout then points at /dev/null, so that the interpreter's own flushes fail no more.
    (A second flush cannot tell: the failed one dropped what was buffered, and succeeds.)"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fd (a test's capture), or no poll here
        return False
    if gone:
        _stdout_to_devnull()
    return gone


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def closed_streams_to_devnull() -> None:
    """stdout and stderr, when the process was started without them (`splitpoint cloud >&-`: fd 1
    closed, sys.stdout None), onto /dev/null, as output no one reads: the process's final flush
    met None (`AttributeError: 'NoneType' object has no attribute 'flush'`, a traceback and
    exit 1 whatever the command did), and the first file or socket the command opened would
    have taken fd 1, where a native library's print or a child process's output would then go.
    Called first thing, before the command opens anything."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
            continue  # open, but not Python's (an embedding): left alone
        except OSError:
            pass
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)  # the lowest free number: fd itself, unless 0 is closed too
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            setattr(sys, name, open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False))
        except OSError:  # no /dev/null: the flush below copes with None
            pass


def say(text: str) -> None:
    """One line on stdout for whoever reads it (the server's address, the agent's summary).

    A reader that has gone (`splitpoint cloud | head -1` once it has the address, a `tee`
    killed), or a file that takes no more (`>/dev/full`, a full disk or quota, an I/O error),
    must not stop a server or change a run's exit code: stdout is pointed at /dev/null, the
    line is logged instead (stderr, the journal), once, and the work goes on. (A full disk
    under stdout stopped a server that was already serving, without a drain: `splitpoint
    cloud: error: No space left on device`, exit 1.)"""
    try:
        print(text, flush=True)
    except ValueError as err:  # stdout closed in this process
        _stdout_to_devnull()  # the interpreter's own flushes fail no more
        logging.getLogger("splitpoint").warning("stdout is closed (%s): %s", err, text)
    except OSError as err:
        if err.errno not in _UNWRITABLE:
            raise
        _stdout_to_devnull()
        state = "is closed" if err.errno == errno.EPIPE else "cannot be written"
        logging.getLogger("splitpoint").warning("stdout %s (%s): %s", state, err.strerror or err, text)


#: what a write to stdout fails with when no one will read it, or its file takes no more
_UNWRITABLE = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def flush_output(code: int) -> int:
    """Flush stdout and stderr before the process ends; the exit code to end with.

    Output that could not be written fails a command that had succeeded: `splitpoint --version
    > /dev/full` exited 0 with nothing written, where `inspect` said so and exited 1. A reader
    that went away (EPIPE) keeps the command's code, as `say` does."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started without it, and /dev/null could not stand in
                stream.flush()
        except ValueError:  # closed in this process: nothing more can be said
            pass
        except OSError as err:
            if stream is sys.stdout and code == 0 and err.errno != errno.EPIPE:
                code = unwritten_output(err)
    return code


def unwritten_output(err: OSError) -> int:
    """Say that stdout could not be written (when stderr can be); exit code 1."""
    try:
        print(f"splitpoint: error: the output could not be written: {err.strerror or err}", file=sys.stderr,
              flush=True)
    except (OSError, ValueError):
        pass
    return 1
