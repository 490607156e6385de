"""gRPC metadata keys of the wire contract (besides the proto): both sides import them from here.

- `splitpoint-agent` (client -> server, optional): the agent's name. Without mutual TLS the
  server counts streams and queue shares per agent by it (cloud_server/admission.py); under
  mutual TLS the client certificate's common name is used instead.
- `splitpoint-replica` (server -> client, initial metadata of every Infer stream and Describe): the
  address of the replica that took the stream (its host name when it listens on 0.0.0.0 or [::]), so that clients can tell replicas apart
  behind one load-balanced target (`splitpoint loadtest` counts each replica's share by it).

A draining server (SIGTERM, a rollout's scale-in) says so in the status of what it refuses: a
frame's error answer and the end of its streams are UNAVAILABLE with details starting with
DRAINING_DETAILS (`is_draining`), so that clients treat it as routine, not as a failure.

A server refuses a frame of another bundle with FAILED_PRECONDITION, its details holding
OTHER_BUNDLE_DETAILS (`is_other_bundle`): the client backs off that replica. Other
FAILED_PRECONDITION answers (a tail of this very bundle that cannot be loaded) are that frame's alone.
"""

from __future__ import annotations

import grpc

AGENT_METADATA_KEY = "splitpoint-agent"
#: how a draining server's Infer streams end (UNAVAILABLE, its details starting so): a stream the
#: client may replace at once on another replica (health NOT_SERVING keeps new ones off this one)
DRAINING_DETAILS = "server is shutting down"
REPLICA_METADATA_KEY = "splitpoint-replica"
#: in the details of a frame refused for naming another bundle (cloud_server/validation.py)
OTHER_BUNDLE_DETAILS = "agent and server run different bundles"
#: in the details of a frame refused for a split the replica's bundle lacks (the same model
#: partitioned with other --splits: its digest matches, its splits do not)
NO_SUCH_SPLIT_DETAILS = "is not in the bundle"
#: in the details of a frame refused for a split of the bundle that the replica does not serve
#: (started with `cloud --splits`): every frame sent there at that split is refused too
NOT_SERVED_DETAILS = "has no tail on this server"
#: the shortest interval between two client keepalive pings with no data between them that a
#: server accepts (it sets gRPC's min_recv_ping_interval_without_data_ms to it); a client that
#: pings faster gets GOAWAY too_many_pings. The agent's keepalive_s must be at least this.
PERMITTED_PING_INTERVAL_MS = 5_000
#: the largest max_message_mb either side may be set to (gRPC's message lengths are 32-bit):
#: no frame on the wire is larger
MAX_MESSAGE_MB = 2047


def is_draining(code: grpc.StatusCode, details: str) -> bool:
    """A frame's error answer or a stream's end that says its replica drains (see DRAINING_DETAILS)."""
    return code == grpc.StatusCode.UNAVAILABLE and details.startswith(DRAINING_DETAILS)


def is_other_bundle(code: grpc.StatusCode | None, details: str) -> bool:
    """A frame's error answer that says its replica runs another bundle (see OTHER_BUNDLE_DETAILS),
    one of the same model without the frame's split (NO_SUCH_SPLIT_DETAILS), or serves only other
    splits (NOT_SERVED_DETAILS): every frame sent there at that split would be refused too."""
    return (code == grpc.StatusCode.FAILED_PRECONDITION and OTHER_BUNDLE_DETAILS in details) or is_split_not_served(
        code, details)


def is_split_not_served(code: grpc.StatusCode | None, details: str) -> bool:
    """A frame's error answer that says its replica does not serve the frame's split: the same
    model partitioned with other --splits (NO_SUCH_SPLIT_DETAILS) or started with `cloud --splits`
    (NOT_SERVED_DETAILS)."""
    return code == grpc.StatusCode.NOT_FOUND and (NO_SUCH_SPLIT_DETAILS in details or NOT_SERVED_DETAILS in details)
