"""Reading frames from image files into the raw uint8 (H, W, C) a bundle expects.

Shared by the edge agent's directory source and the partitioner's --calibration DIR.

Only regular files are frames: a named pipe, socket or device in the directory (whatever
its name) is left out with one warning, as is a subdirectory - opening a named pipe would
wait for a writer forever, and a device may never end. A file is opened through
`open_regular` all the same, so one swapped for a pipe after the listing is that frame's
error, not a hang. An image whose header declares more pixels than Pillow allows (a
decompression bomb) is that frame's error too, like any other unreadable image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from splitpoint.bundle import Preprocessing
from splitpoint.errors import BackendUnavailableError, ConfigError
from splitpoint.extras import install_hint
from splitpoint.files import file_kind, open_regular

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
ARRAY_SUFFIXES = (".npy",)


def list_frame_files(directory: Path, key: str = "source") -> list[Path]:
    """Image and .npy files in `directory`, sorted by name; a clear error when there are none.

    Entries with a frame's suffix that are not regular files (after symlinks) are left out,
    with one warning naming them."""
    if not directory.is_dir():
        raise ConfigError(key, str(directory), "not a directory")
    named = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES)
    files: list[Path] = []
    others: list[Path] = []
    for p in named:
        (files if p.is_file() else others).append(p)  # stat only: a named pipe is not opened here
    if others:
        log.warning("%s: %s left out, not regular files: %s", directory, _entries(len(others)),
                    ", ".join(f"{p.name} ({_kind(p)})" for p in others[:5]) + (", ..." if len(others) > 5 else ""))
    if not files:
        raise ConfigError(key, str(directory), f"no image files ({', '.join(IMAGE_SUFFIXES)}) or .npy arrays in it"
                          + (f"; {_entries(len(others))} named like one "
                             f"{'is not a regular file' if len(others) == 1 else 'are not regular files'}"
                             if others else ""))
    return files


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _kind(path: Path) -> str:
    try:
        return file_kind(path.stat().st_mode)
    except OSError:  # a broken symlink
        return "a broken symlink"


def fit_frame(frame: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Any uint8 frame (H, W), (H, W, 1|3|4) -> (pre.height, pre.width, pre.channels) uint8."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ConfigError("frame", str(frame.dtype), "frames must be uint8 images (0..255)")
    if frame.ndim == 3 and frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[-1] != 3):
        raise ConfigError("frame", list(frame.shape), "expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    want_gray = pre.channels == 1
    if frame.shape[:2] != (pre.height, pre.width) or (frame.ndim == 3) == want_gray:
        frame = _resize_convert(frame, pre)
    if frame.ndim == 2:
        frame = frame[..., None]
    return np.ascontiguousarray(frame)


def _resize_convert(frame: np.ndarray, pre: Preprocessing) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise BackendUnavailableError(
            f"resizing frames needs Pillow: {install_hint('edge', 'pillow')}"
        ) from None
    img = Image.fromarray(frame)
    img = img.convert("L" if pre.channels == 1 else "RGB")
    if img.size != (pre.width, pre.height):
        img = img.resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def read_frame_file_sized(path: Path, pre: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """One image or .npy file -> (raw uint8 frame of the bundle's size, (width, height) of the file's
    image before it was fitted): a detector's boxes are mapped back to the latter."""
    if path.suffix.lower() == ".npy":
        try:
            with os.fdopen(open_regular(path, "source"), "rb") as fh:
                arr = np.load(fh, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError("source", str(path), f"unreadable .npy file ({exc})") from None
        return fit_frame(arr, pre), image_size(arr)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise BackendUnavailableError(f"reading image files needs Pillow: {install_hint('edge', 'pillow')}") from None
    try:
        with os.fdopen(open_regular(path, "source"), "rb") as fh, Image.open(fh) as opened:
            img = opened.convert("L" if pre.channels == 1 else "RGB")
            return fit_frame(np.asarray(img, dtype=np.uint8), pre), (int(img.width), int(img.height))
    except Image.DecompressionBombError as exc:  # not an OSError: it would end the run, not the frame
        raise ConfigError("source", str(path), f"not a readable image: too large ({exc})") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError("source", str(path), f"not a readable image ({exc})") from None


def image_size(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of an (H, W) or (H, W, C) array; (0, 0) for anything else (fit_frame refuses it)."""
    shape = np.shape(frame)
    return (int(shape[1]), int(shape[0])) if len(shape) in (2, 3) else (0, 0)
