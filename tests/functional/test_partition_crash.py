"""A split whose building kills its process (the TFLite converter dies by a signal on some models,
not with an exception): `splitpoint partition` says which split and what happened, exits 1, and
leaves -o as it was - it once died by SIGSEGV itself (exit 139, its staging directory left
beside -o), or, with --jobs 2, ended in a BrokenProcessPool traceback naming no split.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import build_dying_at, cli_env, quiet_progress

keras = pytest.importorskip("keras")

from splitpoint.models import reference_model  # noqa: E402
from splitpoint.partition import PartitionOptions, partition  # noqa: E402
from splitpoint.split_workers import WorkerCrashError  # noqa: E402


def _old_bundle(parent: Path) -> Path:
    """What --force may replace (a manifest and a head), to see that a failed run leaves it alone."""
    old = parent / "bundle"
    (old / "edge").mkdir(parents=True)
    (old / "manifest.json").write_text('{"format": "splitpoint-bundle"}')
    (old / "edge" / "head_1.tflite").write_bytes(b"old head")
    return old


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_worker_killed_by_a_signal_is_named_with_its_split_and_leaves_o_alone(tmp_path: Path) -> None:
    """Deterministic, whatever TensorFlow does: the worker building split 7 really dies by SIGSEGV."""
    old = _old_bundle(tmp_path)
    before = _tree(old)
    opts = PartitionOptions(output=old, force=True, jobs=2, edgetpu_compiler=None)
    with pytest.raises(WorkerCrashError) as caught:
        partition(reference_model("digits-cnn"), opts, progress=quiet_progress,
                  build=functools.partial(build_dying_at, split=7, sig=signal.SIGSEGV))
    assert str(caught.value) == ("a worker process crashed (SIGSEGV) while building split 7 of digits-cnn; "
                                 "-v shows the stack it crashed in")
    assert caught.value.exit_code == 1
    assert _tree(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging directory left


def test_a_gru_model_that_crashes_the_converter_is_one_clear_line(tmp_path: Path) -> None:
    """The model from the report: Reshape -> GRU -> Dense with random weights, saved as .keras. Its
    while loop crashes TensorFlow 2.21's int8 calibration by SIGSEGV. Run as the user runs it, a real
    process: were the conversion back in the partitioner's process, it would die, not pytest."""
    layers = keras.layers
    inp = keras.Input((8, 8, 1))
    path = tmp_path / "model.keras"
    keras.Model(inp, layers.Dense(3)(layers.GRU(4)(layers.Reshape((8, 8))(inp)))).save(path)
    old = _old_bundle(tmp_path)
    before = _tree(old)
    proc = subprocess.run([sys.executable, "-m", "splitpoint", "partition", str(path), "-o", str(old), "--force",
                           "--calibration-random", "8"], capture_output=True, text=True, env=cli_env(),
                          cwd=tmp_path, timeout=600)
    assert proc.returncode >= 0, f"died by signal {-proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert _tree(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model.keras"]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    if proc.returncode == 0 or "crashed" not in proc.stderr:
        pytest.skip("this TensorFlow converts the GRU without crashing; the test above covers the crash path")
    assert proc.returncode == 1
    assert errors == [proc.stderr.strip().splitlines()[-1]], proc.stderr
    assert errors[0].startswith(f"splitpoint partition: error: the TFLite converter crashed (SIGSEGV) while "
                                f"building split 3 of {path}; the model runs a while loop"), errors[0]
    assert "unroll=True" in errors[0]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not hasattr(os, "fork"), reason="needs fork and /proc")
def test_a_native_crash_in_the_partitioners_own_process_is_one_line(tmp_path: Path) -> None:
    """A small model without control flow is built in the partitioner's own process, where a native
    crash of the converter ended `splitpoint partition` with no word (exit 139) and left its staging
    directory. The command now runs in a forked child, and its parent tells the death. The crash is
    made real: the child, caught building a split (its note, read while it is stopped), gets SIGSEGV."""
    inp = keras.Input((8, 8, 1))
    path = tmp_path / "model.keras"
    keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inp)))).save(path)
    old = _old_bundle(tmp_path)
    before = _tree(old)
    notes_root = tmp_path / "tmp"  # the guard keeps its notes under it (tempfile honours TMPDIR; the command's own
    # temp directory, splitpoint/scratch_dir.py, is made there first)
    notes_root.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "partition", str(path), "-o", str(old), "--force",
                             "--calibration-random", "8"], stderr=subprocess.PIPE, text=True,
                            env={**cli_env(), "TMPDIR": str(notes_root)}, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not any(n.read_text() for n in notes_root.glob("*/splitpoint-partition-*/building")):
            assert proc.poll() is None and time.monotonic() < deadline, "no split was ever noted as building"
            time.sleep(0.005)
        child = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        os.kill(child, signal.SIGSTOP)  # hold it where it is: the note read next is the one the parent reads
        split = next(notes_root.glob("*/splitpoint-partition-*/building")).read_text()
        os.kill(child, signal.SIGSEGV)
        os.kill(child, signal.SIGCONT)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    doing = f"building split {split} of" if split else "partitioning"
    assert re.fullmatch(rf"splitpoint partition: error: (the TFLite converter|the LiteRT interpreter|the partitioner) "
                        rf"crashed \(SIGSEGV\) while {doing} {re.escape(str(path))}; -v shows the stack it crashed in",
                        err.strip().splitlines()[-1]), err
    assert _tree(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model.keras", "tmp"]  # no staging directory
    assert list(notes_root.iterdir()) == []  # the notes, and the command's temp directory they were in
