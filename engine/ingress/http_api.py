"""The applications' HTTP API v1 (docs/http-api.md): submit, read, cancel, the event feed.

One `engine.http_routes.App` on a listener of its own (config `[api]`), beside Kannel's
`/cgi-bin/sendsms` (engine.ingress.sendsms). Every answer is JSON; every error is an
RFC 9457 problem (`application/problem+json`: type, title, status, and `detail`, one
sentence), including what the server refuses itself (unknown path, wrong method, body too
large, a request that is not HTTP), so bad input never gets a 500 or a traceback.

    POST   /v1/messages            one message or {"messages": [...]}: one journal commit,
                                   answered after it, one result per message
    GET    /v1/messages/{msg_id}   its state, fields and event history
    GET    /v1/messages            the account's own, newest first, by cursor
    DELETE /v1/messages/{msg_id}   cancel one no request has carried yet
    GET    /v1/events              the account's event feed from a cursor
    GET    /v1/openapi.json        the OpenAPI 3.1 document (engine.ingress.api_models)

Requests authenticate with the account's API key, `Authorization: Bearer <key>` or
`X-API-Key: <key>`. Reads go to the journal's reader (engine.journal.JournalReader), on a
connection of its own, never the writer's line.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import msgspec
import structlog

from engine.accounts import Account
from engine.cancel import Canceller, CancelVerdict, cancel_refusal, cancel_stored
from engine.config import ApiSettings, split_host_port
from engine.feed import account_of
from engine.http_routes import App, Refused, Route, describe
from engine.http_server import APPLICATION_JSON, Refusal, Request, Response
from engine.ingress.api_models import (
    FINAL_STATES,
    AcceptedRecipient,
    EventList,
    LineAccepted,
    LineRefused,
    MessageList,
    MessageStatus,
    Problem,
    SubmitResults,
    openapi,
)
from engine.ingress.api_requests import (
    ApiProblem,
    api_key_of,
    bad_request,
    decode_submissions,
    parse_cursor,
    parse_limit,
    parse_msg_id,
    parse_since,
    read_body,
)
from engine.ingress.prepare import LineError
from engine.journal import JournalError, JournalReader, StoredMessage
from engine.listener import serve_listener
from engine.models import (
    Message,
    State,
    Submission,
    utc_from_timestamp,
)

log = structlog.get_logger("septet.api")

PROBLEM_TYPE: Final = "https://septet.invalid/problems/"
PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
# Seconds a client is asked to wait when the engine cannot take messages (full queues,
# an unwritable journal).
BUSY_RETRY_AFTER_S: Final = 5
# Refusals that are the engine's state, not the line's fault.
BUSY_KINDS: Final = frozenset({"congested", "journal"})
LIMIT_KINDS: Final = frozenset({"throttled", "quota"})
# States in which `due_at` is when the message is next sent (later it means other things).
WAITING_STATES: Final = frozenset({"accepted", "scheduled"})


_encoder: Final = msgspec.json.Encoder()


class AccountBook(Protocol):
    def by_api_key(self, key: str) -> Account | None: ...


# Per submission: the journaled messages, or why it was refused.
Accepted = list[Message] | LineError


class Acceptor(Protocol):
    """The one accept path of every front door (engine.ingress.accept)."""

    async def __call__(
        self, account: Account, origin: str, submissions: Sequence[Submission]
    ) -> list[Accepted]: ...


class EventFeed(Protocol):
    """The durable per-account event feed (engine.feed), read-only."""

    async def feed(self, account: str, after: int, limit: int) -> tuple[list[bytes], int]: ...

    async def history(self, msg_id: str) -> list[bytes]: ...


def problem_response(problem: ApiProblem) -> Response:
    body = Problem(
        type=PROBLEM_TYPE + problem.title.lower().replace(" ", "-"),
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
    )
    headers = {}
    if problem.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(problem.retry_after_s + 0.499)))
    return Response(problem.status, _encoder.encode(body), PROBLEM_CONTENT_TYPE, headers or None)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, _encoder.encode(value), APPLICATION_JSON)


# What the server refuses itself, as problems: (title, detail), None for the server's own.
_REFUSAL_PROBLEMS: Final[dict[Refusal, tuple[str, str | None]]] = {
    Refusal.MALFORMED: ("Bad Request", None),
    Refusal.NOT_FOUND: ("Not Found", "there is no such path in this API"),
    Refusal.METHOD_NOT_ALLOWED: ("Method Not Allowed", None),
    Refusal.BODY_TOO_LARGE: ("Content Too Large", "the request body is larger than this API takes"),
    Refusal.HEAD_TOO_LARGE: ("Request Header Fields Too Large", None),
    Refusal.HANDLER_FAILED: ("Internal Server Error", None),
}


def problem_page(refused: Refused) -> Response:
    """What the server refuses itself, as an RFC 9457 problem (405 with `Allow`)."""
    title, detail = _REFUSAL_PROBLEMS[refused.refusal]
    response = problem_response(
        ApiProblem(refused.refusal.value, title, detail or describe(refused))
    )
    if refused.refusal is Refusal.METHOD_NOT_ALLOWED:
        response.headers = {"Allow": ", ".join(refused.allowed)}
    return response


def answer_problem(error: Exception) -> Response | None:
    """A handler's ApiProblem, answered; anything else is a bug for the server to log."""
    return problem_response(error) if isinstance(error, ApiProblem) else None


