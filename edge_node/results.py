"""The results log: one record per frame id, durable once `write` returns.

Two formats, chosen by `results_format`:

    jsonl   one JSON line per frame, appended; with `fsync` every line is
            fsynced before `write` returns (an append log that survives a
            crash or a power cut up to the last record written).
    sqlite  the stdlib sqlite3 module, one row per frame in
            `results(frame_id INTEGER PRIMARY KEY, record TEXT NOT NULL, written_unix_ns INTEGER)`,
            WAL journal, one transaction per record. With `fsync` the
            connection runs `synchronous = FULL`: a committed record survives
            a power cut. Without, `synchronous = NORMAL`: a record survives the
            agent being killed, but the last few may be lost if the machine
            loses power (WAL frames are only fsynced at checkpoints).

Both keep the ids already written (read back when an existing log is opened)
and refuse a second record for the same frame id: that is a bug upstream, so it
is logged as an error and the first record is kept. `done_ids()` is what an
agent restarting on the same log skips.

A store that cannot be written (ENOSPC, EIO, a read-only file system) raises
ResultsWriteError naming the file and the error; the records written before
stay intact (a JSONL line cut short is truncated away) and every later write
raises the same error without touching the file again. Scores and timings that
are not finite are written as null, so the log is always valid JSON.

`read_results(path)` reads either format (a SQLite file starts with the header
"SQLite format 3\\0"). A crash can tear the last JSON line; reading ignores an
unparsable final line with a warning, and opening such a log for appending cuts
the torn tail off first, so the next record starts on a line of its own.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from splitpoint.errors import ConfigError, ResultsWriteError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "sqlite")
SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS results ("
    "frame_id INTEGER PRIMARY KEY, record TEXT NOT NULL, written_unix_ns INTEGER)"
)


class ResultStore(Protocol):
    """What the agent writes records to."""

    path: Path

    def write(self, record: dict[str, Any]) -> bool: ...

    def done_ids(self) -> set[int]: ...

    def close(self) -> None: ...


def is_sqlite(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except FileNotFoundError:
        return False


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON has no Infinity or NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(record: dict[str, Any]) -> str:
    try:
        return json.dumps(record, separators=(",", ":"), default=float, allow_nan=False)
    except ValueError:  # a bare NaN/Infinity would make the line unreadable to strict JSON readers
        return json.dumps(_finite(record), separators=(",", ":"), default=float, allow_nan=False)


def describe_os_error(exc: BaseException) -> str:
    """'No space left on device (ENOSPC)' rather than '[Errno 28] ...'; other errors as they print."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    return str(exc) or type(exc).__name__


def _frame_id(record: dict[str, Any]) -> int:
    fid = record.get("frame_id")
    if isinstance(fid, bool) or not isinstance(fid, int):
        raise ValueError(f"a result record needs an integer frame_id, not {fid!r}")
    return fid


