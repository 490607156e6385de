"""`splitpoint certs`: a development CA and server/client certificates for (mutual) TLS.

For field use, issue certificates from your own PKI; these are for trying mTLS on
a bench. Keys are written with mode 0600 and never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from splitpoint.errors import BackendUnavailableError, ConfigError
from splitpoint.files import write_atomically

log = logging.getLogger(__name__)

VALID_DAYS = 365


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _crypto():  # type: ignore[no-untyped-def]
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise BackendUnavailableError("`splitpoint certs` needs the cryptography package: pip install cryptography") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write_key(path: Path, key: object) -> None:
    _, _, serialization, _, _, _ = _crypto()
    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Opening the old file with O_TRUNC would keep its mode (an old 0644 key stays
    # world-readable), and a chmod afterwards leaves a window: a new file made 0600 is renamed over it.
    write_atomically(path, data, private=True)


def _write_cert(path: Path, cert: object) -> None:
    _, _, serialization, _, _, _ = _crypto()
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]


#: a DNS label; a name may start with one wildcard label (*.example.com)
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _check_server_name(name: str) -> None:
    """An IP address or a DNS name, as a certificate's subject alternative name must be: a
    name written into the certificate that no client can dial only fails later, unnamed."""
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if not labels or not all(_LABEL.fullmatch(x) for x in labels) or labels[-1].isdigit():
        raise ConfigError("--server-name", name, "not an IP address or a DNS name (letters, digits and '-' between dots)")


def make_dev_certs(out_dir: Path, server_names: list[str], client_name: str = "splitpoint-edge", force: bool = False) -> CertPaths:
    """A CA, a server certificate valid for `server_names` (DNS names or IPs) and a client certificate."""
    x509, hashes, _, ec, EKU, NameOID = _crypto()
    paths = CertPaths(*(out_dir / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")))
    if not server_names:
        raise ConfigError("--server-name", server_names, "give at least one DNS name or IP address for the server")
    for n in server_names:
        _check_server_name(n)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("-o", str(out_dir), "is a file, not a directory")
    existing = [p for p in vars(paths).values() if p.exists()]
    if existing and not force:
        raise ConfigError("-o", str(out_dir), f"{existing[0].name} exists; use --force to replace the certificates")
    for p in existing:  # checked before any file is replaced: a half-replaced set would not verify
        if not p.is_file():
            raise ConfigError("-o", str(out_dir), f"{p.name} is not a file; --force replaces only files")
    out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> object:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "splitpoint dev")])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("splitpoint dev CA")).issuer_name(name("splitpoint dev CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, sans: list[str], usage: object) -> tuple[object, object]:
        key = ec.generate_private_key(ec.SECP256R1())
        alt = []
        for s in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                alt.append(x509.DNSName(s))
        cert = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    server, server_key = leaf(server_names[0], server_names, EKU.SERVER_AUTH)
    client, client_key = leaf(client_name, [client_name], EKU.CLIENT_AUTH)
    _write_cert(paths.ca_cert, ca)
    _write_key(paths.ca_key, ca_key)
    _write_cert(paths.server_cert, server)
    _write_key(paths.server_key, server_key)
    _write_cert(paths.client_cert, client)
    _write_key(paths.client_key, client_key)
    log.info("development CA and certificates written to %s", out_dir)
    return paths
