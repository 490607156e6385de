"""`splitpoint doctor`: check a field installation and say, in plain words, what is wrong.

Checks: the edge config file; the Edge TPU on USB (ids 1a6e:089a before its
firmware loads, 18d1:9302 after) or PCIe (/dev/apex_0); whether the delegate
loads; runtime versions and the known bad pairs; the bundle's integrity; the
cloud's reachability, transport (TLS, token) and bundle digest, with a hint for
each way a TLS handshake fails; clock skew against the server (when the server
reports its clock); secret file modes; free disk and write access for the
results log.

Every check returns a list of `Check` lines and never raises: a check that
breaks is itself reported as a FAIL line naming what went wrong.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EDGETPU_USB_IDS = {("1a6e", "089a"): "Coral USB accelerator (firmware not loaded yet: normal before first use)",
                   ("18d1", "9302"): "Coral USB accelerator (firmware loaded)"}
USB_ROOT = Path("/sys/bus/usb/devices")
USB_DEV_ROOT = Path("/dev/bus/usb")
APEX_DEVICE = Path("/dev/apex_0")
MIN_FREE_BYTES = 200 * 1024 * 1024
MAX_SKEW_S = 2.0
CLOUD_TIMEOUT_S = 5.0
LIBEDGETPU_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
#: the edge config keys that decide how the agent talks to the server (passed to the client factory)
TRANSPORT_KEYS = ("tls_ca", "tls_cert", "tls_key", "tls_server_name", "token_file", "insecure", "allow_plaintext_token")
_BOOL_KEYS = ("insecure", "allow_plaintext_token")
#: every edge config key the doctor uses
EDGE_KEYS = ("bundle", "cloud", "device", "results", *TRANSPORT_KEYS)


@dataclass
class Check:
    status: str  # "ok", "warn", "FAIL", "skip", or "hint": advice, not a finding
    name: str
    detail: str

    def line(self) -> str:
        return f"[{self.status:>4}] {self.name}: {self.detail}"


def _plain(exc: BaseException) -> str:
    """An exception as one line of text, without a traceback."""
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def guarded(name: str, check: Callable[..., list[Check]], *args: Any, **kwargs: Any) -> list[Check]:
    """Run one check; an unexpected error becomes a FAIL line instead of a traceback."""
    from splitpoint.errors import SplitpointError

    try:
        return check(*args, **kwargs)
    except SplitpointError as err:  # already in plain words, naming the key or file
        return [Check("FAIL", name, _plain(err))]
    except Exception as exc:  # the doctor must report, never crash
        log.debug("check %s failed", name, exc_info=True)
        return [Check("FAIL", name, f"the check could not run ({type(exc).__name__}: {_plain(exc)})")]


@contextlib.contextmanager
def _quiet_unraisable() -> Iterator[None]:
    """Swallow "Exception ignored in ..." reports while the block runs.

    LiteRT's Delegate.__del__ fails on a delegate whose library did not load and
    Python prints that as a traceback; the doctor reports the real cause itself.
    """
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: log.debug("ignored: %r in %r", unraisable.exc_value, unraisable.object)
    try:
        yield
    finally:
        gc.collect()  # finalise the half-built delegate while the hook is still quiet
        sys.unraisablehook = previous


# ---------------------------------------------------------------- config


def _edge_defaults() -> dict[str, Any]:
    """EdgeConfig's defaults: what the agent uses for a key the file leaves out."""
    import dataclasses

    from edge_node.config import EdgeConfig

    return {f.name: f.default for f in dataclasses.fields(EdgeConfig) if f.default is not dataclasses.MISSING}


