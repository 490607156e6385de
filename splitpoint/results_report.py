"""`splitpoint results LOG...`: what happened on a flight, from the agent's results logs.

An operator copies a drone's log off after a flight (or reads a fleet's logs on a server)
and wants to know how it went: how many frames, where they ran, which splits, how long
they took, why frames ran locally instead of in the cloud, which replicas answered, how
many failed. Each log is read record by record (a day of a 10 fps camera is a million
records) into counts and latency bins (edge_node/bounded.py: percentiles within 0.05%),
so memory does not grow with the log. Either format (JSONL, SQLite); a log an agent is
still writing can be read (its torn last line, if any, is left out).

Reasons and errors are grouped by what comes before their details
(edge_node.results_records.reason_group, as the agent's fallback metric), each group with
its first text as the example.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_node.bounded import IdRanges, LatencyMedian
from edge_node.results import each_result
from edge_node.results_file import NOT_A_LOG_HINT
from edge_node.results_records import finite, reason_group
from splitpoint.errors import ConfigError

#: reasons and errors shown per log, most frequent first; the rest are counted in one line
SHOWN_REASONS = 8
#: an example longer than this is cut (the --json output has it whole)
EXAMPLE_CHARS = 160
#: the longest end-to-end time taken as a frame's, ms (an hour): a record's 1e308 made the median
#: Infinity (not JSON) and its max wrong; longer, negative or not finite, it is left out and counted
MAX_END_TO_END_MS = 3_600_000.0


@dataclass
class Grouped:
    """Counts of texts by group, with each group's first text as its example."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, text: str) -> None:
        group = reason_group(text)
        self.counts[group] += 1
        self.examples.setdefault(group, text)

    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Grouped) -> None:
        self.counts.update(other.counts)
        for group, example in other.examples.items():
            self.examples.setdefault(group, example)

    def as_json(self) -> list[dict[str, Any]]:
        return [{"reason": g, "frames": n, "example": self.examples[g]} for g, n in _ranked(self.counts)]


