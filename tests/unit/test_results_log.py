"""The results log's own guarantees: valid JSON whatever the values, a failed write is fatal and clear,
a file that is not a results log (text, other JSON, another program's SQLite database, a named pipe)
is refused and left as it was, and a log has one writer at a time."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.results import open_results, read_results
from splitpoint.errors import ConfigError, ResultsWriteError


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_non_finite_values_are_written_as_null(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    log = open_results(path, fmt)
    assert log.write({"frame_id": 0, "score": math.inf, "timings_ms": {"head": math.nan, "local": 1.5},
                      "xs": [1.0, -math.inf]})
    log.close()
    if fmt == "jsonl":
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} written"))
    assert read_results(path) == [{"frame_id": 0, "score": None, "timings_ms": {"head": None, "local": 1.5},
                                   "xs": [1.0, None]}]


class _FailingFile:
    """Takes `room` bytes, then refuses with ENOSPC, like a file on a disk that just filled."""

    def __init__(self, real: Any, room: int):
        self.real, self.room = real, room

    def write(self, data: Any) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real.write(bytes(data)[: self.room])
        self.room -= n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_write_cut_short_leaves_the_log_intact_and_every_later_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    log = open_results(path, "jsonl")
    assert log.write({"frame_id": 0, "status": "ok"})
    log._fh = _FailingFile(log._fh, room=10)  # the next record fits only in part
    with pytest.raises(ResultsWriteError) as info:
        log.write({"frame_id": 1, "status": "ok", "pad": "x" * 100})
    assert str(path) in str(info.value) and "ENOSPC" in str(info.value)
    with pytest.raises(ResultsWriteError):  # the same error, without touching the file again
        log.write({"frame_id": 2, "status": "ok"})
    log._fh = log._fh.real
    log.close()
    assert path.read_text().count("\n") == 1  # the partial line was cut off
    assert read_results(path) == [{"frame_id": 0, "status": "ok"}]


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_log_deleted_while_written_stops_the_writes(tmp_path: Path, fmt: str) -> None:
    """`rm results.jsonl` mid-run: every later record went into the unlinked file, lost when the
    agent closed it, and the run ended saying "results in results.jsonl". Now the next write is
    the fatal error a full disk is. One moved away is still written where it went."""
    path = tmp_path / f"r.{fmt}"
    log = open_results(path, fmt)
    assert log.write({"frame_id": 0, "status": "ok"})
    moved = tmp_path / f"moved.{fmt}"
    path.rename(moved)  # logrotate's way: the records follow the file
    assert log.write({"frame_id": 1, "status": "ok"})
    moved.unlink()
    with pytest.raises(ResultsWriteError) as info:
        log.write({"frame_id": 2, "status": "ok"})
    assert str(info.value) == (f"results log {path} cannot be written: it was deleted while the agent ran, and records "
                               "written to it now would be lost with it; stopping (the agent starts a new log at that "
                               "path when it runs again)")
    with pytest.raises(ResultsWriteError):
        log.write({"frame_id": 3, "status": "ok"})
    log.close()


# ---------------------------------------------------------------- a file that is not a results log


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


NOT_LOGS = {
    "notes": b"# notes\nsome text\n",
    "json without frame_id": b'{"a": 1}\n{"b": 2}\n',
    "a frame_id that is a string": b'{"frame_id": "7"}\n',
    "a JSON array": b'{"frame_id": 0}\n[1, 2]\n',
    # a complete line is never torn: only a last line without its newline can be a write cut short
    "one complete line": b"garbage\n",
    # and a record cut short starts with "{": this is a file of something else
    "one line without its newline": b"garbage",
}


@pytest.mark.parametrize("fresh", [False, True], ids=["resume", "no-resume"])
@pytest.mark.parametrize("content", NOT_LOGS.values(), ids=NOT_LOGS.keys())
def test_a_file_that_is_not_a_results_log_is_refused_untouched(tmp_path: Path, content: bytes, fresh: bool) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(content)
    before = snapshot(path)
    with pytest.raises(ConfigError) as info:
        open_results(path, "jsonl", fresh=fresh)
    assert str(info.value).startswith(f'results = "{path}": is not a results log (line '), info.value
    assert "give --results another file" in str(info.value)
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]  # not moved aside either
    with pytest.raises(ConfigError):
        read_results(path)


def test_a_torn_tail_of_nul_bytes_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"frame_id": 0}\n' + b"\0" * 40)  # a power cut: the size made it, the data did not
    log = open_results(path, "jsonl")
    assert log.done_ids() == {0}
    log.close()
    assert path.read_bytes() == b'{"frame_id": 0}\n'


def other_database(path: Path, schema: str) -> None:
    db = sqlite3.connect(path)
    db.execute(schema)
    db.commit()
    db.close()


@pytest.mark.parametrize("fmt", ["sqlite", "jsonl"])
@pytest.mark.parametrize("fresh", [False, True], ids=["resume", "no-resume"])
@pytest.mark.parametrize("schema, said", [
    ("CREATE TABLE contacts (name TEXT)", "a SQLite database with no results table: contacts"),
    ("CREATE TABLE results (id INTEGER, score REAL)", "its results table has no column frame_id, record, "
                                                      "written_unix_ns"),
])
def test_a_sqlite_database_that_is_not_a_results_log_is_refused_untouched(tmp_path: Path, schema: str, said: str,
                                                                          fresh: bool, fmt: str) -> None:
    """As a JSONL log (the default format) it was called 'a SQLite results log; set results_format =
    "sqlite"', advice the next start then refused."""
    path = tmp_path / "app.db"
    other_database(path, schema)
    before = snapshot(path)
    with pytest.raises(ConfigError) as info:
        open_results(path, fmt, fresh=fresh)
    assert str(info.value) == f'results = "{path}": is not a results log ({said}); it was left as it is: give ' \
                              "--results another file"
    assert snapshot(path) == before  # not switched to WAL, no table added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def open_within(path: Path, fmt: str, timeout_s: float = 10.0) -> BaseException | None:
    """What open_results(path) raised (None: nothing), from a thread: an open that blocks fails the test."""
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            open_results(path, fmt).close()
            box.append(None)
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"open_results({path}) blocked"
    return box[0]


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_named_pipe_is_not_a_results_log(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    os.mkfifo(path)  # opened for reading, it would wait for a writer forever
    err = open_within(path, fmt)
    assert isinstance(err, ConfigError), err
    assert str(err) == (f'results = "{path}": is a named pipe, not a regular file: a results log must be a '
                        "regular file (or not exist yet)")


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_log_is_held_by_one_writer_until_closed(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    first = open_results(path, fmt)
    first.write({"frame_id": 0})
    with pytest.raises(ConfigError) as info:
        open_results(path, fmt)
    assert str(info.value) == (f'results = "{path}": is in use by another agent (pid {os.getpid()}): one results '
                               "log takes one agent; give this one another --results")
    with pytest.raises(ConfigError, match="in use by another agent"):
        open_results(path, fmt, fresh=True)  # nor moved aside under the writer's feet
    assert not list(tmp_path.glob("*.bak"))
    first.close()
    second = open_results(path, fmt)
    assert second.done_ids() == {0}
    second.close()


# with --no-resume a JSONL log is read through before it is moved aside; a SQLite one is not read
@pytest.mark.parametrize(("fmt", "fresh"), [("jsonl", False), ("sqlite", False), ("jsonl", True)])
def test_reading_a_long_log_stops_when_the_agent_is_told_to(tmp_path: Path, fmt: str, fresh: bool) -> None:
    """A resumed agent reads its whole log before its first frame (a minute for 1,000,000
    records on a Pi, more for months): SIGTERM during that read ended the agent only once the
    read was done - 15 s with grace_s = 2 for 1,000,000 records (s31-soak). The read now looks
    at stop every few thousand records, gives up and leaves the log as it was, let go."""
    from edge_node.results_records import STOP_CHECK_RECORDS, ReadingStopped

    path = tmp_path / f"r.{fmt}"
    log = open_results(path, fmt, fsync=False)
    for fid in range(3 * STOP_CHECK_RECORDS):
        log.write({"frame_id": fid, "origin": f"synthetic#{fid}", "status": "ok"})
    log.close()
    before = path.read_bytes()
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return True  # told to stop before the read began

    with pytest.raises(ReadingStopped):
        open_results(path, fmt, fsync=False, fresh=fresh, stop=stop)
    assert asked == [1]  # given up at the first look, a few thousand records in
    assert path.read_bytes() == before and not list(tmp_path.glob("*.bak"))
    again = open_results(path, fmt, fsync=False)  # let go: the next agent may have it
    assert len(again.done_origins()) == 3 * STOP_CHECK_RECORDS
    again.close()


def test_a_resumed_log_reads_the_agents_lines_unparsed_and_any_other_in_full(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming reads each record's id and origin: lines as the agent writes them give both from
    their start, unparsed (a million records: 2.4 s instead of 7.5 s here); any other line is read
    in full, with the checks and the torn-tail repair of a full read, and the result is the same."""
    path = tmp_path / "r.jsonl"
    log = open_results(path, "jsonl")
    for fid, origin in ((0, "camera:0#0"), (1, "img \"1\".png"), (2, "caf\u00e9.png"), (5, None)):
        assert log.write({"frame_id": fid} | ({"origin": origin} if origin else {}) | {"status": "ok"})  # the recorder's order
    log.close()
    with path.open("a") as fh:  # lines another writer made: spaced, keys in another order; then a torn one
        fh.write('{"frame_id": 7, "origin": "camera:0#7"}\n{"status":"ok","frame_id":9,"origin":"x"}\n{"frame_id":10,"sta')
    parsed: list[Any] = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text, *a, **k: parsed.append(text) or loads(text, *a, **k))
    log = open_results(path, "jsonl")
    monkeypatch.undo()
    done = log.done_origins()
    assert dict(done.items()) == {0: "camera:0#0", 1: 'img "1".png', 2: "caf\u00e9.png", 5: None, 7: "camera:0#7", 9: "x"}
    # parsed in full: an origin with an escape (1, 2), none (5), another writer's (7, 9), the torn line
    assert sorted(loads(t)["frame_id"] for t in parsed[:-1]) == [1, 2, 5, 7, 9] and len(parsed) == 6, parsed
    assert not log.write({"frame_id": 9})  # a second record refused, as ever
    log.close()
    assert path.read_bytes().endswith(b'"origin":"x"}\n')  # the torn tail cut off
def test_a_file_that_begins_as_a_log_and_is_not_one_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"frame_id":0,"status":"ok"}\nnot JSON at all\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        open_results(path, "jsonl")
    assert path.read_text() == '{"frame_id":0,"status":"ok"}\nnot JSON at all\n'


def test_a_model_further_on_in_a_line_is_read_not_taken_for_none() -> None:
    """Another writer's order (`model` after `status`): the fast path read the line's start, found no
    model there and took none, so resume accepted another model's log written that way."""
    from edge_node.results_records import scan_jsonl

    data = b'{"frame_id":0,"origin":"a.png","status":"ok","model":"other@sha256:0"}\n'
    seen: list[tuple[int, str | None, str | None]] = []
    scan_jsonl(Path("r.jsonl"), io.BytesIO(data), lambda r: seen.append((r["frame_id"], r["origin"], r.get("model"))),
               take_start=lambda fid, origin, model: seen.append((fid, origin, model)))
    assert seen == [(0, "a.png", "other@sha256:0")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63), st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text())),
                max_size=8, unique_by=lambda t: t[0]))
