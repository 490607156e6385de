"""The explicit start signal of a trace run: `splitpoint edge --events FILE` and the harness's watch.

The bench restarts a trace when the agent's frame source opens. It used to learn that by reading
the agent's log for "frame source: "; now the agent writes a `source-open` JSON line to the file
given by --events, so rewording (or silencing) the log cannot break trace replay.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node.results import read_results
from splitpoint import cli
from splitpoint.bench.worker_client import SOURCE_OPEN, SourceOpenWatch


class RewordedLog:
    """Stands in for edge_node.sources' logger: every message reworded, none with the old text."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _say(self, msg: str, *args: Any, **_: Any) -> None:
        self.lines.append(("opened input -> " + (msg % args)).replace("frame source: ", ""))

    debug = info = warning = error = _say


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """cmd_edge installs SIGTERM/SIGINT/SIGHUP handlers for its agent; put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM))}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_the_agent_signals_source_open_whatever_its_log_says(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               restore_signals: None) -> None:
    import edge_node.source_spec

    reworded = RewordedLog()
    monkeypatch.setattr(edge_node.source_spec, "log", reworded)
    events, results = tmp_path / "events.jsonl", tmp_path / "r.jsonl"
    t0 = time.time_ns()
    rc = cli.main(["edge", "--bundle", str(digits_bundle), "--source", "synthetic:3", "--cloud", cloud_server.address,
                   "--split", "3", "--insecure", "--results", str(results), "--log-level", "warning",
                   "--events", str(events)])
    assert rc == 0
    assert any(line.startswith("opened input -> ") for line in reworded.lines)  # the log line was really reworded
    assert not any("frame source: " in line for line in reworded.lines)

    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [e["event"] for e in lines] == [SOURCE_OPEN]
    opened = lines[0]
    records = read_results(results)
    assert len(records) == 3
    # the signal comes after the command started and before the first frame was taken
    assert t0 <= opened["t_unix_ns"] <= min(r["capture_time_unix_ns"] for r in records)
    assert "synthetic" in opened["source"]

    fired: list[int] = []
    watch = SourceOpenWatch(events, lambda: fired.append(1))
    watch.poll()
    watch.poll()
    assert fired == [1] and watch.synced and watch.opened == opened


def test_an_unwritable_events_file_is_a_clear_error(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], restore_signals: None) -> None:
    rc = cli.main(["edge", "--bundle", str(digits_bundle), "--source", "synthetic:1", "--cloud", cloud_server.address,
                   "--split", "3", "--insecure", "--results", str(tmp_path / "r.jsonl"), "--log-level", "warning",
                   "--events", str(tmp_path / "no" / "such" / "dir" / "events.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "--events" in err and "Traceback" not in err


def test_an_events_file_that_is_a_results_log_is_refused_before_the_run(
        digits_bundle: Path, cloud_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        restore_signals: None) -> None:
    """`--events r.jsonl --results r.jsonl`, or an older run's log as --events, appended an event line
    to a results log, which resume and `splitpoint results` then refused (a unit restarted for good)."""
    older = tmp_path / "older.jsonl"
    argv = ["edge", "--bundle", str(digits_bundle), "--source", "synthetic:2", "--cloud", cloud_server.address,
            "--split", "3", "--insecure", "--log-level", "warning"]
    assert cli.main([*argv, "--results", str(older)]) == 0
    kept = older.read_bytes()
    for events, why in ((older, "is the same file as results"), (older, "holds something other than events"),
                        ("", "give a file")):
        results = older if why.startswith("is the same") else tmp_path / "new.jsonl"
        assert cli.main([*argv, "--results", str(results), "--events", str(events)]) == 2
        err = capsys.readouterr().err
        assert "--events" in err and why in err, err
        assert older.read_bytes() == kept and not (tmp_path / "new.jsonl").exists()
    blank_first = tmp_path / "blank-first.jsonl"  # a results log that starts with a blank line
    blank_first.write_bytes(b"\n" + kept)
    assert cli.main([*argv, "--results", str(tmp_path / "new.jsonl"), "--events", str(blank_first)]) == 2
    assert "holds something other than events" in capsys.readouterr().err
    missing_dir = tmp_path / "nodir" / "ev.jsonl"  # refused before the run, not after it
    assert cli.main([*argv, "--results", str(tmp_path / "new.jsonl"), "--events", str(missing_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "new.jsonl").exists()
    # a stream is the driver's to read: taken as it is (it was refused as "a named pipe")
    assert cli.main([*argv, "--results", str(tmp_path / "r3.jsonl"), "--events", os.devnull]) == 0
    events = tmp_path / "events.jsonl"  # an earlier run's events file takes more lines
    for _ in range(2):
        assert cli.main([*argv, "--results", str(tmp_path / "r2.jsonl"), "--no-resume", "--events", str(events)]) == 0
    assert [json.loads(x)["event"] for x in events.read_text().splitlines()] == [SOURCE_OPEN, SOURCE_OPEN]
