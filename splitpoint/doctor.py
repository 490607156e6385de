"""`splitpoint doctor`: check a field installation and say, in plain words, what is wrong.

Checks: the edge config file; the Edge TPU on USB (ids 1a6e:089a before its
firmware loads, 18d1:9302 after) or PCIe (/dev/apex_0); whether the delegate
loads; runtime versions and the known bad pairs; the bundle's integrity; the
frame source, opened and its first frame read (splitpoint/doctor_source.py); the
cloud's reachability, transport (TLS, token) and bundle digest, with a hint for
each way a TLS handshake fails, and clock skew against the server (when the server
reports its clock) (splitpoint/doctor_cloud.py); secret file modes; free disk and write access for the
results log.

Every check returns a list of `Check` lines and never raises: a check that
breaks is itself reported as a FAIL line naming what went wrong.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from edge_node.disk_space import LOW_FREE_BYTES
from edge_node.results_records import check_log_start
from splitpoint.doctor_bundle import bundle_identity, check_bundle
from splitpoint.doctor_checks import Check, _plain, guarded
from splitpoint.doctor_cloud import _BOOL_KEYS, TRANSPORT_KEYS, check_cloud
from splitpoint.doctor_cloud import client_factories as client_factories  # the CLI's, re-exported
from splitpoint.doctor_cloud import client_factory as client_factory
from splitpoint.doctor_device import check_edgetpu, check_runtimes
from splitpoint.doctor_source import check_source
from splitpoint.errors import ConfigError
from splitpoint.power_supply import check_power

log = logging.getLogger(__name__)

#: the agent's own floor (it warns below it while it runs)
MIN_FREE_BYTES = LOW_FREE_BYTES
#: every edge config key the doctor uses
EDGE_KEYS = ("bundle", "cloud", "device", "results", "results_format", "source", *TRANSPORT_KEYS)


# ---------------------------------------------------------------- config


def _edge_defaults() -> dict[str, Any]:
    """EdgeConfig's defaults: what the agent uses for a key the file leaves out."""
    import dataclasses

    from edge_node.config import EdgeConfig

    return {f.name: f.default for f in dataclasses.fields(EdgeConfig) if f.default is not dataclasses.MISSING}


def check_edge_config(path: str, values: dict[str, Any], built: list[Any]) -> list[Check]:
    """Does the file load as `splitpoint edge --config` would load it? The EdgeConfig goes into `built`."""
    from edge_node.config import EdgeConfig
    from splitpoint.config import build

    try:
        conf = build(EdgeConfig, values)
        built.append(conf)
        _check_policy(conf)
        conf.security.check_files()  # as `splitpoint edge` does before its bundle: a directory for tls_cert
    except ConfigError as err:
        return [Check("FAIL", "config", f"{path}: {err} (`splitpoint edge` would refuse to start)")]
    return [Check("ok", "config", f"{path} is a valid edge config")]


def _check_policy(conf: Any) -> None:
    """The agent's policy, built on the config's bundle as the agent builds it at start: its
    profiles, power table and radio file read and checked, its splits among the bundle's, TLS
    or plaintext chosen if it may offload (ConfigError naming what is wrong). Nothing when the
    bundle does not load: the bundle's own check says why."""
    from edge_node.assembly import policy_for
    from scheduler.link import LinkEstimator
    from scheduler.policy_base import may_offload
    from splitpoint.bundle import load_bundle

    try:
        manifest = load_bundle(conf.bundle, verify=False).manifest
    except Exception:  # noqa: BLE001 - reported by the bundle check
        return
    policy = policy_for(conf, manifest, conf.policy, LinkEstimator())
    conf.check_transport(may_offload(policy, manifest.num_layers))


def contacts_no_server(conf: Any) -> str:
    """Why `splitpoint edge` with this EdgeConfig contacts no server ("" when it may): its policy runs
    every frame on the edge (a fixed split at k = K), require_cloud is off, and neither TLS nor
    plaintext is chosen - such an agent starts without either (docs/security.md), so a cloud
    check failing for want of tls_ca would report a problem the agent does not have. With TLS or
    insecure set the cloud is still checked: a SIGHUP reload may start offloading."""
    from scheduler.planner import build_policy
    from scheduler.policy_base import may_offload
    from splitpoint.bundle import load_bundle

    if conf is None or conf.security.chosen or conf.policy.name != "fixed":
        return ""
    try:
        K = load_bundle(conf.bundle, verify=False).manifest.num_layers
        if conf.contacts_server(may_offload(build_policy(conf.policy, "", K, conf.split), K)):
            return ""
    except Exception:  # noqa: BLE001 - a bundle that does not load is reported by its own check
        return ""
    return ("the agent contacts no server: its policy runs every frame on the edge (k = K), require_cloud is off, "
            "and neither tls_ca nor insecure is set")


