"""Frames in: the capture loops (survey, live) and resume. Each frame read is admitted to
the ledger and handed to the agent's `process`; a frame that cannot be read gets a failure
record, a live frame the agent fell behind on a drop record.

Survey reads the source only when a window slot is free, so every frame is processed
and none is dropped. Live runs a reader thread that keeps reading the source into a
buffer of `live_buffer` frames; when it is full the oldest waiting frame is dropped and
recorded as such (status "dropped").

Resume: the results log is durable and holds one record per frame id (= the source's
frame index); on start the frames it already records are skipped, so an agent killed
and restarted continues where it stopped. Frames that were read but not finished have
no record and run again. A camera numbers its frames from 0 each time it opens: there
the new frames are numbered after the largest recorded id instead (after the newest rotated
log's, when a results_rotate_h rotation left the log without a record yet). A log whose records
name other frames than the source has at those ids (another source's log, or a directory
whose files changed) is refused rather than skipped by id.

Locks: none of its own (the ledger's and the live buffer's are leaves).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from splitpoint.errors import ConfigError

from .bounded import IdRanges, RecordedOrigins
from .config import EdgeConfig
from .ledger import FrameLedger
from .recorder import Recorder
from .results_records import ReadingStopped
from .run_report import LiveBuffer
from .sources import Frame, FrameReadError, FrameSource

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name

#: how often a thread waiting for a window slot looks at stop, grace and fatal errors
SLOT_POLL_S = 0.05


class Capture:
    def __init__(self, config: EdgeConfig, ledger: FrameLedger, recorder: Recorder, process: Callable[[Frame], None],
                 stop: threading.Event, grace_over: Callable[[], bool], grace_left: Callable[[], float]):
        self.config = config
        self.ledger = ledger
        self.recorder = recorder
        self.process = process
        self.stop = stop
        self.grace_over = grace_over
        self.grace_left = grace_left
        self.filtered = 0  # frames passed over here for sources without skip()
        self._skip_ids = IdRanges()
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None

    def resume(self, source: FrameSource, done: RecordedOrigins) -> None:
        """Skip what the log already records (`done`: frame id -> the origin its record names),
        or, for a camera, number after it. ConfigError when the records name other frames than
        the source has at those ids: skipping by id would leave the source's frames unrun."""
        renumbers = getattr(source, "restarts_numbering", False)
        if not done:
            if renumbers and self.config.resume:
                self._number_after_rotated(source)
            return
        self._check_origins(source, done)
        if renumbers:  # a camera's new frames are numbered after the log's: nothing is skipped, any model's
            first = (done.ids.last or 0) + 1
            self._number_from(source, first)
            log.info("resuming %s (%d records): %s numbers its frames from %d", self.config.results, len(done),
                     source.description, first)
            return
        self._check_model(done)
        skip = getattr(source, "skip", None)
        if skip is not None:
            skip(done.ids)
        else:
            self._skip_ids = done.ids
        log.info("resuming %s: %d frames already have a record and are skipped", self.config.results, len(done))

    def _number_after_rotated(self, source: FrameSource) -> None:
        """A camera's log with no record yet may have been started by a rotation just before the
        restart: number after the newest rotated log, or the ids would repeat from 0."""
        try:
            found = self.recorder.last_rotated_id(self.stop.is_set)
        except ReadingStopped:  # told to stop while reading: no frame is read (the loops see stop)
            return
        if found is None:
            return
        rotated, last = found
        self._number_from(source, last + 1)
        log.info("resuming after the rotated log %s: %s numbers its frames from %d (%s has no record yet)",
                 rotated, source.description, last + 1, self.config.results)

    @staticmethod
    def _number_from(source: FrameSource, first: int) -> None:
        number_from = getattr(source, "number_from", None)
        if number_from is None:
            raise ConfigError("resume", True, f"{source.description} restarts its frame numbers and cannot renumber; "
                                              "use --no-resume or another results file")
        number_from(first)

    def _check_model(self, done: RecordedOrigins) -> None:
        """ConfigError when records of the log name another model than this agent's: frames it
        recorded would be skipped, never run by this one (a directory or synthetic frames resumed
        with another bundle). Records without a model (logs before 2026-12-07) are not checked."""
        ours = self.recorder.model
        others = {m: seen for m, seen in done.models.items() if m != ours}
        if ours is None or not others:
            return
        other, (count, first) = min(others.items(), key=lambda item: item[1][1])
        raise ConfigError("resume", True, (
            f"{self.config.results} records frame {first} as run by model {other} ({count} of {len(done)} records), "
            f"but this agent runs {ours}: its frames would be skipped, not run by this model; give --results "
            "another file, or --no-resume to move this log aside and start over"))

    def _check_origins(self, source: FrameSource, done: RecordedOrigins) -> None:
        """ConfigError when a record's origin is not what the source has at that frame id: a log
        of another source (a directory's, given a video), or a directory whose files changed so
        that names moved to other positions. Ids the source cannot name (a camera, past the
        end of a directory) are not checked."""
        origin_of = getattr(source, "origin_of", None)
        if origin_of is None:
            return
        first: tuple[int, str, str] | None = None  # the lowest id whose origin differs
        differ = 0
        for fid, recorded in done.items():
            if recorded is not None and (expected := origin_of(fid)) is not None and expected != recorded:
                differ += 1
                if first is None or fid < first[0]:
                    first = (fid, recorded, expected)
        if first is None:
            return
        fid, recorded, expected = first
        raise ConfigError("resume", True, (
            f"{self.config.results} records frame {fid} as {recorded!r}, but {source.description} has "
            f"{expected!r} there ({differ} of {len(done)} records name other frames): the log is of "
            "another source, or the files changed since; give --results another file, or --no-resume to "
            "move this log aside and start over"))

    def _next_frame(self, it: Iterator[Frame]) -> Frame:
        """next(it), passing over frames already recorded (sources without skip())."""
        while True:
            try:
                frame = next(it)
            except FrameReadError as err:
                if err.index in self._skip_ids:
                    self.filtered += 1
                    continue
                raise
            if frame.index not in self._skip_ids:
                return frame
            self.filtered += 1

    def acquire_slot(self, give_up: Callable[[], bool]) -> bool:
        """A window slot, or False once `give_up()` or a fatal error says to stop waiting.

        Never an unbounded wait: a slot held by a frame the link never answers must not keep
        the agent from seeing SIGTERM or a fatal error."""
        while not self.ledger.acquire(timeout=SLOT_POLL_S):
            if self.recorder.fatal is not None or give_up():
                return False
        if self.recorder.fatal is not None:
            self.ledger.release_unused()
            return False
        return True

    def check(self, source: FrameSource) -> None:
        """ConfigError when the config cannot work with `source` (before the run starts): a rotated
        results log (results_rotate_h) holds a camera's records, whose numbers a resumed run takes
        after the newest log's; a directory's, video's or synthetic run resumes by skipping what its
        one log records, and frames recorded in a rotated log would run again."""
        if self.config.results_rotate_h and not getattr(source, "restarts_numbering", False):
            raise ConfigError("results_rotate_h", self.config.results_rotate_h,
                              f"rotates the results log of a camera's run only; {source.description} resumes "
                              "from one log (frames recorded in a rotated one would run again): set it to 0")

    def _watch_stop(self, source: FrameSource) -> None:
        """Waits of the source's own (a camera opened again) end when the agent stops."""
        stop_when = getattr(source, "stop_when", None)
        if stop_when is not None:
            stop_when(self.stop.is_set)

    def survey(self, source: FrameSource) -> None:
        self._watch_stop(source)
        it = iter(source)
        count = 0
        while not self.stop.is_set():
            if self.config.max_frames is not None and count >= self.config.max_frames:
                break
            # Take a slot first, then read: a camera frame is captured when it can be worked on.
            if not self.acquire_slot(self.stop.is_set):
                break
            try:
                frame = self._next_frame(it)
            except StopIteration:
                self.ledger.release_unused()
                break
            except FrameReadError as err:
                count += 1
                self.ledger.release_unused()
                self.recorder.failed(err.index, err.origin, None, f"frame could not be read: {err}")
                continue
            count += 1
            self.recorder.rotate_if_due()
            self.ledger.admit(frame.index)
            self.process(frame)

    def live(self, source: FrameSource) -> None:
        """A reader thread keeps up with the source; this loop processes the newest frames it can."""
        self._watch_stop(source)
        buffer = LiveBuffer(self.config.live_buffer)
        self._reader = threading.Thread(target=self._read_live, args=(iter(source), buffer), name="live-reader",
                                        daemon=True)
        self._reader.start()
        while True:
            # after stop() the buffered frames are still processed, within the grace period
            if not self.acquire_slot(self.grace_over):
                buffer.close()
                break
            frame = buffer.get(self.grace_over)  # after stop() or the end: what is still buffered, then None
            if frame is None:
                self.ledger.release_unused()
                break
            self.recorder.rotate_if_due()
            self.ledger.admit(frame.index)
            self.process(frame)
        left = self.grace_left()  # inf until stop() is called
        self._reader.join(None if left == float("inf") else max(0.0, left))
        if self._reader_error is not None:
            raise self._reader_error

    def _read_live(self, it: Iterator[Frame], buffer: LiveBuffer) -> None:
        count = 0
        try:
            while not self.stop.is_set():
                if self.config.max_frames is not None and count >= self.config.max_frames:
                    break
                try:
                    frame = self._next_frame(it)
                except StopIteration:
                    break
                except FrameReadError as err:
                    count += 1
                    self.recorder.failed(err.index, err.origin, None, f"frame could not be read: {err}")
                    continue
                count += 1
                evicted = buffer.put(frame)
                if evicted is not None:
                    self.recorder.dropped(evicted)
        except BaseException as exc:  # re-raised by run(); the buffered frames are still processed
            self._reader_error = exc
        finally:
            buffer.close()

    def close(self) -> None:
        """run() was interrupted: let the reader finish the read it is in (within grace after stop())."""
        reader = self._reader
        if reader is None or not reader.is_alive() or reader is threading.current_thread():
            return
        reader.join(max(0.1, min(5.0, self.grace_left())))
        if reader.is_alive():
            log.warning("the live reader is still reading from the source; closing anyway")

