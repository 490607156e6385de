"""`splitpoint bench`'s outputs fail one at a time: a JSON that cannot be written is named, and
neither the stage being measured nor the markdown is lost to it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from splitpoint.bench import harness
from splitpoint.bench.options import BenchOptions
from splitpoint.bench.results import BenchResult

pytestmark = pytest.mark.edge_side  # no TensorFlow needed


def test_a_json_on_a_full_disk_is_one_error_and_the_markdown_is_still_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    earlier = BenchResult(command=["splitpoint", "bench", "--smoke"]).to_json()
    (tmp_path / "r.json").write_text(earlier)
    real = harness.write_replacing

    def json_disk_full(path: str, text: str, key: str, what: str, is_ours: object) -> None:
        if key == "json":  # what write_replacing raises when the disk is full (the old file stays)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text, key, what, is_ours)  # type: ignore[arg-type]

    def stages(self: harness.Bench) -> BenchResult:
        self.save()  # as a stage does after each run: this raised, and the stage was marked FAILED
        self.result.complete = self.save()
        return self.result

    monkeypatch.setattr(harness, "write_replacing", json_disk_full)
    monkeypatch.setattr(harness.Bench, "run", stages)
    opts = BenchOptions(json=str(tmp_path / "r.json"), markdown=str(tmp_path / "r.md"))
    result = harness.run_bench(opts)
    said = f"json = {tmp_path / 'r.json'}: could not be written (No space left on device)"
    assert len(result.errors) == 1 and result.errors[0].startswith(said)
    assert capsys.readouterr().err.count(said) == 1  # said once, not after every run
    assert (tmp_path / "r.json").read_text() == earlier
    assert said in (tmp_path / "r.md").read_text()  # written, and says what is missing


def test_a_cached_profile_that_is_not_one_is_named_with_why(tmp_path: Path) -> None:
    """`garbage` in the cache: the worker's `profile -o` refused to replace it, and the bench said
    only "profile edge failed (2); log: ..." naming a log deleted at the end."""
    from splitpoint.bench.profiling import _cached
    from splitpoint.errors import ConfigError

    p = tmp_path / "edge-profile.json"
    assert _cached(p, "edge", "sha256:x") is False  # nothing cached: profiled
    p.write_text('{"format": "splitpoint-profile", "schema_version": 0}')
    assert _cached(p, "edge", "sha256:x") is False  # an older profile: profiled again over it
    p.write_text("garbage")
    with pytest.raises(ConfigError) as exc:
        _cached(p, "edge", "sha256:x")
    assert str(exc.value).startswith(f'cached edge profile = "{p}": unreadable')
    assert "move it away, or give another --cache-dir" in str(exc.value) and p.read_text() == "garbage"


def test_a_failed_profile_run_says_the_cause_not_only_a_log_about_to_be_removed(tmp_path: Path) -> None:
    from splitpoint.bench.profiling import _failed

    log = tmp_path / "edge-worker.log"
    log.write_text("12:00 INFO starting\nsplitpoint profile: error: -o = \"x\": exists and is not a profile\n\n")
    gone = str(_failed("splitpoint profile edge", "exit 2", log, kept=False))
    assert gone == 'splitpoint profile edge failed (exit 2): splitpoint profile: error: -o = "x": exists and is not a profile'
    assert str(_failed("splitpoint profile edge", "exit 2", log, kept=True)).endswith(f"; log: {log}")


def test_a_second_bench_on_the_same_edge_cpu_is_refused_before_it_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two benches at once pinned their edge workers to one CPU (each measured the other's heads)
    and both exited 0; at one --json the later overwrote the earlier's figures."""
    import os
    import subprocess
    import sys

    from splitpoint.bench import machine
    from splitpoint.bench.machine import EdgeCpuClaim, plan_pinning
    from splitpoint.errors import ConfigError

    monkeypatch.setattr(machine, "LOCK_DIR", str(tmp_path))  # this test's lock files, not the machine's
    affinity = os.sched_getaffinity(0)  # Bench.run moves this process onto the server's CPUs
    cpu = plan_pinning(None)["edge_cpu"]
    if cpu is None:
        pytest.skip("no CPU affinity here: the bench claims no CPU")
    # the first bench: another process, which holds the claim until its stdin closes
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from splitpoint.bench.machine import EdgeCpuClaim; "
                               f"EdgeCpuClaim({cpu}, sys.argv[1]).take(); print('held', flush=True); sys.stdin.read()",
         str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        out = tmp_path / "r.json"
        out.write_text("the first bench's figures")
        with pytest.raises(ConfigError) as err:
            harness.Bench(BenchOptions(json=str(out))).run()
        assert f"--edge-cpu = {cpu}" in str(err.value) and f"(pid {holder.pid})" in str(err.value)
        assert "give --edge-cpu another CPU" in str(err.value)
        assert out.read_text() == "the first bench's figures"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        os.sched_setaffinity(0, affinity)
    claim = EdgeCpuClaim(cpu).take()  # the first bench ended: the CPU is free again
    assert claim.path.parent == tmp_path
    claim.release()