# ── Request pieces ───────────────────────────────────────────────────────────────


def authenticate(request: Request, accounts: AccountBook) -> Account:
    key = api_key_of(request)
    if key is None:
        raise ApiProblem(
            401, "Unauthorized", "an API key is needed: Authorization: Bearer <key> or X-API-Key"
        )
    account = accounts.by_api_key(key)
    if account is None:
        raise ApiProblem(401, "Unauthorized", "the API key is not valid")
    return account


# ── Answers ──────────────────────────────────────────────────────────────────────


def line_result(number: int, answer: Accepted) -> LineAccepted | LineRefused:
    if isinstance(answer, LineError):
        return LineRefused(
            line=number,
            id=answer.client_ref,
            error=answer.error,
            kind=answer.kind,
            msg_ids=list(answer.msg_ids),
            retry_after_s=getattr(answer, "retry_after_s", None),
        )
    return LineAccepted(
        line=number,
        id=answer[0].client_ref if answer else None,
        messages=[
            AcceptedRecipient(
                msg_id=message.msg_id,
                to=message.to,
                encoding=message.encoding,
                segments=message.segments,
                cost=message.cost,
                currency=message.currency,
                bridge=message.bridge,
            )
            for message in answer
        ],
    )


def whole_refusal(results: Sequence[LineAccepted | LineRefused]) -> ApiProblem | None:
    """Where every line was refused for the account's limits (429) or the engine's state
    (503), the request as a whole is answered so, with Retry-After."""
    refused = [r for r in results if isinstance(r, LineRefused)]
    if not refused or len(refused) < len(results):
        return None
    if all(r.kind in LIMIT_KINDS for r in refused):
        wait = max((r.retry_after_s or 1.0) for r in refused)
        return ApiProblem(429, "Too Many Requests", refused[0].error, retry_after_s=wait)
    if all(r.kind in BUSY_KINDS for r in refused):
        return ApiProblem(503, "Service Unavailable", refused[0].error, BUSY_RETRY_AFTER_S)
    return None


