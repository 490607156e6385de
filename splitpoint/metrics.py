"""Prometheus metrics, served on an opt-in address. Each server or agent owns a registry,
so several can live in one process (tests) without clashing."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from splitpoint.config import format_address, parse_address
from splitpoint.errors import SplitpointError

log = logging.getLogger(__name__)

#: seconds; from a fast LAN tail (~1 ms) to a stalled cellular link
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def serve_metrics(listen: str, registry: CollectorRegistry, key: str = "metrics_listen") -> tuple[Any, int] | None:
    """Start the /metrics endpoint on HOST:PORT (port 0: any free port). Returns (server, port)."""
    if not listen:
        return None
    host, port = parse_address(key, listen)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:  # in use, or not an address of this host: say which, as for --listen (exit 1)
        raise SplitpointError(f'{key} = "{listen}": cannot listen there: {err.strerror or err}') from err
    bound = server.server_port
    log.info("metrics on http://%s/metrics", format_address(host, bound))  # [::1]:PORT, as a URL needs
    return server, bound
