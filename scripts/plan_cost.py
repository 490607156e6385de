"""What one frame's plan costs the agent: AdaptivePolicy.plan() and hedge_prediction(), timed.

    python scripts/plan_cost.py EDGE_PROFILE CLOUD_PROFILE [--policy min-latency] [--frames 2000]

The profiles are a bundle's (`splitpoint profile`), or the ones `splitpoint bench --keep-runs
DIR` leaves in DIR (edge-profile-subset.json, cloud-profile-subset.json: the bench's splits).
The link is fed 27.6 kB answers at 1.5 Mbps (a cellular uplink where the planner weighs every
path, racing included) and every frame finds the edge and the link free, as on the trace
slices where the agent runs the edge like the all-edge split. Prints the median and the 95th
percentile over batches of 100 plans, in ms per plan; run it with the machine idle.
Measured figures: docs/scheduler.md ("What a plan costs").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.link import LinkEstimator, percentile  # noqa: E402 - after the path fix above
from scheduler.objectives import PolicyConfig  # noqa: E402
from scheduler.paths import Timeline  # noqa: E402
from scheduler.planner import build_cost_model  # noqa: E402
from scheduler.policy import AdaptivePolicy  # noqa: E402
from splitpoint.errors import SplitpointError  # noqa: E402

BATCH = 100


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge_profile")
    ap.add_argument("cloud_profile")
    ap.add_argument("--policy", default="min-latency")
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args(argv)
    try:
        digest = json.loads(Path(args.edge_profile).read_text())["bundle_digest"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"plan_cost: cannot read the bundle digest of {args.edge_profile}: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = PolicyConfig(name=args.policy, edge_profile=args.edge_profile, cloud_profile=args.cloud_profile)
        cost = build_cost_model(cfg, digest)
    except SplitpointError as err:  # a malformed profile, profiles of two bundles, a bad policy name
        print(f"plan_cost: {err}", file=sys.stderr)
        return 2
    clock = [0.0]
    link = LinkEstimator(initial_bandwidth_bps=1.5e6, initial_rtt_ms=10.0, clock=lambda: clock[0])
    policy = AdaptivePolicy(cfg, cost, link)
    splits = sorted(cost.splits)
    timeline = Timeline()
    for _ in range(30):
        clock[0] += 0.1
        link.observe_transfer(27_600, 27_600 * 8 / 1.5e6 * 1000 + 10.0, 7.0, 0.5)

    def plans(n: int, first: int) -> None:
        for i in range(first, first + n):
            clock[0] += 0.1
            choice = policy.plan(i, splits, clock[0], timeline, arrived=clock[0])
            policy.hedge_prediction(choice.split)
            timeline.edge_done(i, clock[0])
            timeline.link_done(i, clock[0])

    plans(200, 0)  # warm-up
    per_plan = []
    for b in range(max(1, args.frames // BATCH)):
        t0 = time.perf_counter()
        plans(BATCH, 200 + b * BATCH)
        per_plan.append((time.perf_counter() - t0) / BATCH * 1000)
    print(f"{args.policy} over {len(splits)} splits: median {percentile(per_plan, 50):.3f} ms per plan, "
          f"p95 {percentile(per_plan, 95):.3f} ms ({len(per_plan)} batches of {BATCH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