def test_the_cpu_claim_in_a_shared_directory_follows_no_symlink(tmp_path: Path) -> None:
    """/tmp is everyone's: a symlink planted at the lock's name had the bench truncate the file it
    pointed to and write its pid there."""
    from splitpoint.bench.machine import EdgeCpuClaim

    victim = tmp_path / "victim.txt"
    victim.write_text("precious data line\n")
    (tmp_path / "splitpoint-bench-cpu0.lock").symlink_to(victim)
    claim = EdgeCpuClaim(0, str(tmp_path)).take()  # not claimed, not refused either
    claim.release()
    assert victim.read_text() == "precious data line\n"
    other = tmp_path / "other"
    other.mkdir()
    linked = other / "splitpoint-bench-cpu1.lock"  # a hard link to someone's file: locked, never written
    hard_victim = tmp_path / "hard.txt"
    hard_victim.write_text("kept\n")
    os.link(hard_victim, linked)
    claim = EdgeCpuClaim(1, str(other)).take()
    claim.release()
    assert hard_victim.read_text() == "kept\n"


def _bench_stopping(monkeypatch: pytest.MonkeyPatch, stages: object) -> None:
    """Bench.run with no set-up (no worker, no server), `stages` as its stages."""
    monkeypatch.setattr(harness, "pin_harness", lambda cpu: {"edge_cpu": None, "note": "not pinned"})
    monkeypatch.setattr(harness, "machine_description", lambda pinning: {})
    monkeypatch.setattr(harness.Bench, "_setup", lambda self, pinning: None)
    monkeypatch.setattr(harness.Bench, "_run_stages", stages)


def test_an_interrupt_before_anything_is_measured_leaves_an_earlier_result_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while profiling replaced a complete result by `complete: false, traces: null`."""
    earlier = BenchResult(complete=True, command=["splitpoint", "bench", "--smoke"]).to_json()
    (tmp_path / "r.json").write_text(earlier)

    def interrupted(self: harness.Bench) -> None:
        self.save()  # a stage's start: nothing measured yet
        raise KeyboardInterrupt

    _bench_stopping(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt):
        harness.Bench(BenchOptions(json=str(tmp_path / "r.json"))).run()
    assert (tmp_path / "r.json").read_text() == earlier
    assert not (tmp_path / "r.earlier.json").exists()
    assert f"stopped before anything was measured: {tmp_path / 'r.json'} left as it was" in capsys.readouterr().out


def test_a_partial_result_keeps_the_earlier_one_beside_it_until_the_run_is_complete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from splitpoint.bench.trace_results import TraceResult

    earlier = BenchResult(complete=True, command=["splitpoint", "bench", "--smoke"]).to_json()
    out, kept = tmp_path / "r.json", tmp_path / "r.earlier.json"
    out.write_text(earlier)
    stop = [True]

    def one_trace(self: harness.Bench) -> None:
        self.result.traces = [TraceResult(trace="a.up")]
        self.save()
        if stop[0]:
            raise KeyboardInterrupt

    _bench_stopping(monkeypatch, one_trace)
    with pytest.raises(KeyboardInterrupt):
        harness.Bench(BenchOptions(json=str(out))).run()
    partial = BenchResult.load(out)
    assert not partial.complete and partial.traces is not None and partial.traces[0].trace == "a.up"
    assert kept.read_text() == earlier
    assert f"the earlier result it replaced is kept in {kept}" in capsys.readouterr().out
    stop[0] = False  # the next run completes: its result replaces the partial one, the copy goes
    out.write_text(earlier)
    kept.unlink()
    harness.Bench(BenchOptions(json=str(out))).run()
    assert BenchResult.load(out).complete and not kept.exists()


def test_a_profile_subset_on_a_full_disk_is_named_and_leaves_no_empty_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--keep-runs full/keep` said only "No space left on device" and left a 0-byte subset."""
    import json
    from types import SimpleNamespace

    from splitpoint import files
    from splitpoint.bench.profiling import restricted_profiles

    for side in ("edge", "cloud"):
        (tmp_path / f"{side}-profile.json").write_text(json.dumps({"splits": [{"split": 0}, {"split": 3}]}))
    keep = tmp_path / "keep"
    keep.mkdir()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write or fsync raises it: no file name

    monkeypatch.setattr(files.os, "fsync", disk_full)
    bench = SimpleNamespace(runs_dir=keep)
    with pytest.raises(OSError) as exc:
        restricted_profiles(bench, tmp_path / "edge-profile.json", tmp_path / "cloud-profile.json", [0])  # type: ignore[arg-type]
    assert exc.value.filename == str(keep / "edge-profile-subset.json") and exc.value.errno == errno.ENOSPC
    assert list(keep.iterdir()) == []
