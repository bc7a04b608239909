"""Kannel's `/cgi-bin/sendsms` on the API listener, so a Kannel application moves by a URL.

GET or POST (query, or an `application/x-www-form-urlencoded` body) with Kannel's
parameters (docs/http-api.md, "Kannel's sendsms"): `username`/`password` name the account
(engine.accounts' sendsms login); `to` (several numbers separated by spaces or `+`),
`text`, `from`, `coding`, `charset`, `dlr-mask`, `dlr-url`, `validity` and `deferred`
(minutes), `priority`, `mclass`, `smsc` (a septet route). Answers are Kannel's plain-text
lines and statuses: `0: Accepted for delivery` (202), `Authorization failed for sendsms`
(403), a missing or misformed parameter (400); a refusal of septet's says why in its own
sentence, with the status a client of the HTTP API would get (400, 429, 503).

`dlr-url` is fetched with a GET for each report that `dlr-mask` asks for, with Kannel's
escapes substituted (engine.kannel_dlr): the message carries them (Submission.dlr_url,
dlr_mask), the journal's feed makes each GET's URL with the event, and the webhooks'
delivery worker makes it from the journal, at least once.

Pure parsing (`parse_sendsms`) and the escapes are separate from the handler.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from engine.accounts import Account
from engine.http_routes import Route
from engine.http_server import Request, Response, text_response
from engine.ingress.api_requests import ApiProblem, read_body
from engine.ingress.http_api import BUSY_KINDS, LIMIT_KINDS, Acceptor
from engine.ingress.prepare import LineError
from engine.kannel_dlr import DLR_ALL, KannelDlr
from engine.models import Submission

# Kannel's answers (gw/smsbox.c).
ACCEPTED: Final = "0: Accepted for delivery"
QUEUED: Final = "3: Queued for later delivery"
AUTH_FAILED: Final = "Authorization failed for sendsms"

# Kannel's charset names for the bytes of `text`, and Python's codec for each.
CHARSETS: Final = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "iso-8859-1": "latin-1",
    "latin1": "latin-1",
    "iso8859-1": "latin-1",
    "windows-1252": "cp1252",
    "cp1252": "cp1252",
    "utf-16be": "utf-16-be",
    "ucs-2": "utf-16-be",
    "ucs2": "utf-16-be",
    "utf-16": "utf-16",
}

MAX_DLR_URL: Final = 2048


@dataclass(frozen=True, slots=True)
class SendSms:
    """A sendsms request read: who, the submission, and its dlr-url if any."""

    username: str
    password: str
    submission: Submission
    dlr: KannelDlr | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A plain-text answer that is not an acceptance: Kannel's status and line."""

    status: int
    text: str


def read_params(query: str, body: bytes) -> dict[str, bytes]:
    """CGI variables as bytes (the query, then a form body's): `text` is decoded later
    by its `charset`; the first value of a name wins, as in Kannel."""
    params: dict[str, bytes] = {}
    for source in (query, body.decode("latin-1")):
        for name, value in urllib.parse.parse_qsl(
            source, keep_blank_values=True, encoding="latin-1"
        ):
            params.setdefault(name, value.encode("latin-1"))
    return params


