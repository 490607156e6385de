"""The process's entry (`splitpoint`, `python -m splitpoint`): SIGTERM, SIGINT and SIGHUP held
first, then the command.

Importing `splitpoint.cli` imports numpy, grpc and the commands' modules: 0.24-0.29 s on a PC,
more on a Pi. Held only after that, a `systemctl reload` or stop just after a (re)start met
Python's defaults and killed the agent without a word (exit 129 or 143). This module imports
nothing but `cli_signals` (the standard library's `signal`) before it holds them.
"""

from __future__ import annotations

from splitpoint.cli_signals import HELD


def run() -> None:
    HELD.hold()
    import sys

    from splitpoint import native_logs

    # gRPC reads its log level once, as it is imported (with splitpoint.cli, below): quiet it now
    # unless -v asks for the native libraries' own logs (cli.main's native_logs.configure says so
    # again for the libraries that load later)
    if not {"-v", "--verbose"} & set(sys.argv[1:]):
        native_logs.quiet_environment()
    from splitpoint.cli import run as run_command  # the heavy imports, with the signals held

    run_command()
