"""Opening a file the user named without trusting what it is.

A path can name a named pipe, a socket or a device as easily as a file: `open()` on a
named pipe waits for a writer forever (signals included: the agent could not be
stopped), and reading /dev/zero never ends. Everything splitpoint reads or appends to
by name - frame files, the results log - is opened here first: with O_NONBLOCK, so
opening never waits, then checked with fstat on the descriptor itself (not the name,
which could be swapped in between) to be a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from splitpoint.errors import ConfigError


def file_kind(mode: int) -> str:
    """What a stat mode is, in words: "a named pipe", "a character device", ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, key: str, flags: int = os.O_RDONLY, why: str = "", mode: int = 0o666) -> int:
    """A descriptor of `path`, which must be a regular file (following symlinks); else
    ConfigError(key, path, "is a named pipe, not a regular file" + why). OSError as open() raises
    it (a directory opened for writing: EISDIR). `mode`: of a file O_CREAT makes (umask applies).

    O_NONBLOCK only matters while opening (a named pipe would wait for its other end); on a
    regular file it changes nothing, so the descriptor is then used as any other."""
    try:  # a socket cannot be opened at all (ENXIO), a pipe not for writing alone: say what it is
        kind = os.stat(path).st_mode
    except OSError:
        pass  # not there (O_CREAT may make it) or not reachable: open() says why
    else:
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):  # a directory: open() says why
            raise ConfigError(key, str(path), f"is {file_kind(kind)}, not a regular file{why}")
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        kind = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(kind):  # swapped since the stat above, or a directory opened for reading
        os.close(fd)
        raise ConfigError(key, str(path), f"is {file_kind(kind)}, not a regular file{why}")
    return fd
