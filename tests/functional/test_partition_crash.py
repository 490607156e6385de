"""A split whose building kills its process (the TFLite converter dies by a signal on some models,
not with an exception): `splitpoint partition` says which split and what happened, exits 1, and
leaves -o as it was - it once died by SIGSEGV itself (exit 139, its staging directory left
beside -o), or, with --jobs 2, ended in a BrokenProcessPool traceback naming no split.
"""

from __future__ import annotations

import functools
import hashlib
import signal
import subprocess
import sys
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
