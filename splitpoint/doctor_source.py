"""The doctor's frame source check: the `source` the agent would open, opened, and its first frame read.

A camera the service user may not open (not in the `video` group), one that is unplugged or
held by a running agent, or a `[video]` extra never installed: each stopped the agent at its
start with one line, after the doctor had said "no problems found". Now the doctor opens the
source as the agent does (edge_node/source_spec.py, fitted to the bundle's input) and reads one
frame, with a time limit: a camera that opens and gives nothing must not hang the doctor.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from splitpoint.doctor_checks import Check, _plain

#: how long the first frame may take (a V4L2 camera times out a read after about 10 s)
FIRST_FRAME_TIMEOUT_S = 12.0


def check_source(spec: str, bundle: str | None, timeout_s: float = FIRST_FRAME_TIMEOUT_S) -> list[Check]:
    if not spec:
        return [Check("skip", "source", "no source given (--source or `source` in --config)")]
    if not bundle:
        return [Check("skip", "source", f"{spec}: not opened without a bundle (frames are fitted to its input)")]
    from edge_node.source_spec import open_source
    from edge_node.sources import FrameReadError
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import BackendUnavailableError, BundleError, ConfigError

    try:
        b = load_bundle(bundle, side="edge")
    except (BundleError, ConfigError, OSError):
        return [Check("skip", "source", f"{spec}: not opened: the bundle does not load (see its line above)")]
    sources_log = logging.getLogger("edge_node.sources")
    level = sources_log.level
    sources_log.setLevel(max(logging.WARNING, sources_log.getEffectiveLevel()))  # its line is the source's "ok"
    try:
        source = open_source(spec, b.manifest.preprocessing, b)
    except BackendUnavailableError as err:
        return [Check("FAIL", "source", _plain(err))]
    except ConfigError as err:  # a camera that did not open says why (edge_node/video_sources.py)
        return [Check("FAIL", "source", _plain(err))]
    finally:
        sources_log.setLevel(level)
    got: dict[str, Any] = {}

    def first() -> None:
        try:
            got["frame"] = next(iter(source))
        except StopIteration:
            got["frame"] = None
        except BaseException as exc:  # noqa: BLE001 - reported below, whatever it is
            got["error"] = exc

    reader = threading.Thread(target=first, name="doctor-source", daemon=True)
    reader.start()
    reader.join(timeout_s)
    if reader.is_alive():  # left to its read (a daemon thread): closing under it could crash OpenCV
        return [Check("FAIL", "source", f"{source.description} opened but gave no frame within {timeout_s:g} s"
                                        + (" -- a camera that needs more time, or not a capture device "
                                           "(`v4l2-ctl --list-devices` lists them)" if spec.startswith("camera:")
                                           else ""))]
    source.close()
    if "error" in got:
        failure = got["error"]
        if isinstance(failure, FrameReadError):
            return [Check("FAIL", "source", f"{source.description}: its first frame cannot be read "
                                            f"({_plain(failure)})")]
        return [Check("FAIL", "source", f"{source.description}: reading its first frame failed "
                                        f"({type(failure).__name__}: {_plain(failure)})")]
    frame = got["frame"]
    if frame is None:
        return [Check("FAIL", "source", f"{source.description} has no frames")]
    w, h = frame.original_size or (frame.raw.shape[1], frame.raw.shape[0])
    return [Check("ok", "source", f"{source.description}: frame {frame.index} ({frame.origin}) read, {w}x{h}")]
