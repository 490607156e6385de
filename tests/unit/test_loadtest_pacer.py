"""`splitpoint loadtest`'s pacer keeps to its run's length, and says when it could not keep time.

A hostile tester ran `--agents 1000 --fps 0.5 --duration 3 --timeout-s 3` on 2 cores: the
drones' threads starved the pacer, which went on sending every frame due within the 3 s until
it had (161 s), and reported p50 67068 ms as the server's latency. And frames/s was divided
by the time to the last send, not the run's length (2 drones x 5 fps reported 10.2).
The clock here is a test's (ManualClock): a starved pacer is one whose ticks take long.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from helpers import ManualClock

from splitpoint.errors import ConfigError
from splitpoint.loadtest import PACER_MARGIN_S, LoadtestConfig, pace
from splitpoint.loadtest_report import LoadReport

pytestmark = pytest.mark.edge_side  # no TensorFlow

DRONES, FPS, DURATION = 4, 10.0, 3.0
DUE = DRONES * FPS * DURATION  # each drone's phase is within one period: exactly fps x duration frames each


def drones(clock: ManualClock, tick_s: float) -> tuple[list[Any], list[float]]:
    """Drones whose tick takes `tick_s` of the clock; the times they ticked at."""
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(clock.t)
        clock.t += tick_s

    return [SimpleNamespace(tick=tick) for _ in range(DRONES)], ticks


def sleeper(clock: ManualClock) -> Any:
    def sleep(s: float) -> None:
        assert s > 0
        clock.t += s
    return sleep


def test_a_pacer_on_time_sends_every_frame_and_the_run_is_its_duration() -> None:
    clock = ManualClock()
    fleet, ticks = drones(clock, 0.0)
    start = clock.t
    pacing = pace(fleet, FPS, DURATION, clock=clock, sleep=sleeper(clock))
    assert len(ticks) == DUE and all(start <= t < start + DURATION for t in ticks)
    assert pacing.complete and pacing.seconds == DURATION and pacing.unpaced == 0 and pacing.late_s == 0
    # frames/s is of the run's length: 2 drones x 5 fps answered in full is 10.0, not 10.2
    assert LoadReport(config={}, seconds=5.0, answered=50).frames_per_s == 10.0


def test_a_starved_pacer_ends_on_time_and_counts_what_it_never_sent() -> None:
    clock = ManualClock()
    fleet, ticks = drones(clock, 0.5)  # each send takes half a second: 40 frames/s due, 2 sent
    start = clock.t
    pacing = pace(fleet, FPS, DURATION, clock=clock, sleep=sleeper(clock))
    assert clock.t <= start + DURATION + 0.5  # one send past the end at most, not the 60 s the schedule held
    assert pacing.complete and pacing.seconds == DURATION
    assert len(ticks) + pacing.unpaced == DUE and pacing.unpaced > DUE / 2
    assert pacing.late_s > 2.0


def test_a_report_of_a_pacer_behind_says_its_figures_are_the_generators() -> None:
    report = LoadReport(config={}, seconds=3.0, sent=12, answered=12, unpaced=108, pacer_late_ms=2500.0,
                        pacer_behind=2.5 > PACER_MARGIN_S, per_agent_answered=[3, 3, 3, 3])
    text = report.text()
    assert text.startswith("warning: the load generator fell behind its schedule (frames sent up to 2500 ms late, "
                           "108 never sent): these figures measure this loadtest process, not the server")
    assert report.to_dict()["pacer_behind"] is True and report.to_dict()["unpaced"] == 108
    on_time = LoadReport(config={}, seconds=3.0, sent=12, answered=12, per_agent_answered=[3, 3, 3, 3])
    assert "warning" not in on_time.text() and on_time.to_dict()["pacer_behind"] is False


def test_a_run_too_short_for_one_frame_is_refused_naming_it() -> None:
    """--fps 0.1 --duration 1 ran, sent nothing and exited 1 with "0 frames sent" and no reason."""
    with pytest.raises(ConfigError) as info:
        LoadtestConfig(bundle="b", target="127.0.0.1:1", insecure=True, fps=0.1, duration=1).validate()
    assert info.value.exit_code == 2
    assert str(info.value) == ("duration = 1: is shorter than one frame at fps = 0.1 (one every 10 s): "
                               "no drone would send a frame")
    LoadtestConfig(bundle="b", target="127.0.0.1:1", insecure=True, fps=0.1, duration=10).validate()
