"""Reading frames from image files into the raw uint8 (H, W, C) a bundle expects.

Shared by the edge agent's directory source and the partitioner's --calibration DIR.

Only regular files are frames: a named pipe, socket or device in the directory (whatever
its name) is left out with one warning, as is a subdirectory - opening a named pipe would
wait for a writer forever, and a device may never end. A file is opened through
`open_regular` all the same, so one swapped for a pipe after the listing is that frame's
error, not a hang. An image whose header declares more pixels than Pillow allows (a
decompression bomb) is that frame's error too, like any other unreadable image; so is a .npy
whose header declares more, checked before its data is read.

Frames are 8-bit. A 16-bit image or uint16 array is scaled to 8 bits (value / 257, rounded);
one whose range of values cannot be known (floating point, 32-bit integers) is refused rather
than clipped: clipping made every 16-bit frame white and a 0..1 float frame black, each then
classified as if it were a real frame.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from splitpoint.bundle import Preprocessing
from splitpoint.errors import BackendUnavailableError, ConfigError
from splitpoint.extras import install_hint
from splitpoint.files import open_regular, path_kind

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
ARRAY_SUFFIXES = (".npy",)


def list_frame_files(directory: Path, key: str = "source") -> list[Path]:
    """Image and .npy files in `directory`, sorted by name; a clear error when there are none.

    Entries with a frame's suffix that are not regular files (after symlinks) are left out,
    with one warning naming them."""
    if not directory.is_dir():
        raise ConfigError(key, str(directory), "not a directory" if directory.exists() else "no such directory")
    named = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES)
    files: list[Path] = []
    others: list[Path] = []
    for p in named:
        (files if p.is_file() else others).append(p)  # stat only: a named pipe is not opened here
    if others:
        log.warning("%s: %s left out, not regular files: %s", directory, _entries(len(others)),
                    ", ".join(f"{p.name} ({path_kind(p)})" for p in others[:5]) + (", ..." if len(others) > 5 else ""))
    if not files:
        raise ConfigError(key, str(directory), f"no image files ({', '.join(IMAGE_SUFFIXES)}) or .npy arrays in it"
                          + (f"; {_entries(len(others))} named like one "
                             f"{'is not a regular file' if len(others) == 1 else 'are not regular files'}"
                             if others else ""))
    return files


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def fit_frame(frame: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Any uint8 or uint16 frame (H, W), (H, W, 1|3|4) -> (pre.height, pre.width, pre.channels) uint8."""
    frame = np.asarray(frame)
    if _is_uint16(frame.dtype):
        frame = scale_16bit(frame)
    if frame.dtype != np.uint8:
        raise ConfigError("frame", str(frame.dtype), "frames must be uint8 images (0..255) or uint16 (0..65535, "
                          f"scaled to 8 bits); the range of a {frame.dtype} array's values cannot be known: "
                          "convert it to an 8-bit image (uint8)")
    if frame.ndim == 3 and frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[-1] != 3):
        raise ConfigError("frame", list(frame.shape), "expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if 0 in frame.shape[:2]:  # resized from nothing, a (0, 8) array was classified like any frame
        raise ConfigError("frame", list(frame.shape), "an empty image: it has no pixels")
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


def _is_uint16(dtype: np.dtype) -> bool:
    return dtype.kind == "u" and dtype.itemsize == 2  # either byte order: a .npy may be big-endian


def scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 as round(value / 257): 65535 / 255 is exactly 257, so 8-bit values x257
    (how 16-bit files widen them) come back unchanged. 257 is odd: no value falls on a tie."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def read_frame_file_sized(path: Path, pre: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """One image or .npy file -> (raw uint8 frame of the bundle's size, (width, height) of the file's
    image before it was fitted): a detector's boxes are mapped back to the latter."""
    if path.suffix.lower() == ".npy":
        arr = read_npy_frame(path)
        try:
            return fit_frame(arr, pre), image_size(arr)
        except ConfigError as exc:  # fit_frame knows the array, not the file: name both
            raise ConfigError("source", str(path), f"holds {_array_words(arr)}, which is not a frame: "
                              f"{exc.reason}") from None
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise BackendUnavailableError(f"reading image files needs Pillow: {install_hint('edge', 'pillow')}") from None
    try:
        with os.fdopen(open_regular(path, "source"), "rb") as fh, Image.open(fh) as opened:
            return fit_frame(_image_pixels(opened, path, pre), pre), (int(opened.width), int(opened.height))
    except Image.DecompressionBombError as exc:  # not an OSError: it would end the run, not the frame
        raise ConfigError("source", str(path), f"not a readable image: too large ({exc})") from None
    except UnidentifiedImageError:  # its message names the file handle ('<_io.BufferedReader name=19>')
        raise ConfigError("source", str(path), "not a readable image: not an image file Pillow can read") from None
    except OSError as exc:
        raise ConfigError("source", str(path), f"not a readable image ({exc})") from None


def _image_pixels(opened: Any, path: Path, pre: Preprocessing) -> np.ndarray:
    """An opened image's pixels: uint8 for 8-bit modes (converted to the bundle's channels), uint16
    for a 16-bit single-channel image (fit_frame scales it). Pillow's convert() would clip every
    value over 255 instead. Pillow itself brings 16-bit colour (48-bit PNG, ...) to 8-bit RGB."""
    mode = str(opened.mode)
    if mode not in ("I", "F") and not mode.startswith("I;16"):
        return np.asarray(opened.convert("L" if pre.channels == 1 else "RGB"), dtype=np.uint8)
    if mode == "F" or not _decoded_from_16_bits(opened):
        raise ConfigError("source", str(path), f"an image of {_WIDE_MODES.get(mode, 'more than 8 bits per pixel')} "
                          f"(Pillow mode {mode}): the range of its values cannot be known, so it cannot be "
                          "made 8-bit; convert it to an 8-bit image")
    return np.clip(np.asarray(opened), 0, 65535).astype(np.uint16)  # in range already: the clip only guards


_WIDE_MODES = {"F": "floating-point pixels", "I": "32-bit integer pixels"}


def _decoded_from_16_bits(opened: Any) -> bool:
    """Whether the file holds 16-bit samples, from the raw mode Pillow decodes it with ('I;16B' for a
    16-bit PNG or PGM, 'I;16' for a TIFF; a 12-bit TIFF's 'I;12' is not 0..65535): the mode alone does
    not say, as Pillow opens a 16-bit PNG as mode I;16 (older Pillow: mode I) and a PGM with a maxval over
    255 as mode I, its values scaled to 0..65535. Must run before the pixels are loaded: loading empties
    `tile`."""
    if opened.format == "PPM" and opened.mode == "I":
        return True
    rawmodes = [tile[3][0] if isinstance(tile[3], tuple) else tile[3] for tile in opened.tile]
    return bool(rawmodes) and all(str(raw).startswith("I;16") for raw in rawmodes)


def image_size(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of an (H, W) or (H, W, C) array; (0, 0) for anything else (fit_frame refuses it)."""
    shape = np.shape(frame)
    return (int(shape[1]), int(shape[0])) if len(shape) in (2, 3) else (0, 0)


_NPY_MAGIC = b"\x93NUMPY"
_SAVE_FRAMES = "save each frame as a uint8 image array with np.save(path, frame)"


def read_npy_frame(path: Path) -> np.ndarray:
    """The array in a .npy file, never unpickled. Whatever is wrong with the file - empty, not a .npy
    at all (a pickle, an .npz, an image), an object array, a cut-short header or data - is a
    ConfigError naming the file and saying which, not numpy's EOFError or its advice to unpickle."""
    try:
        with os.fdopen(open_regular(path, "source"), "rb") as fh:
            return _npy_array(fh, os.fstat(fh.fileno()).st_size)
    except _NotAFrameArray as exc:
        raise ConfigError("source", str(path), str(exc)) from None
    except OSError as exc:
        raise ConfigError("source", str(path), f"cannot read it: {exc.strerror or exc}") from None


class _NotAFrameArray(Exception):
    """What is wrong with a .npy file, in words; read_npy_frame adds its name."""


def _npy_array(fh: Any, size: int) -> np.ndarray:
    if size == 0:
        raise _NotAFrameArray(f"an empty file (0 bytes), not a .npy array; {_SAVE_FRAMES}")
    start = fh.read(len(_NPY_MAGIC))
    if start != _NPY_MAGIC:
        raise _NotAFrameArray(f"not a .npy array: {_what_it_is(start)}; {_SAVE_FRAMES}")
    fh.seek(0)
    try:
        version = npy_format.read_magic(fh)
        # 2.0 and 3.0 share a layout (3.0 only allows UTF-8 in the header, which no frame's has)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
    except ValueError as exc:  # numpy's words for a cut-short or garbled header
        raise _NotAFrameArray(f"a .npy file whose header is cut short or damaged ({exc}); {_SAVE_FRAMES}") from None
    if dtype.hasobject:  # np.load would refuse it too, then suggest allow_pickle=True: never
        raise _NotAFrameArray(f"holds Python objects (dtype {dtype}, stored pickled), which splitpoint never "
                              f"loads; {_SAVE_FRAMES}")
    _check_pixels(shape, dtype)
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize  # a Python int: a forged shape cannot overflow
    have = size - fh.tell()
    if have < need:
        raise _NotAFrameArray(f"truncated: its header says {_array_words_of(shape, dtype)}, {need} bytes of "
                              f"data, but only {have} follow")
    fh.seek(0)
    try:
        return np.asarray(np.load(fh, allow_pickle=False))
    except ValueError as exc:
        raise _NotAFrameArray(f"an unreadable .npy array ({exc})") from None


# Pillow's default Image.MAX_IMAGE_PIXELS, for a .npy read where Pillow is not installed
_PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def frame_pixel_limit() -> int | None:
    """The most pixels a frame file may declare: Pillow refuses an image of more than twice
    Image.MAX_IMAGE_PIXELS as a decompression bomb; None if that limit is switched off."""
    try:
        from PIL import Image
    except ImportError:
        return 2 * _PILLOW_MAX_IMAGE_PIXELS
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def _check_pixels(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The image limit, from a .npy's header, before np.load allocates it: a 4 KB sparse file can
    declare gigabytes. Pixels are H x W of a frame's shape, every value of any other shape."""
    frame_like = len(shape) == 3 and 1 <= shape[-1] <= 4
    pixels = int(np.prod(shape[:-1] if frame_like else shape, dtype=object))
    limit = frame_pixel_limit()
    if limit is not None and pixels > limit:
        raise _NotAFrameArray(f"too large: its header says {_array_words_of(shape, dtype)}, {pixels} pixels, "
                              f"over the limit of {limit} pixels a frame may have (Pillow's decompression-bomb "
                              "limit, which images have too)")


def _what_it_is(start: bytes) -> str:
    if start.startswith(b"PK"):
        return "a zip archive (np.savez writes those, as .npz)"
    if start[:1] == b"\x80":
        return "a Python pickle, which splitpoint never loads"
    if start.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")):
        return "an image file; give it its image suffix (.png, .jpg, ...)"
    return f"it does not start with the .npy signature \\x93NUMPY (it starts {start[:6]!r})"


def _array_words(arr: np.ndarray) -> str:
    return _array_words_of(arr.shape, arr.dtype)


def _array_words_of(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """'a float32 array of shape (8, 8)', 'an int16 array of shape (64,)'"""
    article = "an" if str(dtype)[:1] in "aeio" else "a"
    return f"{article} {dtype} array of shape {tuple(int(n) for n in shape)}"
