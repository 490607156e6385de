"""The edge device's health: a few failed runs in a row end the run.

A Coral USB accelerator that drops off the bus (an undervoltage, a loose cable) fails every
later invocation of the interpreters made on it, which hold the device as it was. Each such
frame gets a failure record, and once `limit` runs in a row have failed the agent stops with
one message and exit 1: systemd's restart then opens the device again. Without it the agent
failed every frame of the flight, each with a traceback, until someone restarted it (or, for
a head that failed on the capture thread, died of the exception). A run that succeeds starts
the count again: one odd failure costs its frame only.

Both edge paths report here: heads run by `EdgeAgent.process` on the capture thread, and
whole-model runs on the local executor (edge_node/edge_work.py). Only the runs themselves
are counted, not what is made of their outputs: a failure after the run is not the device's.

The fatal message names the device, the last error and, on a Raspberry Pi that reports
under-voltage, that too (splitpoint/power_supply.py).

Locks: `_lock` is a leaf; the fatal message and `on_fatal` (it sets the agent's stop event)
are made outside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from splitpoint.errors import SplitpointError
from splitpoint.power_supply import power_note

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: failed runs in a row that end the run
FAILURES_FATAL = 3


class DeviceFailedError(SplitpointError):
    """The edge device failed several runs in a row: the agent stops (exit 1)."""


class DeviceHealth:
    def __init__(self, device: str, on_fatal: Callable[[], None], limit: int = FAILURES_FATAL,
                 power: Callable[[], str] = power_note):
        """`power`: a clause on the power supply for the fatal message (splitpoint/power_supply.py:
        a Pi's under-voltage explains a USB accelerator gone), or ""."""
        self.device = device
        self.on_fatal = on_fatal
        self.limit = limit
        self.power = power
        #: set once `limit` runs in a row failed, before on_fatal; the agent raises it when it stops
        self.fatal: DeviceFailedError | None = None
        self._in_a_row = 0
        self._told = False  # the limit was reached (fatal is being made, or made)
        self._lock = threading.Lock()

    def ok(self) -> None:
        """A run succeeded: the device works."""
        with self._lock:
            self._in_a_row = 0

    def failed(self, what: str, exc: BaseException) -> str:
        """Count a failed run of `what` ("head 8", "the whole model"); its frame's failure message.
        The `limit`-th in a row makes `fatal` and calls `on_fatal` once."""
        message = f"{what} failed on {self.device}: {exc!r}"
        with self._lock:
            self._in_a_row += 1
            n = self._in_a_row
            now_fatal = n >= self.limit and not self._told
            self._told = self._told or now_fatal
        # the frame's failure record is logged by the recorder; the traceback only with -v
        log.debug("%s (%d in a row; %d end the run)", message, n, self.limit, exc_info=exc)
        if now_fatal:  # once; outside the lock: reading the power supply may run vcgencmd
            self.fatal = DeviceFailedError(f"the edge device ({self.device}) failed {n} runs in a row, the last: "
                                           f"{message}{self.power()}. {self._advice()}")
            self.on_fatal()
        return message

    def _advice(self) -> str:
        if self.device.startswith("edgetpu"):
            return ("A USB accelerator that dropped off the bus fails every run until it is opened again: check "
                    "the power supply and cable (dmesg, vcgencmd get_throttled; docs/field-deployment.md); "
                    "restarting the agent opens the device again (systemd does)")
        return "Restarting the agent loads the heads again (systemd does); run with -v for the tracebacks"
