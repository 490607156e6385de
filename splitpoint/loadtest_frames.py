"""What `splitpoint loadtest`'s drones send: the real cut tensors of a split, made once from the
bundle's held-out frames, and a check that the server runs that bundle before the run starts (a
server on another bundle refuses every frame FAILED_PRECONDITION, and the run's figures said only
"0 answered; refused by the server: FAILED_PRECONDITION 20")."""

from __future__ import annotations

import grpc

from splitpoint.bundle import load_bundle
from splitpoint.errors import ConfigError, peer_text
from splitpoint.security import ClientSecurity
from splitpoint.targets import balanced_options, parse_target
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: how many distinct frames each drone cycles through (precomputed cut tensors)
DISTINCT_FRAMES = 16


def cut_requests(bundle_dir: str, split: int) -> list[offload_pb2.InferRequest]:
    """Requests for `split` made from the bundle's held-out frames by the real int8 heads."""
    from edge_node.heads import EdgeHeads
    from edge_node.outputs import cut_request_tensors
    from splitpoint.runtime.litert import Device

    bundle = load_bundle(bundle_dir, side="edge")
    m = bundle.manifest
    if split not in m.split_ids or split == m.num_layers:
        raise ConfigError("split", split, f"must be a split the server runs: one of {m.split_ids[:-1]}")
    raw, _ = bundle.validation_data()
    heads = EdgeHeads(bundle, Device("cpu"), splits=[split])
    spec = m.split(split)
    out = []
    for i in range(min(DISTINCT_FRAMES, len(raw))):
        head = heads.run(split, heads.preprocess(raw[i]))
        req = offload_pb2.InferRequest(model_digest=m.model_digest, split=split)
        req.tensors.extend(cut_request_tensors(head, spec))  # every tensor of a multi-tensor cut
        out.append(req)
    return out


def check_server_bundle(target: str, security: ClientSecurity, digest: str, timeout_s: float) -> None:
    """ConfigError naming `target` when the server there answers Describe with another bundle than
    `digest`. A server that cannot be reached passes: the run says so, with its hint."""
    channel = security.channel(parse_target("target", target), balanced_options(MAX_MESSAGE_BYTES))
    try:
        info = offload_pb2_grpc.OffloadStub(channel).Describe(offload_pb2.DescribeRequest(), timeout=timeout_s)
    except grpc.RpcError:
        return
    finally:
        channel.close()
    if info.model_digest and info.model_digest != digest:
        raise ConfigError("target", target, f"the server runs bundle {peer_text(info.model_name)} "
                                            f"{peer_text(info.model_digest)}, --bundle is {digest}: every frame would "
                                            "be refused; give the bundle the server runs")
