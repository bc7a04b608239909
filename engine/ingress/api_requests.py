"""The HTTP API's requests read: the key, the query parameters and the bodies. Pure.

Each reader returns the value, or raises the ApiProblem (a 400, or 413 for a batch over
the limit) whose sentence says what was wrong; engine.ingress.http_api renders it as an
RFC 9457 problem. What the OpenAPI document promises (engine.ingress.api_models) is
decided here, before anything is journaled.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

import msgspec

from engine.http_server import Request
from engine.ingress.api_models import DEFAULT_PAGE, MAX_PAGE
from engine.ingress.prepare import LineError, describe_invalid
from engine.models import Submission, submission_decoder


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    messages: list[Submission]


# A batch whose every message is a plain Submission, decoded in one pass (the common case).
_whole_batch_decoder: Final = msgspec.json.Decoder(_Batch)
_top_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_batch_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])
_loose_decoder: Final = msgspec.json.Decoder(dict[str, Any])


class ApiProblem(Exception):  # noqa: N818 - an answer, raised to leave a handler early
    """A problem answer: its status, title and the sentence."""

    def __init__(
        self, status: int, title: str, detail: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.retry_after_s = retry_after_s


async def read_body(request: Request, timeout_s: float) -> bytes:
    """The whole body, or a 408 when it does not arrive within `timeout_s` (config `[api]
    body_timeout_s`): a client trickling it must not hold a handler. (BodyTooLarge, past
    the listener's limit, is the server's to answer.)"""
    body = await request.read(timeout_s)
    if body is None:
        raise ApiProblem(
            408, "Request Timeout", f"the request body did not arrive within {timeout_s:g} s"
        )
    return body


def api_key_of(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, else `X-API-Key`."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


def bad_request(detail: str) -> ApiProblem:
    return ApiProblem(400, "Bad Request", detail)


def parse_msg_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise bad_request(f"msg_id {text[:40]!r} is not a message id (digits)")
    return int(text)


def parse_limit(request: Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise bad_request(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def parse_cursor(request: Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise bad_request(f"{name} must be a cursor this API gave (digits)")
    return int(raw)


def parse_since(request: Request) -> float | None:
    raw = request.query.get("since")
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_request("since must be an RFC 3339 time, such as 2026-12-06T08:00:00Z") from None
    if moment.tzinfo is None:
        raise bad_request("since needs a time zone, such as Z or +02:00")
    return moment.timestamp()


def decode_submission(raw: bytes | msgspec.Raw) -> Submission | LineError:
    """One message object, or why its `schedule_at` is not a time (a line's refusal: in
    OpenAPI 3.1 a `format` is an annotation, so a string there fits the schema). A whole
    number written as a float (`"priority": 2.0`) is an integer in JSON Schema's eyes,
    and so in the API's; msgspec's strict decoder says no, so such a message is converted
    again with those numbers as ints. Raises ValidationError for anything else."""
    try:
        return submission_decoder.decode(raw)
    except msgspec.ValidationError:
        loose = _loose_decoder.decode(raw)
        whole = {key: _representable(value) for key, value in loose.items()}
        try:
            return msgspec.convert(whole, Submission)
        except msgspec.ValidationError:
            when = whole.get("schedule_at")
            if not isinstance(when, str):
                raise
            whole["schedule_at"] = None
            sub = msgspec.convert(whole, Submission)  # raises for any other fault
            return LineError(
                f"schedule_at {when[:40]!r} is not an RFC 3339 time, such as 2026-12-06T08:00:00Z",
                sub.id,
                "schedule",
            )


# RFC 3339 section 5.6; Python's datetime has no year 0 and no leap second (:60).
_RFC3339: Final = re.compile(
    r"(\d{4})(-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:)(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def _representable(value: Any) -> Any:
    """A whole float as an int; an RFC 3339 time in year 0000 or on a leap second as the
    nearest time Python holds (the first year; second 59): both long past or a second
    off, so the message is due as the client meant."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _RFC3339.fullmatch(value)
        if match is not None and (match[1] == "0000" or match[3] == "60"):
            year = "0001" if match[1] == "0000" else match[1]
            second = "59" if match[3] == "60" else match[3]
            return f"{year}{match[2]}{second}{match[4] or ''}{match[5]}"
    return value


def decode_submissions(body: bytes, max_batch: int) -> list[Submission | LineError]:
    """One message, or {"messages": [...]}. A body that is neither, or a message in it that
    is not a message object (the OpenAPI schema's Submission), is a 400 naming it: what
    the schema promises is decided before anything is journaled. The rules of a message
    (numbers, routes, limits) are answered per message."""
    # The common cases, each decoded once (try, not contextlib.suppress: a context manager
    # of three Python calls costs more than the decoding of a message). ValidationError is
    # a DecodeError.
    try:
        return [submission_decoder.decode(body)]
    except msgspec.DecodeError:  # not one message object: a batch, or read below
        try:
            batch = _whole_batch_decoder.decode(body).messages
        except msgspec.DecodeError:
            batch = []  # not a batch of message objects either: read below
    if 0 < len(batch) <= max_batch:
        return list(batch)
    # Anything else is read piece by piece, to name what is wrong.
    try:
        top = _top_decoder.decode(body)
    except msgspec.DecodeError:
        raise bad_request("the body is not a JSON object") from None
    if "messages" not in top:
        try:
            return [decode_submission(body)]
        except msgspec.ValidationError as error:
            raise bad_request(describe_invalid(error)) from None
    if len(top) > 1:
        others = ", ".join(sorted(repr(key) for key in top if key != "messages"))
        raise bad_request(f"a batch has only 'messages'; unknown field {others}")
    try:
        raws = _batch_decoder.decode(top["messages"])
    except msgspec.ValidationError:
        raise bad_request("'messages' must be an array of message objects") from None
    if not raws:
        raise bad_request("'messages' is empty")
    if len(raws) > max_batch:
        raise ApiProblem(
            413,
            "Content Too Large",
            f"the batch has {len(raws)} messages; the limit is {max_batch}",
        )
    out: list[Submission | LineError] = []
    for number, raw in enumerate(raws, 1):
        try:
            out.append(decode_submission(raw))
        except msgspec.ValidationError as error:
            raise bad_request(f"message {number}: {describe_invalid(error)}") from None
        except msgspec.DecodeError:
            raise bad_request(f"message {number} is not a JSON object") from None
    return out
