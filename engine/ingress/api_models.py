"""The HTTP API's bodies as msgspec Structs, and the OpenAPI 3.1 document made from them. Pure.

Requests are decoded with these types and answers encoded from them, and `openapi()`
takes its schemas from the same Structs (`msgspec.json.schema_components`): the document
cannot drift from what the server does. A message in a request is engine.models'
`Submission`, the very type of an NDJSON line.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from engine.ingress.prepare import RefusalKind
from engine.models import Encoding, Submission

API_VERSION: Final = "1"

# Query parameter bounds (also in the document).
MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100

# The lifecycle's state names (engine.models.State), as the API shows them.
StateName = Literal[
    "accepted",
    "scheduled",
    "inflight",
    "submitted",
    "unconfirmed",
    "sent",
    "delivered",
    "undeliverable",
    "expired",
    "rejected",
    "deleted",
    "unknown",
    "cancelled",
]
FINAL_STATES: Final = frozenset(
    {"sent", "delivered", "undeliverable", "expired", "rejected", "deleted", "unknown", "cancelled"}
)


# An event as the durable feed stores it (its JSON, `event_id` first), passed through as is.
StoredEvent = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        extra_json_schema={
            "type": "object",
            "description": "An event (accepted, submitted, status, retry, failover, failed,"
            " dlr, cancelled) with its event_id, as the event feed carries it.",
        }
    ),
]


class MessageBatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Several messages in one request: one journal commit, one result per message."""

    messages: Annotated[list[Submission], msgspec.Meta(min_length=1)]


class AcceptedRecipient(msgspec.Struct, kw_only=True):
    """One message of an accepted line: one per recipient."""

    msg_id: str
    to: str
    encoding: Encoding
    segments: int
    cost: float
    currency: str
    bridge: str


class LineAccepted(msgspec.Struct, tag="accepted", tag_field="result", kw_only=True):
    """The line is journaled: one message per recipient, in the order of `to`."""

    line: int
    id: str | None
    messages: list[AcceptedRecipient]


class LineRefused(msgspec.Struct, tag="rejected", tag_field="result", kw_only=True):
    """The line was not accepted: `error` says why in a sentence, `kind` for code; a
    duplicate names the msg_ids the earlier line was accepted as; a limit says when to
    try again."""

    line: int
    id: str | None
    error: str
    kind: RefusalKind
    msg_ids: list[str] = msgspec.field(default_factory=list)
    retry_after_s: float | None = None


class SubmitResults(msgspec.Struct, kw_only=True):
    """One result per message of the request, in its order (`line` counts from 1)."""

    results: list[LineAccepted | LineRefused]


class MessageStatus(msgspec.Struct, kw_only=True):
    """A message as the journal holds it now. Times are RFC 3339 UTC; `due_at` is when a
    waiting message (accepted, scheduled) is next sent, null in other states; `history` (on
    GET /v1/messages/{msg_id} only) lists its events oldest first, as the event feed
    carries them."""

    msg_id: str
    id: str | None
    to: str
    sender: str | None = msgspec.field(name="from")
    text: str
    encoding: Encoding
    segments: int
    cost: float
    currency: str
    bridge: str
    state: StateName
    final: bool
    accepted_at: dt.datetime
    due_at: dt.datetime | None
    expires_at: dt.datetime | None
    submitted_at: dt.datetime | None
    final_at: dt.datetime | None
    provider_id: str | None
    provider_cost: float | None
    provider_currency: str | None
    code: str | None
    error: str | None
    history: list[StoredEvent] = msgspec.field(default_factory=list)


class MessageList(msgspec.Struct, kw_only=True):
    """A page of the account's messages, newest first. `next_cursor`: pass it as `cursor`
    for the next page; null when there are no more."""

    messages: list[MessageStatus]
    next_cursor: str | None


class EventList(msgspec.Struct, kw_only=True):
    """A page of the account's event feed, oldest first; each event has its `event_id`.
    Pass `next_cursor` as `after` to read on (the same cursor when nothing was new)."""

    events: list[StoredEvent]
    next_cursor: str


class Problem(msgspec.Struct, kw_only=True):
    """An error (RFC 9457 problem details): `detail` says in one sentence what was wrong."""

    type: str
    title: str
    status: int
    detail: str


