"""Token files (splitpoint/tokens.py): every line a token for the server, the first the agent's,
read again when the file changes, and a bad change never locks anyone out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from splitpoint.errors import ConfigError
from splitpoint.tokens import TokenFile, read_token, read_tokens

pytestmark = pytest.mark.edge_side  # no TensorFlow

A, B = "aaaa-token-0123456789", "bbbb-token-0123456789"


def write(path: Path, text: str) -> None:
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.chmod(0o600)
    new.replace(path)


def test_every_line_is_a_token_and_the_first_is_sent(tmp_path: Path) -> None:
    f = tmp_path / "token"
    write(f, f"\ufeff{A}\n\n  {B}  \n")
    assert read_tokens("token_file", str(f)) == (A, B)
    assert read_token("token_file", str(f)) == A
    write(f, f"{A}\nshort\n")
    with pytest.raises(ConfigError, match=r"token_file = \".*\": the token on line 2 is shorter than 16 characters"):
        read_tokens("token_file", str(f))
    # a header value cannot carry it: the server started, and every call failed "INTERNAL: Invalid metadata"
    for bad in ("pässwörd-0123456789abc", "tab\tinside-0123456789", "\x1b[31m-escape-0123456789"):
        write(f, bad + "\n")
        with pytest.raises(ConfigError, match="the token on line 1 holds characters other than printable ASCII"):
            read_tokens("token_file", str(f))
    for empty in ("", "\n \n", "\ufeff"):
        write(f, empty)
        with pytest.raises(ConfigError, match="file is empty"):
            read_tokens("token_file", str(f))


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "token"
    write(f, A + "\n")
    tokens = TokenFile("token_file", str(f))
    assert tokens.tokens() == (A,) and tokens.first() == A
    write(f, f"{A}\n{B}\n")
    assert tokens.tokens() == (A, B)
    with caplog.at_level(logging.WARNING, logger="splitpoint.security"):
        write(f, "short\n")  # a bad change keeps what was read before, said once
        assert tokens.tokens() == (A, B) and tokens.tokens() == (A, B)
        f.unlink()  # gone for a moment (a swap): likewise, and nothing said
        assert tokens.tokens() == (A, B)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "token file changed and cannot be used" in said[0] and "line 1" in said[0], said
    write(f, B + "\n")
    assert tokens.first() == B
    assert A not in repr(tokens) and B not in repr(tokens)


def test_a_token_file_that_is_bad_at_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        TokenFile("token_file", str(tmp_path / "nope"))


def test_a_named_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    """read_file (tokens, certificates, keys) opened a named pipe and waited for a writer for ever:
    the server at start, or a gRPC handshake reading a renewed certificate."""
    import os
    import threading

    from splitpoint.server_certs import ServerCertificates

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    said: list[str] = []

    def read_both() -> None:
        for attempt in (lambda: read_tokens("token_file", str(fifo)),
                        lambda: ServerCertificates(str(fifo), str(fifo))):
            try:
                attempt()
            except ConfigError as err:
                said.append(str(err))

    reader = threading.Thread(target=read_both, daemon=True)
    reader.start()
    reader.join(10.0)
    if reader.is_alive():  # a regression: let the reader go (a writer opens and closes), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_file waited on the named pipe")
    assert said == [f'token_file = "{fifo}": is a named pipe, not a regular file',
                    f'tls_cert = "{fifo}": is a named pipe, not a regular file'], said

