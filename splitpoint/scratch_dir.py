"""A temporary directory of the process's own, removed when its command ends.

TensorFlow's autograph writes the code it generates to files in the temp directory
(`__autograph_generated_file*.py`) and removes them at interpreter exit (atexit). The command
line ends its process with os._exit (splitpoint.cli.run says why), which runs no atexit
handler: every partition, server, profile and bench run left its files in /tmp for good
(four per partition of the digits CNN; 1,887 on this project's CI machine). So `splitpoint`
points Python's temp directory at one of its own for the command, and removes it, whatever
it holds, before the process ends. A forked child (splitpoint/partition_guard.py) writes into
the same directory; processes spawned afresh (partition workers, the bench's edge workers)
exit normally and clean up their own.

A server or an agent runs for weeks, and /tmp's cleaner (systemd-tmpfiles: 10 days) would
remove an idle directory under it, failing every later temp file: `splitpoint cloud` once it
serves and `splitpoint edge` once its heads are loaded move new temp files back to the system's
temp directory (`stop_using`); what their start-up wrote (the tails' generated code, needed only
while they load) stays in their own, removed at their end.

A process killed outright (SIGKILL, the OOM killer, a power cut) cannot remove its directory. A
server restarted in a loop by something that keeps its /tmp (a container's restart policy;
systemd's PrivateTmp= does not) left one per crash. So each process holds an flock on a file in
its directory (`OWNER_FILE`) for as long as it lives, and at start removes the directories of
this naming whose lock it can take: their process is gone, however its pid was reused (a
container's server is pid 1 each time) and whichever pid namespace it ran in. Directories
without that file (made by an older splitpoint) are left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

#: what use_own names its directories (mkdtemp adds a random suffix)
PREFIX = "splitpoint-"
_NAME = re.compile(re.escape(PREFIX) + r"\d+-[A-Za-z0-9_]+")
#: the file in a directory its process holds an flock on while it lives
OWNER_FILE = ".owner"


def use_own() -> str | None:
    """Make a directory under the temp directory the process's temp directory; its path, or
    None when one cannot be made (the temp directory as it was then serves). Directories that
    killed processes left beside it are removed (`sweep`)."""
    parent = tempfile.gettempdir()
    try:
        path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    except OSError as err:  # a full or read-only /tmp: the command may not need it at all
        log.debug("no temp directory of this process's own (%s): using %s", err, parent)
        return None
    global _before, _own, _owner_fd
    # locked under another name, then named: another command's sweep never finds it unlocked
    fresh = os.path.join(path, OWNER_FILE + ".new")
    try:
        fd = os.open(fresh, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as err:
        log.debug("no owner lock in %s (%s)", path, err)
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a forked child shares it (partition_guard)
            os.rename(fresh, os.path.join(path, OWNER_FILE))
            _owner_fd = fd
        except OSError as err:  # a filesystem without locks: the directory serves, no sweep will take it
            log.debug("no owner lock in %s (%s)", path, err)
            os.close(fd)
    _before, _own = tempfile.tempdir, path
    tempfile.tempdir = path
    sweep(parent, keep=path)
    return path


_before: str | None = None  # Python's temp directory setting before use_own
_own: str | None = None  # the directory use_own made
_owner_fd: int | None = None  # its OWNER_FILE, locked while this process lives


def sweep(parent: str, keep: str) -> int:
    """Remove the directories under `parent` that use_own made for processes now gone (their
    owner lock is free), except `keep`; how many. Never raises: a command's start must not fail
    over another's leftovers."""
    removed = 0
    try:
        entries = [e for e in os.scandir(parent) if _NAME.fullmatch(e.name) and e.path != keep]
    except OSError:
        return 0
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(entry.path, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, not ours, or no owner file (an older splitpoint's): left alone
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken: its process is gone
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += not Path(entry.path).exists()
        except OSError:  # held: its process lives
            pass
        finally:
            os.close(fd)
    if removed:
        log.debug("removed %d temp directories of splitpoint processes that were killed", removed)
    return removed


def stop_using() -> None:
    """New temp files go where they went before `use_own` (the directory made stays, for `remove`);
    nothing when use_own did not set it (a program calling splitpoint.cli.main)."""
    if _own is not None and tempfile.tempdir == _own:
        tempfile.tempdir = _before


def shared_dir() -> str:
    """The temp directory other processes see (what the process's own was made under): for what
    two commands must find in one place, such as the bench's claim on its edge CPU."""
    if _own is not None and tempfile.tempdir == _own:
        return os.path.dirname(_own)
    return tempfile.gettempdir()


def remove(path: str | None) -> None:
    """Remove the directory `use_own` made (never raises: the process is ending)."""
    global _owner_fd
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
    if _owner_fd is not None and path == _own:
        os.close(_owner_fd)
        _owner_fd = None