submit_results_encoder: Final = msgspec.json.Encoder()
message_batch_decoder: Final = msgspec.json.Decoder(MessageBatch)


# ── The OpenAPI document ─────────────────────────────────────────────────────────

_SCHEMA_TYPES: Final = (
    Submission,
    MessageBatch,
    SubmitResults,
    MessageStatus,
    MessageList,
    EventList,
    Problem,
)
_REF: Final = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "The body or a parameter is malformed.",
        401: "No API key, or an unknown one.",
        403: "The message belongs to another account.",
        404: "No message with that id.",
        405: "The method is not allowed on this path.",
        408: "The request body did not arrive in time.",
        409: "The message can no longer be cancelled.",
        413: "Too many messages, or too large a body.",
        415: "The body is not application/json.",
        429: "Over the account's throughput or daily quota; see Retry-After.",
        503: "The engine cannot take messages now; see Retry-After.",
    }
    problem = {"$ref": _REF.format(name="Problem")}
    return {
        str(status): {
            "description": reasons[status],
            "content": {"application/problem+json": {"schema": problem}},
        }
        for status in statuses
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_MSG_ID: Final = {
    "name": "msg_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "description": "septet's id of the message (digits).",
}


def _messages_path(max_batch: int) -> dict[str, Any]:
    states = list(get_args(StateName))
    submit_body = {
        "oneOf": [
            _ref("Submission"),
            {**_ref("MessageBatch"), "description": f"At most {max_batch} messages."},
        ]
    }
    return {
        "post": {
            "operationId": "submitMessages",
            "summary": "Submit one message or a batch; answered after the journal commit.",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": submit_body}},
            },
            "responses": {
                "200": _json(_ref("SubmitResults"), "One result per message."),
                **_problems(400, 401, 413, 415, 429, 503),
            },
        },
        "get": {
            "operationId": "listMessages",
            "summary": "The account's messages, newest first.",
            "parameters": [
                _query("id", {"type": "string"}, "Only those with this client id."),
                _query("state", {"type": "string", "enum": states}, "Only in this state."),
                _query(
                    "since",
                    {"type": "string", "format": "date-time"},
                    "Only those accepted at or after this time (RFC 3339, with a zone).",
                ),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    f"Page size (default {DEFAULT_PAGE}).",
                ),
                _query(
                    "cursor",
                    {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "next_cursor of the previous page.",
                ),
            ],
            "responses": {
                "200": _json(_ref("MessageList"), "A page of messages."),
                **_problems(400, 401),
            },
        },
    }


def _message_path() -> dict[str, Any]:
    return {
        "parameters": [_MSG_ID],
        "get": {
            "operationId": "getMessage",
            "summary": "A message's state, fields and state history.",
            "responses": {
                "200": _json(_ref("MessageStatus"), "The message."),
                **_problems(400, 401, 403, 404),
            },
        },
        "delete": {
            "operationId": "cancelMessage",
            "summary": "Cancel a scheduled or queued message no request has carried yet.",
            "responses": {
                "200": _json(_ref("MessageStatus"), "Cancelled (or already cancelled)."),
                **_problems(400, 401, 403, 404, 409),
            },
        },
    }


def _events_path() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "listEvents",
            "summary": "The account's durable event feed, from a cursor; non-destructive.",
            "parameters": [
                _query(
                    "after",
                    {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "Events after this cursor (default 0: from the oldest kept).",
                ),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    f"Page size (default {DEFAULT_PAGE}).",
                ),
            ],
            "responses": {
                "200": _json(_ref("EventList"), "A page of events."),
                **_problems(400, 401),
            },
        },
    }


def _paths(max_batch: int) -> dict[str, Any]:
    return {
        "/v1/messages": _messages_path(max_batch),
        "/v1/messages/{msg_id}": _message_path(),
        "/v1/events": _events_path(),
    }


def openapi(max_batch: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document of API v1; schemas generated from the Structs above."""
    _, components = msgspec.json.schema_components(_SCHEMA_TYPES, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "septet HTTP API",
            "version": API_VERSION,
            "description": "Submit SMS, read their state and events (docs/http-api.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": _paths(max_batch),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
