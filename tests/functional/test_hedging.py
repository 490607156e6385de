"""Hedging in the running agent: a 2 s uplink outage mid-run at 10 fps costs no frame more than
its hedge time + head(K) + 50 ms, and the frames it hedged say so."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_node.agent import EdgeAgent
from edge_node.config import EdgeConfig
from edge_node.results import read_results
from edge_node.source_spec import open_source
from scheduler.objectives import PolicyConfig
from scheduler.profiles import Profile, SplitProfile, StageStats
from splitpoint.bundle import load_bundle
from splitpoint.linkemu import LinkEmulator

FRAMES, FPS = 70, 10.0
CUT_AFTER, OUTAGE_S = 15, 2.0  # the uplink dies for 2 s once 15 frames came back from the cloud (or raced)
SLACK_MS = 50.0


def cloud_friendly_profiles(bundle: Path) -> tuple[Profile, Profile]:
    """Profiles under which k = 0 is predicted fastest on a short link: every frame is offloaded
    until the estimate says otherwise, so the outage meets frames in flight."""
    m = load_bundle(bundle).manifest
    K = m.num_layers
    edge = {s.split: SplitProfile(s.split, s.wire_bytes, StageStats.constant(40.0 if s.split == K else 1.0 + s.split))
            for s in m.splits}
    cloud = {s.split: SplitProfile(s.split, s.wire_bytes, StageStats.constant(2.0)) for s in m.splits}
    return (Profile("edge", m.model_digest, m.model_name, {}, edge),
            Profile("cloud", m.model_digest, m.model_name, {}, cloud))


@pytest.mark.parametrize("race", [False, True])
def test_an_uplink_outage_is_hedged_within_hedge_time_plus_head_k(cloud_server, digits_bundle: Path,
                                                                  tmp_path: Path, race: bool) -> None:
    """With racing on, frames are also run here as they are sent (the digits model runs in well
    under a ms, so their local results win and the outage reaches no record), and the same
    bounds hold: one record per frame, none later than its hedge time + head(K)."""
    edge, cloud = cloud_friendly_profiles(digits_bundle)
    edge.save(tmp_path / "e.json")
    cloud.save(tmp_path / "c.json")
    host, port = cloud_server.address.rsplit(":", 1)
    answered: list[int] = []
    outage_seen, cut = threading.Event(), threading.Event()

    def on_result(record: dict) -> None:
        # mid-run, however long the agent took to start: the cut follows the frames, not the clock
        if (record.get("where") == "cloud" or record.get("raced")) and not record.get("hedged"):
            answered.append(record["frame_id"])  # raced: its transfer went through the link too
            if len(answered) == CUT_AFTER:
                link.outage(OUTAGE_S)
                cut.set()
        if record.get("hedged"):
            outage_seen.set()

    with LinkEmulator((host, int(port)), uplink=20e6, delay_ms=2) as link:
        pcfg = PolicyConfig(name="min-latency", edge_profile=str(tmp_path / "e.json"),
                            cloud_profile=str(tmp_path / "c.json"), min_dwell_frames=0, race=race)
        conf = EdgeConfig(bundle=str(digits_bundle), source=f"synthetic:{FRAMES}", cloud=link.address, insecure=True,
                          results=str(tmp_path / "r.jsonl"), fps=FPS, policy=pcfg, hedge="auto", hedge_margin=20.0,
                          results_fsync=False)  # an fsync on a busy disk is not what this test measures
        conf.validate()
        agent = EdgeAgent.from_config(conf, on_result=on_result)
        late: list[int] = []  # spy: hedged frames whose cloud answer came after the local result
        learn_late = agent.cloud.learn_late

        def spy(p, resp) -> None:  # noqa: ANN001 - the agent's private types
            if not (resp.HasField("error") and resp.error.code != 0):
                late.append(resp.frame_id)
            learn_late(p, resp)

        agent.cloud.learn_late = spy  # type: ignore[method-assign]
        done = threading.Event()
        failure: list[BaseException] = []

        def go() -> None:
            try:
                with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
                    agent.run(source)
            except BaseException as exc:  # noqa: BLE001 - re-raised below in the test thread
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=go, name="agent", daemon=True).start()
        finished = done.wait(60.0)
        if not finished:
            agent.stop()
            done.wait(15.0)
        assert finished, "the agent did not finish 70 frames at 10 fps within 60 s"
        assert not failure, failure
        assert cut.is_set() and (race or outage_seen.is_set())

    logged = sorted(read_results(tmp_path / "r.jsonl"), key=lambda r: r["frame_id"])
    assert [r["frame_id"] for r in logged] == list(range(FRAMES))
    assert all(r["status"] == "ok" for r in logged)
    # head(K): the longest whole-model run this agent did
    head_k = max(r["timings_ms"]["local"] for r in logged if "local" in r["timings_ms"])
    offloaded = [r for r in logged if "hedge_ms" in r]
    hedged = [r for r in offloaded if r["hedged"]]
    assert len(offloaded) >= 20 and (race or hedged), (len(offloaded), len(hedged))
    for r in offloaded:
        bound = r["hedge_ms"] + head_k + SLACK_MS
        assert r["timings_ms"]["end_to_end"] <= bound, (r["frame_id"], r["where"], r["timings_ms"], r["hedge_ms"])
    for r in hedged:
        if r["where"] == "local" and r.get("raced"):  # its local run was the plan's, not a fallback
            assert "fallback_reason" not in r and r["split"] == load_bundle(digits_bundle).manifest.num_layers, r
        elif r["where"] == "local":  # the hedge's result came first
            assert r["fallback_reason"].startswith("hedged: no answer within"), r
        else:  # the cloud answered before the hedge's local run finished
            assert "fallback_reason" not in r
    # frames before and after the outage were answered by the cloud; those in it were hedged.
    # Raced, a frame's local result wins here whatever the link does: then it was sent, unhedged
    cloud_ids = [r["frame_id"] for r in logged if r["where"] == "cloud" or (r.get("raced") and not r["hedged"])]
    if hedged:
        assert min(cloud_ids) < min(r["frame_id"] for r in hedged) < max(cloud_ids)
        # no frame waited behind the outage: the hedged ones were recorded within about their hedge time
        assert max(r["timings_ms"]["end_to_end"] for r in hedged) < 500
    assert agent.summary.frames == FRAMES
    # the answers that lost the race still came, and taught the estimates
    hedged_local = {r["frame_id"] for r in hedged if r["where"] == "local"}
    raced_local = {r["frame_id"] for r in offloaded if r.get("raced") and r["where"] == "local"}
    assert late and set(late) <= hedged_local | raced_local, (late, sorted(hedged_local), sorted(raced_local))
    assert bool(raced_local) == race  # raced frames exist exactly when racing is on
