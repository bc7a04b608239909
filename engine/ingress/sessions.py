"""Whose events are whose: the identity of an NDJSON client, and its session line. Pure: no I/O.

Every message is stored with the identity of the client that sent it (its `origin`), and
its events go to a connection of that identity, or are kept in the journal's outbox
until one comes. Two kinds of identity:

- A connection without a session line is `<kind>:<run>:<n>` (`tcp:9f2c4e1a07b3d5c8:1`,
  `unix:…:7`, `stdin:…`): `run` is drawn at random when the daemon starts, so no later
  run names a new client like one that has gone. Its kept events are the operator's to
  read (`septet send --events ORIGIN`); no client can claim them.
- A connection whose first line is `{"session": "<token>"}` is `session:<digest>`, the
  digest being the first 32 hex digits of the token's SHA-256: the token is the
  client's secret, and neither the journal nor a log ever holds it. Events of messages
  sent under a session go to whichever connection presents that token now; one that
  (re)connects with it gets the events kept for it first, in order, then one
  `{"event": "session", "id": null, "msg_id": null, "ts": …, "origin": "session:…"}`
  line saying the kept ones are over, then live ones.

Until clients have accounts, that is the whole rule: kept events are readable by the
identity they belong to, or by the operator.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgspec

SESSION_TOKEN_MIN = 16
SESSION_TOKEN_MAX = 128
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# The session line's one key as it appears in a line's bytes: a cheap test that keeps the
# JSON decoding below off every ordinary line.
_SESSION_KEY = b'"session"'
_object_decoder = msgspec.json.Decoder(dict[str, Any])


class SessionProblem(enum.StrEnum):
    """Why a session line was refused; the sentence is `describe(problem)`."""

    LINE_FORM = enum.auto()  # not exactly {"session": "<string>"}
    TOKEN_FORM = enum.auto()  # the token's length or characters
    NOT_FIRST = enum.auto()  # a session line after the connection's first line


def describe(problem: SessionProblem) -> str:
    """The sentence a client reads for a refused session line."""
    match problem:
        case SessionProblem.LINE_FORM:
            return 'a session line is {"session": "<token>"} with no other field'
        case SessionProblem.TOKEN_FORM:
            return (
                f"a session token is {SESSION_TOKEN_MIN} to {SESSION_TOKEN_MAX} characters"
                " of A-Z, a-z, 0-9, _ and -"
            )
        case SessionProblem.NOT_FIRST:
            return "a session line must be the connection's first line"


@dataclass(frozen=True, slots=True)
class Session:
    """A client's session token (its secret: never logged, never stored)."""

    token: str

    def __repr__(self) -> str:
        return f"Session(origin={self.origin!r})"

    @property
    def origin(self) -> str:
        return session_origin(self.token)


def session_origin(token: str) -> str:
    """The identity (message origin, outbox key) of a session token."""
    return "session:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def connection_origin(kind: str, run: str, number: int) -> str:
    """The identity of a connection without a session: unique across runs by `run`."""
    return f"{kind}:{run}:{number}"


def check_token(token: str) -> SessionProblem | None:
    """None for a well-formed token, else why not."""
    if SESSION_TOKEN_MIN <= len(token) <= SESSION_TOKEN_MAX and _TOKEN.fullmatch(token):
        return None
    return SessionProblem.TOKEN_FORM


def read_session_line(line: bytes) -> Session | SessionProblem | None:
    """What a line says about a session: None if it is no session line at all (a JSON
    object without a "session" key, or not JSON: a message line, for the line reader to
    answer), else the session or why its line is refused."""
    if _SESSION_KEY not in line:
        return None
    try:
        fields = _object_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if "session" not in fields:
        return None
    token = fields["session"]
    if len(fields) != 1 or not isinstance(token, str):
        return SessionProblem.LINE_FORM
    problem = check_token(token)
    return problem if problem is not None else Session(token)


class SessionOpened(msgspec.Struct, tag="session", tag_field="event", kw_only=True):
    """Written to a session's connection after the events kept for it and before any
    live one, so that a client can tell its answers from earlier messages' events."""

    id: None = None
    msg_id: None = None
    ts: dt.datetime
    origin: str


_session_opened_encoder = msgspec.json.Encoder()


def encode_session_opened(origin: str, ts: dt.datetime) -> bytes:
    """The `session` event line, newline included."""
    return _session_opened_encoder.encode(SessionOpened(ts=ts, origin=origin)) + b"\n"


def session_line(token: str) -> bytes:
    """The line a client sends first to present its session (what `septet send
    --session` writes)."""
    return msgspec.json.encode({"session": token})
