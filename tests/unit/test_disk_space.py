"""The agent warns before its results disk fills (a log that cannot be written stops it):
below the floor, or at the rate the space falls, full within a day; once, then once when
there is room again. The free space is a metric for an alert."""

from __future__ import annotations

import logging
import os

import pytest
from helpers import ManualClock
from prometheus_client import CollectorRegistry

from edge_node.disk_space import CHECK_EVERY_S, LOW_FREE_BYTES, DiskWatch
from edge_node.run_report import EdgeMetrics

pytestmark = pytest.mark.edge_side

MIB = 2**20


class Disk:
    def __init__(self, free: int):
        self.free = free
        self.looks = 0

    def statvfs(self, path: str) -> os.statvfs_result:
        self.looks += 1
        # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
        return os.statvfs_result((4096, 1024, 10**9, 0, self.free // 1024, 0, 0, 0, 0, 255))


def watch(tmp_path, disk: Disk, clock: ManualClock) -> tuple[DiskWatch, EdgeMetrics]:
    metrics = EdgeMetrics(CollectorRegistry())
    return DiskWatch(tmp_path / "r.jsonl", metrics.results_disk_free, clock, disk.statvfs), metrics


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_below_the_floor_warns_once_and_says_so_again_when_there_is_room(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "edge_node.agent")
    disk, clock = Disk(5000 * MIB), ManualClock(0.0)
    w, metrics = watch(tmp_path, disk, clock)
    w.after_write()
    assert metrics.results_disk_free._value.get() == 5000 * MIB and not warnings(caplog)
    for _ in range(100):  # written between looks: the disk is looked at every CHECK_EVERY_S only
        w.after_write()
    assert disk.looks == 1
    disk.free = 150 * MIB  # another program filled it
    clock.t += CHECK_EVERY_S
    w.after_write()
    (line,) = warnings(caplog)
    assert line.startswith(f"results disk: 150 MiB free at {tmp_path}") and "copy old logs off" in line, line
    for _ in range(3):  # once, not every look
        clock.t += CHECK_EVERY_S
        w.after_write()
    assert len(warnings(caplog)) == 1
    disk.free = 300 * MIB  # not yet room again: under twice the floor
    clock.t += CHECK_EVERY_S
    w.after_write()
    assert w.warned
    disk.free = 4000 * MIB  # old logs copied off
    clock.t += 600
    w.after_write()
    assert not w.warned and any("4000 MiB free" in r.getMessage() for r in caplog.records)
    assert metrics.results_disk_free._value.get() == 4000 * MIB


def test_a_disk_that_fills_within_a_day_is_warned_about_well_above_the_floor(tmp_path, caplog) -> None:
    """30 fps of records fill 2 GB in about 2.5 days: fine; 400 MB an hour fills it in 5 h."""
    disk, clock = Disk(2000 * MIB), ManualClock(0.0)
    w, _ = watch(tmp_path, disk, clock)
    for _ in range(10):  # 10 MiB an hour: 200 h left, no warning
        w.after_write()
        clock.t += CHECK_EVERY_S
        disk.free -= int(10 * MIB * CHECK_EVERY_S / 3600)
    assert not warnings(caplog)
    for _ in range(25):  # 400 MiB an hour
        w.after_write()
        clock.t += CHECK_EVERY_S
        disk.free -= int(400 * MIB * CHECK_EVERY_S / 3600)
    (line,) = warnings(caplog)
    assert "MiB an hour: full in about" in line and disk.free > LOW_FREE_BYTES, line
    hours = float(line.split("full in about ")[1].split(" h")[0])
    assert hours < 24, line  # warned as soon as the recent rate says within a day


def test_a_disk_that_cannot_be_looked_at_is_left_to_the_writes(tmp_path, caplog) -> None:
    def broken(path: str) -> os.statvfs_result:
        raise OSError(5, "Input/output error")

    w = DiskWatch(tmp_path / "r.jsonl", None, ManualClock(0.0), broken)
    w.after_write()
    assert not warnings(caplog) and not w.warned


def test_the_recorder_watches_the_disk_it_writes_to(tmp_path) -> None:
    from edge_node.recorder import Recorder

    metrics = EdgeMetrics(CollectorRegistry())
    rec = Recorder(["a"], metrics, on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)
    rec.failed(0, "x", None, "test")
    rec.close()
    free = metrics.results_disk_free._value.get()
    assert abs(free - os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize) < 64 * MIB, free
