"""Frame sources: where the edge agent's frames come from.

`open_source(spec, preprocessing, bundle, fps)` (edge_node/source_spec.py) turns
the `--source` string into a `FrameSource`:

    DIR            every image / .npy file in DIR, sorted by name: regular files only (a
                   named pipe, socket, device or subdirectory so named is left out with a
                   warning: opening a pipe would block the agent beyond SIGTERM's reach)
    FILE.mp4       a video file (.mp4 .avi .mkv .mov .webm, or any other existing
                   file that is not an image), decoded with OpenCV
    camera:N       video device N (N >= 0), through OpenCV
    synthetic:N    N frames cycling through the bundle's validation inputs, with labels

(The directory and synthetic sources are in edge_node/file_sources.py, the OpenCV ones,
video and camera, in edge_node/video_sources.py.)

Every frame comes out as a `Frame` whose `raw` is uint8 (H, W, C) already
fitted to the bundle's preprocessing size and channels (`fit_frame`), and whose
`source_size` is the (width, height) of the image as the source read it, before
fitting: a detector's boxes are given in that image's pixels.

A source is a single-pass stream, like a camera: `iter(source)` returns the
source itself. Reading one frame can fail without ending the stream (a file that
is no image, or one declaring more pixels than Pillow allows: a decompression bomb): the
iterator then raises `FrameReadError` (carrying `index` and `origin`) for that
frame, and the *next* call to `next()` continues with the following frame. A
caller that records failures and carries on writes:

    with open_source(spec, pre) as source:
        frames = iter(source)  # the source itself: one stream
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except FrameReadError as exc:
                record_failure(exc.index, exc.origin, exc)
                continue
            handle(frame)

(A plain `for frame in source:` loop stops at the first FrameReadError; a new
`for` loop over the same source resumes after the failed frame.)

With `fps` set, frames are paced like a camera: frame i is released no earlier
than start + i / fps, where start is the moment the first frame is asked for.
Release times come from that fixed schedule, so pacing does not drift; a
consumer that falls behind gets the late frames at once (nothing is dropped).

A resumed agent (see `edge_node.agent`) calls, before the first frame:

    source.skip(done_ids)       frames whose index is in done_ids are passed over:
                                not returned, not paced (the schedule counts only the
                                frames handed out), counted in `source.skipped`
    source.number_from(first)   only where `restarts_numbering` is true (cameras: the
                                index restarts at 0 each time the device is opened):
                                frame indices (and origins) start at `first`
    source.origin_of(index)     the origin frame `index` will have, without reading it
                                (None where it cannot be known: a camera, past the end);
                                a resumed run checks the log's records against it

and the capture loop (edge_node/capture.py) tells every source when to give up a wait of its
own (`source.stop_when(check)`: a camera opened again after it stopped delivering, for up to
camera_reopen_s, must not hold the agent past SIGTERM or a fatal error).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from splitpoint.errors import ConfigError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")

ACCEPTED_FORMS = (
    "a source is a directory of image/.npy files, a video file "
    f"({' '.join(VIDEO_SUFFIXES)}), camera:N (N >= 0) or synthetic:N (1 <= N <= 10**9)"
)

#: what `_Source._read` returns: (raw fitted frame, label, origin, (width, height) before fitting)
_Read = tuple[np.ndarray, int | None, str, tuple[int, int]]



@dataclass(frozen=True)
class Frame:
    """One frame, ready for `preprocessing.apply`."""

    index: int  # 0-based position in the source
    raw: np.ndarray  # uint8 (H, W, C) at the bundle's preprocessing size and channels
    label: int | None  # true label when the source knows it (synthetic), else None
    origin: str  # file name, "clip.mp4#12", "camera:0#17", "synthetic#3"
    #: time.time_ns() when the frame was read/captured; for a paced source (fps), when it was due,
    #: so a frame that waits for a busy agent counts the wait in its end-to-end latency, as a camera would
    capture_time_ns: int
    #: (width, height) of the image as read (file, video frame, camera capture, validation input),
    #: before it was fitted to the bundle's input; None: the same as `raw`
    original_size: tuple[int, int] | None = None
    #: time.monotonic_ns() at the same moment: what the frame's age and latency are measured from.
    #: The wall clock steps when NTP sets it - a Pi has no battery-backed clock and sets its own
    #: after boot, once a link is up, often mid-run - and a latency taken across a step is off by
    #: it (hours). None (a frame made by hand): the wall clock is all there is.
    capture_mono_ns: int | None = None

    def age_ns(self) -> int:
        """Nanoseconds since the frame was captured (or due), by the monotonic clock."""
        if self.capture_mono_ns is None:
            return time.time_ns() - self.capture_time_ns
        return time.monotonic_ns() - self.capture_mono_ns

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) of the source image: detections are given in these pixels."""
        if self.original_size is not None:
            return self.original_size
        return int(self.raw.shape[1]), int(self.raw.shape[0])


@runtime_checkable
class FrameSource(Protocol):
    """An iterable of Frame with close(); also a context manager."""

    description: str

    @property
    def paced(self) -> bool:
        """Frames come at a camera's rate (a camera, or fps set): a frame waits for its time, not
        for the agent, and its latency counts from when it was due."""
        ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class FrameReadError(ConfigError):
    """One frame of a source could not be read; the iteration can continue with the next one."""

    def __init__(
        self, index: int, origin: str, reason: str, key: str = "source", value: Any = None
    ):
        self.index = index
        self.origin = origin
        super().__init__(
            key, origin if value is None else value, f"frame {index} ({origin}): {reason}"
        )