def _text_param(params: Mapping[str, bytes], name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace")


def _int_param(params: Mapping[str, bytes], name: str, low: int, high: int) -> int | Refusal | None:
    raw = _text_param(params, name)
    if raw is None or raw == "":
        return None
    if not raw.strip().lstrip("-").isdigit() or not low <= int(raw) <= high:
        return Refusal(400, f"{name.capitalize()} field misformed, rejected")
    return int(raw)


def _decode_text(params: Mapping[str, bytes], coding: int) -> str | Refusal:
    raw = params.get("text", b"")
    charset = (_text_param(params, "charset") or "").lower()
    if not charset:
        charset = "utf-16-be" if coding == 2 and len(raw) % 2 == 0 and b"\x00" in raw else "utf-8"
    codec = CHARSETS.get(charset, charset if charset == "utf-16-be" else "")
    if not codec:
        return Refusal(400, f"Charset {charset[:40]!r} is not supported, rejected")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return Refusal(400, f"Text is not valid {charset}, rejected")


def parse_sendsms(params: Mapping[str, bytes], now: float) -> SendSms | Refusal:
    """The request as a Submission, or Kannel's refusal. Pure but for the clock passed in."""
    username = _text_param(params, "username") or _text_param(params, "user")
    password = _text_param(params, "password") or _text_param(params, "pass")
    if not username or password is None:
        return Refusal(403, AUTH_FAILED)
    numbers = (_text_param(params, "to") or "").replace("+", " +").split()
    if not numbers:
        return Refusal(400, "Missing receiver number, rejected")
    if params.get("udh"):
        return Refusal(400, "UDH is not supported by septet, rejected")
    checked = _checked_ints(params)
    if isinstance(checked, Refusal):
        return checked
    coding, mclass, mask, validity, deferred, priority = checked
    if coding == 1:
        return Refusal(400, "Coding 1 (8-bit binary) is not supported by septet, rejected")
    if mclass in (2, 3):
        return Refusal(400, f"MClass {mclass} (to SIM) is not supported by septet, rejected")
    text = _decode_text(params, coding or 0)
    if isinstance(text, Refusal):
        return text
    if not text:
        return Refusal(400, "Empty text not allowed, rejected")
    dlr = _dlr(params, mask)
    if isinstance(dlr, Refusal):
        return dlr
    sender = _text_param(params, "from") or None
    schedule = None if not deferred else dt.datetime.fromtimestamp(now + 60 * deferred, dt.UTC)
    try:
        submission = Submission(
            to=numbers[0] if len(numbers) == 1 else numbers,
            text=text,
            sender=sender,
            route=_text_param(params, "smsc") or None,
            dlr=dlr is not None,
            dlr_url=dlr.url if dlr is not None else None,
            dlr_mask=dlr.mask if dlr is not None else None,
            flash=mclass == 0,
            schedule_at=schedule,
            validity_s=None if not validity else 60 * validity,
            priority=priority or 0,
        )
        submission = msgspec.convert(msgspec.to_builtins(submission), Submission)
    except msgspec.ValidationError as error:
        return Refusal(400, f"{str(error).replace('`', '')}, rejected")
    return SendSms(username=username, password=password or "", submission=submission, dlr=dlr)


def _checked_ints(
    params: Mapping[str, bytes],
) -> tuple[int | None, int | None, int | None, int | None, int | None, int | None] | Refusal:
    """coding, mclass, dlr-mask, validity, deferred, priority: each in Kannel's range."""
    values = (
        _int_param(params, "coding", 0, 2),
        _int_param(params, "mclass", 0, 3),
        _int_param(params, "dlr-mask", 0, DLR_ALL),
        _int_param(params, "validity", 1, 7 * 24 * 60),
        _int_param(params, "deferred", 0, 366 * 24 * 60),
        _int_param(params, "priority", 0, 3),
    )
    for value in values:
        if isinstance(value, Refusal):
            return value
    return values  # type: ignore[return-value]


def _dlr(params: Mapping[str, bytes], mask: int | None) -> KannelDlr | Refusal | None:
    url = _text_param(params, "dlr-url") or _text_param(params, "dlrurl")
    if not mask or not url:
        return None
    if len(url) > MAX_DLR_URL:
        return Refusal(400, f"DLR-URL is longer than {MAX_DLR_URL} characters, rejected")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Refusal(400, "DLR-URL is not an http(s) URL, rejected")
    return KannelDlr(url=url, mask=mask)


# ── The handler ────────────────────────────────────────────────────────────────────


def refusal_status(error: LineError) -> int:
    if error.kind in LIMIT_KINDS:
        return 429
    if error.kind in BUSY_KINDS:
        return 503
    return 400


def sendsms_route(
    by_login: Callable[[str, str], Account | None],
    accept: Acceptor,
    *,
    body_timeout_s: float = 10.0,
    clock: Callable[[], float] = time.time,
    origin: str = "sendsms",
) -> list[Route]:
    """GET and POST /cgi-bin/sendsms over `accept`; `by_login` names the account."""

    async def sendsms(request: Request) -> Response:
        body = b""
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            try:
                body = await read_body(request, body_timeout_s)
            except ApiProblem as problem:
                return _plain(problem.status, f"{problem.detail}, rejected")
        now = clock()
        parsed = parse_sendsms(read_params(request.query_string, body), now)
        if isinstance(parsed, Refusal):
            return _plain(parsed.status, parsed.text)
        account = by_login(parsed.username, parsed.password)
        if account is None:
            return _plain(403, AUTH_FAILED)
        (outcome,) = await accept(account, origin, [parsed.submission])
        if isinstance(outcome, LineError):
            headers = {}
            retry = getattr(outcome, "retry_after_s", None)
            if retry is not None:
                headers["Retry-After"] = str(max(1, round(retry + 0.499)))
            return _plain(refusal_status(outcome), f"{outcome.error}, rejected", headers)
        scheduled = parsed.submission.schedule_at is not None
        return _plain(202, QUEUED if scheduled else ACCEPTED)

    return [Route("GET", "/cgi-bin/sendsms", sendsms), Route("POST", "/cgi-bin/sendsms", sendsms)]


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return text_response(status, text, headers or None)
