"""What a failed call to the server most likely means, in words a user can act on.

One table for `splitpoint doctor` (its cloud check) and the agent (its start-up warning and its
end-of-run line when no server answered): an agent whose token the server refuses should say
so, not "check that the server is running".
"""

from __future__ import annotations

#: (words in an UNAVAILABLE message, what they mean), first match wins
_UNAVAILABLE_HINTS = (
    # gRPC's resolver: "errors resolving HOST:PORT: ... Domain name not found" (c-ares), or "DNS resolution failed"
    (("domain name not found", "errors resolving", "dns resolution failed", "name or service not known"),
     "the server's host name does not resolve here: check the `cloud` address (a placeholder like server.example "
     "left from the example config?) and this host's DNS"),
    (("connection refused",), "nothing listens there: is `splitpoint cloud` running, on that port, and listening on "
                              "an address this host can reach (listen = \"0.0.0.0:PORT\", not 127.0.0.1)?"),
    (("wrong_version_number",), "the server speaks plaintext (it runs with insecure = true) while this side uses TLS: "
                                "give the server tls_cert/tls_key, or set insecure = true here for a bench test"),
    (("hostname verification", "hostname mismatch", "peer name"),
     "the server's certificate does not name the host dialled: set tls_server_name to a name the certificate "
     "holds, or reissue it for that host (splitpoint certs --server-name HOST)"),
    (("certificate has expired",),
     "the server's certificate has expired: renew it (docs/security.md, 'Renewing certificates'; the server "
     "serves a renewed one without a restart)"),
    (("certificate is not yet valid",),
     "the server's certificate is not valid yet by this clock: set the time (NTP), or check the certificate's dates"),
    (("bad_signature", "certificate verify failed", "certificate signature failure", "unable to get local issuer",
      "certificate_verify_failed"),
     "the server's certificate is not signed by tls_ca: give the CA that issued it"),
    (("socket closed", "connection reset"),
     "the server hung up during the handshake: it expects TLS while this side is plaintext, or mutual TLS while this "
     "side has no tls_cert/tls_key (or ones its tls_client_ca did not sign, or that have expired: doctor shows "
     "their dates)"),
    (("ssl", "tls", "handshake", "certificate"),
     "TLS failed: check tls_ca, tls_server_name and, for mutual TLS, tls_cert/tls_key against the server's settings"),
    (("no route", "unreachable", "name resolution", "dns", "timed out", "timeout"),
     "the host cannot be reached: check the address, DNS, routing and firewalls"),
)

_REMOTE_HINTS = {
    "UNAVAILABLE": "cannot reach the server: is `splitpoint cloud` running there, the port open in its firewall, "
                   "and TLS set on both sides or on neither?",
    "DEADLINE_EXCEEDED": "no answer in time: the server is down, overloaded, or a firewall drops the packets",
    "UNAUTHENTICATED": "the server refused the token: token_file must hold the token the server expects",
    "PERMISSION_DENIED": "the server refused this client",
    # gRPC's answer for a service or method the server does not have
    "UNIMPLEMENTED": "the server there does not serve splitpoint.v1.Offload: another service on that address, or a "
                     "splitpoint server of another protocol version (run the same splitpoint version on both sides)",
}


#: (words in a RESOURCE_EXHAUSTED message, what they mean), first match wins
_EXHAUSTED_HINTS = (
    (("max_streams_per_agent",),
     "every agent presenting this client certificate (or agent_name) is one agent to the server: give each drone "
     "its own certificate (splitpoint certs --clients NAME), or raise the server's max_streams_per_agent"),
)


def remote_hint(err: Exception) -> str:
    """What a failed call's status (and, for UNAVAILABLE and RESOURCE_EXHAUSTED, its words) most
    likely means, and what to set: "" when nothing specific is known."""
    code = getattr(getattr(err, "code", None), "name", "")
    if code == "RESOURCE_EXHAUSTED":
        text = str(err)
        return next((hint for words, hint in _EXHAUSTED_HINTS if any(w in text for w in words)), "")
    if code == "UNAVAILABLE":
        text = str(err).lower()
        for words, hint in _UNAVAILABLE_HINTS:
            if any(w in text for w in words):
                return hint
    return _REMOTE_HINTS.get(code, "")


def is_refusal(err: Exception) -> bool:
    """The server was reached and refused this client (its token, or its permissions): not a
    server that is down, and not fixed by waiting."""
    return getattr(getattr(err, "code", None), "name", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED")
