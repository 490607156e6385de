"""Certificate dates said before they matter (splitpoint/cert_validity.py): a drone whose
certificate expired ran every frame locally with only "the server hung up during the handshake"
to go on; doctor showed nothing of the dates."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from splitpoint import certs
from splitpoint.cert_validity import log_validity, validity
from splitpoint.cli import main

pytestmark = pytest.mark.edge_side  # no TensorFlow


@pytest.fixture(scope="module")
def ten_days(tmp_path_factory: pytest.TempPathFactory) -> certs.CertPaths:
    """A set of certificates valid for ten days from now."""
    saved = certs.VALID_DAYS
    certs.VALID_DAYS = 10
    try:
        return certs.make_dev_certs(tmp_path_factory.mktemp("ten-days"), ["localhost"])
    finally:
        certs.VALID_DAYS = saved


def test_dates_against_the_clock(ten_days: certs.CertPaths) -> None:
    path = str(ten_days.client_cert)
    now = dt.datetime.now(dt.UTC)
    v = validity("tls_cert", path, now=now - dt.timedelta(days=30))  # made before the clock: not valid yet
    assert v is not None and v.status == "FAIL" and "is not valid before" in v.message and "NTP" in v.message
    v = validity("tls_cert", path, now=now)
    assert v is not None and v.status == "warn" and v.message.startswith(f"tls_cert {path} expires in 9 day(s), on ")
    v = validity("tls_cert", path, now=now + dt.timedelta(days=11))
    assert v is not None and v.status == "FAIL" and "expired on" in v.message and "refuses the handshake" in v.message
    assert validity("tls_cert", "/nonexistent") is None and validity("tls_cert", "/dev/null") is None


def test_a_ca_file_is_good_while_its_latest_certificate_is(ten_days: certs.CertPaths, tmp_path: Path) -> None:
    year = certs.make_dev_certs(tmp_path / "year", ["localhost"])
    both = tmp_path / "both.pem"
    both.write_bytes(ten_days.ca_cert.read_bytes() + year.ca_cert.read_bytes())  # a fleet moving CAs
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=20)  # the first has ended, the second not
    assert validity("tls_ca", str(both), ca=True, now=soon).status == "ok"  # type: ignore[union-attr]
    assert validity("tls_cert", str(both), now=soon).status == "FAIL"  # type: ignore[union-attr]


def test_start_up_and_doctor_name_a_certificate_ending_soon(ten_days: certs.CertPaths, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture,
                                                            capsys: pytest.CaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="splitpoint.security"):
        log_validity({"tls_ca": str(ten_days.ca_cert), "tls_cert": str(ten_days.client_cert), "tls_key": ""})
        from splitpoint.server_certs import ServerCertificates

        ServerCertificates(str(ten_days.server_cert), str(ten_days.server_key))  # the server at start
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3 and all(" expires in 9 day(s)" in m for m in said), said
    assert said[2].startswith(f"tls_cert {ten_days.server_cert} ")
    code = main(["doctor", "--cloud", "127.0.0.1:1", "--tls-ca", str(ten_days.ca_cert),
                 "--tls-cert", str(ten_days.client_cert), "--tls-key", str(ten_days.client_key)])
    out = capsys.readouterr().out
    assert code == 1  # nothing listens at 127.0.0.1:1
    assert f"[warn] certificates: tls_cert {ten_days.client_cert} expires in 9 day(s)" in out, out
    assert f"[warn] certificates: tls_ca {ten_days.ca_cert} expires in 9 day(s)" in out, out
