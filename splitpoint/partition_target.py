"""What -o may be before the partitioner writes anything, and how to tell, at the swap, that it
is still what was checked.

--force once replaced any directory holding a `manifest.json` or an `edge/`: a web app's
source tree beside its package manifest went, and so did the model file and the frames the run
had been given, when they sat in the bundle directory. Now --force replaces only a splitpoint
bundle (its manifest.json says `"format": "splitpoint-bundle"`, as splitpoint/bundle.py reads
it) that holds nothing but what `partition` writes; anything else is named and left alone. An
-o that holds the model or the calibration frames is refused with or without --force: even an
empty -o would become a bundle over them.

The check runs minutes before the bundle is moved in, so it returns the identity of the
manifest it accepted: splitpoint/partition_output.py replaces that bundle only if it is still
the one checked (another run, or a user, may have written -o since).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from splitpoint.bundle import FORMAT, MANIFEST
from splitpoint.errors import PartitionError, show_value
from splitpoint.files import file_stamp

#: the files `partition` writes in each of a bundle's directories (manifest.json.tmp: a manifest
#: being written when a run stopped); anything else in -o is someone else's
_BUNDLE_FILES = {
    "edge": re.compile(r"head_\d+(_edgetpu)?\.(tflite|log)"),  # the log: edgetpu_compiler's own
    "cloud": re.compile(r"tail_\d+\.keras"),
    "data": re.compile(r"validation\.npz"),
}
_TOP_FILES = (MANIFEST, MANIFEST + ".tmp")
#: how many foreign entries a refusal lists
_SHOWN = 5


@dataclass(frozen=True)
class Target:
    """-o as checked: `manifest` is the identity of the bundle --force may replace (None: -o was
    missing or empty, and nothing there may be replaced)."""
    out: Path
    real: Path
    manifest: tuple[int, int, int, int] | None


def shown(out: Path | str) -> str:
    """-o as the user gave it, quoted as every other flag's value is: `-o = "b"`."""
    return f"-o = {show_value(str(out))}"


def refusal(out: Path | str, reason: str) -> PartitionError:
    return PartitionError(f"{shown(out)}: {reason}")


def manifest_identity(root: Path) -> tuple[int, int, int, int] | None:
    """What changes when root's manifest.json is written or replaced (None: no regular file; a
    symlink is none: is_splitpoint_manifest refuses it too)."""
    path = root / MANIFEST
    if path.is_symlink() or not path.is_file():
        return None
    return file_stamp(path)


def is_splitpoint_manifest(path: Path) -> bool:
    """A regular file whose JSON says it is a splitpoint bundle's (any schema_version: --force
    may replace a bundle from another splitpoint release)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def foreign_entries(root: Path) -> list[str]:
    """What in `root` no bundle holds (relative paths, a directory with a trailing /)."""
    found: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in _TOP_FILES and entry.is_file(follow_symlinks=False):
            continue
        pattern = _BUNDLE_FILES.get(entry.name)
        if pattern is None or not entry.is_dir(follow_symlinks=False):
            found.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            continue
        for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if not (pattern.fullmatch(inner.name) and inner.is_file(follow_symlinks=False)):
                found.append(f"{entry.name}/{inner.name}" + ("/" if inner.is_dir(follow_symlinks=False) else ""))
    return found


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _within(real: Path, inputs: Iterable[Path]) -> Path | None:
    """The first input that is `real` or lies inside it."""
    for given in inputs:
        resolved = Path(os.path.realpath(given))
        if resolved == real or real in resolved.parents:
            return given
    return None


def check_target(out: Path, force: bool, inputs: Iterable[Path] = ()) -> Target:
    """-o must be new, empty, or (with --force) a splitpoint bundle and nothing more; and it must
    not hold any of `inputs` (the model file, the calibration directory). Nothing else is ever
    replaced: a refusal says what is in the way."""
    try:
        os.stat(out)
    except OSError as err:  # missing (made at the end), under a file (said where it is made), ...
        # ... but a symlink loop built the whole bundle, then blamed "another run"; a name over
        # NAME_MAX was a bare "File name too long" (exit 1) after the model loaded
        if err.errno in (errno.ELOOP, errno.ENAMETOOLONG):
            raise refusal(out, f"cannot be used ({err.strerror or err}); choose another -o") from err
    real = Path(os.path.realpath(out))  # a symlinked -o: what it points to is checked, and replaced
    inside = _within(real, inputs)
    if inside is not None:
        what = "is" if Path(os.path.realpath(inside)) == real else "holds"
        raise refusal(out, f"{what} {inside}, an input of this run, which the bundle would replace; "
                           "choose another -o")
    if out.exists() and not out.is_dir():
        raise refusal(out, "exists and is not a directory; choose another -o")
    try:
        empty = not out.is_dir() or not any(out.iterdir())
    except OSError as err:
        raise refusal(out, f"cannot be read ({err.strerror or err}); choose another -o") from err
    if empty:
        return Target(out, real, None)
    if not is_splitpoint_manifest(out / MANIFEST):
        # no --force hint: it would not help (it replaces only a bundle)
        raise refusal(out, "directory is not empty and not a splitpoint bundle (no splitpoint manifest.json); "
                           "refusing to replace it, even with --force: choose another -o")
    foreign = foreign_entries(out)
    if foreign:
        raise refusal(out, f"the bundle there also holds what a bundle does not ({_listed(foreign)}); --force "
                           "replaces only a bundle: move those out, or choose another -o")
    if not force:
        raise refusal(out, "directory is not empty: it holds a bundle; use --force to replace the bundle in it")
    cwd = Path(os.getcwd())
    if cwd == real or real in cwd.parents:
        # moved aside and removed, it would leave this shell in a deleted directory
        raise refusal(out, "holds the current directory, which --force would remove with the old bundle; run "
                           "from outside it (cd ..)")
    if os.path.ismount(real):
        raise refusal(out, "is a mount point, which cannot be moved aside to swap the new bundle in; give a "
                           f"directory inside it (-o {out}/bundle), or empty it first")
    return Target(out, real, manifest_identity(out))