class _Source:
    """Common machinery: single-pass iteration, resumable after FrameReadError, pacing, close.

    Subclasses implement `_read(i)` -> (raw, label, origin), raising FrameReadError
    for an unreadable frame and StopIteration at the end.
    """

    #: live sources capture when the frame is due; file sources read first, then wait
    _pace_before_read = False
    #: true where the frame index restarts at 0 whenever the source is opened (a camera):
    #: frame i of one run is not frame i of the next, so a resumed run renumbers instead of skipping
    restarts_numbering = False

    def __init__(self, description: str, fps: float | None):
        self.description = description + (f" at {fps:g} fps" if fps else "")
        self._fps = fps
        self._start: float | None = None
        self._next_index = 0  # position in the stream (what `_read` gets)
        self._first = 0  # index of position 0 (number_from)
        self._released = 0  # frames handed out or failed: the pacing schedule
        self._skip: Collection[int] = frozenset()
        #: frames passed over because their index was in `skip(...)`
        self.skipped = 0
        self._done = False
        self._closed = False
        #: true once the agent stops: a source's own waits end then (stop_when)
        self._stopping: Callable[[], bool] = lambda: False

    @property
    def paced(self) -> bool:
        return self._fps is not None

    def skip(self, indices: Collection[int]) -> None:
        """Pass over the frames with these indices (already recorded by an earlier run). Kept,
        not copied: a resumed log's ids come as ranges (edge_node/bounded.py), a handful where
        a set of a day's frames took ~60 MB."""
        self._skip = indices

    def origin_of(self, index: int) -> str | None:
        """The origin frame `index` has, known without reading it; None where it is not."""
        return None

    def stop_when(self, check: Callable[[], bool]) -> None:
        """`check()` turns true when the reader stops (SIGTERM, a fatal error): a wait of the
        source's own (a camera being opened again) ends then."""
        self._stopping = check

    def number_from(self, first: int) -> None:
        """Number frames from `first` instead of 0 (before the first frame is read)."""
        if self._next_index:
            raise RuntimeError(f"{self.description}: number_from after frames were read")
        self._first = int(first)

    def __iter__(self) -> _Source:
        return self

    def __next__(self) -> Frame:
        if self._done or self._closed:
            raise StopIteration
        while self._first + self._next_index in self._skip:
            i = self._next_index
            self._next_index += 1
            try:
                self._discard(i)
            except StopIteration:
                self._done = True
                self._release()
                raise
            self.skipped += 1
        i = self._next_index
        if self._start is None:
            self._start = time.monotonic()
        slot = self._released
        if self._pace_before_read:
            self._pace(slot)
        self._next_index += 1  # before reading: a FrameReadError for i leaves the source at i + 1
        try:
            raw, label, origin, size = self._read(i)
        except StopIteration:
            self._done = True
            self._release()
            raise
        except FrameReadError:
            self._released += 1
            raise
        self._released += 1
        if not self._pace_before_read:
            self._pace(slot)
        wall, mono = self._captured(slot)
        return Frame(index=self._first + i, raw=raw, label=label, origin=origin, capture_time_ns=wall,
                     original_size=size, capture_mono_ns=mono)

    def _captured(self, slot: int) -> tuple[int, int]:
        """(wall, monotonic) ns of the frame's capture: now, or when a paced frame was due. The due
        time is kept on the monotonic clock and the wall stamp taken back from now, so that a
        step of the wall clock (NTP) mid-run moves no frame's latency."""
        wall, mono = time.time_ns(), time.monotonic_ns()
        if self._fps is None or self._start is None:
            return wall, mono
        due = min(mono, int((self._start + slot / self._fps) * 1e9))
        return wall - (mono - due), due

    def _restart_pacing(self) -> None:
        """Pace from now on: after a gap in the stream (a camera opened again), the next frame is
        due now. The old schedule would stamp every later frame with a due time the gap left
        behind, and every later latency would count the gap."""
        if self._fps is not None:
            self._start = time.monotonic() - self._released / self._fps

    #: a paced wait looks at `_stopping` this often: a frame due in 100 s (--fps 0.01) held
    #: SIGTERM for those 100 s
    STOP_POLL_S = 0.1

    def _pace(self, slot: int) -> None:
        """Wait until frame `slot` is due; StopIteration (the stream ends) once the reader stops."""
        if self._fps is None or self._start is None:
            return
        due = self._start + slot / self._fps
        while (wait := due - time.monotonic()) > 0:
            if self._stopping():
                self._done = True
                raise StopIteration
            time.sleep(min(wait, self.STOP_POLL_S))

    def _read(self, i: int) -> _Read:
        """(raw fitted frame, label, origin, (width, height) before fitting) of position i."""
        raise NotImplementedError

    def _discard(self, i: int) -> None:
        """Advance past position i without handing it out; StopIteration at the end."""
        try:
            self._read(i)
        except FrameReadError:
            pass

    def _release(self) -> None:
        """Free backend handles; may be called more than once."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()
        log.debug("closed %s", self.description)

    def __enter__(self) -> _Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"
