"""The results log's own guarantees: valid JSON whatever the values, a failed write is fatal and clear."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path
from typing import Any

import pytest

from edge_node.results import open_results, read_results
from splitpoint.errors import ResultsWriteError


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_non_finite_values_are_written_as_null(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    log = open_results(path, fmt)
    assert log.write({"frame_id": 0, "score": math.inf, "timings_ms": {"head": math.nan, "local": 1.5},
                      "xs": [1.0, -math.inf]})
    log.close()
    if fmt == "jsonl":
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} written"))
    assert read_results(path) == [{"frame_id": 0, "score": None, "timings_ms": {"head": None, "local": 1.5},
                                   "xs": [1.0, None]}]


class _FailingFile:
    """Takes `room` bytes, then refuses with ENOSPC, like a file on a disk that just filled."""

    def __init__(self, real: Any, room: int):
        self.real, self.room = real, room

    def write(self, data: Any) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real.write(bytes(data)[: self.room])
        self.room -= n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_write_cut_short_leaves_the_log_intact_and_every_later_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    log = open_results(path, "jsonl")
    assert log.write({"frame_id": 0, "status": "ok"})
    log._fh = _FailingFile(log._fh, room=10)  # the next record fits only in part
    with pytest.raises(ResultsWriteError) as info:
        log.write({"frame_id": 1, "status": "ok", "pad": "x" * 100})
    assert str(path) in str(info.value) and "ENOSPC" in str(info.value)
    with pytest.raises(ResultsWriteError):  # the same error, without touching the file again
        log.write({"frame_id": 2, "status": "ok"})
    log._fh = log._fh.real
    log.close()
    assert path.read_text().count("\n") == 1  # the partial line was cut off
    assert read_results(path) == [{"frame_id": 0, "status": "ok"}]
