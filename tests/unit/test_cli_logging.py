"""`splitpoint.cli.main` called in-process leaves logging as it found it.

main() sets up logging to stderr. A handler bound to the sys.stderr of the moment outlived the
call: under pytest's capture that stream is closed after the test, and every later record
printed "--- Logging error --- ... I/O operation on closed file". Now main() puts the root
logger's handlers and level back when it returns, and its handler writes to sys.stderr as it is
at each record.
"""

from __future__ import annotations

import io
import logging
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from splitpoint import cli, cli_logging


def test_two_in_process_main_calls_leave_no_stale_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    for i in range(2):
        stream = io.StringIO()
        with redirect_stderr(stream):
            assert cli.main(["certs", "-o", str(tmp_path / f"certs-{i}")]) == 0
        # main logged to the stderr of its call
        assert "development CA and certificates written to" in stream.getvalue()
        stream.close()  # as pytest closes a capture that is over
        assert root.handlers == handlers and root.level == level
        # a record after main returned: no write to the closed stream, and pytest's own
        # handlers (which main replaced while it ran) see it again
        logging.getLogger("splitpoint.tests").warning("after main %d", i)
        assert "Logging error" not in capsys.readouterr().err
        assert f"after main {i}" in caplog.text


def test_the_handler_follows_sys_stderr() -> None:
    # a thread may log after main() returned, or while a caller has swapped sys.stderr
    log = logging.getLogger("splitpoint.tests")
    with cli_logging.logging_restored():
        cli_logging.setup_logging("info")
        for i in range(2):
            stream = io.StringIO()
            with redirect_stderr(stream):
                log.info("record %d", i)
            assert f"INFO    splitpoint.tests: record {i}" in stream.getvalue()
            stream.close()
