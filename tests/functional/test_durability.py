"""No data lost: a durable results log, resume after a kill, live and survey capture.

What is checked:
  * both results formats (jsonl, sqlite) hold one record per frame and read back
    what was written; a second record for a frame id is refused (the first stays);
  * a JSONL log torn by a crash mid-line: reading ignores the torn last line,
    appending cuts it off first;
  * an agent process SIGKILLed mid-run and started again on the same SQLite log
    ends with every frame id of the source exactly once;
  * SIGTERM in live capture: every frame read has its record;
  * --no-resume moves the old log aside;
  * live capture with a head slower than the source drops frames, counts them
    and records each; survey capture with the same setup drops none.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_node.agent import DROP_REASON, EdgeAgent, RunSummary
from edge_node.config import EdgeConfig
from edge_node.heads import EdgeHeads
from edge_node.results import is_sqlite, open_results, read_results
from edge_node.source_spec import open_source
from splitpoint.bundle import load_bundle
from splitpoint.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
AGENT_TIMEOUT_S = 60.0


def records_for(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"frame_id": i, "origin": f"synthetic#{i}", "status": "ok", "label": i % 10, "score": 0.5,
             "timings_ms": {"head": 1.25}} for i in range(start, start + n)]


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_one_record_per_frame_and_read_back_equal(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    log = open_results(path, fmt, fsync=True)
    written = records_for(20)
    # from several threads at once, as the agent does (responses, watchdog, main loop)
    threads = [threading.Thread(target=lambda part=written[k::4]: [log.write(r) for r in part]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.done_ids() == set(range(20))
    log.close()
    log.close()  # idempotent
    assert is_sqlite(path) == (fmt == "sqlite")
    back = read_results(path)
    assert sorted(back, key=lambda r: r["frame_id"]) == written
    if fmt == "sqlite":
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
            assert db.execute("SELECT count(*), count(DISTINCT frame_id) FROM results").fetchone() == (20, 20)
            assert db.execute("SELECT min(written_unix_ns) FROM results").fetchone()[0] > 0
    # reopened: what is there is known, more is appended
    log = open_results(path, fmt)
    assert log.done_ids() == set(range(20))
    assert log.write(records_for(1, start=20)[0])
    log.close()
    assert sorted(r["frame_id"] for r in read_results(path)) == list(range(21))


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_second_record_for_a_frame_is_refused(tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / f"r.{fmt}"
    log = open_results(path, fmt)
    first = {"frame_id": 7, "status": "ok", "label": 3}
    assert log.write(first) is True
    assert log.write({"frame_id": 7, "status": "failed", "error": "again"}) is False
    log.close()
    assert any(r.levelname == "ERROR" and "7" in r.getMessage() for r in caplog.records)
    log = open_results(path, fmt)  # also across a restart
    assert log.write({"frame_id": 7, "status": "ok", "label": 4}) is False
    log.close()
    assert read_results(path) == [first]


def test_mismatched_format_is_refused(tmp_path: Path) -> None:
    from splitpoint.errors import ConfigError

    path = tmp_path / "r.log"
    log = open_results(path, "jsonl")
    log.write({"frame_id": 0})
    log.close()
    with pytest.raises(ConfigError):
        open_results(path, "sqlite")
    sq = tmp_path / "r.db"
    open_results(sq, "sqlite").close()
    with pytest.raises(ConfigError):
        open_results(sq, "jsonl")


def test_torn_jsonl_last_line_is_tolerated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(r) for r in records_for(3)]
    path.write_text("\n".join(lines) + "\n" + lines[0][:17])  # killed in the middle of the 4th line
    assert [r["frame_id"] for r in read_results(path)] == [0, 1, 2]
    assert any(r.levelname == "WARNING" and "torn" in r.getMessage() for r in caplog.records)
    log = open_results(path, "jsonl")  # appending first cuts the torn tail off
    assert log.done_ids() == {0, 1, 2}
    assert log.write(records_for(1, start=3)[0])
    log.close()
    assert path.read_text().count("\n") == 4
    assert [r["frame_id"] for r in read_results(path)] == [0, 1, 2, 3]
    # a whole last record whose newline was not written is kept
    path.write_text(lines[0] + "\n" + lines[1])
    log = open_results(path, "jsonl")
    assert log.done_ids() == {0, 1}
    log.write(records_for(1, start=2)[0])
    log.close()
    assert [r["frame_id"] for r in read_results(path)] == [0, 1, 2]


# ---------------------------------------------------------------- kill and restart


def start_edge(bundle: Path, address: str, results: Path, *flags: str, fmt: str = "sqlite") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "edge", "--bundle", str(bundle), "--cloud", address, "--insecure",
         "--source", "synthetic:300", "--fps", "50", "--split", "3", "--results", str(results),
         "--results-format", fmt, "--log-level", "warning", *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def count_rows(path: Path) -> int:
    if not path.exists() or not is_sqlite(path):
        return 0
    try:
        with sqlite3.connect(path, timeout=5.0) as db:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def test_killed_agent_restarts_where_it_stopped(digits_bundle: Path, cloud_server: Any, tmp_path: Path) -> None:
    results = tmp_path / "r.sqlite"
    proc = start_edge(digits_bundle, cloud_server.address, results)
    try:
        deadline = time.monotonic() + 60
        while count_rows(results) < 50:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no 50 records within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no cleanup at all: frames in flight are lost with the process
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {r["frame_id"] for r in read_results(results)}
    assert 50 <= len(before) < 300
    proc = start_edge(digits_bundle, cloud_server.address, results)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    after = read_results(results)
    ids = Counter(r["frame_id"] for r in after)
    assert sorted(ids) == list(range(300)) and set(ids.values()) == {1}, "a frame missing or recorded twice"
    assert all(r["status"] == "ok" for r in after)
    assert f"{len(before)} skipped" in out and f"{300 - len(before)} frames in" in out, out


def test_sigterm_in_live_capture_drains(digits_bundle: Path, cloud_server: Any, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    proc = start_edge(digits_bundle, cloud_server.address, results, "--capture", "live", fmt="jsonl")
    try:
        deadline = time.monotonic() + 60
        while not results.exists() or results.read_text().count("\n") < 20:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no 20 records within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    ids = Counter(r["frame_id"] for r in read_results(results))
    assert set(ids.values()) == {1} and sorted(ids) == list(range(len(ids))), "a frame read without a record"
    assert 20 <= len(ids) < 300 and f"{len(ids)} frames in" in out, out


def test_no_resume_moves_the_old_log_aside(digits_bundle: Path, cloud_server: Any, tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    log = open_results(results, "jsonl")
    log.write({"frame_id": 0, "status": "ok"})
    log.close()
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:5", cloud=cloud_server.address, split=3,
                      insecure=True, results=str(results), resume=False)
    conf.validate()
    summary, records = run_agent(EdgeAgent.from_config(conf))
    assert summary.skipped == 0 and summary.frames == 5
    assert sorted(r["frame_id"] for r in records) == list(range(5))
    (bak,) = tmp_path.glob("r.jsonl.*.bak")
    assert read_results(bak) == [{"frame_id": 0, "status": "ok"}]


# ---------------------------------------------------------------- live and survey capture


def run_agent(agent: EdgeAgent, timeout_s: float = AGENT_TIMEOUT_S) -> tuple[RunSummary, list[dict[str, Any]]]:
    conf = agent.config
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
                box["summary"] = agent.run(source)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"the agent did not finish within {timeout_s}s"
    if "error" in box:
        raise box["error"]
    return box["summary"], read_results(conf.results)


def slow_heads(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    original = EdgeHeads.run

    def slow(self: EdgeHeads, k: int, x: np.ndarray) -> Any:
        time.sleep(seconds)
        return original(self, k, x)

    monkeypatch.setattr(EdgeHeads, "run", slow)


FRAMES = 60


def capture_agent(digits_bundle: Path, address: str, results: Path, capture: str,
                  on_result: Callable[[dict[str, Any]], None] | None = None, **overrides: Any) -> EdgeAgent:
    # a 200 fps source, a 20 ms head in latency mode (one frame at a time): about 4 of 5 frames cannot be processed
    conf = EdgeConfig(bundle=str(digits_bundle), source=f"synthetic:{FRAMES}", cloud=address, split=3, insecure=True,
                      results=str(results), fps=200.0, mode="latency", capture=capture, live_buffer=2,
                      **overrides)
    conf.validate()
    return EdgeAgent.from_config(conf, on_result=on_result)


def test_live_capture_drops_the_oldest_and_records_them(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    slow_heads(monkeypatch, 0.02)
    agent = capture_agent(digits_bundle, cloud_server.address, tmp_path / "live.jsonl", "live")
    summary, records = run_agent(agent)
    ids = Counter(r["frame_id"] for r in records)
    assert sorted(ids) == list(range(FRAMES)) and set(ids.values()) == {1}, "a frame missing or recorded twice"
    by_status = Counter(r["status"] for r in records)
    assert set(by_status) <= {"ok", "dropped"}, by_status
    assert by_status["dropped"] == summary.dropped > FRAMES // 3, by_status
    assert summary.frames == FRAMES and summary.cloud + summary.local + summary.dropped == FRAMES
    dropped = [r for r in records if r["status"] == "dropped"]
    assert all(r["reason"] == DROP_REASON and r["origin"] == f"synthetic#{r['frame_id']}" for r in dropped)
    assert all(set(r) == {"frame_id", "origin", "model", "status", "reason", "true_label"} for r in dropped)
    assert agent.registry.get_sample_value("splitpoint_edge_dropped_frames_total") == summary.dropped
    # the last frames of the source are the ones kept: the newest wins
    assert by_status["ok"] >= 3 and any(r["status"] == "ok" for r in records if r["frame_id"] >= FRAMES - 3)


def test_live_capture_stop_drains_every_frame_read(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    slow_heads(monkeypatch, 0.02)
    seen: list[dict[str, Any]] = []
    agent = capture_agent(digits_bundle, cloud_server.address, tmp_path / "stop.sqlite", "live",
                          on_result=lambda r: seen.append(r) or (len(seen) == 10 and agent.stop()),
                          results_format="sqlite")
    summary, records = run_agent(agent)
    ids = Counter(r["frame_id"] for r in records)
    assert set(ids.values()) == {1}
    assert sorted(ids) == list(range(len(ids))), "a frame read before the stop has no record"
    assert len(ids) < FRAMES and summary.frames == len(ids)


def test_survey_capture_drops_nothing(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slow_heads(monkeypatch, 0.02)
    agent = capture_agent(digits_bundle, cloud_server.address, tmp_path / "survey.jsonl", "survey")
    summary, records = run_agent(agent)
    assert sorted(r["frame_id"] for r in records) == list(range(FRAMES))
    assert all(r["status"] == "ok" for r in records)
    assert summary.dropped == 0 and summary.frames == FRAMES
    assert not agent.registry.get_sample_value("splitpoint_edge_dropped_frames_total")


# ---------------------------------------------------------------- resume onto the wrong log


def write_frames(directory: Path, names: list[str]) -> None:
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        np.save(directory / name, rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))


def origins(records: list[dict[str, Any]]) -> list[str]:
    """The records' origins in frame-id order (records are written as frames end)."""
    return [r["origin"] for r in sorted(records, key=lambda r: r["frame_id"])]


