"""The OpenCV frame sources: a video file and a live camera (see edge_node/sources.py for
the source protocol, and edge_node/source_spec.py: `open_source`, which picks these for FILE.mp4 and camera:N)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from splitpoint import native_logs
from splitpoint.bundle import Preprocessing
from splitpoint.errors import BackendUnavailableError, ConfigError
from splitpoint.images import fit_frame, image_size

from .sources import ACCEPTED_FORMS, FrameReadError, _Read, _Source

log = logging.getLogger("edge_node.sources")  # the sources' logger: users filter on one name

#: a camera that stopped delivering is opened again this often (seconds) ...
REOPEN_EVERY_S = 1.0
#: ... and its wait looks at the reader's stop this often (SIGTERM must not wait for the next try)
STOP_POLL_S = 0.05

_OPENCV_HINT = ("pip install '.[video]' from a splitpoint checkout, or the splitpoint wheel with [video]"
                " (package opencv-python-headless)")


def _import_cv2(what: str) -> Any:
    # OpenCV reads OPENCV_LOG_LEVEL when it first logs: set it now, or a missing camera prints
    # videoio's own WARN lines ahead of our clear error (splitpoint -v keeps them).
    native_logs.quiet_environment()
    try:
        import cv2
    except ImportError:
        raise BackendUnavailableError(f"{what} needs OpenCV: {_OPENCV_HINT}") from None
    return cv2


def _bgr_to_raw(cv2: Any, img: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or gray) -> uint8 (H, W, C) fitted to `pre`; the capture's own
    size is `image_size(img)`."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if pre.channels == 1 else cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[-1] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY if pre.channels == 1 else cv2.COLOR_BGR2RGB)
    return fit_frame(img, pre)


class _OpenCVSource(_Source):
    def __init__(
        self, cv2: Any, cap: Any, description: str, pre: Preprocessing, fps: float | None, key: str
    ):
        self._cv2 = cv2
        self._cap = cap
        self._pre = pre
        self._key = key
        super().__init__(description, fps)

    def _grab(self, i: int, origin: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        """(fitted frame, (width, height) as captured), or None at the end of the stream."""
        ok, img = self._cap.read()
        if not ok or img is None:
            return None
        try:
            return _bgr_to_raw(self._cv2, img, self._pre), image_size(img)
        except ConfigError as exc:
            raise FrameReadError(i, origin, str(exc), self._key) from None

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class VideoSource(_OpenCVSource):
    """A video file decoded with OpenCV until its end."""

    def __init__(self, path: Path, pre: Preprocessing, fps: float | None, key: str):
        cv2 = _import_cv2(f"reading the video file {path}")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise ConfigError(key, str(path), f"OpenCV cannot open it as a video; {ACCEPTED_FORMS}")
        self.path = path
        self._reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        super().__init__(cv2, cap, f"video {path}", pre, fps, key)

    def origin_of(self, index: int) -> str | None:
        return f"{self.path.name}#{index}" if index >= 0 else None

    def _read(self, i: int) -> _Read:
        origin = f"{self.path.name}#{i}"
        grabbed = self._grab(i, origin) if self._cap is not None else None
        if grabbed is None:
            if self._reported > 0 and i < self._reported:
                log.warning(
                    "video %s ended after %d frames; its container announces %d",
                    self.path,
                    i,
                    self._reported,
                )
            else:
                log.debug("video %s: %d frames", self.path, i)
            raise StopIteration
        return grabbed[0], None, origin, grabbed[1]

    def _discard(self, i: int) -> None:
        if self._cap is None or not self._cap.grab():  # no decode: cheaper than a read
            raise StopIteration


def why_camera_did_not_open(number: int) -> str:
    """The likely reason camera:N did not open, from /dev/videoN as this user sees it (Linux)."""
    dev = Path(f"/dev/video{number}")
    if not Path("/dev").is_dir():  # not Linux: OpenCV numbers cameras its own way
        return "no such camera, busy, or no permission to open it"
    if not dev.exists():
        return f"there is no {dev}: is the camera plugged in? (`v4l2-ctl --list-devices` lists the cameras)"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"this user may not open {dev}: add it to the video group (sudo usermod -aG video USER)"
    return f"{dev} may be held by another program (a running agent?) or not be a capture device"


class CameraSource(_OpenCVSource):
    """A live camera. A capture that fails gives its frame a FrameReadError, and the camera is
    opened again - a USB camera that reset or was plugged back, a V4L2 `select() timeout` - every
    REOPEN_EVERY_S for up to `reopen_s` (camera_reopen_s) since it last delivered; the stream goes
    on with the next frame. Not back by then (or reopen_s = 0), the stream ends. Asking a camera
    that stopped delivering for more frames does not bring it back; opening it again does. An
    agent that ended the run instead lost its frames for a restart: systemd's 2 s, then loading
    the heads, connecting and probing again."""

    _pace_before_read = True
    restarts_numbering = True

    @property
    def paced(self) -> bool:
        return True  # frames come at the camera's rate, whether or not fps is set

    def __init__(self, number: int, pre: Preprocessing, fps: float | None, spec: str, key: str,
                 reopen_s: float = 0.0):
        cv2 = _import_cv2(f"camera:{number}")
        cap = cv2.VideoCapture(number)
        if not cap.isOpened():
            cap.release()
            raise ConfigError(key, spec, f"camera {number} did not open: {why_camera_did_not_open(number)}")
        self.number = number
        self.reopen_s = reopen_s
        self._lost: float | None = None  # when it stopped delivering (monotonic); None: it delivers
        super().__init__(cv2, cap, f"camera:{number}", pre, fps, key)

    def _read(self, i: int) -> _Read:
        n = self._first + i  # the frame's index (number_from)
        origin = f"camera:{self.number}#{n}"
        if self._lost is not None:  # away since an earlier frame: this one is its first back
            grabbed = self._reopened(n, origin)
            if grabbed is None:
                raise StopIteration
            return grabbed[0], None, origin, grabbed[1]
        grabbed = self._grab(n, origin) if self._cap is not None else None
        if grabbed is None:
            self._release()  # a capture that failed may hold the device: let it go before opening it again
            self._lost = time.monotonic()
            log.warning("camera %d stopped delivering frames at frame %d%s", self.number, n,
                        f"; opening it again for up to {self.reopen_s:g} s (camera_reopen_s)" if self.reopen_s > 0
                        else "")
            if self.reopen_s <= 0:
                self._done = True
            raise FrameReadError(
                n,
                origin,
                f"camera {self.number} stopped delivering frames; "
                + ("opening it again" if self.reopen_s > 0 else "the stream ends here"),
                self._key,
            )
        return grabbed[0], None, origin, grabbed[1]

    def _reopened(self, n: int, origin: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        """Frame n from the camera opened again: tried every REOPEN_EVERY_S until it delivers, or
        None once `reopen_s` has passed since it stopped or the reader stops. One that opens and
        fails again (half there) is let go and tried at the next attempt: its outage has one
        failed frame, not one per attempt."""
        assert self._lost is not None
        while not (self._closed or self._stopping()):
            cap = self._cv2.VideoCapture(self.number)
            if cap.isOpened():
                self._cap = cap
                self._restart_pacing()  # frame n is due now, not when the gap began
                try:
                    grabbed = self._grab(n, origin)
                except FrameReadError:  # delivered, but not an image: the camera is back
                    self._lost = None
                    raise
                if grabbed is not None:
                    log.info("camera %d delivers frames again after %.1f s (from frame %d)", self.number,
                             time.monotonic() - self._lost, n)
                    self._lost = None
                    return grabbed
                self._release()
            else:
                cap.release()
            left = self._lost + self.reopen_s - time.monotonic()
            if left <= 0:
                log.warning("camera %d did not deliver again within camera_reopen_s = %g s; the stream ends here",
                            self.number, self.reopen_s)
                return None
            until = time.monotonic() + min(REOPEN_EVERY_S, left)
            while not (self._closed or self._stopping()) and (wait := until - time.monotonic()) > 0:
                time.sleep(min(wait, STOP_POLL_S))
        return None
