"""The real edge agent, assembled from an EdgeConfig: the bundle's heads (LiteRT), a gRPC
session to the configured servers, the policy of the config, the results log's recorder
and one local executor. `EdgeAgent` takes all of them as constructor arguments (unit tests
pass fakes); `EdgeAgent.from_config` is `build_agent`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from scheduler.link import LinkEstimator
from scheduler.objectives import PolicyConfig
from scheduler.planner import build_policy
from scheduler.policy_base import SplitPolicy, may_offload, plans_paths
from splitpoint.bundle import load_bundle, split_ranges
from splitpoint.errors import ConfigError
from splitpoint.power_supply import UNDER_VOLTAGE_ADVICE, read_power

from .agent import EdgeAgent
from .client import NoLink
from .config import EdgeConfig
from .local_executor import LocalExecutor
from .outputs import request_bytes
from .recorder import Recorder
from .results_records import model_tag
from .run_report import EdgeMetrics
from .session import OffloadSession

log = logging.getLogger("edge_node.agent")  # the agent's logger: users filter on one name


def build_agent(config: EdgeConfig, policy: SplitPolicy | None = None,
                on_result: Callable[[dict[str, Any]], None] | None = None) -> EdgeAgent:
    """The agent with its real collaborators: the bundle's heads (LiteRT), a gRPC session,
    the policy of `config` (or `policy`), the results log, one local executor."""
    bundle = load_bundle(config.bundle, side="edge")
    m = bundle.manifest
    for wanted in config.splits:
        if wanted not in m.split_ids:
            raise ConfigError("splits", config.splits,
                              f"{wanted} is not a split of {m.model_name}; its splits: {split_ranges(m.split_ids)}")
    link = LinkEstimator()
    if policy is None:  # its splits checked before the heads take seconds to load
        policy = policy_for(config, m, config.policy, link)
    # TLS or plaintext, when the agent may talk to a server: known now (K), before LiteRT and the heads load
    config.check_transport(may_offload(policy, m.num_layers))
    from .heads import EdgeHeads  # LiteRT: only the real agent needs it

    heads = EdgeHeads(bundle, config.device_spec, config.cpu_fallback, splits=config.splits or None,
                      num_threads=config.threads)
    if heads.device.kind == "edgetpu":
        warn_of_under_voltage()
    registry = CollectorRegistry()
    recorder = Recorder(m.labels, EdgeMetrics(registry), on_fatal=lambda: None, on_result=on_result,
                        model=model_tag(m.model_name, m.model_digest))
    # One channel for every configured server: gRPC spreads streams over them (round_robin)
    # and skips a replica whose health is not SERVING, so a draining server loses its streams.
    # An all-edge agent given neither TLS nor plaintext gets no channel at all (NoLink).
    session = OffloadSession(config, m.model_digest, link, client=None if config.security.chosen else
                             NoLink(config.cloud))
    return EdgeAgent(config, bundle=bundle, heads=heads, session=session, link=link, policy=policy, recorder=recorder,
                     local=LocalExecutor(), registry=registry,
                     build_policy=lambda pcfg: reloaded_policy(config, m, pcfg, link))


def reloaded_policy(config: EdgeConfig, manifest: Any, pcfg: PolicyConfig, link: LinkEstimator) -> SplitPolicy:
    """A reload's policy: `policy_for`, refused (the running policy kept) when it would offload and
    the agent started all on the edge with neither TLS nor plaintext chosen (it has no channel)."""
    policy = policy_for(config, manifest, pcfg, link)
    config.check_transport(may_offload(policy, manifest.num_layers), reload=True)
    return policy


def policy_for(config: EdgeConfig, manifest: Any, pcfg: PolicyConfig, link: LinkEstimator) -> SplitPolicy:
    """The policy `pcfg` asks for, on this bundle and the splits this agent loads: at start, and
    on a reload, where a split that is not loaded must be refused (the running policy kept)
    rather than accepted and then fail every frame."""
    loaded = config.loaded_splits(manifest)
    for key, k in (("split", config.split), ("policy.split", pcfg.split)):
        if k is not None and k not in loaded:
            where = "loaded here (splits)" if config.splits else "of " + manifest.model_name
            raise ConfigError(key, k, f"not a split {where}; candidates: {split_ranges(loaded)}")
    K = manifest.num_layers
    if pcfg.split is not None and config.split is not None and pcfg.split != config.split:
        # `--split 3 --policy-split 5` ran split 5 without a word
        log.warning("policy.split = %d is the split run; split = %d is only its default when policy.split is unset",
                    pcfg.split, config.split)
    if pcfg.name == "fixed" and pcfg.split is None and config.split is None:
        log.info("no split given: every frame runs wholly on the edge (k = %d)", K)
    policy = build_policy(pcfg, manifest.model_digest, K, config.split, link, candidates=loaded)
    check_message_size(config, manifest, policy, loaded)
    return policy


#: more than a request's fields besides its tensor data can take (ids, times, names, shapes, and
#: per-channel quantization of a few thousand channels): a split this far under the limit fits
REQUEST_FIELDS_BYTES = 64 * 1024


def check_message_size(config: EdgeConfig, manifest: Any, policy: SplitPolicy, loaded: list[int]) -> None:
    """ConfigError unless every frame `policy` may send fits in max_message_mb. gRPC refuses a
    larger message on the agent's own side ("Sent message larger than max"), and the frames then
    fell back with "cloud refused the stream (RESOURCE_EXHAUSTED)": the agent's limit, blamed on
    the server and never named."""
    K = manifest.num_layers
    fixed = None if plans_paths(policy) else getattr(policy, "split", None)
    sendable = [k for k in ([fixed] if fixed is not None else loaded) if k != K]
    # encoded only where the tensor comes near the limit: encoding every split's zeroed request took
    # 0.13 s for 156 MobileNetV2-sized cuts on x86, at every start and reload, to find none over 32 MiB
    near = {s.split for s in manifest.splits if s.wire_bytes + REQUEST_FIELDS_BYTES > config.max_message_bytes}
    sizes = {k: request_bytes(manifest, k, config.frame_deadline_ms) for k in sendable if k in near}
    over = {k: n for k, n in sizes.items() if n > config.max_message_bytes}
    if not over:
        return
    k, n = max(over.items(), key=lambda item: item[1])
    need_mb = math.ceil(n / 2**20 * 1000) / 1000
    fix = f"raise it to at least {need_mb:g}"
    if fixed is None:
        fix += f", or leave split{'s' if len(over) > 1 else ''} {split_ranges(sorted(over))} out (splits)"
    raise ConfigError("max_message_mb", config.max_message_mb,
                      f"split {k}'s frames are messages of up to {n} bytes ({n / 2**20:.3g} MiB), more than "
                      f"that: {fix}")


def warn_of_under_voltage() -> None:
    """One warning at start when the Pi reports under-voltage (now or since boot): a USB
    accelerator on a sagging supply drops off the bus and fails every run
    (edge_node/device_health.py), and a restart after that is where the operator looks."""
    state, _ = read_power(timeout_s=2.0)
    if state is not None and state.under_voltage:
        log.warning("the Pi reports %s: %s", state.describe(), UNDER_VOLTAGE_ADVICE)