def _parse_jsonl(path: Path, raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSONL log and the byte length of its intact part (a torn final line excluded)."""
    records: list[dict[str, Any]] = []
    lines = raw.splitlines(keepends=True)
    good = 0
    for n, line in enumerate(lines):
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                if n == len(lines) - 1:
                    log.warning("results log %s: ignoring a torn last line (%d bytes: %s)", path, len(line), exc)
                    break
                raise ValueError(f"results log {path}: line {n + 1} is not a JSON record ({exc})") from None
            records.append(record)
        good += len(line)
    return records, good


class _ResultLog:
    """What both formats share: one record per frame id, thread-safe writes, idempotent close.

    A subclass opens its file, fills `_ids` with the ids already written and implements
    `_is_open`, `_append` (store one record durably; False when the store itself already
    has the id) and `_close`.
    """

    path: Path

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        #: set by the first failed write; every later write raises it without touching the file
        self.failed: ResultsWriteError | None = None

    def write(self, record: dict[str, Any]) -> bool:
        """Store `record`; False (and an error logged) when its frame id is already in the log.

        Raises ResultsWriteError when the store cannot be written (then and ever after)."""
        fid = _frame_id(record)
        text = _dumps(record)
        with self._lock:
            if not self._is_open():
                raise ValueError(f"results log {self.path} is closed")
            if self.failed is not None:
                raise self.failed
            try:
                stored = fid not in self._ids and self._append(fid, text)
            except (OSError, sqlite3.Error) as exc:
                self.failed = ResultsWriteError(
                    self.path, f"{describe_os_error(exc)}; the {len(self._ids)} records written before stay intact")
                raise self.failed from None
            if not stored:
                log.error("bug: a second record for frame %d refused (the first is kept in %s): %s", fid, self.path, text)
            self._ids.add(fid)
        return stored

    def done_ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)

    def close(self) -> None:
        with self._lock:
            if self._is_open():
                self._close()

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _append(self, fid: int, text: str) -> bool:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class JsonlResultLog(_ResultLog):
    """Append-only JSON Lines, fsynced per record when `fsync`. Thread-safe; `close()` is idempotent."""

    def __init__(self, path: str | Path, fsync: bool = True):
        super().__init__()
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if is_sqlite(self.path):
            raise ConfigError("results", str(self.path), "is a SQLite results log; set results_format = \"sqlite\" "
                                                          "or give another file")
        if self.path.exists():
            raw = self.path.read_bytes()
            records, good = _parse_jsonl(self.path, raw)
            self._ids = {_frame_id(r) for r in records}
            if good < len(raw):
                with open(self.path, "r+b") as fh:  # drop the torn tail: the next record gets a line of its own
                    fh.truncate(good)
                    os.fsync(fh.fileno())
            elif raw and not raw.endswith(b"\n"):  # a whole record whose newline was not written
                with open(self.path, "ab") as fh:
                    fh.write(b"\n")
        # Unbuffered: a write that fails (a full disk) leaves nothing queued to be flushed at close.
        self._fh: Any = open(self.path, "ab", buffering=0)

    def _is_open(self) -> bool:
        return self._fh is not None

    def _append(self, fid: int, text: str) -> bool:
        data = (text + "\n").encode("utf-8")
        start = self._fh.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # a nearly full disk takes part of a line, then refuses the rest
                n = self._fh.write(view)
                if not n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
            if self.fsync:
                os.fsync(self._fh.fileno())
        except OSError:
            try:  # cut the partial line off: the records before it stay a valid log
                os.ftruncate(self._fh.fileno(), start)
            except OSError as exc:
                log.debug("results log %s: could not cut a partial line off (%s)", self.path, exc)
            raise
        return True

    def _close(self) -> None:
        self._fh.close()
        self._fh = None


#: the previous name of the JSONL log
ResultLog = JsonlResultLog


class SqliteResultLog(_ResultLog):
    """One row per frame in a WAL-mode SQLite file; one connection shared by threads under a lock."""

    def __init__(self, path: str | Path, fsync: bool = True):
        super().__init__()
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0 and not is_sqlite(self.path):
            raise ConfigError("results", str(self.path), "is not a SQLite database (a JSONL log?); set "
                                                          "results_format = \"jsonl\" or give another file")
        try:
            # autocommit (isolation_level None): every INSERT is its own transaction, durable on return
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("results log %s: SQLite refused WAL mode (journal_mode = %s)", self.path, mode)
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._db.execute(_SCHEMA)
            self._ids = {row[0] for row in self._db.execute("SELECT frame_id FROM results")}
        except sqlite3.OperationalError as exc:  # full, read-only, I/O error: the file, not the setting
            raise ResultsWriteError(self.path, describe_os_error(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise ConfigError("results", str(self.path), f"cannot be used as a SQLite results log ({exc})") from None

    def _is_open(self) -> bool:
        return self._db is not None

    def _append(self, fid: int, text: str) -> bool:
        assert self._db is not None
        try:
            self._db.execute("INSERT INTO results (frame_id, record, written_unix_ns) VALUES (?, ?, ?)",
                             (fid, text, time.time_ns()))
        except sqlite3.IntegrityError:  # written by someone else on the same file
            return False
        return True

    def _close(self) -> None:
        assert self._db is not None
        self._db.close()  # the last connection checkpoints the WAL into the database file
        self._db = None


def open_results(path: str | Path, fmt: str = "jsonl", fsync: bool = True) -> JsonlResultLog | SqliteResultLog:
    """The results log at `path` in format `fmt` ("jsonl" or "sqlite"), created or opened for appending."""
    if fmt not in FORMATS:
        raise ConfigError("results_format", fmt, f"must be one of {', '.join(FORMATS)}")
    try:
        return JsonlResultLog(path, fsync) if fmt == "jsonl" else SqliteResultLog(path, fsync)
    except OSError as exc:  # e.g. a read-only directory: one clear error, not a traceback
        raise ResultsWriteError(path, describe_os_error(exc)) from None


def backup_results(path: str | Path) -> Path | None:
    """Move a non-empty log out of the way (`<name>.<unix time>.bak`); the path it went to, or None."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return None
    if is_sqlite(p):  # fold the WAL into the file first, so the backup is one self-contained file
        try:
            db = sqlite3.connect(str(p), timeout=10.0)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            log.warning("results log %s: checkpoint before the backup failed (%s)", p, exc)
    stamp = int(time.time())
    bak = p.with_name(f"{p.name}.{stamp}.bak")
    n = 1
    while bak.exists():
        bak = p.with_name(f"{p.name}.{stamp}.{n}.bak")
        n += 1
    os.replace(p, bak)
    for suffix in ("-wal", "-shm"):  # what is left of SQLite's side files travels with the database
        side = p.with_name(p.name + suffix)
        if side.exists():
            os.replace(side, bak.with_name(bak.name + suffix))
    return bak


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a results log of either format, in the order written."""
    p = Path(path)
    if is_sqlite(p):
        db = sqlite3.connect(str(p), timeout=10.0)
        try:
            try:
                rows = db.execute("SELECT record FROM results ORDER BY written_unix_ns, frame_id").fetchall()
            except sqlite3.OperationalError as exc:  # e.g. no results table yet
                log.warning("results log %s: %s", p, exc)
                return []
        finally:
            db.close()
        return [json.loads(text) for (text,) in rows]
    return _parse_jsonl(p, p.read_bytes())[0]
