"""How long a certificate file stays valid, said before it matters.

A drone's certificate that expires in the field ends every handshake: the server refuses it and
the agent runs every frame locally, and what gRPC reports ("the server hung up during the
handshake") does not say why. The agent and the server therefore look at their files when they
start (and the server again when it reads renewed ones), `splitpoint doctor` shows each file's
dates, and a certificate within WARN_DAYS of its end, or past it, or not valid yet (a Pi whose
clock is not set: no battery-backed clock before NTP syncs) is named with what to do.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

log = logging.getLogger("splitpoint.security")

#: a certificate ending within this many days is warned about
WARN_DAYS = 30


@dataclass(frozen=True)
class Validity:
    status: str  # "ok", "warn" or "FAIL", as a doctor check's
    message: str


def _dates(path: str) -> list[tuple[dt.datetime, dt.datetime]]:
    from cryptography import x509

    with open(path, "rb") as fh:
        certs = x509.load_pem_x509_certificates(fh.read())
    return [(c.not_valid_before_utc, c.not_valid_after_utc) for c in certs]


def _window(path: str, ca: bool) -> tuple[dt.datetime, dt.datetime] | None:
    """(start, end) of the certificate that counts in `path`: the first (a leaf), or for a CA file,
    which may hold several (a fleet moving to a new CA), the one ending last; None when the file
    cannot be read as PEM certificates (check_key_pair/check_ca name that)."""
    try:
        dates = _dates(path)
    except Exception:  # noqa: BLE001 - unreadable or not PEM
        return None
    if not dates:
        return None
    return max(dates, key=lambda d: d[1]) if ca else dates[0]


def not_after(path: str, ca: bool = False) -> dt.datetime | None:
    """When the certificate in `path` ends (a CA file's: its latest one's); None if unreadable."""
    window = _window(path, ca)
    return None if window is None else window[1]


def validity(key: str, path: str, ca: bool = False, now: dt.datetime | None = None) -> Validity | None:
    """The dates of the certificate in `path` against the clock (a CA file is good while its
    latest certificate is); None when the file cannot be read as PEM certificates."""
    window = _window(path, ca)
    if window is None:
        return None
    start, end = window
    now = now or dt.datetime.now(dt.UTC)
    day = "%Y-%m-%d %H:%M UTC"
    if now < start:
        return Validity("FAIL", f"{key} {path} is not valid before {start:{day}}, and this clock says {now:{day}}: "
                                "set the time (NTP: timedatectl should say 'System clock synchronized: yes')")
    if now >= end:
        return Validity("FAIL", f"{key} {path} expired on {end:{day}}: the other side refuses the handshake; "
                                "renew it (docs/security.md, 'Renewing certificates')")
    days = (end - now).days
    if days < WARN_DAYS:
        return Validity("warn", f"{key} {path} expires in {days} day(s), on {end:{day}}: renew it before then "
                                "(docs/security.md, 'Renewing certificates')")
    return Validity("ok", f"{key} {path} is valid until {end:{day}} ({days} days)")


def log_validity(files: dict[str, str], ca_keys: tuple[str, ...] = ("tls_ca", "tls_client_ca")) -> None:
    """At start: a warning for each file that ends soon, an error for one past its dates."""
    for key, path in files.items():
        v = validity(key, path, ca=key in ca_keys) if path else None
        if v is not None and v.status != "ok":
            (log.error if v.status == "FAIL" else log.warning)("%s", v.message)
