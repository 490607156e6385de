"""`splitpoint results`: a flight's logs summarized - counts, latency percentiles, reasons grouped -
from logs the agent's own stores wrote, and bad input named with exit 2."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from edge_node.results import open_results
from edge_node.results_records import reason_group
from splitpoint.cli import main
from splitpoint.results_report import summarize

pytestmark = pytest.mark.edge_side

T0 = 1_796_583_145_000_000_000  # 2026-12-06 18:52:25 UTC


def ok(fid: int, where: str, split: int, e2e: float, **extra) -> dict:
    return {"frame_id": fid, "origin": f"camera:0#{fid}", "status": "ok", "split": split, "where": where,
            "label": fid % 3, "true_label": 0, "capture_time_unix_ns": T0 + fid * 100_000_000,
            "timings_ms": {"head": 1.0, "end_to_end": e2e}, **extra}


def flight(path, fmt: str = "jsonl") -> None:
    log = open_results(path, fmt, fsync=False)
    for fid in range(100):  # 60 offloaded at k=53 (20..79 ms), 40 all-edge (80 ms)
        if fid < 60:
            log.write(ok(fid, "cloud", 53, 20.0 + fid, replica="cloud-0" if fid % 2 else "cloud-1"))
        else:
            log.write(ok(fid, "local", 155, 80.0))
    log.write(ok(100, "local", 53, 300.0, fallback_reason="stream ended before the answer (UNAVAILABLE: Socket closed)"))
    log.write(ok(101, "local", 53, 310.0, fallback_reason="stream ended before the answer (INTERNAL: garbage)"))
    log.write(ok(102, "local", 53, 120.0, fallback_reason="no answer within frame_deadline_ms = 1000",
                 hedged=True, hedge_ms=100.0))
    log.write(ok(103, "local", 53, 90.0, fallback_reason="nothing came back on its stream for 2002 ms (over twice)"))
    log.write(ok(104, "local", 53, 95.0, fallback_reason="nothing came back on its stream for 2019 ms (over twice)"))
    log.write({"frame_id": 105, "origin": "camera:0#105", "status": "failed", "error": "bad frame: truncated",
               "true_label": None})
    log.write({"frame_id": 106, "origin": "camera:0#106", "status": "dropped", "reason": "live mode", "true_label": None})
    log.close()


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_a_flight_in_figures(tmp_path, fmt) -> None:
    path = tmp_path / f"r.{fmt}"
    flight(path, fmt)
    (s,) = summarize([str(path)])
    assert s.frames == 107 and dict(s.status) == {"ok": 105, "failed": 1, "dropped": 1}
    assert dict(s.where) == {"cloud": 60, "local": 45}
    assert dict(s.splits) == {53: 65, 155: 40}
    assert dict(s.replicas) == {"cloud-0": 30, "cloud-1": 30}
    assert dict(s.fallbacks.counts) == {"stream ended before the answer": 2, "no answer within frame_deadline_ms = N": 1,
                                        "nothing came back on its stream for N ms": 2}
    assert s.fallbacks.examples["stream ended before the answer"].endswith("(UNAVAILABLE: Socket closed)")
    assert s.hedged == 1 and s.hedged_local_first == 1
    assert s.labelled == 105 and s.correct == sum(1 for fid in range(105) if fid % 3 == 0)
    latencies = sorted([20.0 + f for f in range(60)] + [80.0] * 40 + [300.0, 310.0, 120.0, 90.0, 95.0])
    assert s.latency.median() == pytest.approx(latencies[52], rel=1e-3)
    assert s.latency.quantile(0.95) == pytest.approx(latencies[99], rel=1e-3)  # nearest rank: ceil(0.95 * 105) = 100
    assert s.latency.quantile(1.0) == pytest.approx(310.0, rel=1e-3)
    assert s.first_ns == T0 and s.last_ns == T0 + 104 * 100_000_000  # failed and dropped records carry no capture time


def test_the_command_prints_each_log_then_all(tmp_path, capsys) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.db"
    flight(a)
    flight(b, "sqlite")
    assert main(["results", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    blocks = out.split("\n\n")
    assert [blk.split(":")[0] for blk in blocks] == [str(a), str(b), "all 2 logs"]
    assert blocks[0].startswith(f"{a}: 107 frames captured 2026-12-06 18:52:25 - 18:52:35 UTC (10 s)"), blocks[0]
    assert "ok 105 (cloud 60, local 45) | dropped 1 | failed 1" in blocks[0]
    assert '2  stream ended before the answer  e.g. "stream ended before the answer (UNAVAILABLE: Socket closed)"' in out
    assert "all 2 logs: 214 frames" in blocks[2] and "answered by: cloud-0 60, cloud-1 60" in blocks[2]
    assert main(["results", str(a), "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 107 and summary["splits"] == {"53": 65, "155": 40}
    assert summary["errors"] == [{"reason": "bad frame", "frames": 1, "example": "bad frame: truncated"}]


def test_a_log_still_being_written_is_read_up_to_its_torn_line(tmp_path, capsys) -> None:
    path = tmp_path / "r.jsonl"
    flight(path)
    with path.open("a") as fh:
        fh.write('{"frame_id": 107, "origin": "camer')  # the agent mid-write
    assert main(["results", str(path)]) == 0
    assert f"{path}: 107 frames" in capsys.readouterr().out


@pytest.mark.parametrize("make, says", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory, not a regular file"),
    (lambda p: p.write_text("# notes\n"), "is not a results log (line 1 is not JSON"),
    (lambda p: p.write_text('{"frame_id": "seven"}\n'), "a result record needs an integer frame_id"),
    (lambda p: os.mkfifo(p), "is a named pipe, not a regular file"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(),
     "a SQLite database with no results table: t"),
])
def test_what_is_not_a_results_log_is_named_with_exit_2(tmp_path, capsys, make, says) -> None:
    path = tmp_path / "x.jsonl"
    make(path)
    assert main(["results", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'splitpoint results: error: LOG = "{path}": ') and says in err, err
    assert "--results" not in err  # the agent's hint, not this command's
    assert len(err.splitlines()) == 1


def test_an_empty_log_has_no_records(tmp_path, capsys) -> None:
    (tmp_path / "r.jsonl").touch()
    assert main(["results", str(tmp_path / "r.jsonl")]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'r.jsonl'}: no records"


def test_reasons_are_grouped_by_what_comes_before_their_details() -> None:
    assert reason_group("cloud unreachable (waiting to reconnect)") == "cloud unreachable"
    assert reason_group("malformed response: server timing total_ms = nan") == "malformed response"
    assert reason_group("cloud RESOURCE_EXHAUSTED: queue full") == "cloud RESOURCE_EXHAUSTED"
    assert reason_group("hedged: no answer within 120 ms (predicted 80 ms + margin 40 ms)") == "hedged"
    assert reason_group("stream closed before the frame was sent") == "stream closed before the frame was sent"


def test_the_agent_counts_its_fallbacks_by_the_same_groups(tmp_path) -> None:
    """`splitpoint_edge_fallbacks_total{reason}`: one series per group, whatever the server said."""
    import time

    import numpy as np
    from prometheus_client import CollectorRegistry

    from edge_node.recorder import Recorder
    from edge_node.run_report import EdgeMetrics
    from edge_node.sources import Frame

    registry = CollectorRegistry()
    rec = Recorder(["a", "b"], EdgeMetrics(registry), on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)
    reasons = ["stream ended before the answer (UNAVAILABLE: Socket closed)",
               "stream ended before the answer (INTERNAL: the server's answer (9 bytes) is not ...)",
               "nothing came back on its stream for 2002 ms (over twice frame_deadline_ms = 1000): stalled",
               "nothing came back on its stream for 2019 ms (over twice frame_deadline_ms = 1000): stalled", None]
    for fid, reason in enumerate(reasons):
        frame = Frame(fid, np.zeros((2, 2, 1), np.uint8), None, f"x#{fid}", time.time_ns(),
                      capture_mono_ns=time.monotonic_ns())
        rec.ok(frame, 1, "local", np.array([0.2, 0.8]), {"head": 0.5}, reason)()
    rec.close()
    counted = {s.labels["reason"]: s.value for m in registry.collect() if m.name == "splitpoint_edge_fallbacks"
               for s in m.samples if s.name.endswith("_total")}
    assert counted == {"stream ended before the answer": 2, "nothing came back on its stream for N ms": 2}


def test_a_reader_that_stops_reading_ends_the_report_quietly(tmp_path) -> None:
    """`splitpoint results LOG | head` (or a reader gone before it wrote): "splitpoint results:
    error: Broken pipe" and exit 1, as if the report had failed. Now nothing is said and the exit
    is 141, as of a process a closed pipe ends. A real process, its stdout a pipe already closed."""
    import subprocess
    import sys

    from helpers import cli_env

    flight(tmp_path / "r.jsonl")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before a line is written
    try:
        proc = subprocess.run([sys.executable, "-m", "splitpoint", "results", str(tmp_path / "r.jsonl")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=60)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_log_named_twice_or_an_empty_name_is_refused(tmp_path, capsys, monkeypatch) -> None:
    """`results k.jsonl k.jsonl` counted every frame twice in "all 2 logs" (so did ./k.jsonl), and
    `results ""` said only "is a directory" (the working directory)."""
    flight(tmp_path / "k.jsonl")
    monkeypatch.chdir(tmp_path)
    assert main(["results", "k.jsonl", f"{tmp_path}/./k.jsonl"]) == 2
    assert f'LOG = "{tmp_path}/./k.jsonl": given twice (perhaps by another name)' in capsys.readouterr().err
    assert main(["results", ""]) == 2
    assert "splitpoint results: error: LOG: an empty name: give a results log's file name" in capsys.readouterr().err


def test_a_capture_time_no_clock_gives_is_left_out_not_an_error(tmp_path, capsys) -> None:
    """A record with capture_time_unix_ns = 1e23 (another writer's) ended the report with 'Value too
    large for defined data type', naming no file."""
    log = open_results(tmp_path / "r.jsonl", "jsonl", fsync=False)
    log.write(ok(0, "cloud", 3, 10.0))
    log.write(ok(1, "cloud", 3, 12.0, capture_time_unix_ns=10**23))
    log.write(ok(2, "cloud", 3, 14.0, capture_time_unix_ns=-(10**23)))
    log.close()
    (s,) = summarize([str(tmp_path / "r.jsonl")])
    assert s.frames == 3 and s.first_ns == s.last_ns == T0
    assert main(["results", str(tmp_path / "r.jsonl")]) == 0


def test_repeated_frame_ids_and_models_are_said(tmp_path, capsys) -> None:
    """Two logs joined with cat (the same 20 frame ids twice) were reported as 40 frames; a log of two
    models' records (resumed with another bundle before records named their model) gave no hint."""
    joined = tmp_path / "joined.jsonl"
    with joined.open("w") as fh:
        for model in ("digits-cnn@sha256:f63acfb5b365", "digits-det@sha256:0123456789ab"):
            for fid in range(20):
                fh.write(json.dumps(ok(fid, "cloud", 3, 10.0, model=model)) + "\n")
    assert main(["results", str(joined)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{joined}: 40 records of 20 frames (20 repeat a frame id of the same log: logs joined "
                          "together, or two runs on one log)"), out
    assert "  models: digits-cnn@sha256:f63acfb5b365 20, digits-det@sha256:0123456789ab 20" in out
    assert main(["results", str(joined), "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["repeated_frame_ids"] == 20 and len(summary["models"]) == 2
    one = tmp_path / "one.jsonl"  # an agent's own log: one record per frame, one model
    one.write_text("".join(json.dumps(ok(fid, "cloud", 3, 10.0, model="m@sha256:0")) + "\n" for fid in range(3)))
    assert main(["results", str(one), str(one.with_name("copy.jsonl"))]) == 2  # a missing second log: exit 2
    capsys.readouterr()
    assert main(["results", str(one)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{one}: 3 frames") and "  model: m@sha256:0 3\n" in out and "records of" not in out
    with one.open("a") as fh:  # an older run's records, resumed: they name no model
        fh.write(json.dumps(ok(3, "cloud", 3, 10.0)) + "\n")
    assert main(["results", str(one)]) == 0
    assert "  model: m@sha256:0 3 (1 records name none)" in capsys.readouterr().out


def test_an_end_to_end_no_frame_takes_is_left_out_and_counted(tmp_path: Path) -> None:
    """Two records of 1e308 ms made `results --json` print "median": Infinity (not JSON) and a
    wrong max; a -5 ms was shown as 0.0. Left out of the figures, counted, and the JSON strict."""
    from splitpoint.results_report import format_summary

    log = tmp_path / "r.jsonl"
    lines = [{"frame_id": i, "status": "ok", "where": "cloud", "timings_ms": {"end_to_end": ms}}
             for i, ms in enumerate([1e308, 1e308, -5, 12.0, 4e6])]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"frame_id":9,"status":"ok","timings_ms":{"end_to_end":NaN}}\n')
    s, = summarize([str(log)])
    text = format_summary(s)
    assert "median 12.0, p95 12.0, p99 12.0, max 12.0" in text, text
    assert "end-to-end of 5 records left out: negative, not a number or over an hour" in text, text
    assert s.as_json()["end_to_end_ms"]["left_out"] == 5


def test_results_json_is_strict_even_with_no_latency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from splitpoint.results_report import run_report

    log = tmp_path / "r.jsonl"
    log.write_text('{"frame_id":1,"status":"ok","where":"cloud","timings_ms":{"end_to_end":1e308}}\n')
    assert run_report([str(log)], as_json=True) == 0
    out = capsys.readouterr().out
    figures = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))[0]["end_to_end_ms"]
    assert figures == {"median": None, "p95": None, "p99": None, "max": None, "left_out": 1}


def test_a_replica_that_refused_frames_is_not_counted_as_answering_them(tmp_path: Path) -> None:
    """A refused frame's record (where local) names the replica that refused it: "answered by"
    counts cloud records only, "refused by" the others."""
    from splitpoint.results_report import format_summary

    log = tmp_path / "r.jsonl"
    lines = [ok(0, "cloud", 3, 10.0, replica="a:1"), ok(1, "cloud", 3, 11.0, replica="b:1"),
             ok(2, "local", 3, 30.0, replica="b:1", fallback_reason="cloud NOT_FOUND: split 3 is not in the bundle"),
             ok(3, "local", 3, 31.0, fallback_reason="stream ended before the answer (UNAVAILABLE: gone)")]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    s, = summarize([str(log)])
    assert dict(s.replicas) == {"a:1": 1, "b:1": 1} and dict(s.refused_by) == {"b:1": 1}
    text = format_summary(s)
    assert "  answered by: a:1 1, b:1 1\n" in text and "  refused by: b:1 1" in text, text
    assert s.as_json()["refused_by"] == {"b:1": 1}


def test_cloud_answers_whose_local_run_failed_are_counted(tmp_path: Path) -> None:
    """A hedged frame whose local run failed and that the cloud then answered is a success, with
    `local_error`: the summary said nothing of the device's failures."""
    from splitpoint.results_report import format_summary

    log = tmp_path / "r.jsonl"
    lines = [ok(0, "cloud", 3, 10.0, hedged=True, local_error="the Edge TPU failed a run (whole model)"),
             ok(1, "cloud", 3, 11.0, hedged=True), ok(2, "cloud", 3, 12.0, local_error=None)]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    s, = summarize([str(log)])
    assert s.local_errors == 1 and s.as_json()["local_errors"] == 1
    assert "  local runs that failed beside the cloud's answer: 1 (the edge device erred" in format_summary(s)