class Settings(NamedTuple):
    values: dict[str, Any]  # what the doctor checks, as text and booleans
    checks: list[Check]  # the config's own check
    config: Any = None  # the EdgeConfig the file and flags build, when they do


def resolve_settings(config_path: str | None, flags: dict[str, Any]) -> Settings:
    """The values the doctor checks: agent defaults < the edge TOML < flags.

    Without a config file only the flags count (no cloud check unless --cloud). With one,
    the file plus the flags is validated as `splitpoint edge` would validate it, and the
    keys the doctor needs fall back to the agent's defaults, as the agent's would.

    A --cloud that is no target (empty too) is a usage error, as for `splitpoint edge` and `loadtest`: ConfigError
    (exit 2), not a FAIL line and exit 1. The file's `cloud` is the config check's to report.
    """
    from splitpoint.config import read_toml
    from splitpoint.errors import ConfigError
    from splitpoint.targets import parse_target

    if flags.get("cloud") is not None:  # `--cloud ""` too: as edge says, not "no cloud check"
        parse_target("cloud", str(flags["cloud"]))
    flags = {k: v for k, v in flags.items() if k in EDGE_KEYS and v not in (None, "")}
    checks: list[Check] = []
    values: dict[str, Any] = {}
    conf = None
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
            built: list[Any] = []
            checks += guarded("config", check_edge_config, config_path, {**data, **flags}, built)
            conf = built[0] if built else None
    values.update(flags)
    values.setdefault("device", "cpu")
    values.setdefault("results", "results.jsonl")
    return Settings({k: _setting(k, v) for k, v in values.items()}, checks, conf)


def _setting(key: str, value: Any) -> Any:
    if key in _BOOL_KEYS:
        return value is True or str(value).lower() in ("true", "yes", "1", "on")
    return "" if value is None else str(value)


# ---------------------------------------------------------------- secrets


