"""`splitpoint doctor`: check a field installation and say, in plain words, what is wrong.

Checks: the Edge TPU on USB (ids 1a6e:089a before its firmware loads, 18d1:9302
after) or PCIe (/dev/apex_0); whether the delegate loads; runtime versions and
the known bad pairs; the bundle's integrity; the cloud's reachability, TLS and
bundle digest; clock skew against the server; free disk for the results log.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EDGETPU_USB_IDS = {("1a6e", "089a"): "Coral USB accelerator (firmware not loaded yet: normal before first use)",
                   ("18d1", "9302"): "Coral USB accelerator (firmware loaded)"}
USB_ROOT = Path("/sys/bus/usb/devices")
APEX_DEVICE = Path("/dev/apex_0")
MIN_FREE_BYTES = 200 * 1024 * 1024
MAX_SKEW_S = 2.0


@dataclass
class Check:
    status: str  # "ok", "warn", "FAIL", "skip"
    name: str
    detail: str

    def line(self) -> str:
        return f"[{self.status:>4}] {self.name}: {self.detail}"


def find_edgetpu_usb(root: Path = USB_ROOT) -> list[tuple[str, str, str]]:
    """(sysfs device, 'vid:pid', description) of every Coral USB accelerator attached."""
    found = []
    if not root.is_dir():
        return found
    for dev in sorted(root.iterdir()):
        try:
            vid = (dev / "idVendor").read_text().strip()
            pid = (dev / "idProduct").read_text().strip()
        except OSError:
            continue
        desc = EDGETPU_USB_IDS.get((vid, pid))
        if desc:
            speed = ""
            try:
                speed = (dev / "speed").read_text().strip()
            except OSError:
                pass
            if speed and speed.isdigit() and int(speed) < 5000:
                desc += f"; on a USB 2 port ({speed} Mb/s): about 3x slower than USB 3"
            found.append((dev.name, f"{vid}:{pid}", desc))
    return found


def check_edgetpu(device: str, usb_root: Path = USB_ROOT, apex: Path = APEX_DEVICE) -> list[Check]:
    from splitpoint.errors import ConfigError, EdgeTpuUnavailableError
    from splitpoint.runtime.litert import Device, load_edgetpu_delegate

    checks = []
    usb = find_edgetpu_usb(usb_root)
    pci = apex.exists()
    if usb:
        for name, ids, desc in usb:
            checks.append(Check("warn" if "USB 2" in desc else "ok", "Edge TPU (USB)", f"{ids} at {name}: {desc}"))
    if pci:
        checks.append(Check("ok", "Edge TPU (PCIe)", f"{apex} present"))
    if not usb and not pci:
        checks.append(Check("warn" if device == "cpu" else "FAIL", "Edge TPU",
                            "no Coral accelerator found (no USB device 1a6e:089a or 18d1:9302, no /dev/apex_0)"))
    try:
        dev = Device.parse(device if device != "cpu" else "edgetpu", "--device")
        load_edgetpu_delegate(dev)
        checks.append(Check("ok", "Edge TPU delegate", f"libedgetpu loaded for {dev}"))
    except EdgeTpuUnavailableError as err:
        checks.append(Check("FAIL" if device != "cpu" else "warn", "Edge TPU delegate", str(err)))
    except ConfigError as err:
        checks.append(Check("FAIL", "Edge TPU delegate", str(err)))
    return checks


def check_runtimes() -> list[Check]:
    from splitpoint.errors import BackendUnavailableError
    from splitpoint.runtime.litert import interpreter_module, runtime_versions

    versions = runtime_versions()
    checks = [Check("ok", "versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "none found")]
    try:
        _, backend = interpreter_module()
        checks.append(Check("ok", "TFLite interpreter", f"from {backend}"))
    except BackendUnavailableError as err:
        checks.append(Check("FAIL", "TFLite interpreter", str(err)))
    numpy_major = int(versions.get("numpy", "0").split(".")[0] or 0)
    if "tflite-runtime" in versions and numpy_major >= 2 and "ai-edge-litert" not in versions:
        checks.append(Check("FAIL", "tflite-runtime + NumPy 2",
                            f"tflite-runtime {versions['tflite-runtime']} cannot load models under NumPy {versions['numpy']}: "
                            "install ai-edge-litert (pip install 'splitpoint[edge]')"))
    if "pycoral" in versions:
        try:
            import pycoral.utils.edgetpu  # type: ignore[import-not-found]  # noqa: F401
            checks.append(Check("ok", "pycoral", "Google's pycoral is importable and will load the delegate"))
        except ImportError:
            checks.append(Check("FAIL", "pycoral",
                                f"a package named pycoral {versions['pycoral']} is installed but is not Google's "
                                "(the PyPI 'pycoral' is an unrelated project): pip uninstall pycoral"))
    checks.append(Check("ok", "runtime/delegate pairing",
                        "if a compiled head fails with 'EdgeTpuDelegateForCustomOp failed to prepare', the LiteRT and "
                        "libedgetpu versions do not match: install libedgetpu from the same release train"))
    return checks


def check_bundle(path: str) -> list[Check]:
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import BundleError

    try:
        b = load_bundle(path, side="edge")
    except BundleError as err:
        return [Check("FAIL", "bundle", str(err))]
    m = b.manifest
    compiled = sum(1 for s in m.splits if s.edgetpu.get("status") == "compiled")
    heads = sum(1 for s in m.splits if s.head)
    out = [Check("ok", "bundle", f"{path}: {m.model_name}, {len(m.splits)} splits, every file matches its sha256")]
    out.append(Check("ok" if compiled == heads else "warn", "bundle Edge TPU heads",
                     f"{compiled} of {heads} heads compiled for the Edge TPU"
                     + ("" if compiled == heads else "; uncompiled heads run on the CPU")))
    return out


def bundle_digest(path: str) -> str | None:
    """The bundle's model digest, or None when the manifest cannot be read (check_bundle says why)."""
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import SplitpointError

    try:
        return load_bundle(path, side="edge", verify=False).manifest.model_digest
    except SplitpointError:
        return None


