"""gRPC metadata keys of the wire contract (besides the proto): both sides import them from here.

- `splitpoint-agent` (client -> server, optional): the agent's name. Without mutual TLS the
  server counts streams and queue shares per agent by it (cloud_server/admission.py); under
  mutual TLS the client certificate's common name is used instead.
- `splitpoint-replica` (server -> client, initial metadata of every Infer stream and Describe): the
  address of the replica that took the stream (its host name when it listens on 0.0.0.0 or [::]), so that clients can tell replicas apart
  behind one load-balanced target (`splitpoint loadtest` counts each replica's share by it).
"""

AGENT_METADATA_KEY = "splitpoint-agent"
REPLICA_METADATA_KEY = "splitpoint-replica"
