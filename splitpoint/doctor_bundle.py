"""`splitpoint doctor`'s bundle checks: its files against their sha256 and its heads against
their splits' shapes (artifact_shapes.check_head_files, as the agent checks them), how many heads are
compiled for the Edge TPU and, for an Edge TPU device, one compiled head loaded and run on it.

The last is the one that finds a version mismatch between the heads' compiler and the Pi's
libedgetpu or LiteRT (`Package requires runtime version (N) ...`, `EdgeTpuDelegateForCustomOp
failed to prepare`): those show only when a head is loaded on the device, which before this
check happened first in the agent, at the start of a flight. One head is enough: a bundle's
heads are compiled together. It is skipped, saying why, for a bundle with no compiled head and
where the delegate does not load (the Edge TPU check says why); device = cpu does not try it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from splitpoint.doctor_checks import Check, _plain, _quiet_unraisable

if TYPE_CHECKING:
    from splitpoint.bundle import Bundle


def check_bundle(path: str, device: str = "cpu") -> list[Check]:
    from splitpoint.artifact_shapes import check_head_files
    from splitpoint.bundle import load_bundle
    from splitpoint.errors import BackendUnavailableError, BundleError

    try:
        b = load_bundle(path, side="edge")
        shapes = " and each head its split's shapes"
        try:
            check_head_files(b)  # a head of another split matched its rewritten sha256: the agent refuses it
        except BackendUnavailableError:  # no LiteRT: the runtime check says so
            shapes = " (head shapes not checked: LiteRT did not load)"
    except BundleError as err:
        return [Check("FAIL", "bundle", f"{err}: copy the bundle again (the same one the server runs)")]
    except OSError as err:
        return [Check("FAIL", "bundle", f"{path}: cannot read it ({_plain(err)})")]
    m = b.manifest
    compiled = sum(1 for s in m.splits if s.edgetpu_head is not None)
    heads = sum(1 for s in m.splits if s.head)
    out = [Check("ok", "bundle", f"{path}: {m.model_name}, {len(m.splits)} splits, every edge file matches its sha256{shapes}")]
    on_tpu = device.strip().lower().startswith("edgetpu")
    status = "ok" if compiled == heads or not on_tpu else "warn"
    detail = f"{compiled} of {heads} heads compiled for the Edge TPU"
    if compiled < heads:
        detail += ("; uncompiled heads run on the CPU (run `splitpoint partition` where edgetpu_compiler is "
                   "installed, x86-64 Linux)" if on_tpu else " (device = cpu: not used)")
    out.append(Check(status, "bundle Edge TPU heads", detail))
    if on_tpu:
        out.extend(check_edgetpu_head(b, device))
    return out


def bundle_identity(path: str, conf: Any = None) -> tuple[str, list[int]] | None:
    """The bundle's model digest and the splits an agent may send a server, from its manifest:
    with the EdgeConfig `conf`, those of the splits it loads (`splits`) its policy may send
    (the agent's own `check_server` rule, scheduler.policy_base.offload_splits: a server started
    with `cloud --splits 3` serves an agent at split 3, or one with splits = [3]); without, every
    one but K. None when the bundle cannot be read."""
    from scheduler.planner import build_policy
    from scheduler.policy_base import offload_splits
    from splitpoint.bundle import load_bundle

    try:
        m = load_bundle(path, verify=False).manifest
    except Exception:
        return None
    loaded = m.split_ids if conf is None else conf.loaded_splits(m)
    splits = [k for k in loaded if k != m.num_layers]  # an adaptive policy's: every split it loads but K
    if conf is not None and conf.policy.name == "fixed":
        try:
            splits = offload_splits(build_policy(conf.policy, "", m.num_layers, conf.split), loaded, m.num_layers)
        except Exception:  # noqa: BLE001 - a split the bundle lacks is reported by the config's own check
            pass
    return m.model_digest, splits


def check_edgetpu_head(bundle: Bundle, device: str) -> list[Check]:
    """The smallest compiled head of `bundle` (loaded and checked by check_bundle) loaded and run
    once on the Edge TPU `device` (see the module doc)."""
    from splitpoint.errors import BackendUnavailableError, ConfigError, EdgeTpuUnavailableError
    from splitpoint.runtime.litert import Device, HeadRunner, load_edgetpu_delegate

    name = "bundle on the Edge TPU"
    try:
        wanted = Device.parse(device, "device")
    except ConfigError:
        return [Check("skip", name, "the device is not valid (above): no head was tried")]
    spec = next((s for s in bundle.manifest.splits if s.edgetpu_head is not None), None)
    if spec is None or spec.edgetpu_head is None:
        return [Check("skip", name, "no head of this bundle is compiled for the Edge TPU")]
    with _quiet_unraisable():
        try:
            delegate = load_edgetpu_delegate(wanted)
        except EdgeTpuUnavailableError:
            return [Check("skip", name, "the Edge TPU delegate did not load (above): no head was tried on it")]
        try:
            runner = HeadRunner(bundle.path(spec.edgetpu_head), delegate)
            t0 = time.perf_counter()
            runner.run_all(np.zeros(runner.input_shape, runner.input_dtype))
            ms = (time.perf_counter() - t0) * 1000
        except BackendUnavailableError as err:  # it names the head and, for the known mismatches, what to do
            return [Check("FAIL", name, _plain(err))]
        except Exception as exc:  # noqa: BLE001 - loaded, and its run failed: the agent would fail every frame
            return [Check("FAIL", name, f"head {spec.split} loaded on {wanted} but its run failed "
                                        f"({type(exc).__name__}: {_plain(exc)})")]
    return [Check("ok", name, f"head {spec.split} ({spec.edgetpu_head.path}) loads and runs on {wanted}: first run "
                              f"{ms:.1f} ms (weights loaded onto the device)")]
