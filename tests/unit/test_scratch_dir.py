"""The command's own temp directory (splitpoint/scratch_dir.py): made under the temp directory,
handed back to the system's for a long run's later files, removed whatever it holds."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from splitpoint import scratch_dir

pytestmark = pytest.mark.edge_side


def test_own_then_back_then_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    scratch_dir.stop_using()  # never used: a program calling main() keeps its own setting
    assert tempfile.tempdir == str(tmp_path)
    own = scratch_dir.use_own()
    assert own is not None and Path(own).parent == tmp_path and tempfile.gettempdir() == own
    with tempfile.NamedTemporaryFile(delete=False) as f:  # as TensorFlow's autograph writes its code
        assert Path(f.name).parent == Path(own)
    scratch_dir.stop_using()  # a server serving, an agent running: new files where they went before
    assert tempfile.gettempdir() == str(tmp_path)
    scratch_dir.remove(own)
    assert os.listdir(tmp_path) == []


def test_no_own_directory_when_none_can_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert scratch_dir.use_own() is None
    assert tempfile.tempdir == str(tmp_path / "missing")
    scratch_dir.remove(None)


def hold_own_directory(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A real process that made its own temp directory under tmp_path and lives on."""
    code = ("import sys, tempfile; tempfile.tempdir = sys.argv[1]; from splitpoint import scratch_dir; "
            "print(scratch_dir.use_own(), flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    path = Path(proc.stdout.readline().strip())  # printed once its directory is made and locked
    assert path.parent == tmp_path and (path / scratch_dir.OWNER_FILE).exists(), path
    return proc, path


def test_a_killed_processs_directory_is_removed_by_the_next_command(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """os._exit and SIGKILL leave the directory; a server restarted in a loop where /tmp stays
    (a container's restart policy) left one per crash. The next command removes those whose
    process is gone, and keeps a living one's and an older splitpoint's (no owner file)."""
    killed, killed_dir = hold_own_directory(tmp_path)
    (killed_dir / "__autograph_generated_file1.py").write_text("x = 1\n")
    killed.kill()
    killed.wait(10)
    living, living_dir = hold_own_directory(tmp_path)
    older = tmp_path / "splitpoint-123-abc_9"
    older.mkdir()
    elsewhere = tmp_path / "not-ours-1-abc"
    (elsewhere / "sub").mkdir(parents=True)
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        own = scratch_dir.use_own()
        assert own is not None
        assert not killed_dir.exists()
        assert living_dir.exists() and older.exists() and elsewhere.exists()
        scratch_dir.stop_using()
        scratch_dir.remove(own)
    finally:
        living.stdin.close()  # type: ignore[union-attr]
        living.wait(10)
    assert living_dir.exists()  # it ended without removing it (as a killed one): the next start will
    assert scratch_dir.sweep(str(tmp_path), keep="") == 1 and not living_dir.exists()
