"""Transport security for both sides: TLS, mutual TLS, and a bearer token.

- Server: a certificate and key (TLS); with a client CA as well, clients must show a
  certificate it signed (mTLS). A token file makes every call carry
  `authorization: Bearer <token>`; calls without it end with UNAUTHENTICATED.
  The health service stays open so load balancers can probe it.
- Client: the CA that signed the server's certificate, optionally its own
  certificate and key (mTLS), and the token file.
- Plaintext only when asked with `insecure`; the server warns loudly when it runs so. An
  agent whose policy runs every frame on the edge (and does not `require_cloud`) contacts no
  server and need not choose either: it builds no channel (edge_node/config.py).
  A bearer token over plaintext can be read (and replayed) by anyone on the path, so
  `insecure` with a `token_file` is refused on both sides unless `allow_plaintext_token`
  says so too, and then each side warns loudly.

Tokens and keys are read from files, compared in constant time, and never logged.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from splitpoint.errors import ConfigError
from splitpoint.files import read_file
from splitpoint.ratelimited_log import RefusalLog, client_of
from splitpoint.tokens import TokenFile, read_token, read_tokens

if TYPE_CHECKING:
    from splitpoint.server_certs import ServerCertificates

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token"


def check_key_pair(cert_key: str, cert: str, key_key: str, key: str) -> None:
    """A certificate and its private key, as gRPC will need them: PEM, and the key the
    certificate's. gRPC itself says only 'Failed to bind' (server) or fails every handshake
    (client) - after the tails have loaded - so the files are read here first, by OpenSSL."""
    if b"-----BEGIN CERTIFICATE-----" not in read_file(cert_key, cert):
        raise ConfigError(cert_key, cert, "not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:  # read alone, so that a broken certificate is not blamed on its key
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise ConfigError(cert_key, cert, f"OpenSSL cannot read the certificate in it ({exc})") from None
    if b"PRIVATE KEY-----" not in read_file(key_key, key):
        raise ConfigError(key_key, key, "not a PEM private key (no BEGIN ... PRIVATE KEY block)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:  # a password callback: an encrypted key fails here instead of prompting on the terminal
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(key_key, key, f"is not the private key of {cert_key} {cert}") from None
        raise ConfigError(key_key, key, f"OpenSSL cannot use it with {cert_key} {cert} (an encrypted key? "
                                        f"gRPC needs it unencrypted): {exc}") from None


def check_ca(key: str, path: str) -> None:
    """A CA file: at least one PEM certificate (OpenSSL reads it as gRPC will), one of them a CA."""
    data = read_file(key, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError(key, path, "holds no PEM certificate; a CA certificate is needed here") from None
    if not _holds_a_ca(data):  # OpenSSL takes a leaf as a trust anchor, then verifies no peer against it
        raise ConfigError(key, path, "holds no CA certificate (basicConstraints CA:TRUE), only leaf certificates: "
                                     "give the CA that signed the peers' certificates (ca.pem of `splitpoint certs`)")


def _holds_a_ca(pem: bytes) -> bool:
    """Whether any certificate in `pem` can be a trust anchor: basicConstraints CA:TRUE, or a
    self-signed certificate whatever its extension says (a v1 root; or the peer's own self-signed
    certificate, pinned: OpenSSL verifies a peer against it). A leaf signed by another CA, given as
    tls_client_ca, was accepted and every client then refused without a word (docs/security.md)."""
    # a core dependency (`splitpoint certs`); imported here, only when TLS is used
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return True  # a certificate OpenSSL reads but cryptography does not: gRPC (OpenSSL) is the judge
    for cert in certs:
        if cert.issuer == cert.subject:
            return True
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return True
        except x509.ExtensionNotFound:
            pass
        except ValueError:  # a malformed extension: as above, not ours to refuse
            return True
    return False


def _check_pair(cert: str, key: str) -> None:
    if bool(cert) != bool(key):
        raise ConfigError("tls_key" if cert else "tls_cert", "", "tls_cert and tls_key go together")


def _check_mode(tls_key: str, tls_value: str, insecure: bool, missing: str) -> None:
    """TLS or plaintext, explicitly: exactly one of `tls_key` and `insecure` must be set."""
    if not tls_value and not insecure:
        raise ConfigError("insecure", False, missing)
    if tls_value and insecure:
        raise ConfigError("insecure", True, f"cannot be combined with {tls_key}: choose TLS or plaintext")


def _check_plaintext_token(insecure: bool, token_file: str, allowed: bool, side: str) -> None:
    """`insecure` + `token_file` is a ConfigError unless `allow_plaintext_token`; a loud WARNING if allowed."""
    if not (insecure and token_file):
        return
    if not allowed:
        raise ConfigError("token_file", token_file,
                          f"with insecure = true the bearer token would be {side} in plaintext, readable and "
                          "replayable by anyone on the network: use TLS (tls_cert/tls_key on the server, tls_ca on "
                          "the agent) instead of insecure, or set allow_plaintext_token = true "
                          "(--allow-plaintext-token) on a trusted bench")


def _warn_plaintext_token(side: str) -> None:
    log.warning("*** PLAINTEXT TOKEN: the bearer token is %s without TLS (insecure and allow_plaintext_token "
                "are set): anyone on the network can read it and use it. Development only. ***", side)


@dataclass(frozen=True)
class ServerSecurity:
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    token_file: str = ""
    insecure: bool = False
    allow_plaintext_token: bool = False

    def validate(self) -> None:
        _check_pair(self.tls_cert, self.tls_key)
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("tls_client_ca", self.tls_client_ca, "mutual TLS needs tls_cert and tls_key too")
        _check_mode("tls_cert", self.tls_cert, self.insecure,
                    "no TLS certificate: give tls_cert and tls_key (`splitpoint certs` makes development ones), "
                    "or --insecure to serve plaintext (development only)")
        _check_plaintext_token(self.insecure, self.token_file, self.allow_plaintext_token, "accepted")

    @property
    def mode(self) -> str:
        if self.insecure:
            return "PLAINTEXT"
        return "mutual TLS" if self.tls_client_ca else "TLS"

    def check_files(self) -> None:
        """Every file named is there and usable (ConfigError naming it): before the tails load."""
        if self.tls_cert:
            check_key_pair("tls_cert", self.tls_cert, "tls_key", self.tls_key)
        if self.tls_client_ca:
            check_ca("tls_client_ca", self.tls_client_ca)
        if self.token_file:
            read_tokens("token_file", self.token_file)

    def certificates(self) -> ServerCertificates | None:
        """The TLS files as served (None: plaintext), checked as check_files does and read again
        when they change: a renewed certificate is served without a restart."""
        if self.insecure:
            return None
        from splitpoint.server_certs import ServerCertificates

        return ServerCertificates(self.tls_cert, self.tls_key, self.tls_client_ca)

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        if not self.token_file:
            return []
        _check_plaintext_token(self.insecure, self.token_file, self.allow_plaintext_token, "accepted")
        if self.insecure:
            _warn_plaintext_token("accepted")
        return [TokenAuthInterceptor(TokenFile("token_file", self.token_file))]


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Every RPC but health checks must carry `authorization: Bearer <token>`.

    Refusals are logged through a RefusalLog: one line per client per interval, with a count.
    """

    def __init__(self, tokens: TokenFile, refusals: RefusalLog | None = None):
        self._tokens = tokens  # every line of the file is accepted; read again when it changes
        self.refusals = refusals or RefusalLog(log)

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        got = next((v for k, v in (details.invocation_metadata or ()) if k == "authorization"), "")
        got = got.encode() if isinstance(got, str) else got
        # every token compared (constant time each), so the time taken says nothing of which matched
        if sum(hmac.compare_digest(got, f"Bearer {t}".encode()) for t in self._tokens.tokens()):
            return handler
        return _refusing(handler, details.method, self.refusals)