def test_a_records_start_read_unparsed_says_what_parsing_it_says(
        records: list[tuple[int, str | None, str | None]]) -> None:
    """Whatever the origin and model (quotes, backslashes, non-ASCII, control characters), reading the
    start of a line the agent wrote gives the id, origin and model json.loads gives, or leaves the line
    to it. A record without a model (written before 2026-12-07) gives None."""
    from edge_node.results_records import dumps, scan_jsonl

    data = "".join(dumps({"frame_id": fid, "origin": origin, **({} if model is None else {"model": model}),
                          "status": "ok"}) + "\n" for fid, origin, model in records)
    fast: dict[int, tuple[str | None, str | None]] = {}
    scan_jsonl(Path("r.jsonl"), io.BytesIO(data.encode()),
               lambda r: fast.__setitem__(r["frame_id"], (r["origin"], r.get("model"))),
               take_start=lambda fid, origin, model: fast.__setitem__(fid, (origin, model)))
    assert fast == {fid: (origin, model) for fid, origin, model in records}


def test_reading_a_closed_sqlite_log_leaves_nothing_beside_it(tmp_path: Path) -> None:
    """Read mode=ro, every closed log got an empty -wal and -shm beside it, and on a read-only
    medium (an SD card taken from a drone) none could be opened: `splitpoint results` said
    "no records" of a log of thousands. A closed log (no -wal) is now read as the file it is."""
    path = tmp_path / "r.db"
    log = open_results(path, "sqlite")
    for fid in range(3):
        assert log.write({"frame_id": fid, "status": "ok"})
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]
    assert [r["frame_id"] for r in read_results(path)] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]


