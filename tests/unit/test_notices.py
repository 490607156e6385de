"""The agent's notices: the fallback digest (the first local run said at once, then one INFO line per
period), failed streams and link probes at a bounded rate, and the end-of-run messages."""

from __future__ import annotations

import logging
from collections import Counter

import grpc
import pytest
from helpers import ManualClock as Clock

from edge_node.notices import (
    FallbackDigest,
    RepeatedFailures,
    mostly_local_message,
    nothing_to_do_message,
    unreached_message,
)
from splitpoint.errors import RemoteError


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_the_first_fallback_is_logged_then_a_digest_per_period(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    digest = FallbackDigest(period_s=10.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="edge_node.agent"):
        digest.note(0, "cloud unreachable")
        assert len(info_lines(caplog)) == 1 and "frame 0 ran locally: cloud unreachable" in info_lines(caplog)[0]
        for i in range(1, 50):
            clock.t += 0.1
            digest.note(i, "cloud unreachable" if i % 2 else "no answer within frame_deadline_ms = 2000")
        assert len(info_lines(caplog)) == 1  # 4.9 s: still within the period
        clock.t += 6.0
        digest.maybe_flush()
        lines = info_lines(caplog)
        assert len(lines) == 2 and lines[1].startswith("49 frames ran locally in the last 11 s: 25 x cloud unreachable; "
                                                       "24 x no answer"), lines
        digest.maybe_flush()
        digest.flush()  # nothing new: no line
        assert len(info_lines(caplog)) == 2
        digest.note(50, "x")
        digest.flush()
        assert info_lines(caplog)[-1].startswith("1 frames ran locally in the last 0 s: 1 x x")
    # every frame is still at DEBUG, with its number
    assert sum("ran locally" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records) == 51


def test_messages_name_the_addresses_the_file_and_the_way_out() -> None:
    one = unreached_message(["10.0.0.1:50051"], 7)
    assert "the cloud server at 10.0.0.1:50051" in one and "all 7 frames ran locally" in one
    assert "any of the cloud servers at a:1, b:2" in unreached_message(["a:1", "b:2"], 0)
    msg = nothing_to_do_message("out/r.jsonl", 12)
    assert "12 frames" in msg and "out/r.jsonl" in msg and "--no-resume" in msg and "--results" in msg


def test_the_unreached_line_says_what_the_last_failure_most_likely_means() -> None:
    refused = RemoteError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
    line = unreached_message(["a:1"], 4, refused)
    assert line.startswith("the cloud server at a:1 refused this agent (UNAUTHENTICATED: missing or invalid")
    assert "token_file must hold the token the server expects" in line and "check --cloud" not in line
    down = RemoteError(grpc.StatusCode.UNAVAILABLE, "failed to connect: Connection refused")
    line = unreached_message(["a:1"], 4, down)
    assert line.startswith("never reached the cloud server at a:1 (last error: UNAVAILABLE: failed to connect")
    assert "nothing listens there" in line and line.endswith("--require-cloud makes this an error)")
    # with require_cloud set, the line is its error: no advice to set what is set
    assert "--require-cloud" not in unreached_message(["a:1"], 4, down, require_cloud=True)
    assert "--require-cloud" not in unreached_message(["a:1"], 4, None, require_cloud=True)


@pytest.mark.parametrize(("words", "hint"), [
    # gRPC's words for an expired server certificate: it was explained as "not signed by tls_ca:
    # give the CA that issued it", sending the user after the wrong file
    ("connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:40879: Tls handshake failed "
     "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
     "CERTIFICATE_VERIFY_FAILED: certificate has expired: OK", "the server's certificate has expired: renew it"),
    ("SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
     "the server's certificate is not signed by tls_ca"),
    # a host name that does not resolve (doctor against the example config's server.example): the hint
    # was "is splitpoint cloud running there, the port open in its firewall ...", nothing about the name
    ("errors resolving server.example:50051: [field:hostname lookup error:address lookup failed for "
     "server.example:50051: Domain name not found]",
     "the server's host name does not resolve here: check the `cloud` address"),
    ("ipv4:127.0.0.1:5: Failed to connect to remote host: Connection refused", "nothing listens there"),
])
def test_an_unavailable_server_gets_the_hint_its_words_call_for(words: str, hint: str) -> None:
    from splitpoint.remote_hints import remote_hint

    assert remote_hint(RemoteError(grpc.StatusCode.UNAVAILABLE, words)).startswith(hint)


def test_a_run_that_reached_its_server_and_ran_most_frames_here_says_why() -> None:
    """A server on another bundle answers every frame FAILED_PRECONDITION: the agent reached it,
    so no "never reached" line, and the summary said only "0 cloud, 500 local (500 fallbacks)"."""
    assert mostly_local_message({"cloud runs another bundle": 480, "cloud FAILED_PRECONDITION": 20}, 500) == (
        "500 of 500 frames ran locally instead of in the cloud: 480 x cloud runs another bundle; "
        "20 x cloud FAILED_PRECONDITION (the journal's warnings say more; splitpoint results LOG lists every reason)")
    many = {f"reason {c}": 10 for c in "abcde"}
    assert mostly_local_message(many, 60).endswith(
        "10 x reason a; 10 x reason b; 10 x reason c; and 2 other reasons (the journal's warnings say more; "
        "splitpoint results LOG lists every reason)")
    assert mostly_local_message({"hedged": 50}, 100) is None  # half: a bad link's share, said by the digests
    assert mostly_local_message({}, 0) is None


def test_the_recorder_counts_frames_run_here_instead_by_reason_group(tmp_path) -> None:
    import time

    import numpy as np
    from prometheus_client import CollectorRegistry

    from edge_node.recorder import Recorder
    from edge_node.run_report import EdgeMetrics
    from edge_node.sources import Frame

    rec = Recorder(["a", "b"], EdgeMetrics(CollectorRegistry()), on_fatal=lambda: None)
    rec.open(str(tmp_path / "r.jsonl"), "jsonl", False, resume=False)
    for fid, reason in enumerate(["cloud runs another bundle (waiting to retry)",
                                  "cloud runs another bundle (waiting to retry)", None,
                                  "stream ended before the answer (UNAVAILABLE: Socket closed)"]):
        frame = Frame(fid, np.zeros((2, 2, 1), np.uint8), None, f"x#{fid}", time.time_ns(),
                      capture_mono_ns=time.monotonic_ns())
        rec.ok(frame, 1, "local" if reason else "cloud", np.array([0.2, 0.8]), {"head": 0.5}, reason)()
    rec.close()
    assert rec.summary.local_instead == {"cloud runs another bundle": 2, "stream ended before the answer": 1}


def test_streams_that_keep_failing_are_counted_not_logged_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    """A server down for hours is retried once per backoff (up to 5 s): a WARNING per failed
    stream was ~24 lines a minute in a soak, 35,000 a day on a drone's journal. Now one line a
    period at most, and one line when streams work again."""
    clock = Clock()
    failures = RepeatedFailures("streams", logging.WARNING, period_s=60.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="edge_node.agent"):
        for i in range(720):  # an hour, one failure every 5 s
            failures.failed(f"stream to a:1 ended: UNAVAILABLE: attempt {i}")
            clock.t += 5.0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings[0] == "stream to a:1 ended: UNAVAILABLE: attempt 0 (further failures: one line every 60 s at most)"
        assert len(warnings) == 60, warnings  # the first, then one a minute
        assert warnings[1] == "12 streams failed in the last 60 s (last: stream to a:1 ended: UNAVAILABLE: attempt 12)"
        failures.flush()  # the failures since the last line (the run ends)
        assert caplog.records[-1].getMessage().startswith("11 streams failed in the last 60 s (last: ")
        failures.answered()
        assert caplog.records[-1].levelno == logging.INFO
        assert caplog.records[-1].getMessage() == "streams work again after 720 failed in 3600 s"
        failures.answered()  # working streams say nothing more
        clock.t += 60.0
        failures.failed("stream to a:1 ended: UNAVAILABLE: again")  # a minute after the last line: said at once
        assert caplog.records[-1].levelno == logging.WARNING and "again (further failures" in caplog.records[-1].getMessage()
    # every failure is still at DEBUG
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 721


def test_a_flapping_link_gets_two_lines_a_minute_at_most(caplog: pytest.LogCaptureFixture) -> None:
    """A stream failing every 2 s and the next one answering: the failure and the recovery,
    each said every time, would be two lines every 2 s."""
    clock = Clock()
    failures = RepeatedFailures("streams", logging.WARNING, period_s=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="edge_node.agent"):
        for i in range(300):  # ten minutes
            failures.failed(f"stream to a:1 ended: UNAVAILABLE: reset {i}")
            clock.t += 1.0
            failures.answered()
            clock.t += 1.0
    levels = Counter(r.levelno for r in caplog.records)
    assert levels[logging.WARNING] == 10 and levels[logging.INFO] == 10, [r.getMessage() for r in caplog.records]
    assert caplog.records[2].getMessage() == "30 streams failed in the last 60 s (last: stream to a:1 ended: UNAVAILABLE: reset 30)"
    assert caplog.records[3].getMessage() == "streams work again after 30 failed in 61 s"


def test_failures_told_in_the_recovery_line_are_not_told_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = RepeatedFailures("streams", logging.WARNING, period_s=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="edge_node.agent"):
        failures.failed("stream to a:1 ended: first")
        clock.t += 10.0
        failures.failed("stream to a:1 ended: second")  # within the period: counted
        clock.t += 10.0
        failures.answered()
        clock.t += 50.0
        failures.failed("stream to a:1 ended: third")
    assert [r.getMessage() for r in caplog.records] == [
        "stream to a:1 ended: first (further failures: one line every 60 s at most)",
        "streams work again after 2 failed in 20 s",
        "stream to a:1 ended: third (further failures: one line every 60 s at most)"]


def test_link_probes_that_keep_failing_are_counted_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """An adaptive agent probes every 0.5-2 s while its server is down: a line per failed probe
    was 42 in a 21 s server restart, up to 7,200 an hour of outage. The same bounded lines as
    failed streams, worded for probes and at INFO."""
    clock = Clock()
    probes = RepeatedFailures("link probes", logging.INFO, period_s=60.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="edge_node.agent"):
        for i in range(42):  # a 21 s server restart, a probe every 0.5 s
            probes.failed(f"link probe failed: UNAVAILABLE: restart {i}")
            clock.t += 0.5
        probes.answered()
        clock.t += 600.0  # ten minutes of working probes
        for i in range(1800):  # then an hour's outage, a probe every 2 s
            probes.failed(f"link probe failed: UNAVAILABLE: down {i}")
            clock.t += 2.0
        probes.flush()  # the prober stops
    lines = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert all(r.levelno == logging.INFO for r in lines)
    said = [r.getMessage() for r in lines]
    assert said[:4] == [
        "link probe failed: UNAVAILABLE: restart 0 (further failures: one line every 60 s at most)",
        "link probes work again after 42 failed in 21 s",
        "link probe failed: UNAVAILABLE: down 0 (further failures: one line every 60 s at most)",
        "30 link probes failed in the last 60 s (last: link probe failed: UNAVAILABLE: down 30)"]
    assert len(said) == 2 + 60 + 1, said  # the restart's two; the outage's first and one a minute; the flush
    assert said[-1].startswith("29 link probes failed in the last 60 s (last: link probe failed: UNAVAILABLE: down ")
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 42 + 1800  # every failure still at DEBUG