def client_factory(address: str, transport: dict[str, Any] | None = None,
                   timeout_s: float = CLOUD_TIMEOUT_S) -> tuple[Callable[[], Any], str]:
    """(a function making the OffloadClient the agent would make, how it talks: "TLS", "plaintext", ...).

    The one place that turns config keys into a client: OffloadClient(address,
    timeout_s=5, security=ClientSecurity(...)). `transport` holds the TLS/token keys
    (TRANSPORT_KEYS); like the agent, the client talks plaintext only with insecure.
    Errors (a bad address, TLS keys that contradict, missing certificate or token
    files) surface when the function is called, so `check_cloud` reports them as a
    FAIL line.
    """
    keys = {k: v for k, v in (transport or {}).items() if k in TRANSPORT_KEYS}
    kind = "plaintext" if keys.get("insecure") else "mutual TLS" if keys.get("tls_cert") else "TLS"
    if keys.get("token_file"):
        kind += " with a bearer token"

    def make() -> Any:
        from edge_node.client import OffloadClient
        from splitpoint.config import parse_address
        from splitpoint.security import ClientSecurity

        parse_address("cloud", address, allow_zero_port=False)
        text = {k: str(keys.get(k) or "") for k in TRANSPORT_KEYS if k not in _BOOL_KEYS}
        security = ClientSecurity(
            tls_ca=text["tls_ca"], tls_cert=text["tls_cert"], tls_key=text["tls_key"],
            tls_server_name=text["tls_server_name"], token_file=text["token_file"],
            insecure=bool(keys.get("insecure")), allow_plaintext_token=bool(keys.get("allow_plaintext_token")),
        )
        security.validate()
        return OffloadClient(address, timeout_s=timeout_s, security=security)

    return make, kind


def check_edge_config(path: str, values: dict[str, Any]) -> list[Check]:
    """Does the file load as `splitpoint edge --config` would load it?"""
    from edge_node.config import EdgeConfig
    from splitpoint.config import build
    from splitpoint.errors import ConfigError

    try:
        build(EdgeConfig, values)
    except ConfigError as err:
        return [Check("FAIL", "config", f"{path}: {err} (`splitpoint edge` would refuse to start)")]
    return [Check("ok", "config", f"{path} is a valid edge config")]


def resolve_settings(config_path: str | None, flags: dict[str, Any]) -> tuple[dict[str, Any], list[Check]]:
    """(the values the doctor checks, [config check]): agent defaults < the edge TOML < flags.

    Without a config file only the flags count (no cloud check unless --cloud). With one,
    the file plus the flags is validated as `splitpoint edge` would validate it, and the
    keys the doctor needs fall back to the agent's defaults, as the agent's would.
    """
    from splitpoint.config import read_toml
    from splitpoint.errors import ConfigError

    flags = {k: v for k, v in flags.items() if k in EDGE_KEYS and v not in (None, "")}
    checks: list[Check] = []
    values: dict[str, Any] = {}
    if config_path:
        try:
            data = read_toml(config_path)
        except ConfigError as err:
            checks.append(Check("FAIL", "config", _plain(err)))
        except Exception as exc:
            checks.append(Check("FAIL", "config", f"{config_path}: cannot read it ({_plain(exc)})"))
        else:
            defaults = {k: v for k, v in _edge_defaults().items() if k in EDGE_KEYS}
            values = {**defaults, **{k: v for k, v in data.items() if k in EDGE_KEYS}}
            checks += guarded("config", check_edge_config, config_path, {**data, **flags})
    values.update(flags)
    values.setdefault("device", "cpu")
    values.setdefault("results", "results.jsonl")
    return {k: _setting(k, v) for k, v in values.items()}, checks


def _setting(key: str, value: Any) -> Any:
    if key in _BOOL_KEYS:
        return value is True or str(value).lower() in ("true", "yes", "1", "on")
    return "" if value is None else str(value)


# ---------------------------------------------------------------- Edge TPU


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


# ---------------------------------------------------------------- bundle


def check_bundle(path: str, device: str = "cpu") -> list[Check]:
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import BundleError

    try:
        b = load_bundle(path, side="edge")
    except BundleError as err:
        return [Check("FAIL", "bundle", f"{err}: copy the bundle again (the same one the server runs)")]
    except OSError as err:
        return [Check("FAIL", "bundle", f"{path}: cannot read it ({_plain(err)})")]
    m = b.manifest
    compiled = sum(1 for s in m.splits if s.edgetpu_head is not None)
    heads = sum(1 for s in m.splits if s.head)
    out = [Check("ok", "bundle", f"{path}: {m.model_name}, {len(m.splits)} splits, every edge file matches its sha256")]
    on_tpu = device.strip().lower().startswith("edgetpu")
    status = "ok" if compiled == heads or not on_tpu else "warn"
    detail = f"{compiled} of {heads} heads compiled for the Edge TPU"
    if compiled < heads:
        detail += ("; uncompiled heads run on the CPU (run `splitpoint partition` where edgetpu_compiler is "
                   "installed, x86-64 Linux)" if on_tpu else " (device = cpu: not used)")
    out.append(Check(status, "bundle Edge TPU heads", detail))
    return out


