"""`splitpoint loadtest`'s printed report says when part of the fleet never opened a stream.

Under mutual TLS every drone with the one client certificate is one agent to the server, so
`max_streams_per_agent` (4) refuses the rest: `--agents 50` then measured 4 drones, and the
report read like 50 (the refused drones' frames counted as "skipped (window full)"; now
"with no stream open").
"""

from __future__ import annotations

import pytest

from splitpoint.loadtest import LoadReport

pytestmark = pytest.mark.edge_side  # no TensorFlow

REFUSED = "RESOURCE_EXHAUSTED: this agent already has 4 Infer streams open (max_streams_per_agent)"


def test_a_fleet_partly_refused_says_how_many_drones_ran_and_why() -> None:
    report = LoadReport(config={}, seconds=5.0, connected=4, last_error=REFUSED, sent=200, answered=200,
                        no_stream=50, per_agent_answered=[50, 50, 50, 0, 50])
    text = report.text()
    assert "0 skipped (window full), 50 with no stream open, 0 unanswered" in text
    assert "only 4 of 5 drones opened a stream" in text
    assert REFUSED in text


def test_a_whole_fleet_says_nothing_more() -> None:
    report = LoadReport(config={}, seconds=5.0, connected=2, sent=10, answered=10, per_agent_answered=[5, 5])
    assert "opened a stream" not in report.text() and "no stream" not in report.text()
