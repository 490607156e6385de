"""The real edge agent, assembled from an EdgeConfig: the bundle's heads (LiteRT), a gRPC
session to the configured servers, the policy of the config, the results log's recorder
and one local executor. `EdgeAgent` takes all of them as constructor arguments (unit tests
pass fakes); `EdgeAgent.from_config` is `build_agent`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from scheduler.link import LinkEstimator
from scheduler.policy_base import SplitPolicy
from splitpoint.bundle import load_bundle, split_ranges
from splitpoint.errors import ConfigError

from .agent import EdgeAgent, policy_for
from .config import EdgeConfig
from .local_executor import LocalExecutor
from .recorder import Recorder
from .run_report import EdgeMetrics
from .session import OffloadSession


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
    loaded = sorted(set(config.splits) | {m.num_layers}) if config.splits else m.split_ids
    for key, k in (("split", config.split), ("policy.split", config.policy.split)):
        if k is not None and k not in loaded:
            raise ConfigError(key, k, f"not a split {'loaded here (splits)' if config.splits else 'of ' + m.model_name}; "
                                      f"candidates: {split_ranges(loaded)}")
    from .heads import EdgeHeads  # LiteRT: only the real agent needs it

    heads = EdgeHeads(bundle, config.device_spec, config.cpu_fallback, splits=config.splits or None,
                      num_threads=config.threads)
    link = LinkEstimator()
    if policy is None:
        policy = policy_for(config, m, config.policy, link)
    registry = CollectorRegistry()
    recorder = Recorder(m.labels, EdgeMetrics(registry), on_fatal=lambda: None, on_result=on_result)
    # One channel for every configured server: gRPC spreads streams over them (round_robin)
    # and skips a replica whose health is not SERVING, so a draining server loses its streams.
    session = OffloadSession(config, m.model_digest, link)
    return EdgeAgent(config, bundle=bundle, heads=heads, session=session, link=link, policy=policy, recorder=recorder,
                     local=LocalExecutor(), registry=registry)
