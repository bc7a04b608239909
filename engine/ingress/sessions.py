"""Whose events are whose: the identity of an NDJSON client, and its session line. Pure: no I/O.

Every message is stored with the identity of the client that sent it (its `origin`), and
its events go to a connection of that identity, or are kept in the journal's outbox
until one comes. Two kinds of identity:

- A connection without a session line is `<kind>:<run>:<n>` (`tcp:9f2c4e1a07b3d5c8:1`,
  `unix:…:7`, `stdin:…`): `run` is drawn at random when the daemon starts, so no later
  run names a new client like one that has gone. Its kept events are the operator's to
  read (`septet send --events ORIGIN`); no client can claim them.
- A connection whose first line is `{"session": "<token>"}` is `session:<digest>`, the
  digest being the first 32 hex digits of the SHA-256 of the connection's account name
  and the token (`session_origin`): the token is the client's secret, and neither the
  journal nor a log ever holds it. A session belongs to its account: the same token
  presented as another account is another session, and gets none of the first one's
  events. (The default account's sessions are digests of the token alone, as before
  accounts existed, so that what was kept for them stays theirs.) Events of messages
  sent under a session go to whichever connection of its account presents that token
  now; one that (re)connects with it gets the events kept for it first, in order, then one
  `{"event": "session", "id": null, "msg_id": null, "ts": …, "origin": "session:…"}`
  line saying the kept ones are over, then live ones.

Kept events are readable by the identity they belong to, or by the operator.

Which account a connection's messages belong to (engine.accounts) is said by the same
first line: `{"auth": {"account": "<name>", "api_key": "<key>"}}`, which may also carry
`"session": "<token>"` (one line says both who you are and which session is yours).
Without an auth line the connection is the listeners' account (`[ingress] account`),
unless `[ingress] require_auth` is on. A token is a secret: whoever presents it as the
session's account is that session.
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
_AUTH_KEY = b'"auth"'
_object_decoder = msgspec.json.Decoder(dict[str, Any])


class SessionProblem(enum.StrEnum):
    """Why a session line was refused; the sentence is `describe(problem)`."""

    LINE_FORM = enum.auto()  # not exactly {"session": "<string>"}
    TOKEN_FORM = enum.auto()  # the token's length or characters
    NOT_FIRST = enum.auto()  # a session or auth line after the connection's first line
    AUTH_FORM = enum.auto()  # not {"auth": {"account": str, "api_key": str}} [+ session]
    AUTH_REFUSED = enum.auto()  # no such account, or not its API key
    AUTH_REQUIRED = enum.auto()  # the listener takes no connection without an auth line


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
            return "a session or auth line must be the connection's first line"
        case SessionProblem.AUTH_FORM:
            return (
                'an auth line is {"auth": {"account": "<name>", "api_key": "<key>"}},'
                ' optionally with "session": "<token>" beside "auth"'
            )
        case SessionProblem.AUTH_REFUSED:
            return "the account or its API key is wrong"
        case SessionProblem.AUTH_REQUIRED:
            return (
                "this listener needs an auth line first:"
                ' {"auth": {"account": "<name>", "api_key": "<key>"}}'
            )


@dataclass(frozen=True, slots=True)
class Session:
    """A client's session token (its secret: never logged, never stored)."""

    token: str

    def __repr__(self) -> str:
        return "Session(token=<hidden>)"

    def origin(self, account: str | None) -> str:
        """The session's identity within `account` (None: the default account's)."""
        return session_origin(self.token, account)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An auth line's account name and API key (its secret: never logged, never stored)."""

    account: str
    api_key: str

    def __repr__(self) -> str:
        return f"Credentials(account={self.account!r})"


@dataclass(frozen=True, slots=True)
class FirstLine:
    """What a connection's first line says: its session, its account's credentials, or both."""

    session: Session | None
    auth: Credentials | None


def session_origin(token: str, account: str | None = None) -> str:
    """The identity (message origin, outbox key) of a session token within `account`: two
    accounts never share a session, whatever their tokens. None, the default account:
    the digest of the token alone (what every session was before accounts). A NUL cannot
    occur in a token, so no name and token run together as another pair's."""
    material = token if account is None else f"{account}\x00{token}"
    return "session:" + hashlib.sha256(material.encode()).hexdigest()[:32]


def connection_origin(kind: str, run: str, number: int) -> str:
    """The identity of a connection without a session: unique across runs by `run`."""
    return f"{kind}:{run}:{number}"


def check_token(token: str) -> SessionProblem | None:
    """None for a well-formed token, else why not."""
    if SESSION_TOKEN_MIN <= len(token) <= SESSION_TOKEN_MAX and _TOKEN.fullmatch(token):
        return None
    return SessionProblem.TOKEN_FORM


def is_opening_line(line: bytes) -> bool:
    """Whether a line is a session or auth line (well formed or not): one out of place is
    answered NOT_FIRST rather than as a message that is not valid."""
    return (_SESSION_KEY in line or _AUTH_KEY in line) and read_first_line(line) is not None


def read_first_line(line: bytes) -> FirstLine | SessionProblem | None:
    """What a first line says: None if it is neither a session nor an auth line (a
    message line, for the line reader), else what it presents or why it is refused."""
    if _AUTH_KEY not in line:
        session = read_session_line(line)
        return session if not isinstance(session, Session) else FirstLine(session, None)
    try:
        fields = _object_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if "auth" not in fields:
        session = read_session_line(line)
        return session if not isinstance(session, Session) else FirstLine(session, None)
    auth = fields.pop("auth")
    token = fields.pop("session", None)
    if (
        fields
        or not isinstance(auth, dict)
        or set(auth) != {"account", "api_key"}
        or not all(isinstance(value, str) for value in auth.values())
        or (token is not None and not isinstance(token, str))
    ):
        return SessionProblem.AUTH_FORM
    session = None
    if token is not None:
        problem = check_token(token)
        if problem is not None:
            return problem
        session = Session(token)
    return FirstLine(session, Credentials(auth["account"], auth["api_key"]))


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


def auth_line(account: str, api_key: str, *, session: str | None = None) -> bytes:
    """The auth line a client sends first to name its account (and its session, if any):
    what `septet send --account` writes."""
    line: dict[str, object] = {"auth": {"account": account, "api_key": api_key}}
    if session is not None:
        line["session"] = session
    return msgspec.json.encode(line)


def session_line(token: str) -> bytes:
    """The line a client sends first to present its session (what `septet send
    --session` writes)."""
    return msgspec.json.encode({"session": token})
