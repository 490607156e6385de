"""`splitpoint doctor`'s device checks: the Edge TPU on USB (ids 1a6e:089a before its firmware
loads, 18d1:9302 after) or PCIe (/dev/apex_0), whether the delegate loads, and the runtime
versions with their known bad pairs."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from splitpoint.doctor_checks import Check, _plain, _quiet_unraisable

log = logging.getLogger(__name__)

EDGETPU_USB_IDS = {("1a6e", "089a"): "Coral USB accelerator (firmware not loaded yet: normal before first use)",
                   ("18d1", "9302"): "Coral USB accelerator (firmware loaded)"}
USB_ROOT = Path("/sys/bus/usb/devices")
USB_DEV_ROOT = Path("/dev/bus/usb")
APEX_DEVICE = Path("/dev/apex_0")
LIBEDGETPU_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")


def find_edgetpu_usb(root: Path = USB_ROOT) -> list[tuple[str, str, str]]:
    """(sysfs device, 'vid:pid', description) of every Coral USB accelerator attached."""
    found: list[tuple[str, str, str]] = []
    try:
        devices = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        return found
    for dev in devices:
        try:
            vid = (dev / "idVendor").read_text().strip().lower()
            pid = (dev / "idProduct").read_text().strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        desc = EDGETPU_USB_IDS.get((vid, pid))
        if not desc:
            continue
        try:
            speed = float((dev / "speed").read_text().strip())  # Mb/s: 1.5, 12, 480, 5000, 10000, ...
        except (OSError, UnicodeDecodeError, ValueError):
            speed = None
        if speed is not None and speed < 5000:
            desc += (f"; on a USB 2 link ({speed:g} Mb/s): about 3x slower than USB 3. Use a blue USB 3 port and "
                     "a USB 3 cable (a Pi 3B+ has USB 2 only)")
        found.append((dev.name, f"{vid}:{pid}", desc))
    return found


def usb_device_node(sysfs_dev: Path, dev_root: Path = USB_DEV_ROOT) -> Path | None:
    """/dev/bus/usb/BBB/DDD of a sysfs USB device, or None when sysfs does not say."""
    try:
        bus = int((sysfs_dev / "busnum").read_text().strip())
        num = int((sysfs_dev / "devnum").read_text().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return dev_root / f"{bus:03d}" / f"{num:03d}"


def check_edgetpu(device: str, usb_root: Path = USB_ROOT, apex: Path = APEX_DEVICE,
                  dev_root: Path = USB_DEV_ROOT) -> list[Check]:
    """Is an accelerator attached, and does libedgetpu load? FAIL for an edgetpu device, warn for cpu."""
    from splitpoint.errors import ConfigError, EdgeTpuUnavailableError
    from splitpoint.runtime.litert import Device, load_edgetpu_delegate

    try:
        wanted = Device.parse(device, "device")
    except ConfigError as err:
        return [Check("FAIL", "Edge TPU", str(err))]
    bad = "warn" if wanted.kind == "cpu" else "FAIL"
    checks = []
    usb = find_edgetpu_usb(usb_root)
    try:
        pci = apex.exists()
    except OSError:
        pci = False
    for name, ids, desc in usb:
        checks.append(Check("warn" if "USB 2" in desc else "ok", "Edge TPU (USB)", f"{ids} at {name}: {desc}"))
        node = usb_device_node(usb_root / name, dev_root)
        if node is not None and node.exists() and not os.access(node, os.R_OK | os.W_OK):
            checks.append(Check(bad, "Edge TPU (USB) permissions",
                                f"this user cannot open {node}: libedgetpu1-std's udev rule gives the accelerator "
                                "to group plugdev; add the agent's user to plugdev, then unplug and replug it"))
    if pci:
        usable = os.access(apex, os.R_OK | os.W_OK)
        checks.append(Check("ok" if usable else bad, "Edge TPU (PCIe)",
                            f"{apex} present" + ("" if usable else ": this user cannot open it (see Coral's PCIe "
                                                 "guide for its udev rule and group)")))
    if not usb and not pci:
        checks.append(Check(bad, "Edge TPU",
                            "no Coral accelerator found (no USB device 1a6e:089a or 18d1:9302, no /dev/apex_0): "
                            "plug it in (a USB 3 port; replug it after installing libedgetpu); if lsusb does not "
                            "list it, try another cable and port, and check the power supply"
                            + ("; device = cpu, so heads run on the CPU" if wanted.kind == "cpu" else "")))
    target = wanted if wanted.kind == "edgetpu" else Device("edgetpu")
    message = ""
    with _quiet_unraisable():
        try:
            load_edgetpu_delegate(target)
        except EdgeTpuUnavailableError as err:
            message = str(err)
        except Exception as exc:  # pycoral or the interpreter package failing in its own way
            message = f"cannot load the Edge TPU delegate for {target} ({type(exc).__name__}: {_plain(exc)})"
    if not message:
        checks.append(Check("ok", "Edge TPU delegate", f"libedgetpu loaded for {target}"))
        return checks
    if usb or pci:
        message += (" An accelerator is attached: if the agent is running (systemctl status splitpoint-edge) "
                    "it holds the device, stop it first; otherwise check that this user is in the plugdev "
                    "group and replug the accelerator after installing libedgetpu.")
    checks.append(Check(bad, "Edge TPU delegate", message))
    return checks


def libedgetpu_packages() -> dict[str, str]:
    """Installed Debian packages of libedgetpu and their versions (empty without dpkg)."""
    if shutil.which("dpkg-query") is None:
        return {}
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n", *LIBEDGETPU_PACKAGES],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("ii"):
            out[parts[0]] = parts[1]
    return out


def _pycoral_is_googles() -> bool:
    """Does the installed distribution named pycoral ship Google's pycoral.utils.edgetpu?"""
    from importlib import metadata

    try:
        files = metadata.files("pycoral") or []
    except metadata.PackageNotFoundError:
        return False
    return any(str(f).replace("\\", "/").endswith("pycoral/utils/edgetpu.py") for f in files)


