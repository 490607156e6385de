"""Opening a file the user named without trusting what it is.

A path can name a named pipe, a socket or a device as easily as a file: `open()` on a
named pipe waits for a writer forever (signals included: the agent could not be
stopped), and reading /dev/zero never ends. Everything splitpoint reads or appends to
by name - frame files, the results log - is opened here first: with O_NONBLOCK, so
opening never waits, then checked with fstat on the descriptor itself (not the name,
which could be swapped in between) to be a regular file.

What splitpoint writes by name - a profile, a report - replaces only an earlier one of its
kind (`check_replaceable`, `write_replacing`): `-o bundle/manifest.json` or `-o notes.md`
must not destroy the file that is there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splitpoint.errors import ConfigError, SplitpointError, show_value


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_kind(mode: int) -> str:
    """What a stat mode is, in words: "a named pipe", "a character device", ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def path_kind(path: str | Path) -> str:
    """What `path` is, in words, following symlinks: "a regular file", "a directory", ..., or
    for a symlink that leads nowhere "a symlink loop" or "a broken symlink"."""
    try:
        return file_kind(os.stat(path).st_mode)
    except OSError as err:  # a symlink to nothing, or to itself (a loop)
        return "a symlink loop" if err.errno == errno.ELOOP else "a broken symlink"


def open_regular(path: str | Path, key: str, flags: int = os.O_RDONLY, why: str = "", mode: int = 0o666) -> int:
    """A descriptor of `path`, which must be a regular file (following symlinks); else
    ConfigError(key, path, "is a named pipe, not a regular file" + why; a directory likewise).
    OSError as open() raises it. `mode`: of a file O_CREAT makes (umask applies).

    O_NONBLOCK only matters while opening (a named pipe would wait for its other end); on a
    regular file it changes nothing, so the descriptor is then used as any other."""
    try:  # a socket cannot be opened at all (ENXIO), a pipe not for writing alone: say what it is
        kind = os.stat(path).st_mode
    except OSError:
        pass  # not there (O_CREAT may make it) or not reachable: open() says why
    else:
        # a directory too: opened for writing, open() said only EISDIR, which callers reported as
        # a file that could not be written (exit 1) rather than the wrong value it is (exit 2)
        if not stat.S_ISREG(kind):
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


def check_can_create(key: str, path: str, is_dir: bool) -> None:
    """ConfigError unless `path` (a file, or with `is_dir` a directory) can be there: nothing of
    the other kind in its place, and no file where one of its parent directories would go."""
    p = Path(path)
    if p.exists() and p.is_dir() != is_dir:
        raise ConfigError(key, path, "is a directory" if p.is_dir() else "is a file, not a directory")
    check_parent_dirs(key, path)


def check_distinct(named: list[tuple[str, str]]) -> None:
    """ConfigError unless the (key, path) outputs of one command are all different files: `--json
    r.json --markdown r.json` wrote the JSON and then refused the markdown over it, after the
    whole run. Compared as resolved paths (`./r.json`, a symlink to it) and, when both exist, by
    identity (a hard link)."""
    seen: list[tuple[str, str, Path]] = []
    for key, path in named:
        here = Path(path).resolve()
        for other_key, other, there in seen:
            if here == there or (here.exists() and there.exists() and os.path.samefile(here, there)):
                raise ConfigError(key, path, f"is the same file as {other_key} = {other}: give each output its own")
        seen.append((key, path, here))


def check_parent_dirs(key: str, path: str | Path) -> None:
    """ConfigError unless every directory above `path` is one or can be made: mkdir(parents=True)
    said only "File exists" (EEXIST) when one of them is a file."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(key, str(path), f"cannot be created: {parent} is a file, not a directory")


def check_writable_dir(key: str, path: str | Path) -> None:
    """ConfigError naming `key` and `path` unless a file can be made where `path` goes: its
    directory (or, while that is still to be made, the nearest one above it that exists) is a
    directory in which a temporary file can be created and removed. Tried, not asked: access()
    says yes to root in a directory of mode 0555 and cannot know of a read-only mount or /sys;
    `profile -o` found out only when it wrote, after minutes of measuring (exit 1)."""
    check_parent_dirs(key, path)
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(key, str(path), f"cannot be written: a file could not be made and removed in {parent} "
                                          f"({err.strerror or err})") from None


#: the most of a file read to tell whether it is an earlier output (profiles and reports are far smaller)
RECOGNISE_LIMIT_BYTES = 64 * 1024 * 1024


def check_replaceable(path: str | Path, key: str, what: str, is_ours: Callable[[bytes], bool]) -> None:
    """ConfigError unless writing `path` can lose nothing but an earlier output of its kind:
    nothing is there yet, or an empty file, or a regular file `is_ours(its bytes)` recognises as
    `what` ("a splitpoint profile"). A directory, a named pipe or a device, or any other file
    (a bundle's manifest, someone's notes) is named and left as it is.

    Called before a command does its work (found now, not after minutes of measuring) and again
    by `write_replacing` just before the file is replaced."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a broken symlink too: replacing it replaces the link
        check_parent_dirs(key, path)  # a wrong value (exit 2) found now, not "Not a directory" at the end
        return
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(key, str(path), f"is a directory; give the file name of {what}")
    fd = open_regular(path, key, why=f"; give the file name of {what}")
    with os.fdopen(fd, "rb") as fh:  # a larger file is not ours, and is not read into memory to say so
        data = fh.read(RECOGNISE_LIMIT_BYTES + 1)
    if data.strip() and (len(data) > RECOGNISE_LIMIT_BYTES or not is_ours(data)):
        raise ConfigError(key, str(path), f"exists and is not {what}; it is left as it is: give another file name, "
                                          "or move the file away first")


