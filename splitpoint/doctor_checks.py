"""The doctor's check machinery: a Check line, a guard that turns a broken check into a FAIL
line, and a block that keeps LiteRT's finaliser noise off the screen."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Check:
    status: str  # "ok", "warn", "FAIL", "skip", or "hint": advice, not a finding
    name: str
    detail: str

    def line(self) -> str:
        return f"[{self.status:>4}] {self.name}: {self.detail}"


def _plain(exc: BaseException) -> str:
    """An exception as one line of text, without a traceback."""
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def guarded(name: str, check: Callable[..., list[Check]], *args: Any, **kwargs: Any) -> list[Check]:
    """Run one check; an unexpected error becomes a FAIL line instead of a traceback."""
    from splitpoint.errors import SplitpointError

    try:
        return check(*args, **kwargs)
    except SplitpointError as err:  # already in plain words, naming the key or file
        return [Check("FAIL", name, _plain(err))]
    except Exception as exc:  # the doctor must report, never crash
        log.debug("check %s failed", name, exc_info=True)
        return [Check("FAIL", name, f"the check could not run ({type(exc).__name__}: {_plain(exc)})")]


@contextlib.contextmanager
def _quiet_unraisable() -> Iterator[None]:
    """Swallow "Exception ignored in ..." reports while the block runs.

    LiteRT's Delegate.__del__ fails on a delegate whose library did not load and
    Python prints that as a traceback; the doctor reports the real cause itself.
    """
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: log.debug("ignored: %r in %r", unraisable.exc_value, unraisable.object)
    try:
        yield
    finally:
        gc.collect()  # finalise the half-built delegate while the hook is still quiet
        sys.unraisablehook = previous

