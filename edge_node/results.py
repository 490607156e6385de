"""The results log: one JSON line per frame, flushed as it is written."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


class ResultLog:
    """Append-only JSON Lines. Thread-safe; `close()` is idempotent."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO | None = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=float)
        with self._lock:
            if self._fh is None:
                raise ValueError(f"results log {self.path} is closed")
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_results(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
