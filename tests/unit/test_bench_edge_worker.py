"""The bench edge worker's emulated slower device: the factor mode (calibrated in-run) and device files."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitpoint.bench.device import OverrunCounter, load_device, shipped_device, split_of_head
from splitpoint.bench.edge_worker import CALIBRATION_RUNS, emulate_device, emulate_slower_device
from splitpoint.bench.worker_client import SourceOpenWatch
from splitpoint.errors import ConfigError
from splitpoint.runtime.litert import HeadRunner

pytestmark = pytest.mark.edge_side  # no TensorFlow: CI also runs it from the wheel on Python 3.13


class FakeHead:
    def __init__(self, path: str, seconds: float):
        self.path, self.seconds = path, seconds


class VirtualClock:
    """The emulation's clock (`edge_worker.time`): a native run and the emulation's sleep move it
    by exactly their length, so the figures checked below are exact. On the real clock a busy CI
    machine's oversleeps (several ms) failed them: a 12 ms native run measured over its 20 ms
    bound, and the factor mode multiplied an oversleep of its calibration by 4."""

    def __init__(self) -> None:
        self.t = 1000.0

    def perf_counter(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    @staticmethod
    def time_ns() -> int:
        return time.time_ns()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    import splitpoint.bench.edge_worker as edge_worker

    virtual = VirtualClock()
    monkeypatch.setattr(edge_worker, "time", virtual)

    def fake_run(self: FakeHead, x: int) -> int:  # the native run: its time passes on the clock
        virtual.sleep(self.seconds)
        return x + 1

    monkeypatch.setattr(HeadRunner, "run_all", fake_run)  # restored after the test, with what replaces it
    return virtual


def fake_run(self: FakeHead, x: int) -> int:
    time.sleep(self.seconds)
    return x + 1


def timed(head: FakeHead, clock: VirtualClock, x: int = 41) -> float:
    t0 = clock.perf_counter()
    assert HeadRunner.run_all(head, x) == x + 1  # type: ignore[arg-type]
    return clock.perf_counter() - t0


def test_each_head_lasts_factor_times_its_median_native_time(clock: VirtualClock) -> None:
    emulate_slower_device(4.0)
    fast, slow = FakeHead("a.tflite", 0.002), FakeHead("b.tflite", 0.005)
    took_fast = [timed(fast, clock) for _ in range(CALIBRATION_RUNS)]
    took_slow = [timed(slow, clock) for _ in range(5)]
    assert took_fast[5:] == pytest.approx([0.008] * (CALIBRATION_RUNS - 5)), took_fast
    assert took_slow == pytest.approx([0.020] * 5), took_slow


def test_a_disturbed_invocation_is_not_multiplied(clock: VirtualClock) -> None:
    """Interference on the core (here 6 ms more once calibrated) adds once; it is not scaled by the factor."""
    emulate_slower_device(4.0)
    head = FakeHead("a.tflite", 0.002)
    for _ in range(CALIBRATION_RUNS):
        timed(head, clock)
    head.seconds = 0.008  # disturbed: 4x its usual native time
    assert timed(head, clock) == pytest.approx(0.008)  # target 4 x 2 ms = 8 ms, met by the run itself; not 32


def test_the_emulation_stretches_the_method_every_head_path_calls(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """The agent's heads call HeadRunner.run_all (every output of a multi-output head), `run` goes
    through it too: stretching `run` alone left every agent run native (found when a device-file
    bench profiled 125 ms heads at 0.9 ms)."""
    monkeypatch.setattr(HeadRunner, "run_all", lambda self, x: [fake_run(self, x)])
    emulate_device(load_device(device_file(tmp_path, {1: 20.0})), OverrunCounter())
    head = HeadRunner.__new__(HeadRunner)  # a real runner's methods, a fake interpreter underneath
    head.path, head.seconds = str(bundle_head(tmp_path, 1, 0.001).path), 0.001  # type: ignore[attr-defined]
    for call in (lambda: HeadRunner.run_all(head, 1), lambda: head.run(1)):
        t0 = time.perf_counter()
        call()
        assert time.perf_counter() - t0 >= 0.020


def test_factor_one_leaves_the_runner_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HeadRunner, "run_all", fake_run)
    emulate_slower_device(1.0)
    assert HeadRunner.run_all is fake_run


# --------------------------------------------------------------------------- device-profile mode

DOCUMENTED = "mobilenetv2-96-documented.json"
SLOW = "mobilenetv2-96-slow125.toml"


def device_file(tmp_path: Path, head_ms: dict[int, float], model: str = "hand") -> Path:
    splits = [{"split": k, "wire_bytes": 100, "latency": {"median_ms": t, "p95_ms": t, "mean_ms": t, "std_ms": 0.0,
                                                          "min_ms": t, "samples": 0}} for k, t in head_ms.items()]
    path = tmp_path / "device.json"
    path.write_text(json.dumps({"format": "splitpoint-profile", "schema_version": 1, "side": "edge",
                                "bundle_digest": "sha256:x", "model_name": model, "device": {"device": "test board"},
                                "splits": splits}))
    return path


def bundle_head(tmp_path: Path, k: int, seconds: float, model: str = "hand") -> FakeHead:
    """A fake head at bundle/edge/head_<k>.tflite, in a bundle whose manifest names `model`."""
    (tmp_path / "bundle" / "edge").mkdir(parents=True, exist_ok=True)
    (tmp_path / "bundle" / "manifest.json").write_text(json.dumps({"model": {"name": model}}))
    return FakeHead(str(tmp_path / "bundle" / "edge" / f"head_{k}.tflite"), seconds)


def test_device_mode_gives_each_split_its_time_from_the_file_whatever_the_native_speed(
        clock: VirtualClock, tmp_path: Path) -> None:
    device = load_device(device_file(tmp_path, {1: 60.0, 3: 120.0}))
    counter = OverrunCounter()
    emulate_device(device, counter)
    fast, slower_machine = bundle_head(tmp_path, 1, 0.002), bundle_head(tmp_path, 1, 0.008)
    # the same file gives the same head time on a fast and on a 4x slower machine
    for head in (fast, slower_machine):
        assert [timed(head, clock) for _ in range(3)] == pytest.approx([0.060] * 3)
    assert timed(bundle_head(tmp_path, 3, 0.001), clock) == pytest.approx(0.120)
    # interference on one run adds nothing while the native run stays under the target
    fast.seconds = 0.010
    assert timed(fast, clock) == pytest.approx(0.060)
    assert counter.take(device) == {"head_runs": 8, "too_slow": {}}


def test_device_mode_says_when_the_native_run_is_already_slower_than_the_device(
        clock: VirtualClock, tmp_path: Path) -> None:
    device = load_device(device_file(tmp_path, {2: 5.0}))
    counter = OverrunCounter()
    emulate_device(device, counter)
    head = bundle_head(tmp_path, 2, 0.012)  # 12 ms natively, the device takes 5 ms: cannot be emulated
    assert timed(head, clock) == pytest.approx(0.012)  # its native time, no sleep added
    head.seconds = 0.001
    assert timed(head, clock) == pytest.approx(0.005)
    said = counter.take(device)
    assert said["head_runs"] == 2
    assert said["too_slow"]["2"]["slower_than_target"] == 1 and said["too_slow"]["2"]["runs"] == 2
    assert said["too_slow"]["2"]["target_ms"] == 5.0 and said["too_slow"]["2"]["worst_native_ms"] == pytest.approx(12.0)
    assert "cannot be emulated" in said["note"]
    assert counter.take(device) == {"head_runs": 0, "too_slow": {}}  # counted afresh per command


def test_device_mode_refuses_a_split_or_a_model_the_file_has_no_time_for(
        clock: VirtualClock, tmp_path: Path) -> None:
    emulate_device(load_device(device_file(tmp_path, {1: 5.0, 3: 9.0})), OverrunCounter())
    with pytest.raises(ConfigError, match=r"no head time for split 2 \(it has \[1, 3\]\)"):
        timed(bundle_head(tmp_path, 2, 0.001), clock)
    with pytest.raises(ConfigError, match="cannot tell which split"):
        timed(FakeHead(str(tmp_path / "model.tflite"), 0.001), clock)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="is a hand device file; this bundle is vgg16"):
        timed(bundle_head(other, 1, 0.001, model="vgg16"), clock)


def test_split_of_head_reads_cpu_and_edgetpu_head_names() -> None:
    assert split_of_head("/b/edge/head_17.tflite") == 17
    assert split_of_head("/b/edge/head_8_edgetpu.tflite") == 8
    assert split_of_head("/b/edge/tail_8.keras") is None


def test_shipped_documented_device_reproduces_the_documented_figures() -> None:
    """docs/benchmarks.md: profile medians head(8) = 14.91 ms, head(154) = 63.70 ms, all-edge about 77 ms."""
    dev = load_device(shipped_device(DOCUMENTED))
    assert dev.model_name == "mobilenetv2" and dev.how == "edge profile"
    assert (dev.head_ms[8], dev.head_ms[154], dev.head_ms[155]) == (14.91, 63.70, 77.0)
    measured = [0, 8, 17, 26, 53, 89, 115, 142, 150, 154, 155]
    assert set(measured) <= set(dev.head_ms)
    times = [dev.head_ms[k] for k in sorted(dev.head_ms)]
    assert times == sorted(times)  # more of the network on the edge never takes less time


def test_shipped_slow_device_is_the_documented_shape_at_125_ms() -> None:
    slow, base = load_device(shipped_device(SLOW)), load_device(shipped_device(DOCUMENTED))
    assert slow.head_ms[155] == pytest.approx(125.0)
    assert set(slow.head_ms) == set(base.head_ms)
    for k, t in base.head_ms.items():
        assert slow.head_ms[k] == pytest.approx(t * 125.0 / 77.0, abs=1e-3)
    assert "scaled from mobilenetv2-96-documented.json to all-edge 125 ms" in slow.how


def test_scaling_file_resolves_its_shape_next_to_itself(tmp_path: Path) -> None:
    device_file(tmp_path, {0: 0.0, 1: 2.0, 2: 4.0})
    (tmp_path / "slow.toml").write_text('all_edge_ms = 40\nshape = "device.json"\n')
    dev = load_device(tmp_path / "slow.toml")
    assert dev.head_ms == {0: 0.0, 1: 20.0, 2: 40.0}


@pytest.mark.parametrize(("text", "match"), [
    ('shape = "device.json"\n', "all_edge_ms: is required"),
    ('all_edge_ms = -3\nshape = "device.json"\n', "all_edge_ms = -3: must be a number of ms above 0"),
    # 1e308 ended in "timestamp out of range ...; check the device with splitpoint doctor", an hour
    # per head in a bench profiling until the worker's timeout
    ('all_edge_ms = 1e308\nshape = "device.json"\n', "all_edge_ms = 1e\\+308: .* at most 10000 in device file"),
    ('all_edge_ms = 3600000\nshape = "device.json"\n', "all_edge_ms = 3600000: .* at most 10000"),
    ('all_edge_ms = nan\nshape = "device.json"\n', "all_edge_ms = nan: must be a number of ms above 0"),
    ('all_edge_ms = 50\n', "shape: is required"),
    ('all_edge_ms = 50\nshape = "missing.json"\nx = 1\n', "x = 1: unknown key"),
    ('all_edge_ms = 50\nshape = "missing.json"\n', "file not found"),
    ('all_edge_ms = 50\nshape = \n', "not a readable TOML file"),
])
def test_bad_device_files_are_config_errors_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    device_file(tmp_path, {1: 2.0})
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_device(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="file not found"):
        load_device(tmp_path / "nowhere.json")
    with pytest.raises(ConfigError, match="no such shipped device file; shipped: .*mobilenetv2-96-documented.json"):
        shipped_device("pi5.json")


def test_head_times_beyond_ten_seconds_are_refused_naming_the_split(tmp_path: Path) -> None:
    device_file(tmp_path, {1: 2.0, 3: 3_600_000.0})  # an hour per head
    with pytest.raises(ConfigError, match=r"device: splits\[3\] = 3600000: head time must be from 0 to 10000 ms"):
        load_device(tmp_path / "device.json")
    device_file(tmp_path, {1: 5.0, 2: 1.0})  # split 1's head is slower than the all-edge split's
    (tmp_path / "slow.toml").write_text('all_edge_ms = 9000\nshape = "device.json"\n')
    with pytest.raises(ConfigError, match="all_edge_ms = 9000: scales split 1's head to 45000 ms, above the 10000"):
        load_device(tmp_path / "slow.toml")


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "splitpoint.bench.edge_worker", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_worker_with_a_bad_device_file_exits_2_naming_it(tmp_path: Path) -> None:
    proc = worker("--device", str(tmp_path / "nowhere.toml"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "nowhere.toml" in err and "file not found" in err and "Traceback" not in err
    proc = worker("--device", str(shipped_device(SLOW)), "--slowdown", "2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "not allowed with argument" in err


def test_worker_ready_line_records_the_device(tmp_path: Path) -> None:
    proc = worker("--device", str(shipped_device(SLOW)))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        readable, _, _ = select.select([proc.stdout], [], [], 60)
        assert readable, "no ready line from the worker within 60 s"
        ready = json.loads(proc.stdout.readline())  # the worker writes whole lines
        proc.stdin.write('{"quit": true}\n')
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert ready["event"] == "ready" and ready["slowdown"] == 1.0
    emu = ready["emulation"]
    assert emu["mode"] == "device" and emu["model_name"] == "mobilenetv2"
    assert emu["head_ms"]["155"] == pytest.approx(125.0) and emu["path"].endswith(SLOW)
def test_the_source_open_watch_fires_once_on_a_complete_line_only(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    fired: list[int] = []
    watch = SourceOpenWatch(events, lambda: fired.append(1))
    watch.poll()  # no file yet: nothing
    with open(events, "a") as fh:
        fh.write('not json\n{"event": "other"}\n{"event": "source-open", "t_unix_ns": 1')  # the line is unfinished
    watch.poll()
    assert fired == [] and not watch.synced
    with open(events, "a") as fh:
        fh.write('}\n{"event": "source-open", "t_unix_ns": 2}\n')
    watch.poll()
    watch.poll()
    assert fired == [1] and watch.opened == {"event": "source-open", "t_unix_ns": 1}


def test_a_log_line_that_looks_like_the_old_mark_does_not_start_the_trace(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("12:00:00 INFO edge_node.sources: frame source: synthetic:3\n")
    fired: list[int] = []
    SourceOpenWatch(events, lambda: fired.append(1)).poll()
    assert fired == []


def test_the_harness_client_starts_the_worker_on_the_device_and_keeps_each_runs_report(tmp_path: Path) -> None:
    """EdgeWorker (the harness's side) passes --device, and each run's `done` emulation report is kept."""
    from splitpoint.bench.worker_client import EdgeWorker

    w = EdgeWorker(None, tmp_path / "worker.log", device=shipped_device(SLOW))
    try:
        ready = w.start(timeout_s=60)
        assert ready["emulation"]["mode"] == "device" and ready["emulation"]["path"].endswith(SLOW)
        rc, _, err, _ = w.run(["--version"], timeout_s=60)
        assert (rc, err) == (0, "exit 0")
        assert w.last_emulation == {"head_runs": 0, "too_slow": {}}  # no head ran: nothing too slow
    finally:
        w.stop()
