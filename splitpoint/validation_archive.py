"""A bundle's `data/validation.npz` read and checked: the held-out frames `synthetic:N`, profiles,
demos and loadtests cycle through.

Its sha256 in the manifest says it is the file the manifest lists, not that it is an archive of
frames: a file that is not an npz made numpy say it "contains pickled (object) data" in a
traceback (exit 1). Now anything but an npz holding a numeric `inputs` array of frames (and,
when present, numeric `labels`, one per frame) is a BundleError naming the file (exit 2).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from splitpoint.errors import BundleError


def _invalid(path: Path, why: str) -> BundleError:
    return BundleError(f"{path} is not a valid validation archive ({why}); partition again")


def _numeric(path: Path, z: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        arr = z[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # object arrays, a damaged member
        raise _invalid(path, f"its {name!r} cannot be read: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise _invalid(path, f"its {name!r} holds {arr.dtype} values, not numbers")
    return arr


def read_validation(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw inputs, labels or None) from the validation archive at `path`; BundleError unless it
    is an npz whose `inputs` are uint8 frames (N, H, W[, C]), N >= 1, and whose `labels`, if
    any, are N numbers."""
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle
        raise _invalid(path, "not an npz (zip) archive")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _invalid(path, f"{type(exc).__name__}: {exc}") from None
    with z:
        if "inputs" not in z.files:
            raise _invalid(path, f"no 'inputs' array; it holds {sorted(z.files)}")
        inputs = _numeric(path, z, "inputs")
        labels = _numeric(path, z, "labels") if "labels" in z.files else None
    if inputs.dtype != np.uint8:  # float frames passed here, then failed every frame ("frames must be uint8")
        raise _invalid(path, f"its inputs are {inputs.dtype} values, not the uint8 frames partition writes")
    if inputs.ndim not in (3, 4) or len(inputs) == 0:
        raise _invalid(path, f"its inputs have shape {list(inputs.shape)}, not one or more frames (N, H, W[, C])")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(inputs)):
        raise _invalid(path, f"{len(inputs)} inputs but labels of shape {list(labels.shape)}")
    return inputs, labels
