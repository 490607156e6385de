"""`splitpoint doctor`: each check on fake sysfs trees, real bundles and a real server."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from splitpoint import doctor
from splitpoint.cli import main


def usb_device(root: Path, name: str, vid: str, pid: str, speed: str | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "idVendor").write_text(vid + "\n")
    (d / "idProduct").write_text(pid + "\n")
    if speed:
        (d / "speed").write_text(speed + "\n")


def test_finds_coral_usb_ids_and_warns_about_usb2(tmp_path: Path) -> None:
    usb_device(tmp_path, "1-1", "1a6e", "089a", "480")
    usb_device(tmp_path, "2-1", "18d1", "9302", "5000")
    usb_device(tmp_path, "1-2", "046d", "c52b", "12")  # a mouse
    found = doctor.find_edgetpu_usb(tmp_path)
    assert [(n, ids) for n, ids, _ in found] == [("1-1", "1a6e:089a"), ("2-1", "18d1:9302")]
    assert "USB 2" in found[0][2] and "firmware not loaded" in found[0][2]
    assert "USB 2" not in found[1][2]
    checks = doctor.check_edgetpu("cpu", usb_root=tmp_path, apex=tmp_path / "no-apex")
    usb = [c for c in checks if c.name == "Edge TPU (USB)"]
    assert [c.status for c in usb] == ["warn", "ok"]


def test_no_edgetpu_here_is_a_failure_only_when_asked_for(tmp_path: Path) -> None:
    asked = doctor.check_edgetpu("edgetpu", usb_root=tmp_path, apex=tmp_path / "none")
    assert {c.status for c in asked} == {"FAIL"}
    assert any("libedgetpu" in c.detail for c in asked)
    on_cpu = doctor.check_edgetpu("cpu", usb_root=tmp_path, apex=tmp_path / "none")
    assert {c.status for c in on_cpu} == {"warn"}
    bad = doctor.check_edgetpu("tpu9", usb_root=tmp_path, apex=tmp_path / "none")
    assert any(c.status == "FAIL" and "tpu9" in c.detail for c in bad)


def test_runtimes_are_listed() -> None:
    checks = doctor.check_runtimes()
    assert "ai-edge-litert" in checks[0].detail
    assert not [c for c in checks if c.status == "FAIL"]


def test_bundle_check_names_a_modified_file(digits_bundle: Path, tmp_path: Path) -> None:
    assert doctor.check_bundle(str(digits_bundle))[0].status == "ok"
    copy = tmp_path / "b"
    shutil.copytree(digits_bundle, copy)
    head = copy / "edge" / "head_3.tflite"
    data = bytearray(head.read_bytes())
    data[100] ^= 0xFF
    head.write_bytes(bytes(data))
    checks = doctor.check_bundle(str(copy))
    assert checks[0].status == "FAIL" and "head_3.tflite" in checks[0].detail


def dead_address() -> tuple[socket.socket, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return s, f"127.0.0.1:{s.getsockname()[1]}"


def test_cloud_checks(cloud_server, digits_bundle: Path, tmp_path: Path) -> None:
    from edge_node.client import OffloadClient
    from splitpoint.security import ClientSecurity

    def client(addr: str):
        return lambda: OffloadClient(addr, timeout_s=3, security=ClientSecurity(insecure=True))

    digest = doctor.bundle_digest(str(digits_bundle))
    ok = doctor.check_cloud(client(cloud_server.address), digest)
    assert [c.status for c in ok] == ["ok", "ok", "ok"]
    assert ok[2].name == "clock skew"
    other = doctor.check_cloud(client(cloud_server.address), "sha256:other")
    assert other[1].status == "FAIL" and "sha256:other" in other[1].detail
    sock, addr = dead_address()
    try:
        dead = doctor.check_cloud(client(addr), digest)
    finally:
        sock.close()
    assert dead[0].status == "FAIL" and addr in dead[0].detail


def test_cli_exit_codes_and_no_tracebacks(cloud_server, digits_bundle: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "{digits_bundle}"\ncloud = "{cloud_server.address}"\ninsecure = true\n'
                    f'results = "{tmp_path / "r.jsonl"}"\nsource = "synthetic:1"\n')
    assert main(["doctor", "--config", str(conf)]) == 0  # cpu: a missing Edge TPU is only a warning
    out = capsys.readouterr().out
    assert "no problems found" in out and "same model digest" in out
    assert main(["doctor", "--config", str(conf), "--device", "edgetpu"]) == 1
    # TLS asked for, but the CA file is missing: a FAIL line, not a traceback
    assert main(["doctor", "--cloud", cloud_server.address, "--tls-ca", str(tmp_path / "nope.pem")]) == 1
    captured = capsys.readouterr()
    assert "nope.pem" in captured.out and "Traceback" not in captured.out + captured.err
