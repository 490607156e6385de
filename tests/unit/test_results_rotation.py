"""results_rotate_h: a camera's run of weeks leaves day-sized logs, each record in exactly one."""

from __future__ import annotations

import errno
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_node import recorder as recorder_module
from edge_node.recorder import Recorder
from edge_node.results import read_results
from edge_node.results_file import rotated_logs
from edge_node.results_records import ReadingStopped, dumps, last_frame_id
from edge_node.run_report import EdgeMetrics
from edge_node.sources import Frame
from splitpoint.errors import ConfigError

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13

ROTATED = re.compile(r"^r\.\d{8}T\d{6}Z(_\d+)?\.(jsonl|db)$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_recorder(tmp_path: Path, fmt: str, rotate_s: float = 0.0) -> tuple[Recorder, Path, Clock, list[bool]]:
    clock, fatal = Clock(), []
    rec = Recorder(["a", "b"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: fatal.append(True), clock=clock)
    path = tmp_path / ("r.jsonl" if fmt == "jsonl" else "r.db")
    rec.open(str(path), fmt, fsync=False, resume=True, rotate_s=rotate_s)
    return rec, path, clock, fatal


def write(rec: Recorder, fid: int) -> None:
    frame = Frame(fid, np.zeros((2, 2, 1), np.uint8), None, f"camera:0#{fid}", time.time_ns())
    rec.ok(frame, 0, "local", np.array([0.2, 0.8], np.float32), {"head": 1.0}, None)()


def ids_in(path: Path) -> list[int]:
    return [r["frame_id"] for r in read_results(path)]


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_due_rotation_closes_the_log_under_a_dated_name_and_starts_a_new_one(tmp_path: Path, fmt: str,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    rec, path, clock, fatal = make_recorder(tmp_path, fmt, rotate_s=3600)
    for fid in range(3):
        write(rec, fid)
    clock.now += 3599
    assert rec.rotate_if_due() is None  # not yet: a clock compare
    clock.now += 1
    with caplog.at_level("INFO", logger="edge_node.agent"):
        moved = rec.rotate_if_due()
    assert moved is not None and ROTATED.match(moved.name), moved
    # one self-contained file (a SQLite log's WAL folded in), before anything reads it
    assert sorted(p.name for p in tmp_path.iterdir() if p != path and not p.name.startswith(path.name)) == [moved.name]
    assert ids_in(moved) == [0, 1, 2]
    assert path.exists() and ids_in(path) == []
    write(rec, 3)
    write(rec, 3)  # the new log refuses a second record as the old one did
    assert ids_in(path) == [3] and rec.rotated == [moved] and not fatal
    said = [r.getMessage() for r in caplog.records if "rotated" in r.getMessage()]
    assert said == [f"results log rotated (results_rotate_h): {moved} closed with 3 records, complete and safe to "
                    f"copy off; new records go to a new {path}"], said
    assert rec.rotate_if_due() is None  # its time starts again
    rec.close()


def test_an_empty_log_is_not_rotated_and_its_time_starts_again(tmp_path: Path) -> None:
    """A camera away for the whole period (camera_reopen_s) must not leave empty dated logs."""
    rec, path, clock, _ = make_recorder(tmp_path, "jsonl", rotate_s=60)
    clock.now += 61
    assert rec.rotate_if_due() is None and list(tmp_path.iterdir()) == [path]
    write(rec, 0)
    clock.now += 59
    assert rec.rotate_if_due() is None  # counted from the refusal above, not from the open
    clock.now += 1
    assert rec.rotate_if_due() is not None
    rec.close()


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_records_written_while_logs_rotate_are_each_in_exactly_one_log(tmp_path: Path, fmt: str) -> None:
    rec, path, _, fatal = make_recorder(tmp_path, fmt)
    n, writers = 600, 3
    done = threading.Event()

    def writing(start: int) -> None:
        for fid in range(start, n, writers):
            write(rec, fid)

    def rotating() -> None:
        while not done.is_set():
            rec.rotate()

    threads = [threading.Thread(target=writing, args=(i,)) for i in range(writers)]
    rotator = threading.Thread(target=rotating)
    rotator.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    rotator.join(60)
    rec.close()
    logs = [*rec.rotated, path]
    assert len(rec.rotated) >= 2 and not fatal
    ids = [fid for log in logs for fid in ids_in(log)]
    assert sorted(ids) == list(range(n))  # none lost, none twice
    assert rec.summary.frames == n


def test_a_log_that_cannot_be_renamed_is_fatal_and_keeps_its_records(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rec, path, clock, fatal = make_recorder(tmp_path, "jsonl", rotate_s=1)

    def refuse(p: Any) -> Path:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(recorder_module, "rotate_results", refuse)
    write(rec, 0)
    clock.now += 1
    assert rec.rotate_if_due() is None
    assert fatal == [True] and rec.fatal is not None
    assert str(rec.fatal) == (f"results log {path} cannot be written: the log could not be renamed to start a new one "
                              "(results_rotate_h): Read-only file system (EROFS); its records stay intact")
    write(rec, 1)  # refused: nothing more is written once it is fatal
    rec.close()
    assert [json.loads(line)["frame_id"] for line in path.read_text().splitlines()] == [0]


def test_rotation_is_refused_for_a_source_that_resumes_by_skipping() -> None:
    from edge_node.capture import Capture
    from edge_node.config import EdgeConfig

    conf = EdgeConfig(bundle="b", source="s", results_rotate_h=24)
    capture = Capture(conf, None, None, lambda f: None, threading.Event(), lambda: False, lambda: 0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        capture.check(type("Dir", (), {"description": "images in /data/survey", "restarts_numbering": False})())
    assert str(info.value) == ("results_rotate_h = 24: rotates the results log of a camera's run only; images in "
                               "/data/survey resumes from one log (frames recorded in a rotated one would run "
                               "again): set it to 0")
    capture.check(type("Camera", (), {"description": "camera:0", "restarts_numbering": True})())


def test_a_new_log_that_cannot_be_made_is_fatal_and_names_where_the_old_one_went(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (no inode left for the new file): the agent stops saying where its records are."""
    from splitpoint.errors import ResultsWriteError

    rec, path, _, fatal = make_recorder(tmp_path, "jsonl")
    write(rec, 0)

    def full(p: Any, *args: Any, **kwargs: Any) -> Any:
        raise ResultsWriteError(p, "No space left on device (ENOSPC)")

    monkeypatch.setattr(recorder_module, "open_results", full)
    assert rec.rotate() is None and fatal == [True]
    [moved] = [p for p in tmp_path.iterdir()]
    assert ROTATED.match(moved.name) and ids_in(moved) == [0]
    assert str(rec.fatal) == (f"results log {path} cannot be written: no new log could be started after the old one "
                              f"was renamed {moved.name} (results_rotate_h): No space left on device (ENOSPC); its "
                              "records stay intact")
    write(rec, 1)  # nothing more is written, and nothing breaks
    rec.close()


def test_rotations_within_one_second_are_named_and_listed_in_the_order_made(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`ls r.*.jsonl` and rotated_logs list the logs oldest first, also for a rotation period under a
    second (a second rotation in the same second gets a number that sorts after the first)."""
    monkeypatch.setattr(time, "gmtime", lambda *a: time.struct_time((2026, 12, 7, 2, 27, 0, 0, 341, 0)))
    rec, path, _, _ = make_recorder(tmp_path, "jsonl")
    for fid in range(11):
        write(rec, fid)
        rec.rotate()
    rec.close()
    names = [p.name for p in rec.rotated]
    assert names[:3] == ["r.20261207T022700Z.jsonl", "r.20261207T022700Z_1.jsonl", "r.20261207T022700Z_2.jsonl"]
    assert sorted(names[:10]) == names[:10]  # as `ls` lists them, up to ten in one second
    assert rotated_logs(path) == rec.rotated  # by number, also past ten
    (tmp_path / "r.notes.jsonl").write_text("")  # not a rotated log's name
    (tmp_path / "r.20261207T022700Z.jsonl.bak").write_text("")
    assert rotated_logs(path) == rec.rotated
    assert rotated_logs(tmp_path / "none" / "r.jsonl") == []


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_the_last_frame_id_of_a_log_is_its_largest(tmp_path: Path, fmt: str) -> None:
    """Records land in the order frames finish, not the order they were numbered."""
    rec, path, _, _ = make_recorder(tmp_path, fmt)
    assert last_frame_id(path) is None
    for fid in (3, 7, 5, 6):
        write(rec, fid)
    rec.close()
    assert last_frame_id(path) == 7


def test_reading_a_long_log_for_its_last_id_stops_when_told(tmp_path: Path) -> None:
    """SIGTERM while a day's log is read at start ends the agent within grace_s."""
    path = tmp_path / "r.jsonl"
    path.write_text("".join(dumps({"frame_id": i, "origin": f"camera:0#{i}"}) + "\n" for i in range(5000)))
    assert last_frame_id(path) == 4999
    with pytest.raises(ReadingStopped):
        last_frame_id(path, stop=lambda: True)


def test_a_log_that_is_not_one_is_named_when_its_last_id_is_read(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text("hello\n")
    with pytest.raises(ConfigError, match="notes.jsonl.*line 1 is not JSON"):
        last_frame_id(notes)


def test_a_restart_before_the_new_log_has_a_record_numbers_after_the_newest_rotated_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The recorder finds the newest rotated log with a record; one it cannot read is warned about
    and passed over, so frame numbers go on after what can be read."""
    rec, path, _, _ = make_recorder(tmp_path, "jsonl")
    for fid in range(4):
        write(rec, fid)
        if fid in (1, 2):
            rec.rotate()
    rec.close()  # logs: [0, 1], [2], [3] (current)
    path.unlink()  # as if the agent stopped right after the rotation: the new log has no record
    again, _, _, _ = make_recorder(tmp_path, "jsonl")
    assert again.last_rotated_id() == (rec.rotated[-1], 2)
    rec.rotated[-1].write_text("garbage\n")
    with caplog.at_level("WARNING", logger="edge_node.agent"):
        assert again.last_rotated_id() == (rec.rotated[0], 1)
    assert [r.getMessage() for r in caplog.records] == [
        f"the rotated results log {rec.rotated[-1]} could not be read for its last frame id (results = "
        f"\"{rec.rotated[-1]}\": is not a results log (line 1 is not JSON: Expecting value: line 1 column 1 (char 0)); "
        "it was left as it is: give --results another file): frame numbers may repeat ones it records"]
    again.close()
