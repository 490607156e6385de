"""An adaptive agent after a bad spell: does it go back to the cloud once the link is good again?

    python scripts/answer_memory.py --bundle BUNDLE [--fps 20] [--spell-delay-ms 25] [--toggle-s 0.7]

BUNDLE: the digits CNN's (`splitpoint partition digits-cnn -o BUNDLE`) or any other.

A real `CloudServer` on loopback, an adaptive min-latency agent (race off, latency mode) reaching
it through a LinkEmulator (splitpoint/linkemu): 20 s of a good link (1 ms each way, no rate
limit), a 20 s spell in which the link toggles every --toggle-s seconds between that and
--spell-delay-ms each way at 1 Mbps, then 60 s of the good link again. The profiles are made up
from the bundle (a head of 40 x k / K ms: all-edge 40 ms, a device much slower than the server;
tails of 1 ms), so that the cloud wins by far on the good link. It prints, per 10 s of capture
time, the frames answered by the cloud out of those run.

What it showed (docs/scheduler.md, "Two limits"): the allowance an offload must beat, learnt from
answers only, latched high in the spell, and an agent on the edge gets no answers to lower it:
none of the frames of the last 60 s went to the cloud. With what answers taught forgotten after
scheduler.link.ANSWER_MEMORY_S (30 s), the agent is back on the cloud about 30 s after its last
late answer. Run it in a checkout of each commit to compare them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_server.config import CloudConfig  # noqa: E402
from cloud_server.server import CloudServer  # noqa: E402
from edge_node.agent import EdgeAgent  # noqa: E402
from edge_node.config import EdgeConfig  # noqa: E402
from edge_node.source_spec import open_source  # noqa: E402
from scheduler.objectives import PolicyConfig  # noqa: E402
from scheduler.profiles import Profile, SplitProfile, StageStats  # noqa: E402
from splitpoint.bundle import load_bundle  # noqa: E402
from splitpoint.linkemu import LinkEmulator  # noqa: E402

GOOD_S, SPELL_S, AFTER_S = 20.0, 20.0, 60.0


def made_up_profiles(bundle: Path, out: Path) -> tuple[Path, Path]:
    m = load_bundle(bundle).manifest
    K = m.num_layers
    sides = {"edge": lambda k: max(0.1, 40.0 * k / K), "cloud": lambda k: 1.0}
    paths = []
    for side, ms in sides.items():
        splits = {s.split: SplitProfile(s.split, s.wire_bytes, StageStats.constant(ms(s.split))) for s in m.splits}
        path = out / f"{side}.json"
        Profile(side, m.model_digest, m.model_name, {}, splits).save(path)
        paths.append(path)
    return paths[0], paths[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--spell-delay-ms", type=float, default=25.0)
    ap.add_argument("--toggle-s", type=float, default=0.7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        edge_profile, cloud_profile = made_up_profiles(args.bundle, Path(tmp))
        results = Path(tmp) / "results.jsonl"
        server = CloudServer(CloudConfig(bundle=str(args.bundle), listen="127.0.0.1:0", insecure=True)).start()
        try:
            host, port = server.address.rsplit(":", 1)
            with LinkEmulator((host, int(port)), uplink=None, delay_ms=1) as link:
                policy = PolicyConfig(name="min-latency", edge_profile=str(edge_profile),
                                      cloud_profile=str(cloud_profile), race=False)
                frames = int((GOOD_S + SPELL_S + AFTER_S) * args.fps)
                conf = EdgeConfig(bundle=str(args.bundle), source=f"synthetic:{frames}", cloud=link.address,
                                  insecure=True, results=str(results), mode="latency", fps=args.fps, device="cpu",
                                  policy=policy)
                agent = EdgeAgent.from_config(conf)

                def spell() -> None:
                    time.sleep(GOOD_S)
                    for i in range(int(SPELL_S / args.toggle_s)):
                        bad = i % 2 == 0
                        link.set_delay_ms(args.spell_delay_ms if bad else 1)
                        link.set_uplink(1e6 if bad else None)
                        time.sleep(args.toggle_s)
                    link.set_delay_ms(1)
                    link.set_uplink(None)

                threading.Thread(target=spell, daemon=True).start()
                with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
                    agent.run(source)
        finally:
            server.stop()
        records = [json.loads(line) for line in results.open()]
    first = min(r["capture_time_unix_ns"] for r in records)
    buckets: dict[int, list[int]] = {}
    for r in records:
        counts = buckets.setdefault(int((r["capture_time_unix_ns"] - first) / 1e10), [0, 0])
        counts[0] += 1
        counts[1] += r["where"] == "cloud"
    print("good link 0-20 s, spell 20-40 s, good link 40-100 s; frames answered by the cloud / run:")
    print("  ".join(f"{b * 10}-{b * 10 + 10} s: {c[1]}/{c[0]}" for b, c in sorted(buckets.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