def dir_agent(digits_bundle: Path, address: str, source: Path, results: Path, fmt: str) -> EdgeAgent:
    conf = EdgeConfig(bundle=str(digits_bundle), source=str(source), cloud=address, split=3, insecure=True,
                      results=str(results), results_format=fmt)
    conf.validate()
    return EdgeAgent.from_config(conf)


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_resume_onto_a_log_of_another_source_is_refused(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                                         fmt: str) -> None:
    # The log of a synthetic run, resumed with a directory: frame ids 0-2 are recorded, but not for these
    # files. Skipping by id alone said "all 3 frames already recorded" and ran nothing.
    results = tmp_path / f"r.{fmt}"
    log = open_results(results, fmt)
    for record in records_for(3):
        log.write(record)
    log.close()
    before = read_results(results)
    write_frames(tmp_path / "frames", ["a.npy", "b.npy", "c.npy"])
    with pytest.raises(ConfigError, match=r"records frame 0 as 'synthetic#0', but directory .*frames.* has "
                                          r"'a.npy' there \(3 of 3 records name other frames\).*--no-resume"):
        run_agent(dir_agent(digits_bundle, cloud_server.address, tmp_path / "frames", results, fmt))
    assert read_results(results) == before


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_resume_onto_a_log_of_another_model_is_refused(digits_bundle: Path, cloud_server: Any, tmp_path: Path,
                                                        fmt: str) -> None:
    """The same directory resumed with another bundle: its records were taken for this model's, and
    the frames were skipped, never run by it. Records say their model now; a log of records without
    one (written before) resumes as it did."""
    frames, results = tmp_path / "frames", tmp_path / f"r.{fmt}"
    write_frames(frames, ["a.npy", "b.npy", "c.npy", "d.npy"])
    m = load_bundle(digits_bundle, verify=False).manifest
    ours = f"{m.model_name}@{m.model_digest[:19]}"
    log = open_results(results, fmt)
    for i, name in enumerate(["a.npy", "b.npy"]):
        log.write({"frame_id": i, "origin": name, "model": "other-model@sha256:0123456789ab", "status": "ok"})
    log.close()
    before = read_results(results)
    with pytest.raises(ConfigError, match=rf"records frame 0 as run by model other-model@sha256:0123456789ab \(2 of 2 "
                                          rf"records\), but this agent runs {re.escape(ours)}: .*--no-resume"):
        run_agent(dir_agent(digits_bundle, cloud_server.address, frames, results, fmt))
    assert read_results(results) == before
    older = tmp_path / f"older.{fmt}"  # no model in its records: resumed, the rest run and say their model
    log = open_results(older, fmt)
    for i, name in enumerate(["a.npy", "b.npy"]):
        log.write({"frame_id": i, "origin": name, "status": "ok"})
    log.close()
    summary, records = run_agent(dir_agent(digits_bundle, cloud_server.address, frames, older, fmt))
    assert summary.skipped == 2 and sorted(r["frame_id"] for r in records) == [0, 1, 2, 3]
    assert [r.get("model") for r in sorted(records, key=lambda r: r["frame_id"])] == [None, None, ours, ours]
    summary, records = run_agent(dir_agent(digits_bundle, cloud_server.address, frames, older, fmt))  # our own: fine
    assert summary.skipped == 4 and len(records) == 4


