"""The results log's file: a regular file, held by one agent at a time.

`hold(path)` opens (creating if need be) the file a results log lives in and takes an
exclusive, non-blocking `flock` on it for as long as the agent has the log open. Why:

* Only a regular file can be a results log. A named pipe would block the agent in open()
  beyond the reach of SIGTERM; /dev/zero or /dev/full would be read forever (gigabytes of
  memory in seconds) when the log's ids are read back. Anything else is refused with one
  ConfigError naming the file (exit 2); the file is opened with O_NONBLOCK so that even
  the refusal cannot hang. (A directory keeps failing as a log that cannot be opened.)
* Two agents appending to one log interleave their records: two runs of the same source
  wrote 78 records for 40 frame ids. The second agent is refused at once, naming the pid
  of the one holding the log when /proc/locks tells it.

The lock is advisory (only splitpoint agents take it) and sits on the log itself, so no
lock file is left behind; the kernel drops it when the descriptor closes, including when
the process dies, so a killed agent never leaves a stale lock. SQLite's own locks are
POSIX record locks, which on Linux do not interact with flock. A file system without
flock (some network and FUSE file systems answer ENOLCK or EOPNOTSUPP) keeps the log
usable: the agent warns that it cannot guard against a second agent and goes on.

Also here, what needs no more than the file: telling a SQLite log (`is_sqlite`) and a
SQLite database that is not a results log (`check_sqlite_log`, `read_only_sqlite`), and moving a log aside
for --no-resume (`backup_results`) or once it is closed for a new one (`rotate_results`),
and finding the logs rotated from a path (`rotated_logs`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from splitpoint.errors import ConfigError
from splitpoint.files import open_regular

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"

#: what a results log that is not one is told
NOT_A_LOG_HINT = "; it was left as it is: give --results another file"
NOT_A_LOG = "is not a results log ({})" + NOT_A_LOG_HINT

#: flock errors that mean "this file system has no such locks", not "someone holds it"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class LogHold:
    """An open descriptor of the results log's file with the agent's lock on it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd: int | None = fd

    def size(self) -> int:
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    def release(self) -> None:
        """Close the descriptor, which drops the lock; may be called more than once."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def hold(path: Path) -> LogHold:
    """`path` (created empty when missing) opened and locked for this agent alone.

    ConfigError when it is not a regular file or another agent holds it; OSError as opening
    it for writing raises it."""
    fd = open_regular(path, "results", os.O_RDWR | os.O_CREAT,
                      why=": a results log must be a regular file (or not exist yet)")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(os.fstat(fd))
        os.close(fd)
        raise ConfigError("results", str(path), f"is in use by another agent{f' (pid {pid})' if pid else ''}: "
                                                "one results log takes one agent; give this one another --results") from None
    except OSError as exc:
        if exc.errno not in _NO_FLOCK:
            os.close(fd)
            raise
        log.warning("results log %s: the file system cannot lock it (%s); nothing stops a second agent from "
                    "writing to it at the same time", path, os.strerror(exc.errno or 0))
    except BaseException:
        os.close(fd)
        raise
    return LogHold(path, fd)


def _holder(st: os.stat_result) -> int | None:
    """The pid holding a flock on the file of `st`, from /proc/locks (Linux); None when unknown."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as fh:
            for line in fh:
                fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:7604389 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
                    pid = int(fields[4])
                    return pid if pid > 0 else None  # 0 or less: a process of another pid namespace
    except (OSError, ValueError):
        pass
    return None


def is_sqlite(path: str | Path) -> bool:
    """A regular file starting with SQLite's header (a named pipe is not opened to look)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except FileNotFoundError:
        return False


def check_sqlite_log(path: Path, db: sqlite3.Connection) -> None:
    """ConfigError unless the database is empty or has a results table of this log's columns:
    anything else is someone else's database, which opening it as a log would alter."""
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if not tables:
        return
    if "results" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError("results", str(path), NOT_A_LOG.format(f"a SQLite database with no results table: {shown}"))
    missing = {"frame_id", "record", "written_unix_ns"} - {row[1] for row in db.execute("PRAGMA table_info(results)")}
    if missing:
        raise ConfigError("results", str(path),
                          NOT_A_LOG.format(f"its results table has no column {', '.join(sorted(missing))}"))
    if db.execute("SELECT 1 FROM results WHERE typeof(frame_id) != 'integer' LIMIT 1").fetchone():
        raise ConfigError("results", str(path), NOT_A_LOG.format("its results table has a frame_id that is not an integer"))