def _utc(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else utc_from_timestamp(seconds)


def message_status(stored: StoredMessage, history: Sequence[bytes] = ()) -> MessageStatus:
    message = stored.message
    state = stored.status or "accepted"
    return MessageStatus(
        msg_id=message.msg_id,
        id=message.client_ref,
        to=message.to,
        sender=message.sender,
        text=message.text,
        encoding=message.encoding,
        segments=message.segments,
        cost=message.cost,
        currency=message.currency,
        bridge=message.bridge,
        state=state,  # type: ignore[arg-type]
        final=state in FINAL_STATES,
        accepted_at=utc_from_timestamp(message.accepted_at),
        due_at=utc_from_timestamp(message.due_at) if state in WAITING_STATES else None,
        expires_at=_utc(message.expires_at),
        submitted_at=_utc(stored.submitted_at),
        final_at=_utc(stored.final_at),
        provider_id=message.provider_id,
        provider_cost=stored.provider_cost,
        provider_currency=stored.provider_currency,
        code=stored.code,
        error=stored.error,
        history=[msgspec.Raw(line) for line in history],
    )


# ── The application ──────────────────────────────────────────────────────────────


class HttpApi:
    """The handlers of API v1 over the engine's parts (module docstring)."""

    def __init__(
        self,
        *,
        accounts: AccountBook,
        accept: Acceptor,
        reader: JournalReader,
        canceller: Canceller,
        feed: EventFeed | None = None,
        max_batch: int = 1000,
        body_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        origin: str = "api",
    ) -> None:
        self._accounts = accounts
        self._accept = accept
        self._reader = reader
        self._canceller = canceller
        self._feed = feed
        self._max_batch = max_batch
        self._body_timeout_s = body_timeout_s
        self._clock = clock
        self._origin = origin
        self._openapi = _encoder.encode(openapi(max_batch))

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/messages", self.submit),
            Route("GET", "/v1/messages", self.list_messages),
            Route("GET", "/v1/messages/{msg_id}", self.get_message),
            Route("DELETE", "/v1/messages/{msg_id}", self.cancel_message),
            Route("GET", "/v1/events", self.events),
            Route("GET", "/v1/openapi.json", self.openapi_document),
        ]

    async def openapi_document(self, request: Request) -> Response:
        del request
        return Response(200, self._openapi, APPLICATION_JSON)

    async def submit(self, request: Request) -> Response:
        account = authenticate(request, self._accounts)
        # The field as clients mostly write it answers without parsing it (content_type).
        if (
            request.headers.get("content-type") != APPLICATION_JSON
            and request.content_type != APPLICATION_JSON
        ):
            raise ApiProblem(
                415,
                "Unsupported Media Type",
                f"the body must be application/json, not {request.content_type or 'none'}",
            )
        if request.complete:  # the body came with the head: no coroutine to wait for it
            body = request.body
        else:
            body = await read_body(request, self._body_timeout_s)
        decoded = decode_submissions(body, self._max_batch)
        submissions = [item for item in decoded if isinstance(item, Submission)]
        try:
            accepted = await self._accept(account, self._origin, submissions) if submissions else []
        except JournalError as error:
            raise ApiProblem(
                503, "Service Unavailable", f"not accepted, send it again later: {error}", 5
            ) from None
        answers = iter(accepted)
        results: list[LineAccepted | LineRefused] = []
        refused = 0
        for number, item in enumerate(decoded, 1):
            result = line_result(number, item if isinstance(item, LineError) else next(answers))
            refused += isinstance(result, LineRefused)
            results.append(result)
        refusal = whole_refusal(results) if refused == len(results) else None
        if refusal is not None:
            raise refusal
        return json_response(SubmitResults(results=results))

    async def _owned(self, request: Request, account: Account) -> StoredMessage:
        msg_id = parse_msg_id(request.match_info["msg_id"])
        stored = await self._reader.message(msg_id)
        if stored is None:
            raise ApiProblem(404, "Not Found", f"there is no message {msg_id}")
        if account_of(stored.message) != account.name:
            raise ApiProblem(403, "Forbidden", f"message {msg_id} belongs to another account")
        return stored

    async def get_message(self, request: Request) -> Response:
        account = authenticate(request, self._accounts)
        stored = await self._owned(request, account)
        history = await self._feed.history(stored.message.msg_id) if self._feed else []
        return json_response(message_status(stored, history))

    async def list_messages(self, request: Request) -> Response:
        account = authenticate(request, self._accounts)
        state = request.query.get("state")
        if state is not None and state not in _STATE_NAMES:
            raise bad_request(f"state {state[:40]!r} is not one of {', '.join(_STATE_NAMES)}")
        client_ref = request.query.get("id")
        page = await self._reader.page(
            account.name,
            below=parse_cursor(request, "cursor"),
            client_ref=client_ref or None,
            status=state,
            since=parse_since(request),
            limit=parse_limit(request),
        )
        cursor = None if page.next_cursor is None else str(page.next_cursor)
        return json_response(
            MessageList(messages=[message_status(s) for s in page.messages], next_cursor=cursor)
        )

    async def cancel_message(self, request: Request) -> Response:
        account = authenticate(request, self._accounts)
        stored = await self._owned(request, account)
        message = stored.message
        try:
            verdict = await cancel_stored(stored, self._canceller, self._clock())
        except JournalError as error:
            raise ApiProblem(
                503, "Service Unavailable", f"not cancelled, try again later: {error}", 5
            ) from None
        if verdict is CancelVerdict.ALREADY_CANCELLED:
            return json_response(message_status(stored))
        if verdict is not CancelVerdict.CANCELLED:
            detail = cancel_refusal(message.msg_id, stored.status, verdict)
            raise ApiProblem(409, "Conflict", detail)
        log.info("message_cancelled", msg_id=message.msg_id, account=account.name)
        after = await self._reader.message(int(message.msg_id))
        return json_response(message_status(after or stored))

    async def events(self, request: Request) -> Response:
        account = authenticate(request, self._accounts)
        after = parse_cursor(request, "after") or 0
        limit = parse_limit(request)
        if self._feed is None:
            return json_response(EventList(events=[], next_cursor=str(after)))
        lines, cursor = await self._feed.feed(account.name, after, limit)
        return json_response(
            EventList(events=[msgspec.Raw(line) for line in lines], next_cursor=str(cursor))
        )


_STATE_NAMES: Final = tuple(state.value for state in State)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The listener's TLS context from PEM files (config `[api] cert`/`key`), or None."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"api.cert/api.key cannot be loaded: {error}") from None
    return context


async def serve_api(
    settings: ApiSettings,
    app: App,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API's application on `[api] listen` until cancelled; reports the port."""
    assert settings.listen is not None
    host, port = split_host_port(settings.listen, "api.listen")
    await serve_listener(
        app,
        host,
        port,
        idle_timeout_s=settings.idle_timeout_s,
        ssl_context=tls_context(settings.cert, settings.key),
        task_status=task_status,
    )


def build_api_app(api: HttpApi, extra_routes: Sequence[Route] = (), *, max_body_bytes: int) -> App:
    """The API's application: a body over `max_body_bytes` is answered 413."""
    return App(
        [*api.routes(), *extra_routes],
        max_body_bytes=max_body_bytes,
        error_page=problem_page,
        answer_exception=answer_problem,
    )
