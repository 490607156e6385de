"""What `splitpoint loadtest` measured: the figures (`LoadReport`), as text and as JSON.

The report is printed before its JSON is written, so a `--json` that cannot be written (a full
disk) loses no figure: they are on the screen, and the error names the file.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import numpy as np

from splitpoint.errors import RemoteError, SplitpointError, show_value
from splitpoint.files import json_object, write_replacing
from splitpoint.remote_hints import remote_hint

FORMAT = "splitpoint-loadtest"
#: the ways a replica held a frame it did not answer, in the order the report says them
HELD = ("unanswered", "skipped", "lost", "refused")
REPORT = "a splitpoint loadtest report (JSON)"


@dataclass
class LoadReport:
    config: dict[str, Any]
    seconds: float  # the run's length: --duration, or until it was interrupted
    complete: bool = True  # False: interrupted (SIGTERM, Ctrl-C); the figures are of the part run
    connected: int = 0  # drones whose stream was open when the clock started
    last_error: str = ""  # the latest stream failure, if any
    certificates: int = 0  # distinct client certificates the drones presented (0: none)
    sent: int = 0
    answered: int = 0
    skipped: int = 0
    no_stream: int = 0  # camera frames of drones with no stream open (refused, or between streams)
    unanswered: int = 0
    unpaced: int = 0  # camera frames due before the end that the pacer, behind its schedule, never reached
    pacer_late_ms: float = 0.0  # the most a frame was sent after its time
    pacer_behind: bool = False  # pacer_late_ms over PACER_MARGIN_S, or frames unpaced: the figures are the generator's
    refused: dict[str, int] = field(default_factory=dict)  # per-frame error code -> frames
    stream_failures: dict[str, int] = field(default_factory=dict)  # stream status -> frames lost with it
    replicas: dict[str, int] = field(default_factory=dict)  # replica -> frames it answered
    #: replica -> its frames not answered, by how: refused, lost (with its stream), unanswered (at the
    #: end), skipped (the camera's frames while its frames filled a drone's window); "?": a stream
    #: whose server never named itself (its metadata never came: not taken, or hung before it)
    held: dict[str, dict[str, int]] = field(default_factory=dict)
    per_agent_answered: list[int] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, mean

    @property
    def frames_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self), "frames_per_s": self.frames_per_s}

    def last_error_hint(self) -> str:
        """What the last stream error most likely means, as the agent would say it (a refused token
        is not "is the server running?")."""
        code, _, details = self.last_error.partition(": ")
        status = grpc.StatusCode.__members__.get(code)
        return remote_hint(RemoteError(status, details)) if status else ""

    def text(self) -> str:
        drones = len(self.per_agent_answered)
        lines = []
        if not self.complete:
            lines.append(f"interrupted after {self.seconds:.1f}s of {self.config.get('duration', 0):g}s: "
                         "the figures are of the part run")
        if self.pacer_behind:
            # the drones' threads starved the pacer (too many drones for this machine): the
            # frames went out late or not at all, and the latencies include this process's waits
            lines.append(f"warning: the load generator fell behind its schedule (frames sent up to "
                         f"{self.pacer_late_ms:.0f} ms late, {self.unpaced} never sent): these figures measure "
                         "this loadtest process, not the server; run fewer drones per loadtest (several "
                         "loadtests, on several machines)")
        lines.append(f"{drones} drones for {self.seconds:.1f}s: {self.sent} frames sent, "
                     f"{self.answered} answered ({self.frames_per_s:.1f} frames/s), {self.skipped} skipped (window full), "
                     + (f"{self.no_stream} with no stream open, " if self.no_stream else "")
                     + f"{self.unanswered} unanswered")
        if self.connected < drones:
            # a drone refused its stream sends nothing: its camera's frames have no stream, and
            # the figures are a smaller fleet's (e.g. drones sharing a certificate, held to
            # max_streams_per_agent together)
            lines.append(f"only {self.connected} of {drones} drones opened a stream "
                         f"before the clock started" + (f"; last stream error: {self.last_error}"
                                                        if self.last_error else ""))
        if 0 < self.certificates < drones:  # under mutual TLS: fewer agents than drones, said with the figures
            lines.append(f"{drones} drones presented {self.certificates} client certificate"
                         f"{'s' if self.certificates > 1 else ''}: drones sharing one are one agent to a server "
                         "that asks for them (max_streams_per_agent, max_queue_per_agent)")
        if self.latency_ms:
            lat = self.latency_ms
            lines.append(f"latency ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
                         f"mean {lat['mean']:.1f}")
        for title, counts in (("refused by the server", self.refused), ("lost with their stream", self.stream_failures)):
            if counts:
                lines.append(f"{title}: " + ", ".join(f"{code} {n}" for code, n in sorted(counts.items())))
        for replica in sorted(self.replicas.keys() | self.held.keys()):
            n = self.replicas.get(replica, 0)
            # a hung replica answers nothing more, so its share alone looked normal: what it held says it
            held = ", ".join(f"{self.held[replica][how]} {how}" for how in HELD if self.held.get(replica, {}).get(how))
            lines.append(f"replica {replica}: {n} frames ({n / max(1, self.answered):.1%})"
                         + (f"; not answered: {held}" if held else ""))
        if self.per_agent_answered:
            mean = statistics.fmean(self.per_agent_answered)
            lines.append(f"answered per drone: min {min(self.per_agent_answered)}, mean {mean:.1f}, "
                         f"max {max(self.per_agent_answered)}")
        return "\n".join(lines)

    def save(self, path: str) -> None:
        """Write the JSON to `path` (`--json`); a failure names the file (an OSError of a write
        names none: "No space left on device" alone)."""
        try:
            write_replacing(path, json.dumps(self.to_dict(), indent=2), "json", REPORT, is_report)
        except OSError as err:
            raise SplitpointError(f"json = {show_value(path)}: the report could not be written ({err.strerror or err}); "
                                  "its figures are the ones printed above") from None


def latency_figures(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of the answered frames' latencies (none: {})."""
    if not latencies_ms:
        return {}
    values = np.asarray(latencies_ms)
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "p99": float(np.percentile(values, 99)), "mean": statistics.fmean(latencies_ms)}


def is_report(data: bytes) -> bool:
    """An earlier report, which `--json` may replace (and nothing else: splitpoint/files.py); one
    written before reports said their format is known by its keys."""
    report = json_object(data) or {}
    return report.get("format") == FORMAT or {"config", "seconds", "per_agent_answered", "frames_per_s"} <= set(report)
