"""SIGTERM, SIGINT and SIGHUP from the process's entry, not only once the command's work exists.

`splitpoint edge` and `splitpoint cloud` take seconds to start: the command line read, the bundle
checked, LiteRT and the heads (edge) or TensorFlow and the warmed tails (cloud) loaded - more on
a Pi. A signal in that time met Python's defaults: SIGTERM killed the process (exit 143) and
Ctrl-C raised KeyboardInterrupt wherever it landed (TensorFlow's import once swallowed it and
the server went on to serve), without a word either way; SIGHUP killed it (exit 129). A service
manager's stop, restart or reload, and Kubernetes stopping a pod still starting during a rollout
or a scale-down, land there easily.

So the process holds the three from its entry (`HELD`, by `splitpoint.entry.run` before it
imports anything heavy; `splitpoint.cli.run` holds them too when it is the entry, as in tests)
until the command says what they mean. `edge` and `cloud` take the held ones over into their `CommandSignals`,
installed before they load anything: a stop (SIGTERM, SIGINT) that came before their work
exists ends them before it starts, exit 0 and one line; once it exists, `on_stop` stops it (the
agent after the current frame, the server by draining). A SIGHUP goes to `on_reload` (edge: the
agent re-reads [policy]; cloud: nothing to re-read, said in a log line), kept until the command
sets one. Every other command gets Python's defaults back with the held signals delivered to
them, as they would have been. `bench`, `loadtest`, `demo` and `profile` then make SIGTERM a
Ctrl-C (`sigterm_interrupts`): they stop what they started, keep what they measured and exit 130.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOPS = (signal.SIGTERM, signal.SIGINT)
#: the reload signal (None where there is none: Windows)
RELOAD: signal.Signals | None = getattr(signal, "SIGHUP", None)
SIGNALS = STOPS + ((RELOAD,) if RELOAD is not None else ())


class Held:
    """SIGTERM, SIGINT and SIGHUP held, not acted on, while the process reads its command line."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal
        self.reload = False  # a SIGHUP came
        self._saved: dict[int, Any] = {}

    def hold(self) -> None:
        """Hold the three (again a no-op: what the first hold replaced is what release puts back)."""
        if self._saved:
            return
        for sig in SIGNALS:
            self._saved[sig] = signal.signal(sig, self._keep)

    def _keep(self, signum: int, frame: FrameType | None) -> None:
        if signum == RELOAD:
            self.reload = True
        elif self.signum is None:
            self.signum = signum

    def take(self) -> tuple[int | None, bool]:
        """(the stop signal held or None, whether a SIGHUP was), for a command whose own handlers
        are installed now: the hold is over and what it replaced is not put back."""
        signum, reload = self.signum, self.reload
        self.signum, self.reload = None, False
        self._saved.clear()
        return signum, reload

    def release(self) -> None:
        """Put back what the hold replaced (Python's defaults); a signal held meanwhile is then
        delivered as it would have been: SIGTERM and SIGHUP end the process, SIGINT raises
        KeyboardInterrupt."""
        saved = dict(self._saved)
        signum, reload = self.take()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if signum is not None:
            signal.raise_signal(signum)
        if reload and RELOAD is not None:
            signal.raise_signal(RELOAD)


#: the process's hold, from `splitpoint.entry.run` until the command takes or releases it
HELD = Held()


class CommandSignals:
    """The signal handler of a command that takes seconds to start (`edge`, `cloud`), installed
    before it loads anything. It remembers the first stop signal (`signum`: the command looks
    at it once its work exists, and ends before starting that work) and, once `on_stop` is set,
    calls it on every stop signal. A SIGHUP calls `on_reload`, or is kept (`reload_pending`)
    until `reloads_to` sets it. A command run in-process (the bench's edge worker) gets a fresh
    one per run: a stop meant for an earlier run does not end this one."""

    def __init__(self, on_reload: Callable[[], None] | None = None) -> None:
        self.signum: int | None = None
        #: called with the signal number on each SIGTERM or SIGINT once the command's work exists
        self.on_stop: Callable[[int], None] | None = None
        self.on_reload = on_reload
        self.reload_pending = False

    def install(self) -> CommandSignals:
        for sig in SIGNALS:
            signal.signal(sig, self)
        signum, reload = HELD.take()  # after installing: a signal in between comes here, not to the hold
        self.note(signum)
        if reload:
            self._reload()
        return self

    def note(self, signum: int | None) -> None:
        if signum is not None and self.signum is None:
            self.signum = signum

    def reloads_to(self, on_reload: Callable[[], None]) -> None:
        """From now on a SIGHUP calls `on_reload`; one kept meanwhile calls it now."""
        self.on_reload = on_reload
        if self.reload_pending:  # a SIGHUP right here may call it twice: a reload request is idempotent
            self.reload_pending = False
            on_reload()

    def _reload(self) -> None:
        if self.on_reload is None:
            self.reload_pending = True
        else:
            self.on_reload()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if signum == RELOAD:
            self._reload()
            return
        self.note(signum)
        if self.on_stop is not None:
            self.on_stop(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextlib.contextmanager
def sigterm_interrupts(once: bool = False) -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (KeyboardInterrupt: exit 130, "interrupted"), for a command
    that started processes of its own and must stop them: Python's default ends the process at
    once and leaves them running. `once`: the first SIGTERM or Ctrl-C interrupts and later ones
    are ignored, so that a second one cannot cut short the stopping of what the command started
    (the demo's server was left running by a second Ctrl-C)."""
    def interrupt(signum: int, frame: object) -> None:
        if once:
            for sig in STOPS:
                signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (STOPS if once else (signal.SIGTERM,))}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