def bundle_digest(path: str) -> str | None:
    """The bundle's model digest from its manifest, or None when it cannot be read."""
    from splitpoint.bundle import load_bundle

    try:
        return load_bundle(path, verify=False).manifest.model_digest
    except Exception:
        return None


# ---------------------------------------------------------------- cloud

#: (words in an UNAVAILABLE message, what they mean), first match wins
_UNAVAILABLE_HINTS = (
    (("connection refused",), "nothing listens there: is `splitpoint cloud` running, on that port, and listening on "
                              "an address this host can reach (listen = \"0.0.0.0:PORT\", not 127.0.0.1)?"),
    (("wrong_version_number",), "the server speaks plaintext (it runs with insecure = true) while this side uses TLS: "
                                "give the server tls_cert/tls_key, or set insecure = true here for a bench test"),
    (("hostname verification", "hostname mismatch", "peer name"),
     "the server's certificate does not name the host dialled: set tls_server_name to a name the certificate "
     "holds, or reissue it for that host (splitpoint certs --server-name HOST)"),
    (("bad_signature", "certificate verify failed", "certificate signature failure", "unable to get local issuer",
      "certificate_verify_failed"),
     "the server's certificate is not signed by tls_ca: give the CA that issued it"),
    (("socket closed", "connection reset"),
     "the server hung up during the handshake: it expects TLS while this side is plaintext, or mutual TLS while this "
     "side has no tls_cert/tls_key (or ones its tls_client_ca did not sign)"),
    (("ssl", "tls", "handshake", "certificate"),
     "TLS failed: check tls_ca, tls_server_name and, for mutual TLS, tls_cert/tls_key against the server's settings"),
    (("no route", "unreachable", "name resolution", "dns", "timed out", "timeout"),
     "the host cannot be reached: check the address, DNS, routing and firewalls"),
)

_REMOTE_HINTS = {
    "UNAVAILABLE": "cannot reach the server: is `splitpoint cloud` running there, the port open in its firewall, "
                   "and TLS set on both sides or on neither?",
    "DEADLINE_EXCEEDED": "no answer in time: the server is down, overloaded, or a firewall drops the packets",
    "UNAUTHENTICATED": "the server refused the token: token_file must hold the token the server expects",
    "PERMISSION_DENIED": "the server refused this client",
}


def _remote_hint(err: Exception) -> str:
    code = getattr(getattr(err, "code", None), "name", "")
    if code == "UNAVAILABLE":
        text = str(err).lower()
        for words, hint in _UNAVAILABLE_HINTS:
            if any(w in text for w in words):
                return hint
    return _REMOTE_HINTS.get(code, "")


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_cloud(make_client: Callable[[], Any], digest: str | None, transport: str = "") -> list[Check]:
    """Describe and Probe the server: reachable, which model, same digest as here, clock skew.

    `transport` names how the client talks ("TLS", "mutual TLS", "plaintext") for the report.
    """
    from splitpoint.errors import RemoteError

    try:
        client = make_client()
    except Exception as exc:  # bad TLS files, a missing token file, a malformed address
        return [Check("FAIL", "cloud", f"cannot set up the connection: {_plain(exc)}")]
    address = getattr(client, "address", "the server")
    try:
        info = client.describe()
        t0 = time.time_ns()
        rtt_ms, probe = client.probe(0, 0)
        t1 = time.time_ns()
    except RemoteError as err:
        hint = _remote_hint(err)
        return [Check("FAIL", "cloud", f"{address}: {_plain(err)}" + (f" -- {hint}" if hint else ""))]
    except Exception as exc:
        return [Check("FAIL", "cloud", f"{address}: the call failed ({type(exc).__name__}: {_plain(exc)})")]
    finally:
        with contextlib.suppress(Exception):
            client.close()
    via = f" over {transport}" if transport else ""
    out = [Check("ok", "cloud", f"{address} serves {info.model_name}{via}; round trip {rtt_ms:.1f} ms")]
    if transport == "plaintext" and not _is_loopback(address):
        out.append(Check("warn", "cloud transport",
                         "plaintext to a non-loopback address: anyone on the path can read and alter frames; "
                         "set tls_ca (see docs/security.md)"))
    if digest is not None:
        same = info.model_digest == digest
        out.append(Check("ok" if same else "FAIL", "cloud bundle",
                         "same model digest as the local bundle" if same else
                         f"server runs {info.model_digest[:23]}..., local bundle is {digest[:23]}...: "
                         "deploy the same bundle to both"))
    server_ns = int(getattr(probe, "server_unix_ns", 0) or 0)  # servers before this field answer 0
    if server_ns:
        skew = (server_ns - (t0 + t1) / 2) / 1e9
        ok = abs(skew) < MAX_SKEW_S
        out.append(Check("ok" if ok else "warn", "clock skew",
                         f"{skew:+.3f} s against the server (±{(t1 - t0) / 2e6:.1f} ms)"
                         + ("" if ok else ": timestamps in the results log and the server's logs will disagree; "
                                          "run NTP (systemd-timesyncd or chrony) on both")))
    else:
        out.append(Check("skip", "clock skew", "the server does not report its clock (an older splitpoint)"))
    return out