def check_runtimes() -> list[Check]:
    from splitpoint.runtime.litert import (
        interpreter_module,
        numpy_pairing_problem,
        runtime_versions,
    )

    versions = runtime_versions()
    versions.update(guarded_packages())
    where = f"Python {platform.python_version()} on {platform.machine() or 'an unknown machine'}"
    checks = [Check("ok", "versions",
                    where + "; " + (", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "no runtimes found"))]
    machine = platform.machine()
    # a 32-bit userland on a 64-bit kernel (32-bit Raspberry Pi OS on a Pi 4/5) says aarch64: ask Python's own size
    if platform.system() == "Linux" and (machine in ("armv6l", "armv7l") or (machine == "aarch64" and sys.maxsize < 2**32)):
        if "tflite-runtime" in versions:
            checks.append(Check("ok", "32-bit ARM", f"LiteRT has no 32-bit ARM wheels; tflite-runtime "
                                                    f"{versions['tflite-runtime']} runs the heads (it needs NumPy < 2)"))
        else:
            checks.append(Check("FAIL", "32-bit ARM",
                                "this Python is 32-bit ARM and LiteRT (ai-edge-litert) publishes no 32-bit ARM wheels: "
                                "install splitpoint with its [edge-32bit] extra (tflite-runtime 2.14 with NumPy < 2, Python "
                                "3.11), or the 64-bit Raspberry Pi OS; see docs/field-deployment.md"))
    # the same check, and the same words, as the agent and every command that loads a head
    problem = numpy_pairing_problem()
    if problem:
        checks.append(Check("FAIL", "tflite-runtime + NumPy 2", problem))
    else:
        try:
            _, backend = interpreter_module()
            checks.append(Check("ok", "TFLite interpreter", f"from {backend}"))
        except Exception as exc:
            checks.append(Check("FAIL", "TFLite interpreter", _plain(exc)))
    if "pycoral" in versions:
        if not _pycoral_is_googles():
            checks.append(Check("FAIL", "pycoral",
                                f"a package named pycoral {versions['pycoral']} is installed but is not Google's "
                                "(the PyPI 'pycoral' is an unrelated project): pip uninstall pycoral"))
        else:
            try:
                with _quiet_unraisable():
                    import pycoral.utils.edgetpu  # type: ignore[import-not-found]  # noqa: F401
                checks.append(Check("ok", "pycoral", "Google's pycoral is importable and will load the delegate"))
            except Exception as exc:
                checks.append(Check("warn", "pycoral",
                                    f"Google's pycoral {versions['pycoral']} is installed but does not import "
                                    f"({type(exc).__name__}: {_plain(exc)}); splitpoint can load libedgetpu "
                                    "without it: pip uninstall pycoral"))
    checks.append(Check("hint", "runtime/delegate pairing",
                        "if a compiled head fails with 'EdgeTpuDelegateForCustomOp failed to prepare', the LiteRT and "
                        "libedgetpu versions do not match: use a libedgetpu built for this LiteRT version"))
    return checks


def guarded_packages() -> dict[str, str]:
    try:
        return libedgetpu_packages()
    except Exception:  # informational only
        return {}

