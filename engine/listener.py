"""The daemon's HTTP listeners: provider callbacks under /dlr/<bridge>, /metrics, /healthz, /readyz.

One aiohttp application (the project's one HTTP server library). A callback is parsed by
its bridge's driver, which checks the credentials septet registered with the provider
(constant-time); a mismatch is answered 401, a malformed request 400, and the listener
answers 200 only once the receipts are journaled, so a provider retries what septet
could not record: a journal that cannot be written (disk full, read-only directory) is
answered 503 with Retry-After, the status every provider here retries. Every refused
callback is counted by reason (septet_callbacks_rejected_total).

With `[http] metrics_listen` set, /metrics moves to a listener of its own
(`build_metrics_app`, with /healthz and /readyz beside it), so the port that must face
the providers need not expose the daemon's figures.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridges.base import BridgeDriver, CallbackRejected, InboundRequest, Receipt
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


def build_app(
    drivers: Mapping[str, BridgeDriver],
    on_receipts: ReceiptSink,
    ready: ReadyCheck,
    extra_routes: Sequence[web.RouteDef] = (),
    *,
    body_timeout_s: float = 10.0,
    on_rejected: RejectionSink = _ignore_rejection,
) -> web.Application:
    """`body_timeout_s` bounds the wait for a callback's body (config `[http]
    body_timeout_s`): a client trickling it must not hold a handler. `on_rejected` is
    told of each callback refused, and why (septet_callbacks_rejected_total)."""

    async def callback(request: web.Request) -> web.Response:
        bridge = request.match_info["bridge"]
        driver = drivers.get(bridge)
        if driver is None or driver.capabilities.delivery != "callback":
            on_rejected(bridge, "unknown_bridge")
            return web.Response(status=404, text=f"no callback endpoint for {bridge!r}\n")
        body = await _read_body(request, body_timeout_s)
        if body is None:
            log.warning("callback_body_timeout", bridge=bridge, peer=request.remote)
            on_rejected(bridge, "body_timeout")
            # RFC 9110 section 15.5.9: 408, and the connection is not kept.
            return web.Response(
                status=408, text="request body too slow\n", headers={"Connection": "close"}
            )
        inbound = InboundRequest(
            method=request.method,
            query=dict(request.query),
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        if log.is_enabled_for(logging.DEBUG):
            log.debug(
                "callback_received",
                bridge=bridge,
                method=inbound.method,
                query=dict(inbound.query),
                body=decode_body(inbound.body),
            )
        try:
            receipts = driver.parse_callback(inbound)
        except CallbackRejected:
            log.warning("callback_rejected", bridge=bridge, peer=request.remote)
            on_rejected(bridge, "unauthorized")
            return web.Response(status=401, text="unauthorized\n")
        except ValueError as error:
            log.warning("callback_malformed", bridge=bridge, error=str(error))
            on_rejected(bridge, "malformed")
            return web.Response(status=400, text=f"{error}\n")
        try:
            await on_receipts(bridge, receipts)
        except JournalError as error:
            log.error("callback_not_recorded", bridge=bridge, error=str(error))
            on_rejected(bridge, "not_recorded")
            # RFC 9110 section 15.6.4: 503 says the failure is temporary; Retry-After paces
            # the provider's retries while the journal stays unwritable.
            return web.Response(
                status=503,
                text="receipts not recorded, send them again later\n",
                headers={"Retry-After": str(UNWRITABLE_RETRY_AFTER_S)},
            )
        return web.Response(text="OK\n")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_route("GET", "/dlr/{bridge}", callback)
    app.router.add_route("POST", "/dlr/{bridge}", callback)
    app.add_routes([*health_routes(ready), *extra_routes])
    return app


async def _read_body(request: web.Request, timeout_s: float) -> bytes | None:
    """The request's body, or None when it did not arrive within `timeout_s`."""
    if request.content.is_eof():
        # The whole body is here already (a GET has none): reading it cannot wait, so
        # no timeout is set up (a cancel scope costs microseconds, on every report).
        return await request.read()
    with anyio.move_on_after(timeout_s):
        return await request.read()
    return None


def health_routes(ready: ReadyCheck) -> list[web.RouteDef]:
    """GET /healthz (the process answers) and GET /readyz (it can take traffic)."""

    async def healthz(request: web.Request) -> web.Response:
        del request
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        del request
        report = await ready()
        return web.json_response(report, status=200 if report.get("ready") else 503)

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]


def build_metrics_app(
    render: Callable[[], Awaitable[bytes]],
    ready: ReadyCheck,
    extra_routes: Sequence[web.RouteDef] = (),
) -> web.Application:
    """The listener of `[http] metrics_listen`: /metrics, /healthz and /readyz (and the
    admin API's `extra_routes`), so the scraper, the health checks and the operator need
    not share the port that faces providers."""
    app = web.Application(client_max_size=1024)
    app.add_routes([metrics_route(render), *health_routes(ready), *extra_routes])
    return app


def metrics_route(render: Callable[[], Awaitable[bytes]]) -> web.RouteDef:
    """GET /metrics: the Prometheus text exposition `render` produces (engine.metrics)."""

    async def metrics(request: web.Request) -> web.Response:
        del request
        return web.Response(body=await render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", metrics)


async def serve_listener(
    app: web.Application,
    host: str,
    port: int,
    *,
    idle_timeout_s: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled (over TLS with `ssl_context`); reports the bound port.

    `idle_timeout_s` (config `[http] idle_timeout_s`) is aiohttp's keep-alive timeout.
    aiohttp arms it when a connection opens and after each response, and closes the
    connection when it fires with no complete request head read: so it bounds both an
    idle keep-alive connection and a client sending its head byte by byte (slowloris).
    """
    # shutdown_timeout: at shutdown a callback still being handled gets this long to finish
    # (its journal commit takes milliseconds) before it is cancelled, unanswered, so the
    # provider sends it again; aiohttp's default of 60 s would hold the daemon's exit.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=idle_timeout_s,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        # AppRunner.addresses: the (host, port, ...) each listening socket is bound to.
        bound = runner.addresses[0][1] if runner.addresses else port
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
