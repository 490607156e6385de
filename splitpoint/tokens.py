"""Bearer tokens from a file, read again when the file changes: tokens rotate without a restart.

The server accepts every token in its file (one per line), the agent sends the first line of
its own. Rotating a fleet's token (docs/security.md, "Rotating the token"): add the new token
as a second line of the server's file, give the drones the new one, then remove the old line -
no process restarts and no frame is refused, since each side reads its file again at the next
call after it changed (a new stream, a Describe, a probe; streams already open carry on).

A file that changes into something unusable (empty, a token too short, gone for the moment
while a tool or Kubernetes swaps it) keeps the tokens read before, with one warning per
change: a rotation half-done must not lock the fleet out.
"""

from __future__ import annotations

import logging
import os
import stat
import threading

from splitpoint.errors import ConfigError
from splitpoint.files import FileChanges, read_file

log = logging.getLogger("splitpoint.security")

#: the shortest token accepted: a guessable token is no protection
MIN_TOKEN_CHARS = 16

_warned_lock = threading.Lock()
_warned_paths: set[str] = set()  # token files already warned about in this process


def _first_time_for(path: str) -> bool:
    """True once per path: the token is read by the file check, then for every channel and the
    server's credentials, and the warning said three times (per channel, in a fleet) is noise."""
    with _warned_lock:
        if path in _warned_paths:
            return False
        _warned_paths.add(path)
        return True


def read_tokens(key: str, path: str) -> tuple[str, ...]:
    """Every token in `path`, one per non-empty line (ConfigError naming the file and the line
    when one is too short). Warns once when other users can read the file."""
    text = read_file(key, path).decode("utf-8", "replace").lstrip("\ufeff")
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token:
            continue
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(key, path, f"the token on line {n} is shorter than {MIN_TOKEN_CHARS} characters")
        if not (token.isascii() and token.isprintable()):  # gRPC fails every call: "Illegal header value"
            raise ConfigError(key, path, f"the token on line {n} holds characters other than printable ASCII, which "
                                         "a gRPC header cannot carry: make one with `head -c 32 /dev/urandom | base64`")
        tokens.append(token)
    if not tokens:
        raise ConfigError(key, path, "file is empty")
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH) and _first_time_for(path):
            log.warning("token file %s is readable by other users: chmod 600 it", path)
    except OSError:
        pass
    return tuple(tokens)


def read_token(key: str, path: str) -> str:
    """The token an agent sends: the first in `path`."""
    return read_tokens(key, path)[0]


class TokenFile:
    """The tokens of one file, as they are now: `tokens()` costs a stat, and reads the file
    again only when it changed. Safe from any thread (gRPC's, the agent's)."""

    def __init__(self, key: str, path: str):
        self.key, self.path = key, path
        self._lock = threading.Lock()  # _changes, _tokens (a leaf)
        self._changes = FileChanges(path)
        self._tokens = read_tokens(key, path)  # a ConfigError now: the command refuses to start

    def tokens(self) -> tuple[str, ...]:
        with self._lock:
            if not self._changes.changed():  # unchanged, or gone for a moment: the last good ones
                return self._tokens
            try:
                tokens = read_tokens(self.key, self.path)
            except ConfigError as err:
                log.warning("token file changed and cannot be used (%s): still using the tokens read before", err)
                return self._tokens
            if tokens != self._tokens:
                log.info("token file %s read again: %d token(s)", self.path, len(tokens))
            self._tokens = tokens
            return tokens

    def first(self) -> str:
        return self.tokens()[0]

    def __repr__(self) -> str:  # never show a token
        return f"TokenFile({self.path!r})"
