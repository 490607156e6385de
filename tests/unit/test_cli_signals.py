"""SIGTERM, SIGINT and SIGHUP held from the process's entry until the command says what they mean
(splitpoint/cli_signals.py); the real-process tests are in tests/functional/test_agent_faults.py
and tests/functional/test_startup_signals.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from splitpoint.cli_signals import HELD, CommandSignals, Held

pytestmark = pytest.mark.edge_side  # no TensorFlow


@pytest.fixture(autouse=True)
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    # SIGINT as Python sets it at start, whatever this process inherited: started in the background
    # by a shell without job control, pytest has it ignored, and what Held gives back on release
    # (what was there) is then SIG_IGN - two tests here failed in a CI run started that way
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    HELD.take()


def test_a_signal_held_while_the_command_line_is_read_reaches_what_was_there_on_release() -> None:
    """Every command but `edge` gets Python's defaults back, and the held signal with them."""
    got: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))  # stands in for SIG_DFL: it would end pytest
    held = Held()
    held.hold()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    assert got == [] and held.signum == signal.SIGTERM  # held, the first one
    held.release()
    assert got == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_sigint_is_a_keyboard_interrupt_once_released() -> None:
    held = Held()
    held.hold()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        held.release()


def test_the_agents_handler_takes_the_held_signal_over_and_stops_the_agent_once_it_exists() -> None:
    HELD.hold()
    os.kill(os.getpid(), signal.SIGINT)
    stop = CommandSignals().install()
    assert stop.signum == signal.SIGINT and stop.name == "SIGINT"  # came while the command line was read
    assert signal.getsignal(signal.SIGTERM) is stop and HELD.signum is None
    stopped: list[Any] = []
    stop.on_stop = stopped.append
    os.kill(os.getpid(), signal.SIGTERM)
    assert stopped == [signal.SIGTERM] and stop.signum == signal.SIGINT


def test_each_run_in_one_process_gets_its_own_stop() -> None:
    """The bench's edge worker runs `splitpoint edge` again and again in one process: a stop
    meant for an earlier run must not end the next one before it starts."""
    first = CommandSignals().install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert first.signum == signal.SIGTERM
    second = CommandSignals().install()  # not installed by `run()`: nothing held
    assert second.signum is None


def test_a_sighup_held_while_the_command_line_is_read_reaches_what_was_there_on_release() -> None:
    """SIGHUP is held too (it ended `splitpoint edge` at start-up, exit 129); every command but
    `edge` and `cloud` gets it delivered as before."""
    got: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))  # stands in for SIG_DFL
    held = Held()
    held.hold()
    os.kill(os.getpid(), signal.SIGHUP)
    assert got == [] and held.reload and held.signum is None  # held, and not a stop
    held.release()
    assert got == [signal.SIGHUP]


def test_a_sighup_is_kept_until_the_command_can_reload_and_is_never_a_stop() -> None:
    HELD.hold()
    os.kill(os.getpid(), signal.SIGHUP)
    signals = CommandSignals().install()
    assert signals.reload_pending and signals.signum is None and HELD.reload is False
    stopped: list[int] = []
    signals.on_stop = stopped.append
    os.kill(os.getpid(), signal.SIGHUP)  # still nothing to reload: kept, once
    reloads: list[bool] = []
    signals.reloads_to(lambda: reloads.append(True))
    assert reloads == [True] and not signals.reload_pending  # the kept one, now
    os.kill(os.getpid(), signal.SIGHUP)
    assert reloads == [True, True] and stopped == [] and signals.signum is None


def test_a_command_with_a_reload_of_its_own_gets_the_held_sighup_at_once() -> None:
    """`splitpoint cloud` says at once that it has nothing to reload."""
    HELD.hold()
    os.kill(os.getpid(), signal.SIGHUP)
    reloads: list[bool] = []
    CommandSignals(on_reload=lambda: reloads.append(True)).install()
    assert reloads == [True]
