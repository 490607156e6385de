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
agent restarting on the same log skips; `done_origins()` says where each of those
frames came from (what a resumed run checks against its source). A JSONL line as the agent
writes it gives both from its start, unparsed (`scan_jsonl`: a million records in 2.4 s, not 7.5).

A store that cannot be written (ENOSPC, EIO, a read-only file system) raises
ResultsWriteError naming the file and the error; the records written before
stay intact (a JSONL line cut short is truncated away) and every later write
raises the same error without touching the file again. Scores and timings that
are not finite are written as null, so the log is always valid JSON.

`read_results(path)` (edge_node/results_records.py) reads either format (a SQLite file
starts with the header "SQLite format 3\\0"). A crash can tear the last JSON line: the final line, without
its newline (written last), starting with "{" like every record (or NUL bytes, what a
power cut can leave). Reading ignores it with a warning; opening the log to append cuts
it off first. Any other line that is not a JSON object with an integer frame_id means
the file is not a results log (notes.md given as --results): `open_results` refuses it
with one ConfigError naming the file and the line, before anything is written and
without touching it; so it does a SQLite database that is not a results log, which
opening would otherwise alter. It holds the file while the log is open
(edge_node/results_file.py: a regular file, one agent at a time); with `fresh` (the
agent's --no-resume) it moves an existing results log aside under that hold first.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from splitpoint.errors import ConfigError, ResultsWriteError
from splitpoint.files import check_parent_dirs, open_regular

from .bounded import IdRanges, RecordedOrigins
from .results_file import (
    SQLITE_HEADER,
    LogHold,
    backup_results,
    check_sqlite_log,
    check_sqlite_results,
    hold,
    is_sqlite,
)
from .results_records import StopCheck, dumps, frame_id, model, origin, scan_jsonl, sqlite_record
from .results_records import each_result as each_result  # re-exported: where readers look for it
from .results_records import read_results as read_results

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "sqlite")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS results ("
    "frame_id INTEGER PRIMARY KEY, record TEXT NOT NULL, written_unix_ns INTEGER)"
)


class ResultStore(Protocol):
    """What the agent writes records to."""

    path: Path

    def write(self, record: dict[str, Any]) -> bool: ...

    def done_ids(self) -> set[int]: ...

    def done_origins(self) -> RecordedOrigins: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


