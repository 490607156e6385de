"""`splitpoint demo --model digits-detector`: the detector's whole path on one machine.

Partition the shipped digits detector (once), start `splitpoint cloud` as a real
process on a loopback port, then for each held-out canvas take turns over the
splits: run the int8 head here, send every tensor of the cut, take the answer's
compact detections (the server decodes the maps) into source-image pixels, print them against the
synthetic ground truth and write them to results.jsonl.

The agent (`splitpoint edge`) runs detectors too and records the same detections; this
demo drives the pieces directly so that it can print each split's boxes beside the
ground truth, one canvas at a time.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 30.0


def truth_by_frame(boxes: np.ndarray | None, frames: int) -> list[list[dict]]:
    """validation.npz `boxes` rows (frame, class, x0, y0, x1, y1) -> per-frame detections."""
    out: list[list[dict]] = [[] for _ in range(frames)]
    for row in [] if boxes is None else boxes:
        out[int(row[0])].append({"class": int(row[1]), "score": 1.0, "box": [float(v) for v in row[2:]]})
    return out


def run_detector_demo(workdir: Path, frames: int = 24, split: int | None = None, rebuild: bool = False) -> int:
    import grpc

    from edge_node.heads import EdgeHeads
    from edge_node.outputs import cut_request_tensors, decode_detections, local_outputs
    from edge_node.run_report import RunSummary
    from splitpoint.bundle import load_bundle
    from splitpoint.demo import clear_earlier_results, demo_bundle, start_server, stop_server
    from splitpoint.detection import compact_records, detection_records
    from splitpoint.runtime.litert import Device
    from splitpoint.v1 import offload_pb2, offload_pb2_grpc
    from splitpoint.verify import detection_agreement

    results = workdir / "results-detector.jsonl"
    clear_earlier_results(results)  # refused now, not after minutes of partitioning
    path = demo_bundle(workdir, "bundle-detector", "digits-detector", split, rebuild)
    bundle = load_bundle(path)
    m = bundle.manifest
    raw, _ = bundle.validation_data()
    with np.load(bundle.path(m.validation)) as z:  # type: ignore[arg-type]
        truth = truth_by_frame(z["boxes"] if "boxes" in z.files else None, len(raw))
    heads = EdgeHeads(bundle, Device("cpu"))
    splits = [split] if split is not None else m.split_ids
    size = (m.preprocessing.width, m.preprocessing.height)  # the canvases are the source images
    print("starting the cloud server ...", flush=True)
    server, address = start_server(path, workdir / "cloud-detector.log")
    found_all: list[list[dict]] = []
    truth_all: list[list[dict]] = []
    failed = 0
    counts = RunSummary()  # the agent's end-of-run detection counts, for the same line
    try:
        print(f"cloud server (pid {server.pid}) listening on {address}\n", flush=True)
        with grpc.insecure_channel(address) as channel, open(results, "w") as out:
            stub = offload_pb2_grpc.OffloadStub(channel)
            for n in range(frames):
                i, k = n % len(raw), splits[n % len(splits)]
                t0 = time.perf_counter()
                x = heads.preprocess(raw[i])
                head = heads.run(k, x)
                spec = m.split(k)
                if spec.tail is None:
                    where, dets = "edge", detection_records(local_outputs(head, m), m, size)
                else:
                    req = offload_pb2.InferRequest(frame_id=n, model_digest=m.model_digest, split=k)
                    req.tensors.extend(cut_request_tensors(head, spec))
                    try:
                        resp = stub.InferFrame(req, timeout=RPC_TIMEOUT_S)
                    except grpc.RpcError as err:
                        failed += 1
                        print(f"{n:>5} {k:>5} FAILED: {err.code().name} {err.details()}")
                        continue
                    # the server answers a detector with its decoded detections, not the maps
                    where, dets = "cloud", compact_records(decode_detections(resp, m), m, size)
                ms = (time.perf_counter() - t0) * 1000
                found_all.append(dets)
                counts.count_detections(dets)
                truth_all.append(truth[i])
                # origin as the agent names a synthetic source's frame (the held-out inputs in turn)
                record = {"frame_id": n, "origin": f"synthetic#{n}", "split": k, "where": where, "wire_bytes": spec.wire_bytes,
                          "cut_tensors": len(spec.cut), "e2e_ms": round(ms, 2), "detections": dets}
                out.write(json.dumps(record) + "\n")
                shown = ", ".join(f"{d['label_name']}@{d['score']:.2f}[{','.join(f'{v:.0f}' for v in d['box'])}]"
                                  for d in dets) or "(none)"
                want = " ".join(sorted(str(o["class"]) for o in truth[i]))
                print(f"{n:>5} k={k:<3} {where:<5} {len(spec.cut)} tensor(s) {spec.wire_bytes:>6} B {ms:7.1f} ms  "
                      f"truth [{want}]  found {shown}", flush=True)
    finally:
        code = stop_server(server)
    recall, precision, objects = detection_agreement(truth_all, found_all)
    print(f"\n{len(found_all)} frames, {failed} failed; against the ground truth ({objects} digits): "
          f"recall {recall:.1%}, precision {precision:.1%} (IoU >= 0.5, same class)")
    if counts.detection_summary():
        print(f"found {counts.detection_summary()}")
    print(f"cloud server stopped (exit {code}); detections in {results}")
    return 0 if failed == 0 else 1

