"""`splitpoint cloud`'s addresses as a user reads them: an IPv6 health or metrics address printed
in brackets (a URL and --cloud take it so), and a listen host that does not resolve named as such
before the tails load."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import cli_env
from helpers import finish_process as finish

from splitpoint.errors import SplitpointError


def test_ipv6_health_and_metrics_addresses_are_printed_in_brackets(digits_bundle: Path) -> None:
    """They were printed as "health checks ... on ::1:38275" and "metrics on http://::1:34553/metrics"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(digits_bundle),
         "--listen", "[::1]:0", "--health-listen", "[::1]:0", "--metrics-listen", "[::1]:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    watchdog = threading.Timer(120, proc.kill)  # a server that never prints its lines fails, not hangs
    watchdog.start()
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line.rstrip("\n"))
            if line.startswith("metrics on "):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
    finally:
        watchdog.cancel()
    said = "\n".join(printed)
    assert re.search(r"^splitpoint cloud listening on \[::1\]:\d+$", said, re.M), said
    assert re.search(r"^health checks \(grpc.health.v1, plaintext\) on \[::1\]:\d+$", said, re.M), said
    assert re.search(r"^metrics on http://\[::1\]:\d+/metrics$", said, re.M), said
    # the server's and the metrics module's own log lines too
    assert re.search(r"health checks \(grpc.health.v1 only, plaintext\) on \[::1\]:\d+", err), err[-3000:]
    assert re.search(r"metrics on http://\[::1\]:\d+/metrics", err), err[-3000:]
    assert "::1:" not in said.replace("[::1]:", ""), said


@pytest.mark.parametrize("listen", ["nosuchhost.invalid:0", "256.1.1.1:5"])
def test_a_listen_host_that_does_not_resolve_is_said_before_the_tails_load(digits_bundle: Path, listen: str) -> None:
    """It said 'listen = ...: cannot bind (address in use or not local)', after the tails loaded."""
    proc = subprocess.run(
        [sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(digits_bundle), "--listen", listen],
        capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f'listen = "{listen}": cannot listen there: {listen.rsplit(":", 1)[0]} does not resolve (' in proc.stderr, \
        proc.stderr[-3000:]
    assert "cannot bind" not in proc.stderr and "loaded and warm" not in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_every_address_is_resolved_before_the_bundle_is_read(tmp_path: Path) -> None:
    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer

    for key in ("listen", "health_listen", "metrics_listen"):
        conf = CloudConfig(bundle=str(tmp_path / "no-bundle"), insecure=True, **{key: "nosuchhost.invalid:0"})
        with pytest.raises(SplitpointError, match=f'^{key} = "nosuchhost.invalid:0": cannot listen there: '
                                                  r"nosuchhost\.invalid does not resolve \("):
            CloudServer(conf)
