"""`splitpoint bench`'s outputs fail one at a time: a JSON that cannot be written is named, and
neither the stage being measured nor the markdown is lost to it."""

from __future__ import annotations

import errno
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
