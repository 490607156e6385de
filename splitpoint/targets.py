"""gRPC targets naming one server or several, and the channel options that balance over them.

Agents and `splitpoint loadtest` accept the same `cloud`/`--target` text:

    HOST:PORT                       one server
    IP:PORT,IP:PORT,...             several, balanced (becomes gRPC's ipv4:/ipv6: target, which
                                    takes addresses only: it does not resolve names)
    ipv4:A:P,B:P  ipv6:[A]:P,...    gRPC's own address-list targets
    dns:///NAME:PORT                every address NAME resolves to (a Kubernetes headless Service)

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


def parse_target(key: str, text: str) -> str:
    """The gRPC target for `text`; ConfigError naming `key` when it cannot be one."""
    text = text.strip()
    if not text:
        raise ConfigError(key, text, "give HOST:PORT, a comma-separated list of them, or dns:///NAME:PORT")
    if text.startswith(SCHEMES):
        rest = text.split(":", 1)[1]
        if text.startswith("dns:"):
            # dns:NAME:PORT, dns:///NAME:PORT or dns://SERVER/NAME:PORT. Without a port gRPC dials
            # 443, and an empty name only fails once every connection attempt has timed out.
            name = rest.rsplit("/", 1)[-1] if rest.startswith("//") else rest
            if not name.strip() or ":" not in name:
                raise ConfigError(key, text, "expected dns:///NAME:PORT, e.g. dns:///splitpoint-cloud:50051")
            parse_address(key, name, allow_zero_port=False)  # the port must be one
        elif not rest.strip(" /"):
            raise ConfigError(key, text, "names no address: give HOST:PORT or dns:///NAME:PORT")
        elif text.startswith(("ipv4:", "ipv6:")):
            _check_address_list(key, text, rest)
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    hosts = [parse_address(key, part, allow_zero_port=False)[0] for part in parts]
    if len(parts) == 1:
        return parts[0]
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # gRPC's address list does not resolve names: the channel would fail to build, every
            # frame would run locally and the agent would still exit 0
            raise ConfigError(key, text, f"{host!r} is a name, and a list of servers takes IP addresses (gRPC "
                                         "does not resolve names in one): list the servers' IP addresses, or give "
                                         "one name that resolves to every server as dns:///NAME:PORT") from None
    v6 = [p.startswith("[") for p in parts]
    if any(v6) and not all(v6):
        raise ConfigError(key, text, "mixes IPv4 and IPv6 addresses: give one kind, or a dns:/// name")
    return ("ipv6:" if all(v6) else "ipv4:") + ",".join(parts)


def _check_address_list(key: str, text: str, rest: str) -> None:
    """ConfigError unless every item of an ipv4:/ipv6: list is an address: `ipv4:A,ipv4:B` (the scheme
    given twice) or an empty item made gRPC refuse the channel ("Failed to create channel"), and the
    agent then ran every frame locally and exited 0."""
    scheme = text.split(":", 1)[0]
    for item in rest.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(key, text, f"has an empty item: give {scheme}:ADDRESS:PORT,ADDRESS:PORT")
        if item.startswith(SCHEMES):
            raise ConfigError(key, text, f"gives a scheme again ({item.split(':', 1)[0]}:): the list takes it once, "
                                         f"{scheme}:ADDRESS:PORT,ADDRESS:PORT")


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
