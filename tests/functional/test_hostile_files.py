"""Files a careless or hostile user hands `splitpoint edge`, run as a real process each.

What is checked:
  * an image directory holding a decompression bomb (a PNG header declaring 30000 x 30000):
    that frame's record says it could not be read, every other file gets its record;
  * a named pipe in the image directory: left out with a warning, the run ends (it used to
    wait in open() forever, deaf to SIGTERM);
  * --results naming something that is not a results log - a text file, JSON lines without
    frame ids, one complete line of garbage, /dev/zero, /dev/full, a named pipe, another
    program's SQLite database: exit 2 and one line naming the file, before any frame is
    processed, the file left as it was (also with --no-resume, which would move a log aside);
  * two agents on one results log: the second exits 2 at once naming the first's pid, the
    log keeps one record per frame id, and the lock goes with the first agent's death;
  * --config naming a named pipe (edge, cloud, doctor): exit 2 at once, naming it (they waited
    in open() for a writer, for ever, deaf to SIGTERM).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_env, png_declaring
from helpers import finish_process as finish
from PIL import Image

from edge_node.results import read_results

EVENT_TIMEOUT_S = 30.0


def edge(bundle: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "edge", "--insecure", "--bundle", str(bundle), "--cloud", "127.0.0.1:1",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env=cli_env() | {"PYTHONFAULTHANDLER": "1"},
        # 2 GiB of address space (an agent maps under 1 GiB): reading /dev/zero fails fast, not the machine
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)),
    )


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- the image directory


def image(path: Path, value: int) -> None:
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(path)


def test_a_decompression_bomb_is_that_frames_failure(digits_bundle: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    image(frames / "a.png", 10)
    (frames / "b.png").write_bytes(png_declaring(30000, 30000))
    image(frames / "c.png", 200)
    results = tmp_path / "r.jsonl"
    proc = edge(digits_bundle, tmp_path, "--source", str(frames), "--results", str(results))
    out, err = finish(proc)
    assert proc.returncode == 1 and "Traceback" not in err, err  # 1: a frame failed, the run did not
    by_origin = {r["origin"]: r for r in read_results(results)}
    assert sorted(by_origin) == ["a.png", "b.png", "c.png"], by_origin
    assert by_origin["a.png"]["status"] == by_origin["c.png"]["status"] == "ok"
    bomb = by_origin["b.png"]
    assert bomb["status"] == "failed" and bomb["frame_id"] == 1
    assert "b.png" in bomb["error"] and "too large" in bomb["error"], bomb
    assert "3 frames in" in out and "1 failed" in out, out


def test_a_named_pipe_in_the_image_directory_is_left_out(digits_bundle: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    image(frames / "a.png", 10)
    os.mkfifo(frames / "b.png")  # no writer ever comes: opening it for reading would wait forever
    image(frames / "c.png", 200)
    results = tmp_path / "r.jsonl"
    proc = edge(digits_bundle, tmp_path, "--source", str(frames), "--results", str(results))
    out, err = finish(proc)
    assert proc.returncode == 0 and "Traceback" not in err, err
    (warning,) = [line for line in err.splitlines() if "not regular files" in line]
    assert "WARNING" in warning and "b.png (a named pipe)" in warning, warning
    records = sorted(read_results(results), key=lambda r: r["frame_id"])
    assert [(r["frame_id"], r["origin"], r["status"]) for r in records] == [(0, "a.png", "ok"), (1, "c.png", "ok")]


# ---------------------------------------------------------------- --results that is not a results log


def sqlite_of_another_program(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.execute("INSERT INTO contacts VALUES ('ada')")
    db.commit()
    db.close()
    return path


FILES = {
    "notes": (lambda d: d / "notes.md", b"# notes\n\nsome text\n", "jsonl", "line 1 is not JSON"),
    "json without frame ids": (lambda d: d / "x.jsonl", b'{"id": 1}\n', "jsonl", "needs an integer frame_id, not null"),
    "one complete line": (lambda d: d / "g.jsonl", b"garbage\n", "jsonl", "line 1 is not JSON"),
    "another program's database": (lambda d: sqlite_of_another_program(d / "app.db"), None, "sqlite",
                                   "a SQLite database with no results table: contacts"),
    "/dev/zero": (lambda d: Path("/dev/zero"), None, "jsonl", "is a character device, not a regular file"),
    "/dev/full": (lambda d: Path("/dev/full"), None, "jsonl", "is a character device, not a regular file"),
    "a named pipe": (lambda d: d / "p.jsonl", None, "jsonl", "is a named pipe, not a regular file"),
    # was exit 1, "cannot be written: Is a directory (EISDIR)", as if a disk had failed
    "a directory": (lambda d: d / "r.jsonl", None, "jsonl", "is a directory, not a regular file"),
    # was exit 1, "cannot be written: File exists (EEXIST)": mkdir's word for a file in the way
    "under a file": (lambda d: d / "notes.md" / "r.jsonl", None, "jsonl", "notes.md is a file, not a directory"),
}
#: --no-resume moves a log aside: never tried on a device node, which a regression would rename (as root)
NO_RESUME = [pytest.param(case, "--no-resume", id=f"{case}-no-resume") for case in FILES if not case.startswith("/dev")]


@pytest.mark.parametrize("case, resume", [pytest.param(case, "--resume", id=case) for case in FILES] + NO_RESUME)
def test_results_that_are_not_a_results_log_are_refused_untouched(digits_bundle: Path, tmp_path: Path, case: str,
                                                                  resume: str) -> None:
    make, content, fmt, said = FILES[case]
    where = tmp_path / "files"
    where.mkdir()
    path = make(where)
    if content is not None:
        path.write_bytes(content)
    if case == "a named pipe":
        os.mkfifo(path)
    if case == "under a file":
        path.parent.write_text("# notes\n")
    if case == "a directory":
        path.mkdir()
        (path / "kept.txt").write_text("someone's file\n")
    if path.parent == where:
        before = {p.name: (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns) for p in where.iterdir()}
    events = tmp_path / "events.jsonl"
    proc = edge(digits_bundle, tmp_path, "--source", "synthetic:3", "--results", str(path), "--results-format", fmt,
                resume, "--events", str(events))
    out, err = finish(proc)
    assert proc.returncode == 2, (proc.returncode, out, err)
    line = one_error_line(err)
    assert line.startswith(f'splitpoint edge: error: results = "{path}": '), line
    assert said in line, line
    assert not events.exists() or "source-open" not in events.read_text()  # refused before the first frame
    assert "frames in" not in out, out
    if path.parent == where:  # every byte as it was, nothing moved aside or added (no -wal, no .bak)
        after = {p.name: (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns) for p in where.iterdir()}
        assert after == before


# ---------------------------------------------------------------- two agents, one log


def wait_for_event(events: Path, name: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline:
        if events.exists() and any(json.loads(line)["event"] == name for line in events.read_text().splitlines()):
            return
        assert proc.poll() is None, f"the agent exited ({proc.returncode}) before {name}: {proc.communicate()}"
        time.sleep(0.05)
    raise AssertionError(f"no {name} event within {EVENT_TIMEOUT_S:g} s")


def test_a_second_agent_on_the_same_log_is_refused(digits_bundle: Path, tmp_path: Path) -> None:
    results = tmp_path / "c.jsonl"
    events = tmp_path / "first.events"
    first = edge(digits_bundle, tmp_path, "--source", "synthetic:4000", "--fps", "40", "--results", str(results),
                 "--events", str(events))
    try:
        wait_for_event(events, "source-open", first)  # the log is open (and held) before this event
        t0 = time.monotonic()
        second = edge(digits_bundle, tmp_path, "--source", "synthetic:4000", "--fps", "40", "--results", str(results))
        out, err = finish(second)
        assert second.returncode == 2, (out, err)
        assert one_error_line(err) == (f'splitpoint edge: error: results = "{results}": is in use by another agent '
                                       f"(pid {first.pid}): one results log takes one agent; give this one another "
                                       "--results")
        assert time.monotonic() - t0 < 20, "the second agent did not stop at once"
        assert first.poll() is None  # the first one runs on, undisturbed
    finally:
        first.kill()  # SIGKILL: no close, no cleanup; the kernel drops the lock with the process
        first.wait(10)
    done = {r["frame_id"] for r in read_results(results)}
    third = edge(digits_bundle, tmp_path, "--source", "synthetic:4000", "--max-frames", "5", "--results", str(results))
    out, err = finish(third)
    assert third.returncode == 0 and "Traceback" not in err, err
    ids = Counter(r["frame_id"] for r in read_results(results))
    assert set(ids.values()) == {1}, "a frame id recorded twice"
    assert len(ids) == len(done) + 5


def test_a_run_refused_at_start_leaves_the_earlier_log_where_it_was(digits_bundle: Path, tmp_path: Path) -> None:
    # --no-resume moves an earlier log aside (<name>.<time>.bak); it did so before the metrics
    # endpoint was bound, so a port in use refused the run and still renamed the log
    results = tmp_path / "r.jsonl"
    done = edge(digits_bundle, tmp_path, "--source", "synthetic:2", "--split", "7", "--results", str(results))
    finish(done)
    assert done.returncode == 0
    before = results.read_bytes()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        again = edge(digits_bundle, tmp_path, "--source", "synthetic:2", "--split", "7", "--results", str(results),
                     "--no-resume", "--metrics-listen", f"127.0.0.1:{port}")
        out, err = finish(again)
    assert again.returncode == 1, (out, err)  # a port in use: exit 1, as for the server's listen
    assert f'metrics_listen = "127.0.0.1:{port}": cannot listen there: Address already in use' in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"] and results.read_bytes() == before


# ---------------------------------------------------------------- the config file


@pytest.mark.parametrize("command", ["edge", "cloud", "doctor"])
def test_a_config_that_is_a_named_pipe_is_refused_at_once(tmp_path: Path, command: str) -> None:
    pipe = tmp_path / "edge.toml"
    os.mkfifo(pipe)  # nothing ever writes to it
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", command, "--config", str(pipe)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=cli_env() | {"PYTHONFAULTHANDLER": "1"})
    out, err = finish(proc)
    said = f'--config = "{pipe}": is a named pipe, not a regular file'
    if command == "doctor":  # a FAIL line among its checks, exit 1
        assert proc.returncode == 1, err
        assert f"[FAIL] config: {said}" in out.splitlines()
    else:
        assert proc.returncode == 2, err
        assert one_error_line(err) == f"splitpoint {command}: error: {said}"
