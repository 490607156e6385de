"""What reaches the CLI that no command turned into a SplitpointError: one line, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from splitpoint import cli


def _failing(exc: BaseException):  # type: ignore[no-untyped-def]
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


@pytest.mark.parametrize(("exc", "line"), [
    (FileNotFoundError(2, "No such file or directory", "/x/y"), "splitpoint inspect: error: /x/y: No such file or directory"),
    (OSError(28, "No space left on device"), "splitpoint inspect: error: No space left on device"),
    (MemoryError(), "splitpoint inspect: error: out of memory: a size or count given is too large for this machine"),
])
def test_an_error_no_command_foresaw_is_one_line_exit_1(exc: BaseException, line: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.COMMANDS, "inspect", _failing(exc))
    assert cli.main(["inspect", "somewhere"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [line]
