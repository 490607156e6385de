"""The `--source` string: which frame source it names, opened (`open_source`).

The forms and what each source does are in edge_node/sources.py (its module docstring);
a bad spec is a ConfigError naming it and listing the accepted forms.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from splitpoint.bundle import Bundle, Preprocessing
from splitpoint.errors import ConfigError
from splitpoint.images import ARRAY_SUFFIXES, IMAGE_SUFFIXES

from .config import MAX_RUN_FRAMES
from .file_sources import DirectorySource, SyntheticSource
from .sources import ACCEPTED_FORMS, VIDEO_SUFFIXES, FrameSource, _Source

log = logging.getLogger("edge_node.sources")  # the sources' logger: "frame source: ..." as before


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)


#: OpenCV takes a camera number as a C int: past it, cv2.VideoCapture raised a traceback
MAX_CAMERA_NUMBER = 2**31 - 1
#: the most synthetic frames (edge_node/config.py); 4300 digits or more was a ValueError traceback from int()
MAX_SYNTHETIC_FRAMES = MAX_RUN_FRAMES


def _count(spec: str, key: str, text: str, minimum: int, what: str, maximum: int, why: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[0-9]+", text):  # ASCII: \d matches "\uff15" too
        raise ConfigError(
            key, spec, f"{what} must be an integer >= {minimum}, not {text!r}; {ACCEPTED_FORMS}"
        )
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:  # int() of 4300 digits is a ValueError
        if len(text) > 20:  # the spec not shown in thousands of digits
            spec = f"{spec[:spec.index(':') + 9]}... ({len(text)} digits)"
        raise ConfigError(key, spec, f"{what} must be at most {maximum} ({why}); {ACCEPTED_FORMS}")
    if int(digits) < minimum:
        raise ConfigError(
            key, spec, f"{what} must be an integer >= {minimum}, not {text!r}; {ACCEPTED_FORMS}"
        )
    return int(digits)


def open_source(
    spec: str,
    preprocessing: Preprocessing,
    bundle: Bundle | None = None,
    fps: float | None = None,
    key: str = "source",
    camera_reopen_s: float = 0.0,
) -> FrameSource:
    """Open the frame source described by `spec` (the --source flag); see the module docstring.
    `camera_reopen_s`: how long a camera that stopped delivering is opened again before its
    stream ends (edge_node/video_sources.py; 0: it ends at once).

    Raises ConfigError (naming `spec`) for a bad spec, a missing path, a camera
    that does not open or synthetic frames without a bundle, ConfigError("fps")
    for fps <= 0, and BackendUnavailableError when OpenCV (video, camera) or
    Pillow (image files) is not installed.
    """
    if fps is not None:
        if (
            isinstance(fps, bool)
            or not isinstance(fps, (int, float))
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise ConfigError(
                "fps",
                fps,
                "must be a positive, finite number of frames per second (or unset: no pacing)",
            )
        fps = float(fps)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(key, spec, f"empty; {ACCEPTED_FORMS}")

    source: _Source
    m = _SCHEME.match(spec)
    scheme, rest = (m.group(1).lower(), m.group(2)) if m else ("", "")
    if scheme == "synthetic":
        count = _count(spec, key, rest, 1, "the number of synthetic frames", MAX_SYNTHETIC_FRAMES,
                       "a billion: over three years at 10 fps")
        if bundle is None:
            raise ConfigError(
                key,
                spec,
                "synthetic frames cycle through a bundle's validation inputs; no bundle was given",
            )
        source = SyntheticSource(bundle, count, preprocessing, fps, spec, key)
    elif scheme == "camera":
        from .video_sources import CameraSource  # OpenCV's sources, apart: they subclass _Source

        number = _count(spec, key, rest, 0, "the camera number", MAX_CAMERA_NUMBER, "OpenCV's largest")
        source = CameraSource(number, preprocessing, fps, spec, key, camera_reopen_s)
    else:
        path = Path(spec).expanduser()
        suffix = path.suffix.lower()
        if path.is_dir():
            source = DirectorySource(path, preprocessing, fps, key)
        elif path.is_file():
            if suffix in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
                raise ConfigError(
                    key,
                    spec,
                    f"a single {suffix} file is not a source (put it in a directory and give that); {ACCEPTED_FORMS}",
                )
            from .video_sources import VideoSource

            source = VideoSource(path, preprocessing, fps, key)
        elif len(scheme) > 1:  # "C:..." is a Windows drive, not a scheme
            raise ConfigError(
                key, spec, f"unknown source scheme {spec.split(':', 1)[0]!r}; {ACCEPTED_FORMS}"
            )
        elif suffix in VIDEO_SUFFIXES:
            raise ConfigError(key, spec, f"no such video file; {ACCEPTED_FORMS}")
        elif path.exists():
            raise ConfigError(
                key, spec, f"neither a directory nor a regular file; {ACCEPTED_FORMS}"
            )
        else:
            raise ConfigError(key, spec, f"no such file or directory; {ACCEPTED_FORMS}")
    log.info("frame source: %s", source.description)
    return source
