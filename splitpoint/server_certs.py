"""The server's TLS files, read again when they change: certificates rotate without a restart.

gRPC asks `fetch()` before every new connection's handshake (grpc.dynamic_ssl_server_credentials);
it answers with the files as they are now when one of them changed and they still make a
usable set (OpenSSL reads the certificate, the key is its key, the client CA holds a
certificate), else None: keep what is served. So a renewed certificate (cert-manager renewing
a Kubernetes Secret, a new `splitpoint certs` run) is served to every connection made after
it - agents reconnect within max_connection_age_s - and a set written half-way, or wrong, is
never served: one warning per change, and the last good set stays.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from splitpoint.errors import ConfigError
from splitpoint.files import FileChanges, read_file
from splitpoint.security import check_ca, check_key_pair

log = logging.getLogger("splitpoint.security")


class ServerCertificates:
    """tls_cert + tls_key (+ tls_client_ca for mutual TLS) as served now. The lock is a leaf."""

    def __init__(self, cert: str, key: str, client_ca: str = ""):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()  # _changes, served_until (a leaf)
        self._changes = FileChanges(cert, key, client_ca)
        #: when each file served now ends, as Unix time ("tls_cert", and "tls_client_ca" for mutual
        #: TLS): the server's metrics export it, so that monitoring warns before clients are refused
        self.served_until: dict[str, float] = {}
        self.initial = self._read()  # a ConfigError now: the server refuses to start
        self._say_dates()

    def _read(self) -> Any:
        """The files as a gRPC certificate configuration, checked first (ConfigError naming one)."""
        check_key_pair("tls_cert", self.cert, "tls_key", self.key)
        if self.client_ca:
            check_ca("tls_client_ca", self.client_ca)
        pair = (read_file("tls_key", self.key), read_file("tls_cert", self.cert))
        ca = read_file("tls_client_ca", self.client_ca) if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> Any:
        """gRPC's question before a handshake: a new configuration, or None to keep the current one."""
        with self._lock:
            if not self._changes.changed():  # unchanged, or a file gone for a moment
                return None
        try:
            config = self._read()
        except ConfigError as err:  # e.g. the certificate replaced, its key not yet
            log.warning("TLS files changed and cannot be used (%s): still serving the certificate read before", err)
            return None
        except Exception as err:  # noqa: BLE001 - raised into gRPC's handshake, it would refuse the connection
            log.warning("TLS files changed and cannot be read (%s): still serving the certificate read before", err)
            return None
        log.info("TLS files read again: new connections get %s", self.cert)
        self._say_dates()
        return config

    def _say_dates(self) -> None:
        """Log a certificate ending soon (or ended), and note when each served file ends."""
        from splitpoint.cert_validity import log_validity, not_after

        files = {"tls_cert": self.cert, "tls_client_ca": self.client_ca}
        log_validity(files)
        until = {key: end.timestamp() for key, path in files.items()
                 if path and (end := not_after(path, ca=key == "tls_client_ca")) is not None}
        with self._lock:
            self.served_until = until

    def ends(self, key: str) -> float:
        """When the served file `key` ends (Unix time), NaN if unknown: the metrics' gauge."""
        with self._lock:
            return self.served_until.get(key, float("nan"))

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.initial, self.fetch,
                                                   require_client_authentication=bool(self.client_ca))
