"""The partitioner's staged output: a build directory beside -o, and what a killed run leaves there."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitpoint.partition_output import staged_output


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid  # reaped: no process has it (until the kernel hands it out again, far later)


def test_a_killed_runs_build_is_removed_by_the_next_run_and_nothing_else(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "b"
    dead = tmp_path / f".b.partial-{dead_pid()}-0a1b2c3d"  # a run killed by a segfaulting converter
    dead.mkdir()
    (dead / "edge").mkdir()
    (dead / "edge" / "head_3.tflite").write_bytes(b"x" * 1000)
    running = tmp_path / f".b.partial-{os.getppid()}-0a1b2c3d"  # another run, still going
    kept = tmp_path / ".b.verified-0a1b2c3d"  # a verified bundle a message named
    other = tmp_path / ".c.partial-1-0a1b2c3d"  # another -o's
    for d in (running, kept, other):
        d.mkdir()
    with caplog.at_level(logging.INFO, logger="splitpoint.partition"), staged_output(out, force=False) as build:
        assert build.name.startswith(f".b.partial-{os.getpid()}-")
        (build / "manifest.json").write_text("{}")
    assert not dead.exists() and running.is_dir() and kept.is_dir() and other.is_dir()
    assert (out / "manifest.json").read_text() == "{}"
    assert f"removed {dead}: the partial build of an earlier run that ended without cleaning up" in caplog.text


def test_a_verified_bundle_that_cannot_be_moved_in_is_kept_under_a_name_no_run_removes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from splitpoint import partition_output
    from splitpoint.errors import PartitionError

    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "splitpoint-bundle", "old": true}')
    real_rename = os.rename

    def rename(src: object, dst: object) -> None:
        if Path(str(src)) == out:  # the old bundle cannot be moved aside (say, a mount point)
            raise PermissionError(1, "Operation not permitted")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(partition_output.os, "rename", rename)
    with pytest.raises(PartitionError) as info, staged_output(out, force=True) as build:
        (build / "manifest.json").write_text("new")
    monkeypatch.undo()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".b.verified-")]
    assert len(kept) == 1 and (kept[0] / "manifest.json").read_text() == "new"
    assert f"the new, verified bundle is in {kept[0]}" in str(info.value)
    assert "old" in (out / "manifest.json").read_text()
    with caplog.at_level(logging.WARNING, logger="splitpoint.partition"), \
            staged_output(tmp_path / "b", force=True) as build:  # the next run leaves it be, and says so
        (build / "manifest.json").write_text("newer")
    assert kept[0].is_dir()
    said = [r.getMessage() for r in caplog.records if "verified bundle(s)" in r.getMessage()]
    assert said == [f"1 verified bundle(s) of earlier runs to b are kept beside it: {kept[0].name} (use one, or "
                    "remove them)"], said