# ---------------------------------------------------------------- secrets


def check_secret_files(files: dict[str, str]) -> list[Check]:
    """Keys and tokens other users can read: a warning each (missing files FAIL in the cloud check)."""
    out = []
    for key, path in files.items():
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(Check("warn", "secrets", f"{key} {path} is readable by other users "
                                                f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"))
        else:
            out.append(Check("ok", "secrets", f"{key} {path} is private (mode {stat.S_IMODE(mode):o})"))
    return out


# ---------------------------------------------------------------- disk


def check_disk(path: str) -> list[Check]:
    """Free space where the results log goes (`path` is the log file, or a directory)."""
    p = Path(path).expanduser()
    target = (p if p.is_dir() else p.parent).resolve()
    note = ""
    if not target.exists():
        note = f" ({target} does not exist yet; it is created when the agent starts, e.g. by systemd's StateDirectory=)"
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        usage = shutil.disk_usage(target)
    except OSError as exc:
        return [Check("FAIL", "disk", f"cannot tell the free space at {target} ({_plain(exc)})")]
    ok = usage.free >= MIN_FREE_BYTES
    out = [Check("ok" if ok else "FAIL", "disk", f"{usage.free / 2**30:.1f} GiB free at {target}"
                 + ("" if ok else f"; the results log needs room (at least {MIN_FREE_BYTES // 2**20} MiB)") + note)]
    probe = p.resolve() if p.exists() else target
    if not os.access(probe, os.W_OK):
        out.append(Check("warn", "results log",
                         f"this user cannot write {probe}; the agent's user must (run the doctor as that user: "
                         "sudo -u splitpoint splitpoint doctor ...)"))
    return out


# ---------------------------------------------------------------- all of it


def run_doctor(bundle: str | None, cloud: str | None, device: str, results: str | None,
               make_client: Callable[[], Any] | None = None, transport: str = "",
               config_checks: list[Check] | None = None, out: Callable[[str], None] = print,
               secrets: dict[str, str] | None = None) -> int:
    """Every check, printed line by line as it finishes; 0 when nothing FAILed, 1 otherwise."""
    checks: list[Check] = []

    def emit(new: list[Check]) -> None:
        for c in new:
            out(c.line())
        checks.extend(new)

    emit(list(config_checks or []))
    emit(guarded("runtimes", check_runtimes))
    emit(guarded("Edge TPU", check_edgetpu, device))
    digest = None
    if bundle:
        emit(guarded("bundle", check_bundle, bundle, device))
        digest = bundle_digest(bundle)
    else:
        emit([Check("skip", "bundle", "no bundle given (--bundle or `bundle` in --config)")])
    if secrets:
        emit(guarded("secrets", check_secret_files, secrets))
    if cloud and make_client is not None:
        emit(guarded("cloud", check_cloud, make_client, digest, transport))
    else:
        emit([Check("skip", "cloud", "no server given (--cloud or `cloud` in --config)")])
    emit(guarded("disk", check_disk, results or "."))
    failed = [c for c in checks if c.status == "FAIL"]
    out(f"\n{len(failed)} problem(s) found" if failed else "\nno problems found")
    return 1 if failed else 0


def run_checks(checks: list[Check], out: Callable[[str], None] = print) -> int:
    for c in checks:
        out(c.line())
    failed = [c for c in checks if c.status == "FAIL"]
    out(f"\n{len(failed)} problem(s) found" if failed else "\nno problems found")
    return 1 if failed else 0