def test_resume_after_the_directory_changed_is_refused(digits_bundle: Path, cloud_server: Any, tmp_path: Path) -> None:
    # A file added in the middle moves every later name to another id: resuming by id would leave
    # b.npy unrun and take c.npy for done.
    frames, results = tmp_path / "frames", tmp_path / "r.jsonl"
    write_frames(frames, ["a.npy", "c.npy"])
    summary, records = run_agent(dir_agent(digits_bundle, cloud_server.address, frames, results, "jsonl"))
    assert summary.frames == 2 and origins(records) == ["a.npy", "c.npy"]
    write_frames(frames, ["b.npy"])
    with pytest.raises(ConfigError, match=r"records frame 1 as 'c.npy', but .* has 'b.npy' there \(1 of 2 "):
        run_agent(dir_agent(digits_bundle, cloud_server.address, frames, results, "jsonl"))
    assert read_results(results) == records
    # the same directory resumed as it was recorded skips what is done and runs the rest
    (frames / "b.npy").unlink()
    write_frames(frames, ["d.npy"])
    summary, records = run_agent(dir_agent(digits_bundle, cloud_server.address, frames, results, "jsonl"))
    assert summary.skipped == 2 and summary.frames == 1
    assert origins(records) == ["a.npy", "c.npy", "d.npy"]