def test_a_sqlite_log_its_agent_still_writes_is_read_up_to_its_last_commit(tmp_path: Path) -> None:
    """Its records are in the WAL until a checkpoint: read through the -wal, not the file alone."""
    path = tmp_path / "r.db"
    log = open_results(path, "sqlite")
    try:
        for fid in range(3):
            assert log.write({"frame_id": fid, "status": "ok"})
        assert (tmp_path / "r.db-wal").exists()
        assert [r["frame_id"] for r in read_results(path)] == [0, 1, 2]
    finally:
        log.close()


def test_a_sqlite_log_that_cannot_be_opened_is_an_error_not_an_empty_log(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_node.results_file as results_file

    path = tmp_path / "r.db"
    log = open_results(path, "sqlite")
    assert log.write({"frame_id": 0, "status": "ok"})
    log.close()

    def unable(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(results_file.sqlite3, "connect", unable)
    with pytest.raises(ConfigError, match=r"cannot be read as a SQLite results log \(unable to open database file\)"):
        read_results(path)


@pytest.mark.parametrize("bad", ["nope", "[1, 2]", '"text"', "{}", '{"frame_id": 2, "status": "ok"}'])
def test_a_sqlite_row_that_is_no_record_is_refused_on_resume_as_results_refuses_it(tmp_path: Path, bad: Any) -> None:
    """A row changed by hand (record = 'nope') was taken on resume as a frame done, while
    `splitpoint results` refused the log; a JSONL line that is no record is refused at start too."""
    path = tmp_path / "r.db"
    log = open_results(path, "sqlite")
    for fid in range(3):
        assert log.write({"frame_id": fid, "status": "ok"})
    log.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE results SET record = ? WHERE frame_id = 1", (bad,))
    db.close()
    with pytest.raises(ConfigError, match=r"the record of frame 1 (is not|names).*move it aside \(--no-resume\)"):
        open_results(path, "sqlite")
    with pytest.raises(ConfigError, match=r"cannot be read as a SQLite results log \(the record of frame 1 "):
        read_results(path)
    moved = open_results(path, "sqlite", fresh=True)  # --no-resume moves it aside and starts afresh
    assert moved.write({"frame_id": 0, "status": "ok"})
    moved.close()
