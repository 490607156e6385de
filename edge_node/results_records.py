"""A results record as the log stores it: one JSON object per frame, with an integer frame_id.

`dumps` writes a record as one line of strict JSON (a score or timing that is not finite
becomes null: the log stays readable to any JSON reader); `scan_jsonl` reads a JSONL log
back record by record, in the memory of one, telling a torn last line (what a
crash leaves: ignored) from a file that is not a results log (ConfigError naming the line);
`origin` is where a record says its frame came from, what a resumed run checks against its
source (edge_node/capture.py); `reason_group` is a fallback reason without its details.
`each_result` and `read_results` read a log of either format (`splitpoint results`, the demo);
`last_frame_id` is the largest id one records (a camera's resume after a rotation).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from splitpoint.errors import ConfigError
from splitpoint.files import open_regular, parse_json

from .results_file import (
    NOT_A_LOG,
    check_sqlite_results,
    is_sqlite,
    read_only_sqlite,
    unreadable_sqlite,
)

log = logging.getLogger("edge_node.results")

#: a line longer than this is not a record (records are a few hundred bytes; detections a few
#: kB): reading stops there instead of taking a whole binary file into memory
MAX_LINE_BYTES = 16 << 20

def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON has no Infinity or NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(record: dict[str, Any]) -> str:
    try:
        return json.dumps(record, separators=(",", ":"), default=float, allow_nan=False)
    except ValueError:  # a bare NaN/Infinity would make the line unreadable to strict JSON readers
        return json.dumps(finite(record), separators=(",", ":"), default=float, allow_nan=False)


def frame_id(record: dict[str, Any]) -> int:
    fid = record.get("frame_id")
    if isinstance(fid, bool) or not isinstance(fid, int):
        raise ValueError(f"a result record needs an integer frame_id, not {json.dumps(fid, default=str)}")
    return fid


#: how the agent writes a record's start (`dumps`: frame_id, origin, then model if it names one; JSON
#: strings without escapes - non-ASCII is escaped - here): what `scan_jsonl` reads them from without
#: parsing the line
_PLAIN = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
_RECORD_START = re.compile(rb'\{"frame_id":(0|[1-9][0-9]*),"origin":' + _PLAIN + rb'(?:,"model":' + _PLAIN +
                           rb')?(?!,"model":)[,}]')  # a model with escapes: the line is parsed


#: a model named elsewhere in the line than right after the origin (another writer's order):
#: such a line is parsed, or its model would be read as none
_MODEL_KEY = b'"model"'


def scan_jsonl(path: Path, fh: IO[bytes], take: Callable[[dict[str, Any]], None],
               take_start: Callable[[int, str, str | None], None] | None = None) -> int:
    """Each record of a JSONL log read from `fh` to `take`, none kept (a log of a million records
    is read in the memory of one); returns the byte length of its intact part (a torn final line
    excluded). ConfigError at the first line that shows the file is not a results log.
    `take_start`: only frame ids, origins and models are wanted - a whole line that starts as the
    agent writes a record gives them to take_start(id, origin, model or None) unparsed (3x faster). Any other line
    (another writer's, a torn one, an origin null or with escapes) is read as above, with its
    checks: a line is not trusted to be a record unless it begins as one, and what follows its
    origin is not looked at."""
    good = 0
    n = 0
    while line := fh.readline(MAX_LINE_BYTES):
        n += 1
        whole = line.endswith(b"\n")
        if not whole and len(line) == MAX_LINE_BYTES:
            raise ConfigError("results", str(path), NOT_A_LOG.format(f"line {n} is longer than {MAX_LINE_BYTES >> 20} MiB"))
        if (take_start is not None and whole and (start := _RECORD_START.match(line)) is not None
                and (start[3] is not None or _MODEL_KEY not in line[start.end():])):  # a model further on: parsed
            take_start(int(start[1]), start[2].decode("ascii"), None if start[3] is None else start[3].decode("ascii"))
        elif line.strip():
            try:
                record = parse_json(line)
            except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, nested too deeply
                if not whole and (line.startswith(b"{") or not line.strip(b"\0")):  # a record cut short
                    log.warning("results log %s: ignoring a torn last line (%d bytes: %s)", path, len(line), exc)
                    break
                raise ConfigError("results", str(path), NOT_A_LOG.format(f"line {n} is not JSON: {exc}")) from None
            try:
                if not isinstance(record, dict):
                    raise ValueError(f"line {n} is not a JSON object")
                frame_id(record)
            except ValueError as exc:  # whole JSON, so not torn: a file of something else
                raise ConfigError("results", str(path), NOT_A_LOG.format(f"line {n}: {exc}")) from None
            take(record)
        good += len(line)
    return good


def model(record: dict[str, Any]) -> str | None:
    """The record's `model` (`model_tag` of the agent's bundle), None where it has none (older logs)."""
    value = record.get("model")
    return value if isinstance(value, str) else None


def model_tag(model_name: str, model_digest: str) -> str:
    """What a record names its model by: "digits-cnn@sha256:f63acfb5b365" (the digest's first 12 hex
    digits, as the server's log shows it)."""
    return f"{model_name}@{model_digest[:19]}"


def origin(record: dict[str, Any]) -> str | None:
    """The record's `origin` (file name, "clip.mp4#12", "synthetic#3"), None where it has none."""
    value = record.get("origin")
    return value if isinstance(value, str) else None


#: records read between two looks at whether the agent was told to stop (a few ms of reading)
STOP_CHECK_RECORDS = 4096


class ReadingStopped(Exception):
    """Opening the log was given up: the agent was told to stop while it read the records."""


class StopCheck:
    """Called once per record read: raises ReadingStopped once `stop()` says so. A log of months
    takes minutes to read on a Pi, and SIGTERM must end the agent within grace_s (s31-soak: 15 s
    with grace_s = 2 for 1,000,000 records, where the read alone takes 10 s)."""

    def __init__(self, stop: Callable[[], bool]):
        self._stop, self._read = stop, 0

    def __call__(self) -> None:
        self._read += 1
        if self._read % STOP_CHECK_RECORDS == 0 and self._stop():
            raise ReadingStopped


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_group(text: str) -> str:
    """A fallback reason or error without its details: the part before the first " (" or ": ",
    numbers read as N. "stream ended before the answer (UNAVAILABLE: Socket closed)" and
    "... (INTERNAL: ...)" are one group, "nothing came back on its stream for 2002 ms" and
    "... 2019 ms" another: a few dozen groups at most, where the texts are unbounded (the
    server's words are in them). `splitpoint results` and the agent's fallback metric use it."""
    cut = [i for i in (text.find(" ("), text.find(": ")) if i > 0]
    return _NUMBER.sub("N", text[: min(cut)] if cut else text)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a results log of either format, in the order written."""
    records: list[dict[str, Any]] = []
    each_result(path, records.append)
    return records


def sqlite_record(fid: int, text: Any) -> dict[str, Any]:
    """The record in a SQLite log's row of frame `fid`; ValueError naming the frame when the row
    holds no record of that frame (changed by hand): as a JSONL line that is none, not skipped unsaid."""
    try:
        record = parse_json(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the record of frame {fid} is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"the record of frame {fid} is not a JSON object")
    if record.get("frame_id") != fid:
        raise ValueError(f"the record of frame {fid} names frame_id {json.dumps(record.get('frame_id'), default=str)}")
    return record


def each_result(path: str | Path, take: Callable[[dict[str, Any]], None]) -> None:
    """Every record of a results log of either format to `take`, in the order written, one at a
    time (a log of months in the memory of one record; a log an agent still writes, up to its
    last whole record). ConfigError naming the file when it is not a results log, OSError when
    it cannot be read."""
    p = Path(path)
    if not is_sqlite(p):
        with os.fdopen(open_regular(p, "results"), "rb") as fh:
            scan_jsonl(p, fh, take)
        return
    try:
        with read_only_sqlite(p) as db:
            if not _has_results_table(db):  # a log made and not written yet
                return
            for fid, text in db.execute("SELECT frame_id, record FROM results ORDER BY written_unix_ns, frame_id"):
                take(sqlite_record(fid, text))
    except (sqlite3.DatabaseError, ValueError) as exc:  # "unable to open" too: never read as "no records"
        raise unreadable_sqlite(p, exc) from None


def _has_results_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'").fetchone() is not None


def last_frame_id(path: str | Path, stop: Callable[[], bool] = lambda: False) -> int | None:
    """The largest frame id a results log of either format records (None: none). ConfigError
    naming the file when it is not a results log, OSError when it cannot be read,
    ReadingStopped once `stop()` says so (a day's log takes seconds on a Pi)."""
    p = Path(path)
    largest: list[int] = []
    check = StopCheck(stop)

    def take_id(fid: int) -> None:
        check()
        if not largest or fid > largest[0]:
            largest[:] = [fid]

    if not is_sqlite(p):
        with os.fdopen(open_regular(p, "results"), "rb") as fh:
            scan_jsonl(p, fh, lambda record: take_id(frame_id(record)), lambda fid, _origin, _model: take_id(fid))
        return largest[0] if largest else None
    try:
        with read_only_sqlite(p) as db:
            value = db.execute("SELECT MAX(frame_id) FROM results").fetchone()[0] if _has_results_table(db) else None
    except sqlite3.DatabaseError as exc:
        raise unreadable_sqlite(p, exc) from None
    return value if isinstance(value, int) else None


#: how much of a JSONL log `check_log_start` reads: enough lines to tell a results log from another file
_START_BYTES = 64 * 1024


def check_log_start(path: str | Path) -> str:
    """A quick look at an existing results log (`splitpoint doctor`): its format, "sqlite" or
    "jsonl"; ConfigError naming the file when its start shows it is not a results log of either
    format - another program's SQLite database, a text file - as the agent would refuse it; OSError
    when it cannot be read. Only the first 64 KiB of a JSONL log are read (a day's log takes
    seconds to read whole on a Pi)."""
    p = Path(path)
    if is_sqlite(p):
        check_sqlite_results(p)
        return "sqlite"
    with os.fdopen(open_regular(p, "results"), "rb") as fh:
        start = fh.read(_START_BYTES)
    whole = start[: start.rfind(b"\n") + 1] if len(start) == _START_BYTES else start
    scan_jsonl(p, io.BytesIO(whole), lambda record: None)
    return "jsonl"
