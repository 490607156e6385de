"""`splitpoint certs`: a development CA with server and drone certificates (splitpoint/certs.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_certs(args: argparse.Namespace) -> int:
    from splitpoint import certs
    from splitpoint.errors import ConfigError

    if not args.output.strip():  # Path("") is ".": the CA's key and every other file went into the cwd unasked
        raise ConfigError("--output", args.output, "give the directory to write (default ./certs)")
    names = None if args.server_name is None else [n.strip() for n in args.server_name.split(",") if n.strip()]
    out = Path(args.output)
    if args.clients is not None:
        return _client_certs(out, certs.parse_client_names(args.clients), names, args.force)
    names = list(certs.DEFAULT_SERVER_NAMES) if names is None else names
    paths = certs.make_dev_certs(out, names, force=args.force)
    print(f"development CA and certificates in {args.output} (server names: {', '.join(names)}):")
    for label, path in vars(paths).items():
        print(f"  {label:<12} {path}")
    print("server: --tls-cert server.pem --tls-key server.key [--tls-client-ca ca.pem for mutual TLS]")
    print("agent:  --tls-ca ca.pem [--tls-cert client.pem --tls-key client.key]")
    stale = sorted((out / certs.CLIENT_DIR).glob("*.pem"))
    if stale:  # a new CA: the drones' certificates the old one signed fail every handshake now
        print(f"note: {len(stale)} drone certificates in {out / certs.CLIENT_DIR} were signed by the CA this "
              "replaced and no longer verify: make them again with --clients")
    return 0


def _client_certs(out: Path, clients: list[str], server_names: list[str] | None, force: bool) -> int:
    from splitpoint.certs import CLIENT_DIR, DEFAULT_SERVER_NAMES, make_client_certs

    made = make_client_certs(out, clients, server_names, force=force)
    if made.server is None:
        print(f"reused the CA in {made.ca_cert}: certificates it signed before stay valid; "
              "server.pem and server.key left as they were")
    else:
        print(f"development CA and certificates in {out} "
              f"(server names: {', '.join(server_names or DEFAULT_SERVER_NAMES)}):")
        print(f"  ca_cert      {made.ca_cert}\n  ca_key       {made.ca_key}")
        print(f"  server_cert  {made.server[0]}\n  server_key   {made.server[1]}")
    n = len(made.clients)
    print(f"{n} drone certificate{'s' if n > 1 else ''} (common name = the drone's name) in {out / CLIENT_DIR}:")
    width = max(12, *map(len, made.clients))
    for name, (cert, key) in made.clients.items():
        print(f"  {name:<{width}} {cert}  {key}")
    print("server: --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem")
    print(f"drone NAME: --tls-ca ca.pem --tls-cert {CLIENT_DIR}/NAME.pem --tls-key {CLIENT_DIR}/NAME.key "
          "(its own: the server counts streams per certificate name)")
    print(f"loadtest: --tls-ca ca.pem --tls-client-dir {CLIENT_DIR}")
    return 0
