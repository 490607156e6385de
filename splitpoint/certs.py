"""`splitpoint certs`: a development CA and server/client certificates for (mutual) TLS.

For field use, issue certificates from your own PKI; these are for trying mTLS on
a bench. Keys are written with mode 0600 and never logged.

Under mutual TLS the server knows an agent by its client certificate's common name and
counts streams and queued frames per name (cloud_server/admission.py), so a fleet needs a
certificate per drone: `--clients NAMES` writes `clients/NAME.pem` and `clients/NAME.key`
(CN = NAME). An output directory that already holds a CA keeps it and only adds the
drones' certificates, so those already deployed (and the server's) stay valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitpoint.errors import BackendUnavailableError, ConfigError
from splitpoint.files import write_all_atomically

log = logging.getLogger(__name__)

VALID_DAYS = 365
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
#: per-drone certificates, beside the CA: NAME.pem and NAME.key
CLIENT_DIR = "clients"


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class ClientCerts:
    """What `make_client_certs` wrote: `server` is None when an existing CA was reused (its
    server certificate is then left as it was)."""

    ca_cert: Path
    ca_key: Path
    server: tuple[Path, Path] | None
    clients: dict[str, tuple[Path, Path]]  # name -> (certificate, key)

    @property
    def reused_ca(self) -> bool:
        return self.server is None


def _crypto():  # type: ignore[no-untyped-def]
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise BackendUnavailableError("`splitpoint certs` needs the cryptography package: pip install cryptography") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _key_file(path: Path, key: object) -> tuple[Path, bytes, bool]:
    """(path, PEM bytes, private) for write_all_atomically. Opening the old file with O_TRUNC
    would keep its mode (an old 0644 key stays world-readable), and a chmod afterwards leaves a
    window: a new file made 0600 is renamed over it."""
    _, _, serialization, _, _, _ = _crypto()
    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return path, data, True


def _cert_file(path: Path, cert: object) -> tuple[Path, bytes, bool]:
    _, _, serialization, _, _, _ = _crypto()
    return path, cert.public_bytes(serialization.Encoding.PEM), False  # type: ignore[attr-defined]


#: a DNS label; a name may start with one wildcard label (*.example.com)
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: a drone's name is a file name and a common name (at most 64 characters, RFC 5280): nothing
#: a shell, a path or a log line would read as something else, and no leading '.' or '-'
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


def parse_client_names(text: str) -> list[str]:
    """`--clients drone-01,drone-02`: the names, each checked; the first bad one is named."""
    names = [n.strip() for n in text.split(",")]
    seen: dict[str, str] = {}  # lower case -> as given: drone-A and drone-a are one file on macOS
    for n in names:
        if not n:
            raise ConfigError("--clients", text, "an empty name: give drone names separated by single commas")
        if not _CLIENT_NAME.fullmatch(n):
            raise ConfigError("--clients", n, "not a drone name: 1-64 letters, digits, '.', '_' or '-', starting "
                                              "with a letter or digit (it names its files and is its certificate's "
                                              "common name)")
        if n.lower() in seen:
            twin = seen[n.lower()]
            raise ConfigError("--clients", n, "given twice" if twin == n else
                              f"differs from {twin} only in case: one file on some file systems, and hard to tell apart")
        seen[n.lower()] = n
    return names


class _Issuer:
    """A CA certificate and its key, signing leaves valid for VALID_DAYS from now."""

    def __init__(self, ca: Any, key: Any):
        self.ca, self.key = ca, key
        self.now = dt.datetime.now(dt.UTC)

    @staticmethod
    def name(cn: str) -> Any:
        x509, _, _, _, _, NameOID = _crypto()
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "splitpoint dev")])

    @classmethod
    def new(cls) -> _Issuer:
        x509, hashes, _, ec, _, _ = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca = (
            x509.CertificateBuilder().subject_name(cls.name("splitpoint dev CA")).issuer_name(cls.name("splitpoint dev CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(ca, key)

    @classmethod
    def load(cls, out_dir: Path) -> _Issuer:
        """The CA in `out_dir`, which must be whole: a CA certificate and its own key."""
        x509, _, serialization, _, _, _ = _crypto()
        cert_path, key_path = out_dir / "ca.pem", out_dir / "ca.key"
        for have, lack in ((cert_path, key_path), (key_path, cert_path)):
            if not lack.is_file():
                raise ConfigError("-o", str(out_dir), f"{have.name} is there without {lack.name}: a CA is both; "
                                                      "restore it, or use another directory for a new CA")
        try:
            ca = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:  # TypeError: an encrypted key
            raise ConfigError("-o", str(out_dir), f"cannot read its CA (ca.pem, ca.key) to sign with: {exc}") from None
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if ca.public_key().public_bytes(serialization.Encoding.PEM, pub) != \
                key.public_key().public_bytes(serialization.Encoding.PEM, pub):
            raise ConfigError("-o", str(out_dir), "ca.key is not the key of ca.pem")
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ConfigError("-o", str(out_dir), "ca.pem is not a CA certificate")
        return cls(ca, key)

    def leaf(self, cn: str, sans: list[str] | tuple[str, ...], usage: Any) -> tuple[Any, Any]:
        x509, hashes, _, ec, _, _ = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        alt = []
        for s in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                alt.append(x509.DNSName(s))
        cert = (
            x509.CertificateBuilder().subject_name(self.name(cn)).issuer_name(self.ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(minutes=5))
            .not_valid_after(self.now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key

    def leaf_files(self, cert_path: Path, key_path: Path, cn: str, sans: list[str] | tuple[str, ...],
                   usage: Any) -> list[tuple[Path, bytes, bool]]:
        cert, key = self.leaf(cn, sans, usage)
        return [_cert_file(cert_path, cert), _key_file(key_path, key)]


def _check_out_dir(out_dir: Path, files: list[Path], force: bool, replace_what: str) -> None:
    """`out_dir` is a directory (or can be one) and none of `files` is in the way: each absent,
    or, with `force`, a regular file. All checked before any is written: a half-replaced set
    would not verify."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("-o", str(out_dir), "is a file, not a directory")
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise ConfigError("-o", str(out_dir), f"{existing[0].relative_to(out_dir)} exists; use --force to replace "
                                              f"{replace_what}")
    for p in existing:
        if not p.is_file():
            raise ConfigError("-o", str(out_dir), f"{p.relative_to(out_dir)} is not a file; --force replaces only files")