def describe_os_error(exc: BaseException) -> str:
    """'No space left on device (ENOSPC)' rather than '[Errno 28] ...'; other errors as they print."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    return str(exc) or type(exc).__name__


class _ResultLog:
    """What both formats share: one record per frame id, thread-safe writes, idempotent close.

    A subclass opens its file under `_held` (the agent's hold on it: see `open_results`),
    fills `_ids` with the ids already written (and `_origins` with their origins) and implements `_is_open`, `_append` (store
    one record durably; False when the store itself already has the id) and `_close`.
    """

    path: Path

    def __init__(self, path: str | Path, held: LogHold | None, stop: Callable[[], bool] = lambda: False) -> None:
        self.path = Path(path)
        self._stop_check = StopCheck(stop)  # while the records found are read
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._held = held if held is not None else hold(self.path)
        #: where `open_results(fresh=True)` moved the log it found, if it did
        self.moved_aside: Path | None = None
        #: every frame id in the log (bounded: consecutive ids are one range)
        self._ids = IdRanges()
        #: frame id -> origin of the records found when the log was opened (not kept up to date)
        self._origins = RecordedOrigins()
        self._lock = threading.Lock()
        #: set by the first failed write; every later write raises it without touching the file
        self.failed: ResultsWriteError | None = None

    def write(self, record: dict[str, Any]) -> bool:
        """Store `record`; False (and an error logged) when its frame id is already in the log.

        Raises ResultsWriteError when the store cannot be written (then and ever after)."""
        fid = frame_id(record)
        text = dumps(record)
        with self._lock:
            if not self._is_open():
                raise ValueError(f"results log {self.path} is closed")
            if self.failed is not None:
                raise self.failed
            if self._deleted():
                self.failed = ResultsWriteError(
                    self.path, "it was deleted while the agent ran, and records written to it now would be lost with "
                               "it; stopping (the agent starts a new log at that path when it runs again)")
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

    def _deleted(self) -> bool:
        """The file was unlinked (`rm`) while the agent held it: writes would still succeed, into
        a file nobody can read, gone when the agent closes it. (One moved or renamed is still
        linked, and its records are kept where it went.) A stat of the held descriptor: ~1 us."""
        fd = self._held.fd
        try:
            return fd is not None and os.fstat(fd).st_nlink == 0
        except OSError:
            return False

    def _found(self, fid: int, origin: str | None, model: str | None = None) -> None:
        """A record the log held when it was opened (`_open`, before any write)."""
        self._stop_check()
        self._origins.add(fid, origin, model)

    def done_ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)

    def __len__(self) -> int:
        """How many records the log holds (those found when it was opened, and written since)."""
        with self._lock:
            return len(self._ids)

    def done_origins(self) -> RecordedOrigins:
        """Frame id -> origin of each record the log held when it was opened (not changed after)."""
        return self._origins

    def close(self) -> None:
        with self._lock:
            if self._is_open():
                self._close()
            self._held.release()  # after the file is closed: another agent may have it from now on

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _append(self, fid: int, text: str) -> bool:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class JsonlResultLog(_ResultLog):
    """Append-only JSON Lines, fsynced per record when `fsync`. Thread-safe; `close()` is idempotent."""

    def __init__(self, path: str | Path, fsync: bool = True, held: LogHold | None = None,
                 stop: Callable[[], bool] = lambda: False):
        super().__init__(path, held, stop)
        self.fsync = fsync
        self._fh: Any = None
        try:
            self._open()
        except BaseException:
            self._held.release()
            raise

    def _open(self) -> None:
        fd = self._held.fd
        assert fd is not None
        with os.fdopen(os.dup(fd), "rb") as fh:  # the file held, whatever the name points at by now
            if fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                # another program's database is named as such: "set results_format = sqlite" for one
                # was advice that the next start then refused ("no results table")
                check_sqlite_results(self.path)
                raise ConfigError("results", str(self.path), "is a SQLite results log; set results_format = "
                                                              "\"sqlite\" or give another file")
            fh.seek(0)
            # lines as the agent writes them give their id and origin unparsed (results_records)
            good = scan_jsonl(self.path, fh, lambda r: self._found(frame_id(r), origin(r), model(r)),
                              take_start=self._found)
            size = fh.seek(0, os.SEEK_END)
            last = b""
            if good and good == size:
                fh.seek(good - 1)
                last = fh.read(1)
        self._ids = self._origins.ids.copy()
        if good < size:  # drop the torn tail: the next record gets a line of its own
            os.ftruncate(fd, good)
            os.fsync(fd)
        # O_APPEND (a file system without flock cannot keep a second writer out: lines may then
        # interleave but never overwrite), and the same file as the one held and read.
        append = open_regular(self.path, "results", os.O_WRONLY | os.O_APPEND)
        if not os.path.samestat(os.fstat(append), os.fstat(fd)):
            os.close(append)
            raise ConfigError("results", str(self.path), "was replaced by another file while it was opened")
        # Unbuffered: a write that fails (a full disk) leaves nothing queued to be flushed at close.
        self._fh = os.fdopen(append, "ab", buffering=0)
        if last and last != b"\n":  # a whole record whose newline was not written
            self._fh.write(b"\n")

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

    def __init__(self, path: str | Path, fsync: bool = True, held: LogHold | None = None,
                 stop: Callable[[], bool] = lambda: False):
        super().__init__(path, held, stop)
        self.fsync = fsync
        self._db: sqlite3.Connection | None = None
        try:
            self._open()
        except BaseException:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._held.release()
            raise

    def _open(self) -> None:
        if self._held.size() > 0 and not is_sqlite(self.path):
            raise ConfigError("results", str(self.path), "is not a SQLite database (a JSONL log?); set "
                                                          "results_format = \"jsonl\" or give another file")
        try:
            # autocommit (isolation_level None): every INSERT is its own transaction, durable on return
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
            check_sqlite_log(self.path, self._db)  # before WAL mode or the table change anything
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("results log %s: SQLite refused WAL mode (journal_mode = %s)", self.path, mode)
            self._db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            self._db.execute(_SCHEMA)
            for fid, text in self._db.execute("SELECT frame_id, record FROM results ORDER BY frame_id"):
                self._found(fid, *_origin_and_model(self.path, fid, text))
            self._ids = self._origins.ids.copy()
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


def _origin_and_model(path: Path, fid: int, text: str) -> tuple[str | None, str | None]:
    """A SQLite record's origin and model. ConfigError when the row holds no record of its frame:
    `splitpoint results` refused such a log while resume took the frame as done (a JSONL log's
    line that is not a record is refused at start too)."""
    try:
        record = sqlite_record(fid, text)
    except ValueError as exc:
        raise ConfigError("results", str(path), f"{exc}: a changed or damaged log; move it aside (--no-resume) "
                                                "or repair that row") from None
    return origin(record), model(record)


def _check_any_log(path: Path, held: LogHold, stop: Callable[[], bool]) -> None:
    """ConfigError unless the file held is a results log of either format (what --no-resume may move)."""
    assert held.fd is not None
    with os.fdopen(os.dup(held.fd), "rb") as fh:
        if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            fh.seek(0)
            check = StopCheck(stop)
            scan_jsonl(path, fh, lambda r: check())  # checked, not kept
            return
    check_sqlite_results(path)


def open_results(path: str | Path, fmt: str = "jsonl", fsync: bool = True, fresh: bool = False,
                 stop: Callable[[], bool] = lambda: False) -> JsonlResultLog | SqliteResultLog:
    """The results log at `path` in format `fmt` ("jsonl" or "sqlite"), created or opened for appending,
    and held by this process until `close()` (ConfigError when another agent holds it, or the file is
    not a regular file or not a results log). `fresh`: an existing log is first moved aside
    (`backup_results`; where to is the log's `moved_aside`)."""
    if fmt not in FORMATS:
        raise ConfigError("results_format", fmt, f"must be one of {', '.join(FORMATS)}")
    p = Path(path)
    kind = JsonlResultLog if fmt == "jsonl" else SqliteResultLog
    check_parent_dirs("results", p)  # a file where a directory should be: a wrong value, named
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        held = hold(p)
        moved = None
        try:
            if fresh and held.size() > 0:  # moved only while held: never a log another agent is writing
                _check_any_log(p, held, stop)
                moved = backup_results(p)
                if moved is not None:
                    fresh_file = hold(p)  # the new file, held before the old one is let go
                    held.release()
                    held = fresh_file
            store = kind(p, fsync, held, stop)
        except BaseException:
            held.release()
            raise
    except OSError as exc:  # e.g. a read-only directory: one clear error, not a traceback
        raise ResultsWriteError(path, describe_os_error(exc)) from None
    store.moved_aside = moved
    return store
