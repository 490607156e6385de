"""gRPC targets naming one server or several, and the channel options that balance over them.

Agents and `splitpoint loadtest` accept the same `cloud`/`--target` text:

    HOST:PORT                       one server
    IP:PORT,IP:PORT,...             several, balanced (becomes gRPC's ipv4:/ipv6: target, which
                                    takes addresses only: it does not resolve names)
    ipv4:A:P,B:P  ipv6:[A]:P,...    gRPC's own address-list targets
    dns:///NAME:PORT                every address NAME resolves to (a Kubernetes headless Service);
                                    one name (dns:NAME:PORT too), by the system's resolver

A list names each server once, with no empty item. Refused: dns://SERVER/NAME:PORT (gRPC's
resolver here takes no DNS server: it failed every stream) and unix: (servers listen on HOST:PORT).

Streams are spread with gRPC's `round_robin` policy over every address, and client-side
health checking (grpc.health.v1, service "") keeps a replica that is not SERVING (one
draining after SIGTERM) out of the rotation: new streams go to the others at once.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from splitpoint.config import parse_address
from splitpoint.errors import ConfigError

SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:")
#: the forms a target may take, for the messages that refuse one
FORMS = "HOST:PORT, a comma-separated list of IP:PORT, or dns:///NAME:PORT"


def parse_target(key: str, text: str) -> str:
    """The gRPC target for `text`; ConfigError naming `key`, quoting `text` as written, when it cannot be one."""
    written, text = text, text.strip()
    if not text:
        raise ConfigError(key, written, f"give {FORMS}")
    if text.startswith("unix:"):
        # splitpoint cloud listens on HOST:PORT only; gRPC took the socket path and then failed every stream
        raise ConfigError(key, written, f"a Unix socket is no server splitpoint can reach (servers listen on HOST:PORT): "
                                        f"give {FORMS}")
    if text.startswith("dns:"):
        _check_dns(key, written, text[len("dns:"):])
        return text
    if text.startswith(("ipv4:", "ipv6:")):
        scheme, rest = text.split(":", 1)
        if not rest.strip(" /"):
            raise ConfigError(key, written, f"names no address: give {FORMS}")
        _check_list(key, written, [p.strip() for p in rest.split(",")], scheme)
        return text
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        _address(key, written, parts[0])
        return parts[0]
    v6 = _check_list(key, written, parts, "")
    return ("ipv6:" if v6 else "ipv4:") + ",".join(parts)


def may_be_several(target: str) -> bool:
    """Whether a parsed target (parse_target's) may reach several servers: a list, or a dns: name
    (a headless Service resolves to every replica). One HOST:PORT is one server."""
    return target.startswith("dns:") or (target.startswith(("ipv4:", "ipv6:")) and "," in target)


def _check_dns(key: str, written: str, rest: str) -> None:
    """dns:NAME:PORT or dns:///NAME:PORT (`rest`: what follows dns:). Without a port gRPC dials 443,
    an empty name only fails once every connection attempt has timed out, and a DNS server
    (dns://8.8.8.8/NAME:PORT) passed, then failed every stream ("Cannot parse authority")."""
    example = "e.g. dns:///splitpoint-cloud:50051"
    name = rest
    if rest.startswith("//"):
        authority, _, name = rest[2:].partition("/")
        if authority:
            raise ConfigError(key, written, f"names a DNS server ({authority}), which gRPC's resolver here cannot "
                                            f"use: give dns:///NAME:PORT (the system's resolver), {example}")
    if "," in name:
        raise ConfigError(key, written, "dns:/// takes one NAME:PORT, which gRPC resolves to every server: for "
                                        "several servers give their IP addresses without it, IP:PORT,IP:PORT")
    host, _, port = name.strip().rpartition(":")
    if not host.strip() or not port.strip():
        raise ConfigError(key, written, f"expected dns:///NAME:PORT, {example}")
    _address(key, written, name.strip())  # the port must be one


def _address(key: str, written: str, item: str) -> tuple[str, int]:
    """parse_address of one `item` of `written`, its errors quoting `written` and naming `item`."""
    try:
        return parse_address(key, item, allow_zero_port=False)
    except ConfigError as err:
        named = "" if item == written.strip() else f"{item}: "
        raise ConfigError(key, written, named + err.reason) from None


def _check_list(key: str, written: str, items: list[str], scheme: str) -> bool:
    """ConfigError unless every item of a list of servers (`scheme`: ipv4, ipv6, or "" as written
    without) is an IP address and port, each server once and of one kind; whether they are IPv6.

    An empty item or the scheme given twice (ipv4:A,ipv4:B) made gRPC refuse the channel, and the
    agent then ran every frame locally and exited 0; a name fails the same way (gRPC's address list
    does not resolve names); a server listed twice was taken and got twice the streams."""
    form = f"{scheme}:ADDRESS:PORT,ADDRESS:PORT" if scheme else "IP:PORT,IP:PORT"
    seen: dict[tuple[str, int], str] = {}
    kinds: set[int] = set()
    if "" in items:
        raise ConfigError(key, written, f"has an empty item (a comma too many): give {form}")
    for item in items:
        if item.startswith(SCHEMES):
            raise ConfigError(key, written, f"gives a scheme again ({item.split(':', 1)[0]}:): the list takes it once, "
                                            f"{form}")
        host, port = _address(key, written, item)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(key, written, f"{host!r} is a name, and a list of servers takes IP addresses (gRPC "
                                            "does not resolve names in one): list the servers' IP addresses, or give "
                                            "one name that resolves to every server as dns:///NAME:PORT") from None
        first = seen.get((str(ip), port))
        if first is not None:
            both = "" if first == item else f" (as {first} and {item})"
            raise ConfigError(key, written, f"lists the server {first} twice{both}: list each server once (one "
                                            "listed twice gets twice the streams)")
        seen[(str(ip), port)] = item
        kinds.add(ip.version)
        if scheme and f"ipv{ip.version}" != scheme:
            raise ConfigError(key, written, f"{item} is not an IPv{scheme[-1]} address, as {scheme}: takes")
    if len(kinds) > 1:
        raise ConfigError(key, written, "mixes IPv4 and IPv6 addresses: give one kind, or a dns:/// name")
    return kinds == {6}


def check_tls_name(key: str, text: str, tls: bool, server_name: str) -> None:
    """Over TLS, a list of addresses needs `tls_server_name` (ConfigError naming `key`).

    gRPC verifies one name for every address of a channel; for an address list (ipv4:A,B) it is
    the whole list, which no certificate holds: every handshake failed ("Hostname Verification
    Check failed") and every frame ran locally. One address, or a dns:/// name, is verified as
    written."""
    if not tls or server_name:
        return
    target = parse_target(key, text)
    if target.startswith(("ipv4:", "ipv6:")) and "," in target:
        raise ConfigError(key, text, "lists several servers, and over TLS gRPC verifies one name for all of them: "
                                     "set tls_server_name to a name every server's certificate holds (splitpoint "
                                     "certs --server-name NAME,...), or give one name that resolves to every "
                                     "server as dns:///NAME:PORT")


def balanced_options(max_message_bytes: int, own_connection: bool = False) -> list[tuple[str, Any]]:
    """round_robin with client-side health checking; `own_connection` keeps gRPC from sharing
    one connection among channels of this process to the same target (emulated fleets)."""
    service_config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options
