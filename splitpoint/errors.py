"""One exception hierarchy for the whole library.

Everything splitpoint raises on purpose derives from SplitpointError, so a
caller (the CLI, a user's program) can catch one type. Errors that cross the
gRPC boundary carry a grpc.StatusCode; the servicer maps them once, and the
client maps grpc.RpcError back with `RemoteError.from_rpc_error` (never by
matching message text).
"""

from __future__ import annotations

import re
from typing import Any

import grpc


class SplitpointError(Exception):
    """Base of every error splitpoint raises on purpose."""

    #: the status a server answers with when this error fails a request
    status_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: the CLI's exit code for it: 2 = the command, its configuration or an input it names is
    #: wrong (fix it and run again); 1 = the run itself failed (docs/configuration.md)
    exit_code: int = 1


def show_value(value: Any) -> str:
    """A value as the user wrote it (TOML spelling): true, 4, "camera:0" - never None or False."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # control characters as TOML writes them: a NUL is "\u0000", not invisible
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m[0]):04x}", escaped) + '"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # fps = -1 in the file is read as -1.0; show what was written (1e300 as 1e+300)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return repr(value)


class ConfigError(SplitpointError):
    """A configuration key or command-line value is invalid."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 2

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        # a missing or empty value is not shown: "bundle: is required", not "bundle = None: ..."
        shown = "" if value is None or value == "" else f" = {show_value(value)}"
        super().__init__(f"{key}{shown}: {reason}")


class TensorError(SplitpointError):
    """A tensor (on the wire or in memory) is malformed; names the field and value."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, value: Any, reason: str):
        self.field, self.value, self.reason = field, value, reason
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{field} = {shown}: {reason}")


class TensorTooLargeError(TensorError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BundleError(SplitpointError):
    """A bundle is missing, partial, tampered with or of an unknown format."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 2  # the bundle the user named: missing, partial or modified


class PartitionError(SplitpointError):
    """A model cannot be partitioned as asked."""

    exit_code = 2


class VerificationError(PartitionError):
    """A split's head+tail disagree with the float model more than allowed."""


class BackendUnavailableError(SplitpointError):
    """A runtime (LiteRT, TensorFlow, the Edge TPU delegate) is not installed or not usable."""

    status_code = grpc.StatusCode.UNAVAILABLE


class EdgeTpuUnavailableError(BackendUnavailableError):
    """The Edge TPU delegate could not be loaded (no libedgetpu, no device)."""


class ResultsWriteError(SplitpointError):
    """The results log cannot be written (ENOSPC, EIO, read-only...): fatal, the agent stops."""

    def __init__(self, path: Any, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"results log {path} cannot be written: {reason}")


class RequestError(SplitpointError):
    """A request the server refuses; carries the status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        self.status_code = code
        super().__init__(message)


#: how much of a peer's message is kept (records, logs): enough for any real error
PEER_TEXT_CHARS = 300


def peer_text(text: str, limit: int = PEER_TEXT_CHARS) -> str:
    """A message the other side sent (a gRPC status's details, an answer's error), made safe
    to log and record: characters that are not printable (newlines, terminal escapes, NUL,
    bidirectional overrides) escaped, so that it cannot forge log lines, and cut to `limit`
    characters, so that a server sending 4 MiB messages cannot fill the agent's disk through
    every fallback record (it did: 126 MB of results for 30 frames). The limit holds for what
    is returned: cut before escaping, 300 newlines came out as 600 characters."""
    size = len(text)
    text = text[:limit]  # before escaping: no work on the rest of a 4 MiB message
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    if size > limit or len(text) > limit:
        text = f"{text[:limit]}... ({size} characters)"
    return text


class RemoteError(SplitpointError):
    """A call to the server failed; `code` is the grpc.StatusCode it failed with. The message
    is the server's, so it passes through `peer_text`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code = code
        self.status_code = code
        self.details = peer_text(message)  # the server's words (escaped, cut short)
        super().__init__(f"{code.name}: {self.details}")

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> RemoteError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")

    @classmethod
    def from_status(cls, code: int, message: str) -> RemoteError:
        return cls(status_code_from_int(code), message)


_CODES_BY_INT = {c.value[0]: c for c in grpc.StatusCode}


def status_code_from_int(value: int) -> grpc.StatusCode:
    return _CODES_BY_INT.get(value, grpc.StatusCode.UNKNOWN)


def status_code_to_int(code: grpc.StatusCode) -> int:
    return int(code.value[0])
