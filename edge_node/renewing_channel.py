"""The agent's channel, built again when its TLS files change: a drone's certificate renews
without a restart.

gRPC's Python channel credentials are fixed when a channel is built (servers have dynamic
credentials, splitpoint/server_certs.py; clients do not). So every new call - a stream, a
Describe, a probe - first asks `acquire()`, which costs a stat of tls_ca, tls_cert and tls_key:
when one changed and they still make a usable set (OpenSSL reads the CA and the certificate,
the key is its key), a new channel is built and every later call uses it. Calls already open
finish on the old channel, which is closed when its last call ends. A set written half-way, or
wrong, is never used: one warning per change, and the channel built before stays.

A connection keeps the certificate it was opened with: streams opened before the renewal carry
on until they are replaced (the agent replaces a stream every stream_lifetime_s, and after any
failure), each new stream opening a connection with the new files. A certificate that expired
before it was renewed fails its handshakes until then, and the stream that failed is the one
replaced: the frames in between run on the edge.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from splitpoint.cert_validity import log_validity
from splitpoint.errors import ConfigError
from splitpoint.files import FileChanges
from splitpoint.security import ClientSecurity
from splitpoint.tokens import TokenFile

log = logging.getLogger("splitpoint.security")


class RenewingChannel:
    """The channel new calls go on, and the older ones still carrying calls. The lock is a
    leaf: nothing is called under it but a stat and a channel's close."""

    def __init__(self, security: ClientSecurity, target: str, options: list[tuple[str, Any]]):
        self._security, self._target, self._options = security, target, options
        # one token file for every channel built: its rotation is read per call (tokens.py)
        self._token = TokenFile("token_file", security.token_file) if security.token_file else None
        tls = () if security.insecure else (security.tls_ca, security.tls_cert, security.tls_key)
        self._lock = threading.Lock()  # _changes, _current, _calls, _retired, _closed
        self._changes = FileChanges(*tls)
        self._current = self._build()  # a ConfigError now: the agent refuses to start
        self._calls: dict[grpc.Channel, int] = {self._current: 0}  # open calls per channel
        self._retired: set[grpc.Channel] = set()  # replaced, closed once their last call ends
        self._closed = False
        #: how many times the files were read again into a new channel (tests, logs)
        self.renewals = 0

    def _build(self) -> grpc.Channel:
        return self._security.channel(self._target, self._options, token=self._token)

    @property
    def current(self) -> grpc.Channel:
        with self._lock:
            return self._current

    def acquire(self) -> grpc.Channel:
        """The channel for a new call, the TLS files read again first if they changed; pair
        every acquire with one `release`."""
        idle: grpc.Channel | None = None
        with self._lock:
            if self._changes.changed() and not self._closed:
                idle = self._renew()
            self._calls[self._current] += 1
            channel = self._current
        if idle is not None:
            idle.close()
        return channel

    def _renew(self) -> grpc.Channel | None:
        """Under the lock: a channel on the files as they are now, or the old one kept. Returns
        the old channel when no call is on it, for the caller to close."""
        try:
            fresh = self._build()  # reads and checks the files (ClientSecurity.check_tls_files)
        except ConfigError as err:  # e.g. the certificate replaced, its key not yet
            log.warning("TLS files changed and cannot be used (%s): still using the ones read before", err)
            return None
        except Exception as err:  # noqa: BLE001 - the agent must keep its working channel
            log.warning("TLS files changed and cannot be read (%s): still using the ones read before", err)
            return None
        old, self._current = self._current, fresh
        self._calls[fresh] = 0
        self.renewals += 1
        log.info("TLS files read again: new connections to %s use %s", self._target,
                 self._security.tls_cert or self._security.tls_ca)
        log_validity({"tls_ca": self._security.tls_ca, "tls_cert": self._security.tls_cert})
        if self._calls[old] == 0:
            del self._calls[old]
            return old
        self._retired.add(old)
        return None

    def release(self, channel: grpc.Channel) -> None:
        """A call on `channel` ended: a replaced channel is closed with its last call."""
        with self._lock:
            if channel not in self._calls:  # closed already (close())
                return
            self._calls[channel] -= 1
            if channel not in self._retired or self._calls[channel] > 0:
                return
            self._retired.discard(channel)
            del self._calls[channel]
        channel.close()

    def close(self) -> None:
        """Close every channel (their calls are cancelled): the agent's end."""
        with self._lock:
            self._closed = True
            channels = list(self._calls)
            self._calls = {self._current: 0}
            self._retired.clear()
        for channel in channels:
            channel.close()
