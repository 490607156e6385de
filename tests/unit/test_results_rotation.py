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
from edge_node.run_report import EdgeMetrics
from edge_node.sources import Frame
from splitpoint.errors import ConfigError

ROTATED = re.compile(r"^r\.\d{8}T\d{6}Z(-\d+)?\.(jsonl|db)$")


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