@contextlib.contextmanager
def read_only_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A SQLite log opened read-only and checked to be a results log (check_sqlite_log); closed
    after the block. sqlite3.DatabaseError as SQLite raises it, for the caller to name.

    With no `-wal` beside it, no agent has it open (an open WAL log always has one) and no record
    waits in a WAL: the file alone is the log, and it is opened immutable. Opened `mode=ro`, SQLite
    made an empty -wal and -shm beside every log read, and could not open one at all on a
    read-only medium (an SD card taken from a drone): `splitpoint results` said "no records"."""
    wal = path.with_name(path.name + "-wal")
    # mode=ro: a log an agent still writes, read up to its last commit through the WAL it shares
    db = sqlite3.connect(path.resolve().as_uri() + ("?mode=ro" if os.path.lexists(wal) else "?immutable=1"),
                         uri=True, timeout=10.0)
    try:
        check_sqlite_log(path, db)
        yield db
    finally:
        db.close()


def check_sqlite_results(path: Path) -> None:
    """ConfigError naming the file unless the SQLite database at `path` is a results log (or empty),
    looked at read-only: nothing in it changes."""
    try:
        with read_only_sqlite(path):
            pass
    except sqlite3.DatabaseError as exc:
        raise unreadable_sqlite(path, exc) from None


#: free space below which a SQLite log's WAL cannot be read where it is (its -shm needs a few pages)
FULL_DISK_BYTES = 1 << 20


def unreadable_sqlite(p: Path, exc: Exception) -> ConfigError:
    """The error of a SQLite log SQLite would not read, with what to do when its WAL is why."""
    return ConfigError("results", str(p), f"cannot be read as a SQLite results log ({exc}){_wal_hint(p)}")


def _wal_hint(p: Path) -> str:
    """Why a log with a -wal beside it may not open: SQLite must write its -shm to read a WAL (an
    agent stopped by a full disk leaves one)."""
    if not os.path.lexists(p.with_name(p.name + "-wal")):
        return ""
    try:
        st = os.statvfs(p.parent)
        full = st.f_bavail * st.f_frsize < FULL_DISK_BYTES
    except OSError:
        full = False
    where = ("the disk it is on is full: free some space, or copy" if full else
             "copy" if not os.access(p.parent, os.W_OK) else "")
    if not where:
        return ""
    return (f"; its {p.name}-wal holds records SQLite can read only where it may write beside them: {where} "
            f"{p.name} with its -wal and -shm to a writable directory")


def backup_results(path: str | Path) -> Path | None:
    """Move a non-empty log out of the way (`<name>.<unix time>.bak`); the path it went to, or None."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return None
    stamp = int(time.time())
    return _move(p, lambda n: p.with_name(f"{p.name}.{stamp}{f'.{n}' if n else ''}.bak"))


def rotate_results(path: str | Path) -> Path:
    """Move a closed log to `<stem>.<UTC time>Z<suffix>` (results.20261207T022700Z.jsonl: a glob
    of `results.*.jsonl` lists them in time order, and the suffix still says the format); the
    path it went to. A second rotation within the same second is `...Z_1<suffix>`, which sorts
    after it. The agent's `results_rotate_h`."""
    p = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return _move(p, lambda n: p.with_name(f"{p.stem}.{stamp}{f'_{n}' if n else ''}{p.suffix}"))


def rotated_logs(path: str | Path) -> list[Path]:
    """The logs `rotate_results` made from `path` that are still beside it, oldest first (by the
    time and number in their names, not by listing order)."""
    p = Path(path)
    # rotate_results' names: the stamp's "%Y%m%dT%H%M%SZ", then "_n" for the n-th in one second
    named = re.compile(re.escape(p.stem) + r"\.(\d{8}T\d{6})Z(?:_(\d+))?" + re.escape(p.suffix))
    found: list[tuple[str, int, Path]] = []
    try:
        with os.scandir(p.parent) as entries:
            for entry in entries:
                if (m := named.fullmatch(entry.name)) is not None and entry.is_file():
                    found.append((m[1], int(m[2] or 0), Path(entry.path)))
    except OSError:  # no such directory yet, or not readable: nothing rotated to be found
        return []
    return [q for _, _, q in sorted(found)]


def _move(p: Path, name: Callable[[int], Path]) -> Path:
    """Rename the log `p` to the first of name(0), name(1), ... that does not exist, with a SQLite
    log's WAL folded in first and its side files moved along: one self-contained file."""
    if is_sqlite(p):
        try:
            db = sqlite3.connect(str(p), timeout=10.0)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            log.warning("results log %s: checkpoint before the move failed (%s)", p, exc)
    n = 0
    while (target := name(n)).exists():
        n += 1
    os.replace(p, target)
    for suffix in ("-wal", "-shm"):  # what is left of SQLite's side files travels with the database
        side = p.with_name(p.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target
