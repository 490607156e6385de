"""Where the partitioner writes: a new directory beside -o, moved into place only once the
bundle in it is complete and verified.

Building in place destroyed work twice over: a failed run left a partial directory at -o, and a
failed `--force` run had already deleted the good bundle it was to replace. So every run builds
in a sibling (same file system: the final step is a rename), removes it on any failure, and
only then swaps it in: -o holds the old bundle or the new one, never neither, except for the
moment between two renames (a crash there leaves both, named, beside -o). A replacement needs
room for both bundles until the swap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from splitpoint.bundle import MANIFEST
from splitpoint.errors import PartitionError

log = logging.getLogger("splitpoint.partition")


def check_output(out: Path, force: bool) -> None:
    """-o must be new, empty, or (with --force) a bundle: nothing else is ever replaced."""
    if out.exists() and not out.is_dir():
        raise PartitionError(f"-o {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise PartitionError(f"-o {out}: directory is not empty; use --force to replace the bundle in it")
        if not (out / MANIFEST).exists() and not (out / "edge").exists():
            raise PartitionError(f"-o {out}: not empty and not a bundle; refusing to delete it even with --force")


@contextlib.contextmanager
def staged_output(out: Path, force: bool) -> Iterator[Path]:
    """Yield a fresh directory to build the bundle in; on a clean exit it becomes `out`."""
    check_output(out, force)
    real = Path(os.path.realpath(out))  # a symlinked -o: build beside, and replace, what it points to
    # Named here, not by tempfile.mkdtemp: that makes it 0700, and the bundle must keep the umask's mode.
    build = real.parent / f".{real.name}.partial-{secrets.token_hex(4)}"
    try:
        if not real.parent.exists():
            real.parent.mkdir(parents=True)
        build.mkdir()
    except OSError as err:  # a read-only or full file system, /proc, ...: say so before minutes of work
        raise PartitionError(f"-o {out}: cannot create the bundle there: {err.strerror or err}") from err
    try:
        yield build
        _install(build, real, out)
    except _KeepBuild:
        raise
    except BaseException:  # an error, Ctrl-C: nothing of this run stays behind
        shutil.rmtree(build, ignore_errors=True)
        raise


def _install(build: Path, real: Path, out: Path) -> None:
    """Move the finished bundle to `real`; an old bundle there goes only once the new one is in."""
    if not real.exists() or not any(real.iterdir()):
        try:
            os.replace(build, real)  # POSIX: a rename replaces an empty directory
        except OSError:  # a mount point or a directory we may not replace: fill it instead
            for child in build.iterdir():
                shutil.move(child, real / child.name)
            build.rmdir()
        return
    old = real.parent / f".{real.name}.old-{secrets.token_hex(4)}"
    try:
        os.rename(real, old)
    except OSError as err:  # the new bundle is complete and verified: leave it for the user, say where
        raise _KeepBuild(f"-o {out}: cannot move the old bundle aside ({err.strerror or err}); it is "
                         f"untouched, and the new, verified bundle is in {build}") from err
    try:
        os.rename(build, real)
    except OSError as err:
        os.rename(old, real)
        raise _KeepBuild(f"-o {out}: cannot put the new bundle in place ({err.strerror or err}); the old "
                         f"one is back, and the new, verified bundle is in {build}") from err
    shutil.rmtree(old, ignore_errors=True)
    log.info("replaced the bundle in %s", out)


class _KeepBuild(PartitionError):
    """A failure after the new bundle was verified: it is kept, not removed with the build."""
