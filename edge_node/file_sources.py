"""The frame sources read from files (see edge_node/sources.py for what a source is): a
directory of image / .npy files, and `synthetic:N`, the bundle's validation inputs cycled.
(The OpenCV ones, a video file and a camera, are in edge_node/video_sources.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from splitpoint.bundle import Bundle, Preprocessing
from splitpoint.errors import BackendUnavailableError, ConfigError
from splitpoint.images import (
    ARRAY_SUFFIXES,
    fit_frame,
    image_size,
    list_frame_files,
    read_frame_file_sized,
)

from .sources import FrameReadError, _Read, _Source

log = logging.getLogger("edge_node.sources")  # the sources' logger, as before the move

# What a single unreadable frame file can raise (besides ConfigError from read_frame_file_sized).
_FILE_ERRORS = (ConfigError, OSError, ValueError, SyntaxError, EOFError)


class DirectorySource(_Source):
    """Every image / .npy file of a directory, sorted by name."""

    def __init__(self, directory: Path, pre: Preprocessing, fps: float | None, key: str):
        self.files = list_frame_files(directory, key)
        if any(p.suffix.lower() not in ARRAY_SUFFIXES for p in self.files):
            try:
                import PIL  # noqa: F401
            except ImportError:
                raise BackendUnavailableError(
                    f"{directory} holds image files; reading them needs Pillow: pip install '.[edge]' from a "
                    "splitpoint checkout, or the splitpoint wheel with [edge] (package pillow)"
                ) from None
        self._pre = pre
        self._key = key
        super().__init__(f"directory {directory} ({len(self.files)} files)", fps)

    def origin_of(self, index: int) -> str | None:
        return self.files[index].name if 0 <= index < len(self.files) else None

    def _read(self, i: int) -> _Read:
        if i >= len(self.files):
            raise StopIteration
        path = self.files[i]
        try:
            raw, size = read_frame_file_sized(path, self._pre)
        except _FILE_ERRORS as exc:
            reason = exc.reason if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            log.debug("frame %d: cannot read %s: %s", i, path, reason)
            raise FrameReadError(i, path.name, reason, self._key, str(path)) from None
        return raw, None, path.name, size


class SyntheticSource(_Source):
    """`count` frames cycling through the bundle's validation inputs, with their labels."""

    def __init__(
        self, bundle: Bundle, count: int, pre: Preprocessing, fps: float | None, spec: str, key: str
    ):
        inputs, labels = bundle.validation_data()
        inputs = np.asarray(inputs)
        if inputs.ndim < 3 or len(inputs) == 0:
            raise ConfigError(
                key,
                spec,
                f"the bundle's validation inputs have shape {list(inputs.shape)}: no frames to cycle through",
            )
        if labels is not None and len(labels) != len(inputs):
            raise ConfigError(
                key,
                spec,
                f"the bundle has {len(inputs)} validation inputs but {len(labels)} labels",
            )
        self._inputs = inputs
        self._labels = None if labels is None else np.asarray(labels)
        self._count = count
        self._pre = pre
        self._key = key
        labelled = "labelled" if labels is not None else "unlabelled"
        super().__init__(
            f"synthetic:{count} (cycling {len(inputs)} {labelled} validation inputs)", fps
        )

    def origin_of(self, index: int) -> str | None:
        return f"synthetic#{index}" if 0 <= index < self._count else None

    def _read(self, i: int) -> _Read:
        if i >= self._count:
            raise StopIteration
        j = i % len(self._inputs)
        origin = f"synthetic#{i}"
        try:
            raw = fit_frame(self._inputs[j], self._pre)
        except ConfigError as exc:
            raise FrameReadError(i, origin, f"validation input {j}: {exc}", self._key) from None
        if np.shares_memory(raw, self._inputs):
            raw = raw.copy()  # frames are handed out; never let a consumer write into the cycle
        label = None if self._labels is None else int(self._labels[j])
        return raw, label, origin, image_size(self._inputs[j])
