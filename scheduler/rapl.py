"""RaplMeter: Intel (and recent AMD) RAPL package energy counters under /sys/class/powercap, a
development aid on x86 machines.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.meters import (
    POWERCAP_ROOT,
    PowerWindow,
    _check_interval,
    _os_reason,
    _Poller,
    _read_int,
    _read_text,
)
from splitpoint.errors import BackendUnavailableError

log = logging.getLogger(__name__)


@dataclass
class _RaplDomain:
    name: str  # "intel-rapl:0"
    label: str  # the domain's `name` file ("package-0")
    energy_file: Path
    max_range_uj: int


class RaplMeter:
    """Intel (and recent AMD) RAPL package energy counters under /sys/class/powercap.

    A development aid on x86 machines: RAPL counts the CPU packages' energy (cores, caches,
    uncore; not the whole machine). Top-level domains `intel-rapl:N` are packages; their
    sub-zones (`intel-rapl:N:M`, cores/uncore/dram) are inside a package's count or would be
    double-counted, so only packages are summed.

    A window is energy delta / time. The counters wrap at `max_energy_range_uj`; a poller reads
    them every `poll_s` so that a wrap is seen between two reads even in a long window (one
    wrap between reads is corrected, more would need a counter range smaller than
    poll_s x power, which real ranges (~262 kJ) are not).

    Since Linux 5.10 `energy_uj` is readable by root only (CVE-2020-8694); a package that cannot
    be read is treated as absent, with that reason.
    """

    name = "rapl"

    def __init__(self, root: Path = POWERCAP_ROOT, poll_s: float = 1.0):
        self.poll_s = _check_interval("poll_s", poll_s)
        self.root = Path(root)
        self.domains: list[_RaplDomain] = []
        problems: list[str] = []
        try:
            entries = sorted(
                (p for p in self.root.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name)),
                key=lambda p: int(p.name.split(":")[1]),
            )
        except OSError:
            entries = []
        for d in entries:
            energy = d / "energy_uj"
            try:
                _read_int(energy)
                max_range = _read_int(d / "max_energy_range_uj")
            except PermissionError:
                problems.append(f"{d.name}/energy_uj: permission denied (root only since Linux 5.10)")
                continue
            except (OSError, ValueError) as exc:
                why = _os_reason(exc) if isinstance(exc, OSError) else f"unparsable ({exc})"
                problems.append(f"{d.name}: {why}")
                continue
            if max_range <= 0:
                problems.append(f"{d.name}/max_energy_range_uj: {max_range} is not a positive range")
                continue
            try:
                label = _read_text(d / "name")
            except OSError:
                label = d.name
            self.domains.append(_RaplDomain(d.name, label, energy, max_range))
        if not self.domains:
            why = f"no readable RAPL counters under {self.root}"
            if problems:
                why += f" ({'; '.join(problems)})"
            raise BackendUnavailableError(why)
        if problems:
            log.warning("rapl: skipping %s", "; ".join(problems))
        self.description = "RAPL " + " + ".join(f"{d.label} ({d.name})" for d in self.domains)

    def _read_all(self) -> list[int]:
        return [_read_int(d.energy_file) for d in self.domains]

    def _delta_uj(self, before: list[int], after: list[int]) -> int:
        total = 0
        for d, e0, e1 in zip(self.domains, before, after, strict=True):
            total += e1 - e0 if e1 >= e0 else e1 + d.max_range_uj - e0
        return total

    def read_watts(self, interval_s: float = 0.1) -> float:
        """Mean power over a short interval: RAPL has no instantaneous reading."""
        with self.window() as w:
            time.sleep(interval_s)
        if w.mean_watts is None:
            raise BackendUnavailableError(f"{self.description} could not be read")
        return w.mean_watts

    @contextlib.contextmanager
    def window(self) -> Iterator[PowerWindow]:
        """Energy counted between entry and exit, over the time between the two reads."""
        result = PowerWindow()
        state: dict[str, Any] = {"last": None, "uj": 0, "reads": 0, "t_first": None, "t_last": None}
        errors: list[str] = []
        lock = threading.Lock()

        def read() -> None:
            try:
                now = self._read_all()
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
                return
            t = time.monotonic()
            with lock:
                if state["last"] is not None:
                    state["uj"] += self._delta_uj(state["last"], now)
                else:
                    state["t_first"] = t
                state["last"], state["t_last"] = now, t
                state["reads"] += 1

        poller = _Poller("rapl", self.poll_s, read)
        start = time.monotonic()
        read()
        poller.start()
        try:
            yield result
        finally:
            poller.stop()
            read()
            result.seconds = time.monotonic() - start
            result.samples = state["reads"]
            span = (state["t_last"] - state["t_first"]) if state["reads"] >= 2 else 0.0
            result.mean_watts = state["uj"] / 1e6 / span if span > 0 else None
            if errors:
                log.warning("rapl: %d reads failed in a %.3f s window (last: %s)", len(errors), result.seconds, errors[-1])
