"""The command's own temp directory (splitpoint/scratch_dir.py): made under the temp directory,
handed back to the system's for a long run's later files, removed whatever it holds."""

from __future__ import annotations

import os
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