def check_secret_files(files: dict[str, str]) -> list[Check]:
    """Keys and tokens: FAIL when missing (the agent would refuse to start, with or without a
    server to check), a warning each when other users can read them."""
    out = []
    for key, path in files.items():
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            out.append(Check("FAIL", "secrets", f"{key} {path}: {exc.strerror or _plain(exc)} "
                                                "(`splitpoint edge` would refuse to start)"))
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(Check("warn", "secrets", f"{key} {path} is readable by other users "
                                                f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"))
        else:
            out.append(Check("ok", "secrets", f"{key} {path} is private (mode {stat.S_IMODE(mode):o})"))
    return out


def check_certificates(files: dict[str, str]) -> list[Check]:
    """Each certificate file's dates against this clock (splitpoint/cert_validity.py): one past
    its end, or not valid yet, FAILs the handshake it is for; one ending soon is a warning."""
    from splitpoint.cert_validity import validity

    out = []
    for key, path in files.items():
        v = validity(key, path, ca=key == "tls_ca")
        if v is not None:  # unreadable: the cloud check says what the handshake makes of it
            out.append(Check(v.status, "certificates", v.message))
    return out


# ---------------------------------------------------------------- disk


_FORMAT_WORDS = {"sqlite": "a SQLite", "jsonl": "a JSONL"}


def check_disk(path: str, fmt: str = "jsonl") -> list[Check]:
    """Free space and write access where the results log `path` goes, and an existing log one the
    agent would append to (not a directory, another program's file, a log of the other format
    than `fmt`, the agent's results_format, or another kind of file)."""
    if "\0" in path:  # os.stat would raise ValueError: the agent's traceback once
        return [Check("FAIL", "results log", f"{path!r} contains a NUL byte: not a file name")]
    p = Path(path).expanduser()
    if p.is_dir():
        return [Check("FAIL", "results log", f"{p} is a directory: `results` names the log file itself "
                                             f"(e.g. {p / 'results.jsonl'}); `splitpoint edge` would refuse it")]
    target = p.parent.resolve()
    note = ""
    if not target.exists():
        note = f" ({target} does not exist yet; it is created when the agent starts, e.g. by systemd's StateDirectory=)"
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():  # notes.png/results.jsonl: nothing can be created under a file
        return [Check("FAIL", "results log", f"{p} cannot be created: {target} is a file, not a directory")]
    if p.exists() and not p.is_file() and not p.is_dir():
        return [Check("FAIL", "results log", f"{p} is not a regular file (a named pipe or a device): "
                                             "`splitpoint edge` would refuse it")]
    if p.is_file() and p.stat().st_size > 0:  # the agent appends to it: it must be a results log
        try:
            found = check_log_start(p)
        except ConfigError as exc:
            return [Check("FAIL", "results log", f"`splitpoint edge` would refuse it: {exc}")]
        except OSError as exc:
            return [Check("FAIL", "results log", f"{p} cannot be read ({_plain(exc)})")]
        if found != fmt:  # as the agent says it, then refuses to start
            return [Check("FAIL", "results log", f"`splitpoint edge` would refuse it: {p} is {_FORMAT_WORDS[found]} "
                                                 f"results log, and results_format is {fmt}: set results_format = "
                                                 f'"{found}" or give another file')]
    try:
        usage = shutil.disk_usage(target)
    except OSError as exc:
        return [Check("FAIL", "disk", f"cannot tell the free space at {target} ({_plain(exc)})")]
    ok = usage.free >= MIN_FREE_BYTES
    out = [Check("ok" if ok else "FAIL", "disk", f"{usage.free / 2**30:.1f} GiB free at {target}"
                 + ("" if ok else f"; the results log needs room (at least {MIN_FREE_BYTES // 2**20} MiB)") + note)]
    if p.is_file():  # said, so that a log that was looked at reads differently from one never made
        out.append(Check("ok", "results log", f"{p} is {_FORMAT_WORDS[fmt]} results log the agent will append to"
                         if p.stat().st_size > 0 else f"{p} is empty: the agent will write it"))
    probe = p.resolve() if p.exists() else target
    if not os.access(probe, os.W_OK):
        out.append(Check("warn", "results log",
                         f"this user cannot write {probe}; the agent's user must (run the doctor as that user: "
                         "sudo -u splitpoint splitpoint doctor ...)"))
    return out


# ---------------------------------------------------------------- all of it


def run_doctor(bundle: str | None, cloud: str | None, device: str, results: str | None,
               make_client: Callable[[], Any] | list[Callable[[], Any]] | None = None, transport: str = "",
               config_checks: list[Check] | None = None, out: Callable[[str], None] = print,
               secrets: dict[str, str] | None = None, no_server: str = "",
               certificates: dict[str, str] | None = None, source: str = "", results_format: str = "jsonl",
               conf: Any = None) -> int:
    """Every check, printed line by line as it finishes; 0 when nothing FAILed, 1 otherwise.
    `no_server`: why the agent contacts no server (`contacts_no_server`): the cloud is not checked.
    `make_client`: one client factory, or one per replica of a list (`client_factories`), each checked.
    `conf`: the EdgeConfig, when there is one: a fixed policy's split is what the servers must serve."""
    checks: list[Check] = []

    def emit(new: list[Check]) -> None:
        for c in new:
            out(c.line())
        checks.extend(new)

    emit(list(config_checks or []))
    emit(guarded("runtimes", check_runtimes))
    emit(guarded("Edge TPU", check_edgetpu, device))
    emit(guarded("power supply", check_power))
    identity = None
    if bundle:
        emit(guarded("bundle", check_bundle, bundle, device))
        identity = bundle_identity(bundle, conf)
    else:
        emit([Check("skip", "bundle", "no bundle given (--bundle or `bundle` in --config)")])
    emit(guarded("source", check_source, source, bundle))
    if secrets:
        emit(guarded("secrets", check_secret_files, secrets))
    if certificates:
        emit(guarded("certificates", check_certificates, certificates))
    if no_server:
        emit([Check("skip", "cloud", no_server)])
    elif cloud and make_client is not None:
        makes = make_client if isinstance(make_client, list) else [make_client]
        for make in makes:
            emit(guarded("cloud", check_cloud, make, identity, transport, len(makes) > 1))
    else:
        emit([Check("skip", "cloud", "no server given (--cloud or `cloud` in --config)")])
    emit(guarded("disk", check_disk, results or "results.jsonl", results_format or "jsonl"))
    failed = [c for c in checks if c.status == "FAIL"]
    out(f"\n{len(failed)} problem(s) found" if failed else "\nno problems found")
    return 1 if failed else 0


def run_checks(checks: list[Check], out: Callable[[str], None] = print) -> int:
    for c in checks:
        out(c.line())
    failed = [c for c in checks if c.status == "FAIL"]
    out(f"\n{len(failed)} problem(s) found" if failed else "\nno problems found")
    return 1 if failed else 0