def _check_server_names(server_names: list[str] | tuple[str, ...]) -> None:
    if not server_names:
        raise ConfigError("--server-name", server_names, "give at least one DNS name or IP address for the server")
    for n in server_names:
        _check_server_name(n)


def make_dev_certs(out_dir: Path, server_names: list[str], client_name: str = "splitpoint-edge", force: bool = False) -> CertPaths:
    """A CA, a server certificate valid for `server_names` (DNS names or IPs) and a client certificate."""
    _, _, _, _, EKU, _ = _crypto()
    paths = CertPaths(*(out_dir / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")))
    _check_server_names(server_names)
    _check_out_dir(out_dir, list(vars(paths).values()), force, "the certificates")
    out_dir.mkdir(parents=True, exist_ok=True)
    issuer = _Issuer.new()
    # all six or none: a disk that fills midway must not leave a new CA beside old keys
    write_all_atomically([
        _cert_file(paths.ca_cert, issuer.ca), _key_file(paths.ca_key, issuer.key),
        *issuer.leaf_files(paths.server_cert, paths.server_key, server_names[0], server_names, EKU.SERVER_AUTH),
        *issuer.leaf_files(paths.client_cert, paths.client_key, client_name, [client_name], EKU.CLIENT_AUTH),
    ])
    log.info("development CA and certificates written to %s", out_dir)
    return paths


def make_client_certs(out_dir: Path, names: list[str], server_names: list[str] | None = None,
                      force: bool = False) -> ClientCerts:
    """A certificate per drone in `names` (CN = the name), in out_dir/clients/. A CA already in
    `out_dir` signs them and is kept with its server certificate (`server_names` must then be
    None: it would not be used); else a new CA and a server certificate for `server_names`
    (default localhost, 127.0.0.1) are made too. `force` replaces the drones' existing files."""
    _, _, _, _, EKU, _ = _crypto()
    clients = {n: (out_dir / CLIENT_DIR / f"{n}.pem", out_dir / CLIENT_DIR / f"{n}.key") for n in names}
    client_files = [p for pair in clients.values() for p in pair]
    ca_cert, ca_key = out_dir / "ca.pem", out_dir / "ca.key"
    reuse = out_dir.is_dir() and (ca_cert.exists() or ca_key.exists())
    if reuse:
        if server_names is not None:
            raise ConfigError("--server-name", ",".join(server_names),
                              f"{out_dir} has a CA already, which --clients keeps with its server certificate: "
                              "leave --server-name out, or give another directory for a new CA")
        _check_out_dir(out_dir, client_files, force, "those drones' certificates (the CA is kept)")
        issuer = _Issuer.load(out_dir)
        server = None
    else:
        sans = list(DEFAULT_SERVER_NAMES) if server_names is None else server_names
        _check_server_names(sans)
        server = (out_dir / "server.pem", out_dir / "server.key")
        _check_out_dir(out_dir, [ca_cert, ca_key, *server, *client_files], force, "the certificates")
        issuer = _Issuer.new()
    (out_dir / CLIENT_DIR).mkdir(parents=True, exist_ok=True)
    files = []
    if server is not None:
        files = [_cert_file(ca_cert, issuer.ca), _key_file(ca_key, issuer.key),
                 *issuer.leaf_files(*server, sans[0], sans, EKU.SERVER_AUTH)]
    for n, (cert_path, key_path) in clients.items():
        files += issuer.leaf_files(cert_path, key_path, n, [n], EKU.CLIENT_AUTH)
    write_all_atomically(files)  # the whole set or none of it
    log.info("%d client certificates written to %s", len(clients), out_dir / CLIENT_DIR)
    return ClientCerts(ca_cert, ca_key, server, clients)


def client_pairs(key: str, directory: str) -> list[tuple[str, str]]:
    """Every NAME.pem with its NAME.key in `directory` (as `--clients` writes them), sorted by
    name. A certificate without its key, or the reverse, is an error naming it: a directory
    copied in half would otherwise give fewer drones their own identity, unsaid."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(key, directory, "not a directory" if d.exists() else "directory not found")
    if (d / "ca.pem").exists():  # the whole set: its server.pem would be taken for a drone's
        raise ConfigError(key, directory, f"holds ca.pem: give its {CLIENT_DIR}/ directory, which "
                                          "`splitpoint certs --clients` writes")
    certs = {p.stem for p in d.glob("*.pem")}
    keys = {p.stem for p in d.glob("*.key")}
    for lone, lack in ((sorted(certs - keys), "key"), (sorted(keys - certs), "pem")):
        if lone:
            raise ConfigError(key, directory, f"{lone[0]}.{'pem' if lack == 'key' else 'key'} has no {lone[0]}.{lack}")
    if not certs:
        raise ConfigError(key, directory, "holds no NAME.pem/NAME.key pair")
    return [(str(d / f"{n}.pem"), str(d / f"{n}.key")) for n in sorted(certs)]
