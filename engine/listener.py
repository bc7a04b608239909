"""The daemon's HTTP listeners: provider callbacks under /dlr/<bridge>, /metrics, /healthz, /readyz.

One `engine.http_routes.App` on septet's own HTTP/1.1 server (engine.http_server). A
callback is parsed by its bridge's driver, which checks the credentials septet registered
with the provider (constant-time); a mismatch is answered 401, a malformed request 400,
and the listener answers 200 only once the receipts are journaled, so a provider retries
what septet could not record: a journal that cannot be written (disk full, read-only directory) is
answered 503 with Retry-After, the status every provider here retries. Every refused
callback is counted by reason (septet_callbacks_rejected_total).

With `[http] metrics_listen` set, /metrics moves to a listener of its own
(`build_metrics_app`, with /healthz and /readyz beside it), so the port that must face
the providers need not expose the daemon's figures. What the server refuses itself
(unknown path or method, a body over 64 KiB) is answered in plain text.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio
import anyio.abc
import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from bridges.base import BridgeDriver, CallbackRejected, InboundRequest, Receipt
from engine.http_routes import App, Route
from engine.http_server import Request, Response, serve_http, text_response
from engine.journal import JournalError
from engine.log import decode_body

log = structlog.get_logger("septet.listener")

ReceiptSink = Callable[[str, Sequence[Receipt]], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[dict[str, object]]]
# Told of every callback refused: (bridge from the URL, reason from
# engine.metrics.CALLBACK_REJECTIONS).
RejectionSink = Callable[[str, str], None]


def _ignore_rejection(bridge: str, reason: str) -> None:
    del bridge, reason


# Seconds a callback still being handled at shutdown is given to finish.
SHUTDOWN_TIMEOUT_S = 5.0
# Seconds a provider is asked to wait before sending receipts the journal could not take.
UNWRITABLE_RETRY_AFTER_S = 30
# The largest callback body taken (a provider's report is well under 1 KiB).
CALLBACK_MAX_BODY_BYTES = 64 * 1024
# JSON answers as aiohttp's json_response wrote them.
JSON_UTF8 = "application/json; charset=utf-8"


def build_app(
    drivers: Mapping[str, BridgeDriver],
    on_receipts: ReceiptSink,
    ready: ReadyCheck,
    extra_routes: Sequence[Route] = (),
    *,
    body_timeout_s: float = 10.0,
    on_rejected: RejectionSink = _ignore_rejection,
) -> App:
    """`body_timeout_s` bounds the wait for a callback's body (config `[http]
    body_timeout_s`): a client trickling it must not hold a handler. `on_rejected` is
    told of each callback refused, and why (septet_callbacks_rejected_total)."""

    async def callback(request: Request) -> Response:
        bridge = request.match_info["bridge"]
        driver = drivers.get(bridge)
        if driver is None or driver.capabilities.delivery != "callback":
            on_rejected(bridge, "unknown_bridge")
            return text_response(404, f"no callback endpoint for {bridge!r}\n")
        body = await request.read(body_timeout_s)
        if body is None:
            log.warning("callback_body_timeout", bridge=bridge, peer=request.remote)
            on_rejected(bridge, "body_timeout")
            # RFC 9110 section 15.5.9: 408, and the connection is not kept.
            return text_response(408, "request body too slow\n", close=True)
        inbound = InboundRequest(
            method=request.method,
            query=dict(request.query),
            body=body,
            headers=request.headers,
        )
        if log.is_enabled_for(logging.DEBUG):
            log.debug(
                "callback_received",
                bridge=bridge,
                method=inbound.method,
                query=dict(inbound.query),
                body=decode_body(inbound.body),
            )
        receipts = _parsed(driver, bridge, inbound, request.remote, on_rejected)
        if isinstance(receipts, Response):
            return receipts
        try:
            await on_receipts(bridge, receipts)
        except JournalError as error:
            return _not_recorded(bridge, error, on_rejected)
        return _OK  # only once the receipts are journaled

    routes = [Route("GET", "/dlr/{bridge}", callback), Route("POST", "/dlr/{bridge}", callback)]
    return App(
        [*routes, *health_routes(ready), *extra_routes], max_body_bytes=CALLBACK_MAX_BODY_BYTES
    )


def _parsed(
    driver: BridgeDriver,
    bridge: str,
    inbound: InboundRequest,
    peer: str,
    on_rejected: RejectionSink,
) -> Sequence[Receipt] | Response:
    """The callback's receipts, or the answer refusing it (401, 400)."""
    try:
        return driver.parse_callback(inbound)
    except CallbackRejected:
        log.warning("callback_rejected", bridge=bridge, peer=peer)
        on_rejected(bridge, "unauthorized")
        return text_response(401, "unauthorized\n")
    except ValueError as error:
        log.warning("callback_malformed", bridge=bridge, error=str(error))
        on_rejected(bridge, "malformed")
        return text_response(400, f"{error}\n")


def _not_recorded(bridge: str, error: JournalError, on_rejected: RejectionSink) -> Response:
    log.error("callback_not_recorded", bridge=bridge, error=str(error))
    on_rejected(bridge, "not_recorded")
    # RFC 9110 section 15.6.4: 503 says the failure is temporary; Retry-After paces the
    # provider's retries while the journal stays unwritable.
    return text_response(
        503,
        "receipts not recorded, send them again later\n",
        {"Retry-After": str(UNWRITABLE_RETRY_AFTER_S)},
    )


_OK = text_response(200, "OK\n")


def health_routes(ready: ReadyCheck) -> list[Route]:
    """GET /healthz (the process answers) and GET /readyz (it can take traffic)."""

    async def healthz(request: Request) -> Response:
        del request
        return Response(200, b'{"status": "alive"}', JSON_UTF8)

    async def readyz(request: Request) -> Response:
        del request
        report = await ready()
        status = 200 if report.get("ready") else 503
        return Response(status, msgspec.json.encode(report), JSON_UTF8)

    return [
        Route("GET", "/healthz", healthz, allow_head=True),
        Route("GET", "/readyz", readyz, allow_head=True),
    ]


def build_metrics_app(
    render: Callable[[], Awaitable[bytes]],
    ready: ReadyCheck,
    extra_routes: Sequence[Route] = (),
) -> App:
    """The listener of `[http] metrics_listen`: /metrics, /healthz and /readyz (and the
    admin API's `extra_routes`), so the scraper, the health checks and the operator need
    not share the port that faces providers."""
    return App([metrics_route(render), *health_routes(ready), *extra_routes], max_body_bytes=1024)


def metrics_route(render: Callable[[], Awaitable[bytes]]) -> Route:
    """GET /metrics: the Prometheus text exposition `render` produces (engine.metrics)."""

    async def metrics(request: Request) -> Response:
        del request
        return Response(200, await render(), CONTENT_TYPE_LATEST)

    return Route("GET", "/metrics", metrics, allow_head=True)


async def serve_listener(
    app: App,
    host: str,
    port: int,
    *,
    idle_timeout_s: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled (over TLS with `ssl_context`); reports the bound port.

    `idle_timeout_s` (config `[http] idle_timeout_s`) is armed when a connection opens
    and after each answer, and closes the connection when it fires with no whole request
    head read: so it bounds both an idle keep-alive connection and a client sending its
    head byte by byte (slowloris). At shutdown a callback still being handled gets
    SHUTDOWN_TIMEOUT_S to finish (its journal commit takes milliseconds) before it is
    cancelled, unanswered, so the provider sends it again.
    """
    await serve_http(
        app,
        host,
        port,
        idle_timeout_s=idle_timeout_s,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        ssl_context=ssl_context,
        task_status=task_status,
    )