def _refusing(handler: Any, method: str, refusals: RefusalLog) -> Any:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED."""

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        # logged here, not in the interceptor: only the call's context knows the peer
        refusals.note(client_of(context.peer()), f"{method}: {UNAUTHENTICATED_MESSAGE}")
        context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


@dataclass(frozen=True)
class ClientSecurity:
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""
    token_file: str = ""
    insecure: bool = False
    allow_plaintext_token: bool = False

    def validate(self, talks: bool = True) -> None:
        """`talks` False: the caller may never contact a server (an agent running every frame on
        the edge), so TLS or plaintext need not be chosen yet; it calls `check_mode` once it
        knows it will (edge_node/config.py, `EdgeConfig.check_transport`)."""
        _check_pair(self.tls_cert, self.tls_key)
        if talks or self.chosen:  # both chosen is a contradiction whether or not a server is contacted
            self.check_mode()
        _check_plaintext_token(self.insecure, self.token_file, self.allow_plaintext_token, "sent")

    @property
    def chosen(self) -> bool:
        """TLS (tls_ca) or plaintext (insecure) was asked for: a channel can be built."""
        return bool(self.tls_ca) or self.insecure

    def check_mode(self) -> None:
        """Exactly one of TLS and plaintext, explicitly: a ConfigError naming what to set."""
        _check_mode("tls_ca", self.tls_ca, self.insecure,
                    "no tls_ca to verify the server with: give tls_ca (and tls_cert/tls_key for mutual TLS), "
                    "or --insecure to talk plaintext (development only)")

    def check_files(self) -> None:
        """Every file named is there and usable (ConfigError naming it): a bad CA otherwise fails
        every handshake, unnamed, until the run gives up."""
        self.check_tls_files()
        if self.token_file:
            read_token("token_file", self.token_file)

    def check_tls_files(self) -> None:
        if self.tls_ca:
            check_ca("tls_ca", self.tls_ca)
        if self.tls_cert:
            check_key_pair("tls_cert", self.tls_cert, "tls_key", self.tls_key)

    def channel(self, address: str, options: list[tuple[str, Any]], token: TokenFile | None = None) -> grpc.Channel:
        """A channel to `address` with the TLS files as they are now; `token` the token file
        already read (edge_node/renewing_channel.py builds a channel again with the same one),
        else token_file is read here."""
        # checked here too: a caller that skipped validate() must not leak the token either
        _check_plaintext_token(self.insecure, self.token_file, self.allow_plaintext_token, "sent")
        if self.insecure and self.token_file:
            _warn_plaintext_token("sent")
        if self.insecure:
            channel = grpc.insecure_channel(address, options=options)
        else:
            self.check_tls_files()
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_file("tls_ca", self.tls_ca),
                private_key=read_file("tls_key", self.tls_key) if self.tls_key else None,
                certificate_chain=read_file("tls_cert", self.tls_cert) if self.tls_cert else None,
            )
            if self.tls_server_name:
                options = [*options, ("grpc.ssl_target_name_override", self.tls_server_name)]
            channel = grpc.secure_channel(address, creds, options=options)
        if self.token_file:
            channel = grpc.intercept_channel(channel, _BearerToken(token or TokenFile("token_file", self.token_file)))
        return channel


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the token to every call (over TLS; over plaintext only with allow_plaintext_token)."""

    def __init__(self, token: TokenFile):
        self._token = token  # its first line; read again when the file changes (a rotation)

    def _with_token(self, details: Any) -> Any:
        metadata = list(details.metadata or []) + [("authorization", f"Bearer {self._token.first()}")]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._with_token(details), request_iterator)

    def __repr__(self) -> str:  # never show the token
        return "_BearerToken(****)"


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any