def write_replacing(path: str | Path, text: str, key: str, what: str, is_ours: Callable[[bytes], bool]) -> None:
    """Write `text` to `path` (its directories made) as `check_replaceable` allows, atomically:
    a new file beside it, fsynced and renamed over it, so a reader sees the old file or the new
    one, never half of either, and a full disk leaves the old one as it was."""
    p = Path(path)
    check_replaceable(p, key, what, is_ours)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(p, text.encode("utf-8"))


def write_replacing_named(path: str | Path, text: str, key: str, what: str, is_ours: Callable[[bytes], bool]) -> None:
    """`write_replacing`, a write that fails (a full disk, a read-only one) named by `key` and the
    file in one line (SplitpointError, exit 1): the OSError alone said only "No space left on
    device", after every split had been measured."""
    try:
        write_replacing(path, text, key, what, is_ours)
    except OSError as err:
        raise SplitpointError(f"{key} = {show_value(str(path))}: could not be written ({err.strerror or err}); "
                              "what was there is left as it was") from None


def write_atomically(path: Path, data: bytes, private: bool = False) -> None:
    """Replace `path` with `data`: a new file beside it, fsynced and renamed over it, so a reader
    sees the old file or the new one, never half of either, and a full disk leaves the old one
    as it was. `private`: the new file is mode 0600 from its creation (a key), never readable by
    others for an instant; else 0666 less the umask."""
    write_all_atomically([(path, data, private)])


def write_all_atomically(files: list[tuple[Path, bytes, bool]]) -> None:
    """Replace every (path, data, private) of a set that only works whole (a CA with its key, a
    certificate with its key): each new file is written and fsynced beside its path first, and
    only then are they all renamed into place, so a full disk or a crash while writing leaves
    the old set as it was, not new certificates beside old keys. An OSError names the file being
    replaced, not its temporary one (write() errors carry no name at all: a full disk said only
    "No space left on device")."""
    written: list[tuple[Path, Path]] = []
    current: Path | None = None
    try:
        for path, data, private in files:
            current = path
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)  # left by a crashed run of this pid; O_EXCL below never follows a link
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600 if private else 0o666)
            written.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                if private:
                    os.fchmod(fh.fileno(), 0o600)  # the umask only removes bits; say the result outright
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in written:
            current = path
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and current is not None:
            raise OSError(exc.errno, exc.strerror, str(current)) from None  # its subclass, by errno
        raise


def json_format_is(fmt: str) -> Callable[[bytes], bool]:
    """`is_ours` for JSON outputs that say what they are: an object whose "format" is `fmt`."""
    def is_ours(data: bytes) -> bool:
        return (json_object(data) or {}).get("format") == fmt

    return is_ours


def parse_json(data: bytes | str) -> Any:
    """json.loads, with JSON nested too deeply for the parser (100,000 `[`: a RecursionError
    traceback) a ValueError like any other text that is not JSON, for the callers' "not JSON"."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None


def json_object(data: bytes) -> dict[str, Any] | None:
    """`data` as a JSON object, or None when it is not one (not JSON, not UTF-8, a list)."""
    if not data.lstrip().startswith(b"{"):
        return None  # not worth parsing: a model, an image, notes
    try:
        value = parse_json(data)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def read_file(key: str, path: str) -> bytes:
    """A small file the user named (a certificate, a key, a token): ConfigError naming `key`
    when it is missing, unreadable, empty or not a regular file - a named pipe would hold the
    reader in open() for ever: the server at start, or a gRPC handshake reading renewed files."""
    try:
        with os.fdopen(open_regular(path, key), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError(key, path, "file not found") from None
    except OSError as exc:
        raise ConfigError(key, path, f"unreadable ({exc.strerror})") from None
    if not data.strip():
        raise ConfigError(key, path, "file is empty")
    return data


def file_stamp(path: str | Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is replaced or written (None: not there now)."""
    try:
        st = os.stat(path)  # follows a symlink: Kubernetes swaps a Secret's files by one
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class FileChanges:
    """Whether any of a set of files changed since it was last asked (a stat each): files read
    again only when they changed - tokens, certificates - are read again here and only here.
    A file gone for a moment (a tool or Kubernetes swapping it) is no change. Not locked: the
    owner asks under its own lock."""

    def __init__(self, *paths: str):
        self.paths = tuple(p for p in paths if p)
        self._stamps = self._now()

    def _now(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        return tuple(file_stamp(p) for p in self.paths)

    def changed(self) -> bool:
        stamps = self._now()
        if stamps == self._stamps or None in stamps:
            return False
        self._stamps = stamps
        return True
