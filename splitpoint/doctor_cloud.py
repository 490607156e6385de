"""The doctor's cloud check (`splitpoint doctor`): the client the agent would make, from the
same config keys, and what the server says to it: reachable, its model's digest against the
local bundle's, the transport, and clock skew against the server (when it reports its clock).
A failed TLS handshake or call gets a hint (splitpoint/remote_hints.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable
from typing import Any

from splitpoint.bundle import split_ranges
from splitpoint.doctor_checks import Check, _plain
from splitpoint.remote_hints import remote_hint

MAX_SKEW_S = 2.0
CLOUD_TIMEOUT_S = 5.0
#: the edge config keys that decide how the agent talks to the server (passed to the client factory)
TRANSPORT_KEYS = ("tls_ca", "tls_cert", "tls_key", "tls_server_name", "token_file", "insecure", "allow_plaintext_token")
_BOOL_KEYS = ("insecure", "allow_plaintext_token")


def replica_targets(cloud: str) -> list[str]:
    """The targets the doctor checks for a `cloud` text, read as the agent reads it
    (splitpoint/targets.py): each server of a list on its own, since the agent balances over
    them all and each must answer (read as one HOST:PORT, a list was a FAIL); one target for a
    single server or a dns:/// name (gRPC resolves it: its replicas cannot be listed here).
    ConfigError naming `cloud` when the text is no target."""
    from splitpoint.targets import SCHEMES, parse_target

    scheme, _, rest = parse_target("cloud", cloud).partition(":")
    if scheme not in ("ipv4", "ipv6") or "," not in rest:
        return [cloud.strip()]
    given = cloud.strip().startswith(SCHEMES)  # ipv4:A,B stays gRPC's form; A,B is shown as written
    return [f"{scheme}:{part}" if given else part for part in rest.split(",")]


def client_factories(cloud: str, transport: dict[str, Any] | None = None,
                     timeout_s: float = CLOUD_TIMEOUT_S) -> tuple[list[Callable[[], Any]], str]:
    """`client_factory` for each of `replica_targets(cloud)`. When the text is no target, or the
    settings fail for every replica alike (a missing CA file, a list over TLS without
    tls_server_name), one factory for the whole text, whose call raises it: one FAIL line."""
    whole, kind = client_factory(cloud, transport, timeout_s)
    try:
        targets = replica_targets(cloud)
        _security(cloud, _keys(transport), fleet=cloud)
    except Exception:  # noqa: BLE001 - raised again by whole(), reported by check_cloud
        return [whole], kind
    return [client_factory(t, transport, timeout_s, fleet=cloud)[0] for t in targets], kind


def _keys(transport: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (transport or {}).items() if k in TRANSPORT_KEYS}


def _security(address: str, keys: dict[str, Any], fleet: str = "") -> Any:
    """The agent's ClientSecurity from the transport keys, checked as the agent checks it."""
    from splitpoint.security import ClientSecurity
    from splitpoint.targets import check_tls_name, parse_target

    parse_target("cloud", address)  # as the agent reads `cloud`: HOST:PORT, a list, dns:///NAME:PORT
    text = {k: str(keys.get(k) or "") for k in TRANSPORT_KEYS if k not in _BOOL_KEYS}
    security = ClientSecurity(
        tls_ca=text["tls_ca"], tls_cert=text["tls_cert"], tls_key=text["tls_key"],
        tls_server_name=text["tls_server_name"], token_file=text["token_file"],
        insecure=bool(keys.get("insecure")), allow_plaintext_token=bool(keys.get("allow_plaintext_token")),
    )
    security.validate()
    check_tls_name("cloud", fleet or address, bool(text["tls_ca"]), text["tls_server_name"])
    return security


def client_factory(address: str, transport: dict[str, Any] | None = None,
                   timeout_s: float = CLOUD_TIMEOUT_S, fleet: str = "") -> tuple[Callable[[], Any], str]:
    """(a function making the OffloadClient the agent would make, how it talks: "TLS", "plaintext", ...).

    The one place that turns config keys into a client: OffloadClient(address,
    timeout_s=5, security=ClientSecurity(...)). `transport` holds the TLS/token keys
    (TRANSPORT_KEYS); like the agent, the client talks plaintext only with insecure.
    `fleet`: the whole `cloud` text `address` is one replica of, whose TLS name is checked as
    the agent checks it (a list over TLS needs tls_server_name). Errors (a bad address, TLS
    keys that contradict, missing certificate or token files) surface when the function is
    called, so `check_cloud` reports them as a FAIL line.
    """
    keys = _keys(transport)
    kind = "plaintext" if keys.get("insecure") else "mutual TLS" if keys.get("tls_cert") else "TLS"
    if keys.get("token_file"):
        kind += " with a bearer token"

    def make() -> Any:
        from edge_node.client import OffloadClient

        return OffloadClient(address, timeout_s=timeout_s, security=_security(address, keys, fleet))

    return make, kind