@dataclass
class LogSummary:
    """What one log (or several, added together) says."""

    name: str
    frames: int = 0
    status: Counter[str] = field(default_factory=Counter)
    where: Counter[str] = field(default_factory=Counter)
    splits: Counter[int] = field(default_factory=Counter)
    fallbacks: Grouped = field(default_factory=Grouped)
    errors: Grouped = field(default_factory=Grouped)
    replicas: Counter[str] = field(default_factory=Counter)  # cloud records: the replica that answered
    refused_by: Counter[str] = field(default_factory=Counter)  # local records: the replica that refused
    hedged: int = 0
    hedged_local_first: int = 0
    raced: int = 0
    #: answered by the cloud after the local run beside it (a hedge's, a race's) failed: the device erred
    local_errors: int = 0
    labelled: int = 0
    correct: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    latency: LatencyMedian = field(default_factory=LatencyMedian)
    models: Counter[str] = field(default_factory=Counter)  # records by the model they name (since 2026-12-07)
    #: records whose frame id an earlier record of the same log has: the agent writes one per frame,
    #: so these are logs joined together or written by two runs; counted, not taken for more frames
    repeated: int = 0
    #: ok records whose end_to_end is no time a frame takes (negative, not finite, over an hour): another
    #: writer's or a bad clock's; left out of the latency figures (a -5 was shown as 0.0) and counted
    odd_latency: int = 0
    _ids: IdRanges = field(default_factory=IdRanges, repr=False)

    def add(self, r: dict[str, Any]) -> None:
        self.frames += 1
        fid = r.get("frame_id")
        if isinstance(fid, int) and not isinstance(fid, bool) and not self._ids.add(fid):
            self.repeated += 1
        if isinstance(r.get("model"), str):
            self.models[r["model"]] += 1
        status = str(r.get("status", "?"))
        self.status[status] += 1
        stamp = r.get("capture_time_unix_ns")
        # a capture time between 1970 and 2262 (int64 ns): another writer's 1e23 once ended the report
        # in "Value too large for defined data type", naming no file
        if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 <= stamp < 2**63:
            self.first_ns = stamp if self.first_ns is None else min(self.first_ns, stamp)
            self.last_ns = stamp if self.last_ns is None else max(self.last_ns, stamp)
        if status == "failed":
            self.errors.add(str(r.get("error", "")))
        if status != "ok":
            return
        self.where[str(r.get("where", "?"))] += 1
        if isinstance(r.get("split"), int):
            self.splits[r["split"]] += 1
        if isinstance(r.get("fallback_reason"), str):
            self.fallbacks.add(r["fallback_reason"])
        if isinstance(r.get("replica"), str) and r["replica"]:  # a local record's refused the frame
            (self.replicas if r.get("where") == "cloud" else self.refused_by)[r["replica"]] += 1
        if r.get("hedged") is True:
            self.hedged += 1
            self.hedged_local_first += r.get("where") == "local"
        self.raced += r.get("raced") is True
        self.local_errors += isinstance(r.get("local_error"), str)
        timings = r.get("timings_ms")
        e2e = timings.get("end_to_end") if isinstance(timings, dict) else None
        if isinstance(e2e, (int, float)) and not isinstance(e2e, bool):
            if 0 <= e2e <= MAX_END_TO_END_MS:  # NaN too is not
                self.latency.add(float(e2e))
            else:
                self.odd_latency += 1
        if r.get("true_label") is not None:
            self.labelled += 1
            self.correct += r.get("label") == r.get("true_label")

    def merge(self, other: LogSummary) -> None:
        """Add another log's summary to this one (ids repeated within each log are counted; ids in
        two logs are not: rotated logs of a camera each number their own)."""
        self.frames += other.frames
        self.models.update(other.models)
        self.repeated += other.repeated
        self.odd_latency += other.odd_latency
        self.status.update(other.status)
        self.where.update(other.where)
        self.splits.update(other.splits)
        self.replicas.update(other.replicas)
        self.refused_by.update(other.refused_by)
        self.fallbacks.merge(other.fallbacks)
        self.errors.merge(other.errors)
        self.hedged += other.hedged
        self.hedged_local_first += other.hedged_local_first
        self.raced += other.raced
        self.local_errors += other.local_errors
        self.labelled += other.labelled
        self.correct += other.correct
        stamps = [t for t in (self.first_ns, other.first_ns) if t is not None]
        self.first_ns = min(stamps) if stamps else None
        stamps = [t for t in (self.last_ns, other.last_ns) if t is not None]
        self.last_ns = max(stamps) if stamps else None
        self.latency.merge(other.latency)

    def as_json(self) -> dict[str, Any]:
        lat = self.latency
        return {
            "log": self.name, "frames": self.frames, "status": dict(self.status), "where": dict(self.where),
            "splits": {str(k): n for k, n in sorted(self.splits.items())},
            "end_to_end_ms": {"median": lat.median(), "p95": lat.quantile(0.95), "p99": lat.quantile(0.99),
                              "max": lat.quantile(1.0), "left_out": self.odd_latency},
            "fallbacks": self.fallbacks.as_json(), "errors": self.errors.as_json(),
            "replicas": dict(_ranked(self.replicas)), "refused_by": dict(_ranked(self.refused_by)), "hedged": self.hedged,
            "hedged_local_first": self.hedged_local_first, "raced": self.raced, "local_errors": self.local_errors,
            "labelled": self.labelled, "correct": self.correct,
            "first_capture_unix_ns": self.first_ns, "last_capture_unix_ns": self.last_ns,
            "models": dict(_ranked(self.models)), "repeated_frame_ids": self.repeated,
        }


def read_log(path: str | Path, take: Callable[[dict[str, Any]], None]) -> None:
    """Every record of a results log of either format to `take` (edge_node.results.each_result);
    ConfigError naming the file as this command's LOG when it is not one (exit 2)."""
    try:
        each_result(path, take)
    except ConfigError as err:
        raise ConfigError("LOG", str(path), err.reason.removesuffix(NOT_A_LOG_HINT)) from None
    except FileNotFoundError:  # a name given wrong: exit 2, as any bad input
        raise ConfigError("LOG", str(path), "no such file") from None


def summarize(paths: Iterable[str]) -> list[LogSummary]:
    """One summary per log, and with several, one of all of them last."""
    out = []
    seen: set[tuple[int, int]] = set()
    for path in paths:
        if not str(path).strip():  # Path("") is the working directory: "is a directory" named nothing
            raise ConfigError("LOG", str(path), "an empty name: give a results log's file name")
        try:
            st = os.stat(path)
        except OSError:
            pass  # read_log names what is wrong with it
        else:
            if (st.st_dev, st.st_ino) in seen:  # its frames were counted twice in "all N logs"
                raise ConfigError("LOG", str(path), "given twice (perhaps by another name): each log is read once")
            seen.add((st.st_dev, st.st_ino))
        s = LogSummary(str(path))
        read_log(path, s.add)
        out.append(s)
    if len(out) > 1:
        total = LogSummary(f"all {len(out)} logs")
        for s in out:
            total.merge(s)
        out.append(total)
    return out


def _ranked(counts: Counter[Any]) -> list[tuple[Any, int]]:
    """Most frequent first; ties by name, so that the same logs always print the same."""
    return sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))


def _n(x: int) -> str:
    return f"{x:,}"


