"""SIGTERM and SIGINT from the entry of `splitpoint edge`, not only once its agent exists.

The agent stops on either signal (after the current frame; exit 0). But it exists only after
the command line is read, the bundle checked and LiteRT imported and the heads loaded - one or
two seconds, more on a Pi - and a signal in that time met Python's defaults: SIGTERM killed the
process (exit 143) and Ctrl-C raised KeyboardInterrupt wherever it landed, without a word
either way. A service manager's stop or restart lands there easily.

So the process holds both signals from its entry (`HELD`, by `splitpoint.cli.run`, as soon as
Python has imported splitpoint.cli: about 0.1 s after the start on a PC) until the
command says what they mean: `splitpoint edge` takes the held one over into its `AgentStop`,
installed before it loads anything, and ends before its first frame; every other command gets
Python's defaults back with the held signal delivered to them, as it would have been.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Held:
    """SIGTERM and SIGINT held, not acted on, while the process reads its command line."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    def hold(self) -> None:
        for sig in SIGNALS:
            self._saved[sig] = signal.signal(sig, self._keep)

    def _keep(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def take(self) -> int | None:
        """The signal held (None: none, or nothing was held), for a command whose own handlers
        are installed now: the hold is over and what it replaced is not put back."""
        signum, self.signum = self.signum, None
        self._saved.clear()
        return signum

    def release(self) -> None:
        """Put back what the hold replaced (Python's defaults); a signal held meanwhile is then
        delivered as it would have been: SIGTERM ends the process, SIGINT raises KeyboardInterrupt."""
        saved, signum = dict(self._saved), self.take()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if signum is not None:
            signal.raise_signal(signum)


#: the process's hold, from `splitpoint.cli.run` until the command takes or releases it
HELD = Held()


class AgentStop:
    """`splitpoint edge`'s SIGTERM and SIGINT handler, installed before the agent exists: it
    remembers the first signal and, once `agent_stop` is set, stops the agent (after the
    current frame) on every one. A command run in-process (the bench's edge worker) gets a
    fresh one per run: a stop meant for an earlier run does not end this one."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.agent_stop: Callable[[], None] | None = None

    def install(self) -> AgentStop:
        for sig in SIGNALS:
            signal.signal(sig, self)
        self.note(HELD.take())  # after installing: a signal in between comes here, not to the hold
        return self

    def note(self, signum: int | None) -> None:
        if signum is not None and self.signum is None:
            self.signum = signum

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.note(signum)
        if self.agent_stop is not None:
            self.agent_stop()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
