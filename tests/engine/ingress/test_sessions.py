"""Client identities: session lines, tokens, and names unique to a connection and a run."""

from __future__ import annotations

import hashlib

import pytest

from engine.ingress.sessions import (
    Session,
    SessionProblem,
    check_token,
    connection_origin,
    describe,
    read_session_line,
    session_line,
    session_origin,
)

TOKEN = "client-A_0123456789"


def test_a_session_line_gives_the_session() -> None:
    assert read_session_line(b'{"session": "client-A_0123456789"}') == Session(TOKEN)
    assert read_session_line(b' {"session":"client-A_0123456789"} \r') == Session(TOKEN)
    assert read_session_line(session_line(TOKEN)) == Session(TOKEN)


@pytest.mark.parametrize(
    "line",
    [
        b'{"to": "+250788100000", "text": "hello"}',
        b'{"text": "my session", "to": "+250788100000"}',  # the word, not the key
        b"not json at all",
        b'["session"]',
        b"",
    ],
)
def test_other_lines_are_not_session_lines(line: bytes) -> None:
    assert read_session_line(line) is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"session": 12345678901234567890}', SessionProblem.LINE_FORM),
        (b'{"session": null}', SessionProblem.LINE_FORM),
        (
            b'{"session": "client-A_0123456789", "to": "+250788100000", "text": "x"}',
            SessionProblem.LINE_FORM,
        ),
        (b'{"session": "short"}', SessionProblem.TOKEN_FORM),
        (b'{"session": "' + b"x" * 129 + b'"}', SessionProblem.TOKEN_FORM),
        (b'{"session": "has spaces in the token"}', SessionProblem.TOKEN_FORM),
        (b'{"session": "\xc3\xa9t\xc3\xa9-0123456789abcdef"}', SessionProblem.TOKEN_FORM),
        (b'{"session": "0123456789abcdef\\n"}', SessionProblem.TOKEN_FORM),
    ],
)
def test_a_malformed_session_line_says_why(line: bytes, problem: SessionProblem) -> None:
    assert read_session_line(line) is problem


def test_token_length_bounds() -> None:
    assert check_token("a" * 16) is None
    assert check_token("a" * 128) is None
    assert check_token("a" * 15) is SessionProblem.TOKEN_FORM
    assert check_token("a" * 129) is SessionProblem.TOKEN_FORM


def test_every_problem_is_one_sentence() -> None:
    for problem in SessionProblem:
        sentence = describe(problem)
        assert sentence
        assert sentence.count(".") == 0
        assert "\n" not in sentence


def test_the_token_never_appears_in_the_identity() -> None:
    origin = session_origin(TOKEN)
    assert origin.startswith("session:")
    assert TOKEN not in origin
    assert TOKEN not in repr(Session(TOKEN))
    assert session_origin(TOKEN) == origin  # the same token is the same identity
    assert session_origin(TOKEN + "x") != origin


def test_a_session_belongs_to_its_account() -> None:
    default = session_origin(TOKEN)
    acme, other = session_origin(TOKEN, "acme"), session_origin(TOKEN, "other")
    assert len({default, acme, other}) == 3  # one token, three accounts, three sessions
    assert session_origin(TOKEN, "acme") == acme
    assert TOKEN not in acme
    assert Session(TOKEN).origin(None) == default
    assert Session(TOKEN).origin("acme") == acme
    # The default account's is the digest of the token alone, as before accounts.
    assert default == "session:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:32]


def test_connection_names_carry_the_run() -> None:
    assert connection_origin("tcp", "9f2c", 1) == "tcp:9f2c:1"
    assert connection_origin("tcp", "9f2c", 1) != connection_origin("tcp", "77aa", 1)
