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
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

log = logging.getLogger(__name__)


def use_own() -> str | None:
    """Make a directory under the temp directory the process's temp directory; its path, or
    None when one cannot be made (the temp directory as it was then serves)."""
    try:
        path = tempfile.mkdtemp(prefix=f"splitpoint-{os.getpid()}-")
    except OSError as err:  # a full or read-only /tmp: the command may not need it at all
        log.debug("no temp directory of this process's own (%s): using %s", err, tempfile.gettempdir())
        return None
    global _before, _own
    _before, _own = tempfile.tempdir, path
    tempfile.tempdir = path
    return path


_before: str | None = None  # Python's temp directory setting before use_own
_own: str | None = None  # the directory use_own made


def stop_using() -> None:
    """New temp files go where they went before `use_own` (the directory made stays, for `remove`);
    nothing when use_own did not set it (a program calling splitpoint.cli.main)."""
    if _own is not None and tempfile.tempdir == _own:
        tempfile.tempdir = _before


def remove(path: str | None) -> None:
    """Remove the directory `use_own` made (never raises: the process is ending)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
