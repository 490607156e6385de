"""RenewingChannel: the agent's channel built again when its TLS files change, the old one
closed only when its last call has ended. Real files, channels faked (no sockets)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_node.renewing_channel import RenewingChannel
from splitpoint.errors import ConfigError


class FakeChannel:
    def __init__(self, n: int):
        self.n, self.closed = n, 0

    def close(self) -> None:
        self.closed += 1


@dataclass
class FakeSecurity:
    """What RenewingChannel asks of ClientSecurity; `broken` makes the next build fail as a
    half-written set does."""

    tls_ca: str
    tls_cert: str
    tls_key: str
    insecure: bool = False
    token_file: str = ""
    broken: bool = False
    built: list[FakeChannel] = field(default_factory=list)

    def channel(self, target: str, options: list[tuple[str, Any]], token: Any = None) -> FakeChannel:
        if self.broken:
            raise ConfigError("tls_key", self.tls_key, "is not the private key of tls_cert")
        self.built.append(FakeChannel(len(self.built)))
        return self.built[-1]


@pytest.fixture
def files(tmp_path: Path) -> FakeSecurity:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("one")
    return FakeSecurity(*(str(tmp_path / n) for n in ("ca.pem", "client.pem", "client.key")))


def rewrite(path: str, text: str) -> None:
    Path(path).write_text(text)
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1_000_000))  # a new stamp even on a coarse clock


def test_unchanged_files_keep_one_channel(files: FakeSecurity) -> None:
    channels = RenewingChannel(files, "127.0.0.1:1", [])  # type: ignore[arg-type]
    for _ in range(3):
        channels.release(channels.acquire())
    assert len(files.built) == 1 and channels.renewals == 0


def test_a_call_open_on_the_old_channel_keeps_it_until_the_call_ends(files: FakeSecurity) -> None:
    channels = RenewingChannel(files, "127.0.0.1:1", [])  # type: ignore[arg-type]
    stream = channels.acquire()
    rewrite(files.tls_cert, "renewed")
    fresh = channels.acquire()
    assert fresh is not stream and channels.renewals == 1
    assert stream.closed == 0  # a stream still on it: not cancelled by the renewal
    channels.release(fresh)
    channels.release(stream)
    assert stream.closed == 1 and fresh.closed == 0  # closed with its last call, once
    channels.close()
    assert fresh.closed == 1 and stream.closed == 1


def test_an_idle_old_channel_is_closed_at_the_renewal(files: FakeSecurity) -> None:
    channels = RenewingChannel(files, "127.0.0.1:1", [])  # type: ignore[arg-type]
    channels.release(channels.acquire())
    rewrite(files.tls_key, "renewed")
    fresh = channels.acquire()
    assert files.built[0].closed == 1 and fresh is files.built[1]


def test_a_set_that_cannot_be_used_keeps_the_channel_and_is_tried_at_the_next_change(files: FakeSecurity) -> None:
    channels = RenewingChannel(files, "127.0.0.1:1", [])  # type: ignore[arg-type]
    files.broken = True
    rewrite(files.tls_cert, "half-written")
    first = channels.acquire()
    assert first is files.built[0] and channels.renewals == 0 and first.closed == 0
    channels.release(first)
    files.broken = False
    assert channels.acquire() is first  # no change since: not read again per call
    rewrite(files.tls_key, "its key")
    assert channels.acquire() is files.built[1] and channels.renewals == 1


def test_a_file_gone_for_a_moment_is_no_change(files: FakeSecurity) -> None:
    channels = RenewingChannel(files, "127.0.0.1:1", [])  # type: ignore[arg-type]
    os.unlink(files.tls_ca)
    assert channels.acquire() is files.built[0] and len(files.built) == 1


def test_release_after_close_is_harmless(files: FakeSecurity) -> None:
    channels = RenewingChannel(files, "127.0.0.1:1", [])  # type: ignore[arg-type]
    call = channels.acquire()
    channels.close()
    channels.release(call)  # a stream's end after the agent's close: no KeyError, no second close
    assert call.closed == 1