def _is_loopback(address: str) -> bool:
    """Whether every server `address` names (HOST:PORT, a list, ipv4:/ipv6:/dns: forms) is this host."""
    from splitpoint.targets import parse_target

    try:
        target = parse_target("cloud", address)
    except Exception:
        return False
    if target.startswith(("ipv4:", "ipv6:", "dns:")):
        target = target.split(":", 1)[1]
    for item in target.split(","):
        host = item.strip().rpartition(":")[0].rpartition("/")[2].strip("[]")  # dns:///NAME:PORT: the name
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def check_cloud(make_client: Callable[[], Any], bundle: tuple[str, list[int]] | None, transport: str = "",
                replica: bool = False) -> list[Check]:
    """Describe and Probe the server: reachable, which model, same bundle as here (`bundle`: the
    local one's digest and the splits it may send), clock skew.

    `transport` names how the client talks ("TLS", "mutual TLS", "plaintext") for the report;
    `replica`: the server is one of a list, named on each line (replicas may differ in bundle and clock).
    """
    from splitpoint.errors import RemoteError

    try:
        client = make_client()
    except Exception as exc:  # bad TLS files, a missing token file, a malformed address
        return [Check("FAIL", "cloud", f"cannot set up the connection: {_plain(exc)}")]
    address = getattr(client, "address", "the server")
    try:
        info = client.describe()
        t0 = time.time_ns()
        rtt_ms, probe = client.probe(0, 0)
        t1 = time.time_ns()
    except RemoteError as err:
        hint = remote_hint(err)
        return [Check("FAIL", "cloud", f"{address}: {_plain(err)}" + (f" -- {hint}" if hint else ""))]
    except Exception as exc:
        return [Check("FAIL", "cloud", f"{address}: the call failed ({type(exc).__name__}: {_plain(exc)})")]
    finally:
        with contextlib.suppress(Exception):
            client.close()
    via = f" over {transport}" if transport else ""
    out = [Check("ok", "cloud", f"{address} serves {info.model_name}{via}; round trip {rtt_ms:.1f} ms")]
    named = f"{address}: " if replica else ""
    if transport == "plaintext" and not _is_loopback(address):
        out.append(Check("warn", "cloud transport",
                         "plaintext to a non-loopback address: anyone on the path can read and alter frames; "
                         "set tls_ca (see docs/security.md)"))
    if bundle is not None:
        digest, splits = bundle
        served = {s.split for s in info.splits}
        missing = [k for k in splits if k not in served]
        same = info.model_digest == digest and not missing
        out.append(Check("ok" if same else "FAIL", "cloud bundle", named + (
            "same model digest as the local bundle" if same else
            f"server runs {info.model_digest[:23]}..., local bundle is {digest[:23]}...: deploy the same bundle to both"
            if info.model_digest != digest else
            # the same model partitioned with other --splits: frames at these splits are refused there
            f"the same model, but the server has no tail for split(s) {split_ranges(missing)} of the local bundle "
            f"(it serves {split_ranges(served)[:200]}): serve them (a bundle partitioned with them, `cloud --splits` "
            "naming them), or leave them out of this agent's splits")))
    server_ns = int(getattr(probe, "server_unix_ns", 0) or 0)  # servers before this field answer 0
    if server_ns:
        skew = (server_ns - (t0 + t1) / 2) / 1e9
        ok = abs(skew) < MAX_SKEW_S
        out.append(Check("ok" if ok else "warn", "clock skew",
                         f"{named}{skew:+.3f} s against the server (±{(t1 - t0) / 2e6:.1f} ms)"
                         + ("" if ok else ": timestamps in the results log and the server's logs will disagree; "
                                          "run NTP (systemd-timesyncd or chrony) on both")))
    else:
        out.append(Check("skip", "clock skew", f"{named}the server does not report its clock (an older splitpoint)"))
    return out
