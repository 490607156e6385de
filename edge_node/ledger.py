"""The frame ledger: every frame the agent takes on is finished exactly once.

    acquire() -> admit(fid) -> [hold(fid, item) ... claim(fid) -> item] -> finish(fid, write)

A window slot is acquired before a frame is read, tied to the frame by `admit`,
and given back by `finish`, which also runs the frame's one `write` (its record,
summary, metrics). Whichever path ends a frame - a cloud answer, an error
answer, a malformed answer, a stream end, the deadline watchdog, a local run, a
read failure - calls `finish`; only the first call writes and releases, later
ones return False. A frame waiting for the cloud is `hold`-ed with what a local
re-run needs; `claim` hands it to exactly one of the paths racing for it (the
answer thread, the watchdog, the stream-end handler).

Lock order: `FrameLedger._lock` is a leaf. No callback (`write`, a predicate)
runs while it is held, so `write` may take the recorder's lock and the results
log's lock (recorder lock -> results lock) without any order against this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class FrameLedger:
    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.window = window
        self._free = window  # slots neither admitted nor acquired
        self._acquired = 0  # acquired, not yet admitted (the loop is reading a frame)
        self._admitted: set[int] = set()  # frames holding a slot until finish
        self._ending: set[int] = set()  # frames whose finish is writing now
        self._inflight: dict[int, Any] = {}  # admitted frames waiting for the cloud
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    # ------------------------------------------------------------------ slots

    def narrow(self, window: int) -> None:
        """Lower the window before the first slot is taken (the agent learns at run() whether its
        source is paced, which decides how many frames may be in flight)."""
        with self._changed:
            if self._free != self.window:
                raise RuntimeError("narrow after a slot was taken")
            if not 1 <= window <= self.window:
                raise ValueError(f"window must be from 1 to {self.window}, not {window}")
            self.window = self._free = window

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a window slot (before reading a frame); False if none freed within `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._free > 0, timeout):
                return False
            self._free -= 1
            self._acquired += 1
            return True

    def release_unused(self) -> None:
        """Give back a slot that got no frame (the source ended, or the read failed)."""
        with self._changed:
            if self._acquired < 1:
                raise RuntimeError("release_unused without an acquired slot")
            self._acquired -= 1
            self._free += 1
            self._changed.notify_all()

    def admit(self, frame_id: int) -> None:
        """Tie the acquired slot to `frame_id`: from now on the frame must be finished."""
        with self._lock:
            if self._acquired < 1:
                raise RuntimeError(f"admit({frame_id}) without an acquired slot")
            if frame_id in self._admitted:
                raise RuntimeError(f"frame {frame_id} admitted twice")
            self._acquired -= 1
            self._admitted.add(frame_id)

    # ------------------------------------------------------------------ in flight

    def hold(self, frame_id: int, item: Any) -> None:
        """`frame_id` waits for the cloud; `item` is what a local re-run needs."""
        with self._lock:
            if frame_id not in self._admitted or frame_id in self._ending:
                raise RuntimeError(f"hold({frame_id}) of a frame not admitted or already ending")
            self._inflight[frame_id] = item

    def claim(self, frame_id: int) -> Any | None:
        """The held item, to exactly one caller; None to every other (or if never held)."""
        with self._lock:
            return self._inflight.pop(frame_id, None)

    def claim_where(self, predicate: Callable[[Any], bool]) -> list[tuple[int, Any]]:
        """Claim every held item for which `predicate` is true (it runs outside the lock)."""
        with self._lock:
            snapshot = list(self._inflight.items())
        claimed = []
        for fid, item in snapshot:
            if predicate(item):
                got = self.claim(fid)
                if got is not None:
                    claimed.append((fid, got))
        return claimed

    def held(self) -> list[tuple[int, Any]]:
        with self._lock:
            return list(self._inflight.items())

    # ------------------------------------------------------------------ the end of a frame

    def finish(self, frame_id: int, write: Callable[[], Any] | None = None) -> bool:
        """End `frame_id` once: run `write`, then free its slot. False if it already ended
        (or is ending now on another thread) or was never admitted: nothing is written."""
        with self._lock:
            if frame_id not in self._admitted or frame_id in self._ending:
                return False
            self._ending.add(frame_id)
            self._inflight.pop(frame_id, None)  # nobody may claim a frame that is ending
        try:
            if write is not None:
                write()
        finally:  # the slot comes back even when the write fails (a fatal results error)
            with self._changed:
                self._ending.discard(frame_id)
                self._admitted.discard(frame_id)
                self._free += 1
                self._changed.notify_all()
        return True

    @property
    def open_frames(self) -> int:
        """Frames admitted and not finished."""
        with self._lock:
            return len(self._admitted)

    def wait_idle(self, give_up: Callable[[], bool], poll_s: float = 0.05) -> bool:
        """Wait until every admitted frame is finished; False when `give_up()` says to stop first.

        Polls `give_up` every `poll_s` (it may read flags a signal handler sets)."""
        while True:
            with self._changed:
                if not self._admitted:
                    return True
                self._changed.wait(poll_s)
                if not self._admitted:
                    return True
            if give_up():
                return False

    def _invariant(self) -> None:
        """For tests: slots are conserved."""
        with self._lock:
            assert self._free + self._acquired + len(self._admitted) == self.window, (
                self._free, self._acquired, self._admitted)
            assert set(self._inflight) <= self._admitted
            assert self._ending <= self._admitted
