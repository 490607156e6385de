"""Where the partitioner writes: a new directory beside -o, moved into place only once the
bundle in it is complete and verified.

Building in place destroyed work twice over: a failed run left a partial directory at -o, and a
failed `--force` run had already deleted the good bundle it was to replace. So every run builds
in a sibling (same file system: the final step is a rename), removes it on any failure, and
only then swaps it in: -o holds the old bundle or the new one, never neither, except for the
moment between two renames (a crash there leaves both, named, beside -o). A replacement needs
room for both bundles until the swap.

A run killed outright (SIGKILL, the OOM killer, a converter that segfaults in-process) cannot
remove its build directory; under the command line its parent does (splitpoint/partition_guard.py),
unless that dies too. The directory's name carries the run's pid
(`.NAME.partial-PID-HEX`), so the next run to the same -o removes the ones whose process is
gone, saying so. A verified bundle that could not be moved into place is renamed
`.NAME.verified-HEX` (the message names it) and never removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
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
    _remove_dead_builds(real)
    # Named here, not by tempfile.mkdtemp: that makes it 0700, and the bundle must keep the umask's mode.
    build = real.parent / f".{real.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
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


def _builds(real: Path) -> Iterator[tuple[Path, int]]:
    """The build directories beside `real`, each with the pid of the run that made it."""
    pattern = re.compile(rf"\.{re.escape(real.name)}\.partial-(\d+)-[0-9a-f]+")
    try:
        siblings = list(real.parent.iterdir()) if real.parent.is_dir() else []
    except OSError:
        return  # not listable: creating the build directory next says why
    for path in siblings:
        m = pattern.fullmatch(path.name)
        if m is not None and path.is_dir() and not path.is_symlink():
            yield path, int(m.group(1))


def _remove_dead_builds(real: Path) -> None:
    """Remove the build directories beside `real` of runs whose process is gone."""
    for path, pid in _builds(real):
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s: the partial build of an earlier run that ended without cleaning up (pid %s)",
                     path, pid)


def discard_builds(out: Path, pid: int) -> None:
    """Remove the build directories for -o `out` of run `pid`, which died without cleaning up
    (splitpoint/partition_guard.py: a native crash in the partitioner's own process)."""
    for path, of in _builds(Path(os.path.realpath(out))):
        if of == pid:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Is there a process `pid` (ours or not: a pid reused since keeps its directory, harmlessly)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's
        return True
    return True


def _keep(build: Path, real: Path) -> Path:
    """The verified bundle, renamed so that no later run takes it for a dead partial build."""
    kept = real.parent / f".{real.name}.verified-{secrets.token_hex(4)}"
    try:
        os.rename(build, kept)
    except OSError:
        return build
    return kept


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
                         f"untouched, and the new, verified bundle is in {_keep(build, real)}") from err
    try:
        os.rename(build, real)
    except OSError as err:
        os.rename(old, real)
        raise _KeepBuild(f"-o {out}: cannot put the new bundle in place ({err.strerror or err}); the old "
                         f"one is back, and the new, verified bundle is in {_keep(build, real)}") from err
    shutil.rmtree(old, ignore_errors=True)
    log.info("replaced the bundle in %s", out)


class _KeepBuild(PartitionError):
    """A failure after the new bundle was verified: it is kept, not removed with the build."""
