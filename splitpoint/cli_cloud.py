"""`splitpoint cloud`: the server from its configuration, its signals from the command's start.

SIGTERM and Ctrl-C drain the server once it serves (`CloudServer.stop`). It serves only after
TensorFlow's import, the bundle's check and every tail's warm-up: seconds, in which Kubernetes
stops pods still starting during rollouts and scale-downs. A stop then ends it before it
serves, exit 0 and one line, no port left bound (splitpoint/cli_signals.py holds the signals
from the process's entry). SIGHUP, at start-up and while serving alike, is logged and ignored:
the server has nothing to re-read, and a `kill -HUP` or reload meant for the agents must not
end it undrained (SIGHUP's default: exit 129, frames in flight lost).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import TYPE_CHECKING

from splitpoint import config as cfg
from splitpoint import scratch_dir
from splitpoint.cli_logging import say, setup_logging
from splitpoint.cli_signals import CommandSignals
from splitpoint.config import format_address, parse_address

if TYPE_CHECKING:
    from cloud_server.config import CloudConfig

log = logging.getLogger("splitpoint")


def cmd_cloud(args: argparse.Namespace) -> int:
    from cloud_server.config import CloudConfig

    signals = CommandSignals(on_reload=_nothing_to_reload).install()  # before anything slow is imported or loaded
    conf = cfg.load_printed(CloudConfig, args)
    if args.print_config:
        return 0
    assert isinstance(conf, CloudConfig)
    setup_logging("debug" if args.verbose else conf.log_level)  # -v wins over the file
    if signals.signum is not None:  # TensorFlow not imported for nothing
        return _stopped_before_serving(signals)
    return serve(conf, signals)


def serve(config: CloudConfig, signals: CommandSignals) -> int:
    """Run a CloudServer until SIGTERM/SIGINT; the exit code. Prints the bound address on stdout.

    A stop noted by `signals` before the server serves (TensorFlow, the bundle and the tails load
    for seconds) ends it without serving; from the moment it serves, each one starts the drain
    (`stop`, idempotent) on a thread of its own: a handler must not block for grace_s."""
    from cloud_server.server import CloudServer

    def on_stop(signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    server = CloudServer(config, stopping=lambda: signals.signum is not None)
    if signals.signum is None:
        server.start()
        signals.on_stop = on_stop
    if signals.signum is not None:  # it came before serving, or while start() bound the ports
        if server.port is not None:
            server.stop()  # unbinds what start() bound; answers what it took in those milliseconds
        else:
            server.executor.close(timeout=0)
        return _stopped_before_serving(signals)
    scratch_dir.stop_using()  # the tails are loaded: a server's later temp files must not outlive /tmp's cleaner
    say(f"splitpoint cloud listening on {server.address}")
    if server.health_port:
        # format_address: an IPv6 host in brackets ("::1:38275" was no address anyone could use)
        host = parse_address("health_listen", config.health_listen)[0]
        say(f"health checks (grpc.health.v1, plaintext) on {format_address(host, server.health_port)}")
    if server.metrics_port:
        host = parse_address("metrics_listen", config.metrics_listen)[0]
        say(f"metrics on http://{format_address(host, server.metrics_port)}/metrics")
    while not server._stopped.wait(0.5):  # in steps: the main thread's wait must let the handlers run
        pass
    return 0


def _stopped_before_serving(signals: CommandSignals) -> int:
    """A stop as any other (exit 0), said in one line: no port bound, no frame taken."""
    say(f"stopped before serving ({signals.name} during start-up)")
    return 0


def _nothing_to_reload() -> None:
    log.warning("SIGHUP ignored: the server has nothing to reload (its settings are read at start; restart it "
                "to change them, SIGTERM stops it)")
