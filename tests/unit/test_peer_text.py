"""peer_text: what the other side says, made safe to log and record, and bounded."""

from __future__ import annotations

import grpc

from splitpoint.errors import PEER_TEXT_CHARS, RemoteError, peer_text


def test_printable_text_within_the_limit_is_kept_as_is() -> None:
    assert peer_text("bundle mismatch: a1b2") == "bundle mismatch: a1b2"


def test_escapes_cannot_forge_lines_and_the_limit_holds_after_them() -> None:
    # 300 newlines escaped to "\\n" came out 600 characters long: the cap held before escaping
    text = peer_text("full\n" * 1000)
    assert "\n" not in text and text.startswith("full\\nfull\\n")
    assert len(text) <= PEER_TEXT_CHARS + len("... (5000 characters)")
    assert text.endswith("... (5000 characters)")
    short = peer_text("a\nb", limit=10)
    assert short == "a\\nb"  # escaped, within the limit: nothing cut


def test_an_escape_that_would_pass_the_limit_is_cut_and_says_so() -> None:
    text = peer_text("\x1b" * 8, limit=10)  # 8 characters, 32 once escaped
    assert text == "\\x1b\\x1b\\x... (8 characters)"


def test_a_remote_error_carries_the_bounded_text() -> None:
    err = RemoteError(grpc.StatusCode.INTERNAL, "x\n" * 10_000)
    assert len(str(err)) < PEER_TEXT_CHARS + 50
