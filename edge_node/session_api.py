"""The interface between the agent and its session with the cloud.

The agent (edge_node/agent.py) depends on the `Session` protocol below, not on
gRPC: unit tests hand it a fake session (tests/unit/test_agent_loop.py).
`OffloadSession` is the real one. Its interface, all of it:

    check_server(splits) -> BundleInfo | None  describe the server; digest mismatch: ConfigError
    start(callbacks)                      take the agent's callbacks; first probe; prober thread
    current_stream() -> Stream | None     the stream to send the next frame on; None: backing off
    reached() -> bool                     has any server answered anything this run
    last_error() -> RemoteError | None    the last call or stream that failed (for the end-of-run line)
    address                               what the session connects to (for messages)
    close(abandon)                        end the streams (cancel them when frames are abandoned)
    set_aside(stream, why) -> bool        the stream answered nothing for frame_deadline_ms: no new
                                          frame on it (its own may still be answered); the next opens
                                          a new stream, perhaps on another replica. False: not set
                                          aside (one server: no other to go to; or it was already)
    give_up(stream, why)                  the stream answered nothing for 2 x frame_deadline_ms:
                                          cancel it (its frames fall back), back off as after an error

and what it reports to the agent (`SessionCallbacks`), each on a gRPC receive thread:

    answer(stream, resp)                  an answer to a frame sent on `stream`
    stream_ended(stream, error) -> int    `stream` ended (error None: cleanly); no more answers
                                          come on it. Returns how many frames it lost (the agent
                                          falls them back); a lossless DEADLINE_EXCEEDED is the
                                          server closing an idle stream, not a reason to back off
    wants_probes() -> bool                does the policy plan with link estimates (else no probes)
    frames_planned() -> int               how many frames the agent has planned (any path): while
                                          the count moves, idle probes keep to probe_first_s
    probe_sent(bytes, transfer_ms, after_ms, stall_evidence), probe_done(answered)
                                          (on the prober thread) a bulk probe holds the link from
                                          one to the other: frames planned meanwhile queue behind it;
                                          overdue, it is a stall only with `stall_evidence` (one server)
    frames_on_link() -> bool              a frame is planned for or on the link: no probe starts
                                          (planned, its head still running, a probe would go first)

A `Stream` is what `current_stream` returns and the callbacks name: `send(req) -> bool`
(False: the stream closed first) and `replica` (who took it, for the record).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from splitpoint.errors import RemoteError
from splitpoint.v1 import offload_pb2


class Stream(Protocol):
    replica: str
    end_error: RemoteError | None  # why the call ended, once it has (None while open or after a clean end)

    def send(self, req: offload_pb2.InferRequest) -> bool: ...

    def cancel(self) -> None: ...


@dataclass(frozen=True)
class SessionCallbacks:
    answer: Callable[[Stream, offload_pb2.InferResponse], None]
    stream_ended: Callable[[Stream, RemoteError | None], int]
    wants_probes: Callable[[], bool] = lambda: False
    frames_planned: Callable[[], int] = lambda: 0
    #: the bulk probe went out (its bytes, predicted transfer ms, predicted ms after the transfer)
    #: and ended (True: its reply came): the planner books it on the link like a frame's transfer
    probe_sent: Callable[[int, float, float, bool], None] = lambda wire_bytes, transfer_ms, after_ms, stall_evidence: None
    probe_done: Callable[[bool], None] = lambda answered: None
    #: a frame's transfer is planned or on the link: a probe started now would go ahead of it
    frames_on_link: Callable[[], bool] = lambda: False


class Session(Protocol):
    address: str

    def check_server(self, offloaded: Collection[int] = ()) -> offload_pb2.BundleInfo | None: ...

    def start(self, callbacks: SessionCallbacks) -> None: ...

    def current_stream(self) -> Stream | None: ...

    def reached(self) -> bool: ...

    def last_error(self) -> RemoteError | None: ...

    def no_stream_reason(self) -> str: ...

    def close(self, abandon: bool, timeout_s: float = 2.0) -> None: ...

    def interrupt(self) -> None: ...

    def set_aside(self, stream: Stream, why: str) -> bool: ...

    def give_up(self, stream: Stream, why: str) -> None: ...