def _when(first_ns: int, last_ns: int) -> str:
    """'2026-12-06 18:52:25 - 18:53:11 UTC (46 s)'; the second date only when it differs."""
    first, last = time.gmtime(first_ns / 1e9), time.gmtime(last_ns / 1e9)
    end = "%H:%M:%S" if first[:3] == last[:3] else "%Y-%m-%d %H:%M:%S"
    h, rest = divmod(round((last_ns - first_ns) / 1e9), 3600)
    m, s = divmod(rest, 60)
    span = f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', first)} - {time.strftime(end, last)} UTC ({span})"


def _grouped(title: str, g: Grouped) -> list[str]:
    if not g.counts:
        return []
    lines = [f"  {title}: {_n(g.total())} frames"]
    width = len(_n(max(g.counts.values())))
    common = _ranked(g.counts)
    for group, n in common[:SHOWN_REASONS]:
        example = g.examples[group]
        if len(example) > EXAMPLE_CHARS:
            example = example[:EXAMPLE_CHARS] + "..."
        lines.append(f"    {_n(n):>{width}}  {group}" + (f'  e.g. "{example}"' if example != group else ""))
    if len(common) > SHOWN_REASONS:
        lines.append(f"    {_n(sum(n for _, n in common[SHOWN_REASONS:])):>{width}}  other reasons "
                     f"({len(common) - SHOWN_REASONS}): --json lists them")
    return lines


def format_summary(s: LogSummary) -> str:
    if not s.frames:
        return f"{s.name}: no records"
    head = f"{s.name}: {_n(s.frames)} frames"
    if s.repeated:
        head = (f"{s.name}: {_n(s.frames)} records of {_n(s.frames - s.repeated)} frames ({_n(s.repeated)} repeat "
                "a frame id of the same log: logs joined together, or two runs on one log)")
    if s.first_ns is not None and s.last_ns is not None:
        head += f" captured {_when(s.first_ns, s.last_ns)}"
    ok = s.status["ok"]
    where = ", ".join(f"{w} {_n(n)}" for w, n in _ranked(s.where))
    others = "".join(f" | {st} {_n(n)}" for st, n in _ranked(s.status) if st != "ok")
    lines = [head, f"  ok {_n(ok)}" + (f" ({where})" if where else "") + others]
    if s.models:  # one model, or several in one log (resumed with another bundle before 2026-12-07)
        unnamed = s.frames - sum(s.models.values())  # records written before records named their model
        lines.append(("  model: " if len(s.models) == 1 else "  models: ")
                     + ", ".join(f"{m} {_n(n)}" for m, n in _ranked(s.models))
                     + (f" ({_n(unnamed)} records name none)" if unnamed else ""))
    lat = s.latency
    if lat.count:
        lines.append(f"  end-to-end ms: median {lat.median():.1f}, p95 {lat.quantile(0.95):.1f}, "
                     f"p99 {lat.quantile(0.99):.1f}, max {lat.quantile(1.0):.1f}")
    if s.odd_latency:
        lines.append(f"  end-to-end of {_n(s.odd_latency)} record{'s' if s.odd_latency > 1 else ''} left out: "
                     "negative, not a number or over an hour")
    if s.splits:
        lines.append("  splits: " + ", ".join(f"k={k} {_n(n)} ({n / ok:.0%})" for k, n in _ranked(s.splits)))
    lines += _grouped("ran locally instead of in the cloud", s.fallbacks)
    if s.hedged or s.raced:
        lines.append(f"  hedged {_n(s.hedged)} (the local result first in {_n(s.hedged_local_first)}), "
                     f"raced {_n(s.raced)}")
    if s.local_errors:
        lines.append(f"  local runs that failed beside the cloud's answer: {_n(s.local_errors)} (the edge device erred: "
                     "`local_error` in those records)")
    if s.replicas:
        lines.append("  answered by: " + ", ".join(f"{r} {_n(n)}" for r, n in _ranked(s.replicas)))
    if s.refused_by:  # then run here: counted in the fallbacks above too
        lines.append("  refused by: " + ", ".join(f"{r} {_n(n)}" for r, n in _ranked(s.refused_by)))
    lines += _grouped("failed", s.errors)
    if s.labelled:
        lines.append(f"  accuracy against the true labels: {s.correct / s.labelled:.1%} "
                     f"({_n(s.correct)}/{_n(s.labelled)})")
    return "\n".join(lines)


def run_report(paths: list[str], as_json: bool = False) -> int:
    summaries = summarize(paths)
    if as_json:
        # strict JSON: nothing here is Infinity or NaN, and were it ever, null rather than unreadable output
        print(json.dumps(finite([s.as_json() for s in summaries]), indent=2, allow_nan=False))
    else:
        print("\n\n".join(format_summary(s) for s in summaries))
    return 0