def check_cloud(make_client: Callable[[], Any], digest: str | None) -> list[Check]:
    from splitpoint.errors import SplitpointError

    try:
        client = make_client()
    except SplitpointError as err:
        return [Check("FAIL", "cloud", f"cannot set up the connection: {err}")]
    try:
        t0 = time.time_ns()
        info = client.describe()
        rtt_ms, probe = client.probe(0, 0)
        t1 = time.time_ns()
    except SplitpointError as err:
        import grpc

        hint = ""
        if getattr(err, "code", None) == grpc.StatusCode.UNAVAILABLE:
            hint = " (is the server running, reachable, and are both sides on the same TLS/plaintext setting?)"
        return [Check("FAIL", "cloud", f"{client.address}: {err}{hint}")]
    finally:
        client.close()
    out = [Check("ok", "cloud", f"{client.address} serves {info.model_name}; round trip {rtt_ms:.1f} ms")]
    if digest is not None:
        same = info.model_digest == digest
        out.append(Check("ok" if same else "FAIL", "cloud bundle",
                         "same model digest as the local bundle" if same else
                         f"server runs {info.model_digest}, local bundle is {digest}: deploy the same bundle to both"))
    server_ns = getattr(probe, "server_unix_ns", 0)
    if server_ns:
        skew = (server_ns - (t0 + t1) / 2) / 1e9
        out.append(Check("ok" if abs(skew) < MAX_SKEW_S else "warn", "clock skew",
                         f"{skew:+.3f} s against the server" + ("" if abs(skew) < MAX_SKEW_S else ": run NTP/chrony on both")))
    return out


def check_disk(path: str) -> list[Check]:
    target = Path(path).resolve().parent
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        usage = shutil.disk_usage(target)
    except OSError as exc:
        return [Check("FAIL", "disk", f"cannot read free space at {target}: {exc.strerror}")]
    ok = usage.free >= MIN_FREE_BYTES
    return [Check("ok" if ok else "FAIL", "disk", f"{usage.free / 2**30:.1f} GiB free at {target}"
                  + ("" if ok else f"; the results log needs room (at least {MIN_FREE_BYTES // 2**20} MiB)"))]


def run_checks(checks: list[Check], out: Callable[[str], None] = print) -> int:
    for c in checks:
        out(c.line())
    failed = [c for c in checks if c.status == "FAIL"]
    out(f"\n{len(failed)} problem(s) found" if failed else "\nno problems found")
    return 1 if failed else 0
