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
`.NAME.verified-HEX` (the message names it) and never removed. NAME is -o's name cut to 64
characters, so that these names stay legal for any legal -o.

What -o may be is checked first (splitpoint/partition_target.py), and -o is checked again at the
move, minutes later: an -o that was missing or empty is moved onto by one rename, which fails if
someone filled it meanwhile (another run to the same -o); with --force the old bundle is moved
aside, and put back untouched unless its manifest is still the one checked. Either way the new
bundle is kept, not lost. An -o that cannot be renamed onto (a mount point: the build beside it is
on another file system) is filled by copying, artifacts first and fsynced, the manifest last; a
copy that fails (a full disk) removes what it wrote, so -o never holds a manifest without its files.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from splitpoint.bundle import MANIFEST
from splitpoint.errors import PartitionError
from splitpoint.partition_target import (
    Target,
    check_target,
    foreign_entries,
    manifest_identity,
    refusal,
    shown,
)

log = logging.getLogger("splitpoint.partition")


#: how much of -o's name the names beside it carry: a 240-character -o is legal, and
#: `.NAME.partial-PID-HEX` of it is not (NAME_MAX is 255)
_STEM = 64


def _stem(real: Path) -> str:
    return real.name[:_STEM]


@contextlib.contextmanager
def staged_output(out: Path, force: bool, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a fresh directory to build the bundle in; on a clean exit it becomes `out`.
    `inputs`: the files and directories the run reads, which -o must not hold."""
    target = check_target(out, force, inputs)
    real = target.real
    _remove_dead_builds(real)
    # Named here, not by tempfile.mkdtemp: that makes it 0700, and the bundle must keep the umask's mode.
    build = real.parent / f".{_stem(real)}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        if not real.parent.exists():
            real.parent.mkdir(parents=True)
        build.mkdir()
    except OSError as err:  # a read-only or full file system, /proc, ...: say so before minutes of work
        raise refusal(out, f"cannot create the bundle there: {err.strerror or err}") from err
    try:
        yield build
        _install(build, target)
    except _KeepBuild:
        raise
    except OSError as err:
        shutil.rmtree(build, ignore_errors=True)
        if err.errno == errno.ENOSPC:  # TensorFlow's own writes name no file: say where
            raise refusal(out, f"No space left on device while building the bundle in {real.parent} (it is built "
                               "there, beside -o); free space or choose another -o") from err
        raise
    except BaseException:  # an error, Ctrl-C: nothing of this run stays behind
        shutil.rmtree(build, ignore_errors=True)
        raise


def _builds(real: Path) -> Iterator[tuple[Path, int]]:
    """The build directories beside `real`, each with the pid of the run that made it."""
    pattern = re.compile(rf"\.{re.escape(_stem(real))}\.partial-(\d+)-[0-9a-f]+")
    try:
        siblings = list(real.parent.iterdir()) if real.parent.is_dir() else []
    except OSError:
        return  # not listable: creating the build directory next says why
    for path in siblings:
        m = pattern.fullmatch(path.name)
        if m is not None and path.is_dir() and not path.is_symlink():
            yield path, int(m.group(1))


def _remove_dead_builds(real: Path) -> None:
    """Remove the build directories beside `real` of runs whose process is gone, and name the
    verified bundles kept beside it, which no run removes (they piled up unsaid)."""
    kept = sorted(real.parent.glob(f".{glob.escape(_stem(real))}.verified-*")) if real.parent.is_dir() else []
    if kept:
        log.warning("%d verified bundle(s) of earlier runs to %s are kept beside it: %s (use one, or remove them)",
                    len(kept), real.name, ", ".join(p.name for p in kept[:3]) + (", ..." if len(kept) > 3 else ""))
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
    kept = real.parent / f".{_stem(real)}.verified-{secrets.token_hex(4)}"
    try:
        os.rename(build, kept)
    except OSError:
        return build
    return kept


def _install(build: Path, t: Target) -> None:
    """Move the finished bundle to -o, replacing only what check_target accepted."""
    if t.manifest is None:
        _move_in(build, t)
    else:
        _replace(build, t)


def _move_in(build: Path, t: Target) -> None:
    """-o was missing or empty: one rename, which fails rather than replace a directory someone
    filled meanwhile (POSIX: a directory renamed onto another replaces it only if it is empty)."""
    try:
        if t.real == Path(os.getcwd()):  # `-o .`: renamed onto, the shell would be left in a deleted directory
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        os.rename(build, t.real)
        return
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR) or not _empty_dir(t.real):
            raise _KeepBuild(f"{shown(t.out)}: something was put there while the bundle was built (another run, "
                             f"or by hand), and it is left as it is; the new, verified bundle is in "
                             f"{_keep(build, t.real)}") from err
    # A mount point (it cannot be replaced, and the build beside it is on another file system), or
    # a directory we may not replace: fill it instead, the manifest last
    _fill(build, t)
    shutil.rmtree(build, ignore_errors=True)


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def _fill(build: Path, t: Target) -> None:
    """Copy the bundle into the empty directory t.real: every artifact written and fsynced before
    the manifest, which alone makes it a bundle; on a failure what was copied is removed again."""
    made: list[Path] = []
    rel = Path(MANIFEST)
    try:
        for src in sorted(build.rglob("*")):  # a directory before what is in it
            rel = src.relative_to(build)
            if rel == Path(MANIFEST):
                continue
            dst = t.real / rel
            if src.is_dir():
                dst.mkdir()
            else:
                _copy_synced(src, dst)
            made.append(dst)
        for directory in [t.real / p.relative_to(build) for p in build.rglob("*") if p.is_dir()]:
            _fsync_dir(directory)
        rel = Path(MANIFEST)
        tmp = t.real / (MANIFEST + ".tmp")
        _copy_synced(build / MANIFEST, tmp)
        made.append(tmp)
        os.rename(tmp, t.real / MANIFEST)
        _fsync_dir(t.real)
    except OSError as err:
        for path in reversed(made):  # ours only: a directory here was made by this run, so is empty by now
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        raise _KeepBuild(f"{shown(t.out)}: {err.strerror or err} while writing {rel}; free space or choose "
                         f"another -o (nothing of it was left there; the new, verified bundle is in "
                         f"{_keep(build, t.real)})") from err


def _copy_synced(src: Path, dst: Path) -> None:
    """src to the new file dst, on disk when this returns; a copy that fails is removed."""
    fout = open(dst, "xb")  # x: never over a file someone put there (nor remove theirs below)
    try:
        with fout, open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copymode(src, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            dst.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(build: Path, t: Target) -> None:
    """--force: swap the new bundle for the one checked; the old one goes only once the new one is in,
    and only if it is still the bundle checked at the start (not another run's, nor one written to)."""
    real = t.real
    old = real.parent / f".{_stem(real)}.old-{secrets.token_hex(4)}"
    try:
        os.rename(real, old)
    except OSError as err:  # the new bundle is complete and verified: leave it for the user, say where
        hint = ("; -o is a mount point, which cannot be moved aside: give a directory inside it"
                if err.errno == errno.EBUSY or os.path.ismount(real) else "")
        raise _KeepBuild(f"{shown(t.out)}: cannot move the old bundle aside ({err.strerror or err}){hint}; it is "
                         f"untouched, and the new, verified bundle is in {_keep(build, real)}") from err
    if manifest_identity(old) != t.manifest or foreign_entries(old):
        raise _KeepBuild(f"{shown(t.out)}: the bundle there changed while this one was built (another run, or "
                         f"by hand), so it is not replaced; {_put_back(old, real)}, and the new, verified bundle "
                         f"is in {_keep(build, real)}")
    try:
        os.rename(build, real)
    except OSError as err:
        raise _KeepBuild(f"{shown(t.out)}: cannot put the new bundle in place ({err.strerror or err}); "
                         f"{_put_back(old, real)}, and the new, verified bundle is in {_keep(build, real)}") from err
    shutil.rmtree(old, ignore_errors=True)
    log.info("replaced the bundle in %s", t.out)


def _put_back(old: Path, real: Path) -> str:
    """The old bundle back at -o; what to tell the user of where it is."""
    try:
        os.rename(old, real)
    except OSError:  # something took -o meanwhile: the old bundle stays beside it
        return f"the old one is in {old}"
    return "the old one is back"


class _KeepBuild(PartitionError):
    """A failure after the new bundle was verified: it is kept, not removed with the build."""
