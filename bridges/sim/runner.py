"""Serve any set of provider simulators on one aiohttp port, with faults, counters and reports.

    serve_simulators(["dsc", "bsg"], port=0, task_status=...)  ──started──▶ SimulatorHandle
      ├─ aiohttp app: each provider's own paths (they do not collide) + /_sim/* control
      └─ one delivery-report sender per provider (callbacks with retries, counted)

Every provider route is wrapped once: latency, then (send requests only) a fault drawn
with `fail_rate` from the configured mix, then the provider's handler; the reply status
is counted per route. Control endpoints: GET /_sim/counters, GET|POST /_sim/config
(partial JSON update), POST /_sim/reset, each taking an optional `?provider=`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import anyio
import anyio.abc
import msgspec
from aiohttp import web

from bridges.sim.bsg import BsgSimulator
from bridges.sim.core import (
    CallbackJob,
    Clock,
    Handler,
    ProviderSimulator,
    ProviderState,
    Route,
    SimulatorConfig,
    json_response,
    updated_config,
)
from bridges.sim.dsc import DscSimulator
from bridges.sim.routemobile import RouteMobileSimulator
from bridges.sim.smsclub import SmsClubSimulator

SIMULATORS: dict[str, type[DscSimulator | RouteMobileSimulator | BsgSimulator | SmsClubSimulator]]
SIMULATORS = {
    "dsc": DscSimulator,
    "routemobile": RouteMobileSimulator,
    "bsg": BsgSimulator,
    "smsclub": SmsClubSimulator,
}
PROVIDERS: tuple[str, ...] = tuple(SIMULATORS)
CALLBACK_CONCURRENCY = 64
_HANG_POLL_S = 0.05
_json_decoder = msgspec.json.Decoder()


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Expand `all`, drop repeats, keep order; ValueError names an unknown provider."""
    resolved: list[str] = []
    for name in names:
        expanded = PROVIDERS if name == "all" else (name,)
        for provider in expanded:
            if provider not in SIMULATORS:
                known = ", ".join((*PROVIDERS, "all"))
                raise ValueError(f"unknown provider {provider!r} (known: {known})")
            if provider not in resolved:
                resolved.append(provider)
    return resolved


async def _hang(request: web.Request, state: ProviderState) -> None:
    """Hold the request until the client gives up (or `hang_s` passes)."""
    deadline = anyio.current_time() + state.config.hang_s
    while anyio.current_time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await anyio.sleep(_HANG_POLL_S)


def _abort(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nothing reaches the client; aiohttp drops the write to the aborted transport.
    return web.Response(status=499)


async def _faulty(
    simulator: ProviderSimulator, request: web.Request, handler: Handler, fault: str
) -> web.StreamResponse:
    """Run `handler` under `fault` (PROVIDERS.md, "What every simulator offers")."""
    state = simulator.state
    if fault == "5xx":
        return simulator.server_error()
    if fault == "429":
        return simulator.too_many_requests()
    if fault == "garbage":
        await request.read()
        return web.Response(body=b"<html><body>502 Bad Gateway\x00\xff", content_type="text/html")
    if fault == "timeout_before":
        await _hang(request, state)
        return _abort(request)
    if fault == "reset_before":
        return _abort(request)
    response = await handler(request)  # the messages are accepted and recorded
    if fault == "slow":
        await anyio.sleep(state.config.slow_ms / 1000.0)
        return response
    if fault == "timeout_after":
        await _hang(request, state)
    return _abort(request)  # timeout_after, reset_after


def _wrap(simulator: ProviderSimulator, route: Route) -> Handler:
    state = simulator.state
    handler, sends, path = route.handler, route.sends, route.path
    fixed_label = None if route.method == "*" else f"{route.method} {path}"

    async def handle(request: web.Request) -> web.StreamResponse:
        label = fixed_label or f"{request.method} {path}"
        config = state.config
        if config.latency_ms or config.jitter_ms:
            delay_ms = config.latency_ms
            if config.jitter_ms:
                delay_ms += state.random.uniform(0.0, config.jitter_ms)
            await anyio.sleep(delay_ms / 1000.0)
        fault = state.pick_fault() if sends and config.fail_rate else None
        if fault is None:
            response = await handler(request)
            state.counters.count_request(label, str(response.status))
            return response
        state.counters.count_fault(fault)
        response = await _faulty(simulator, request, handler, fault)
        outcome = "aborted" if response.status == 499 else str(response.status)
        state.counters.count_request(label, outcome)
        return response

    return handle


class SimulatorHandle:
    """What `serve_simulators` hands back: the bound address and each provider's state."""

    def __init__(self, host: str, port: int, simulators: Mapping[str, ProviderSimulator]) -> None:
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.simulators = dict(simulators)
        self.states = {name: sim.state for name, sim in simulators.items()}

    def base_url(self, provider: str) -> str:
        """The base URL a driver for `provider` is configured with."""
        del provider  # every provider shares the port; their paths do not collide
        return self.url

    def counters(self, provider: str) -> dict[str, Any]:
        document: dict[str, Any] = msgspec.to_builtins(self.states[provider].counters)
        return document

    def reset(self, provider: str | None = None) -> None:
        for name, simulator in self.simulators.items():
            if provider is None or provider == name:
                simulator.state.reset_counters()
                simulator.reset()


def _selected(handle: SimulatorHandle, request: web.Request) -> list[str] | web.Response:
    provider = request.query.get("provider")
    if provider is None:
        return list(handle.simulators)
    if provider not in handle.simulators:
        return json_response({"error": f"provider {provider!r} is not served here"}, 404)
    return [provider]


def _control_routes(handle: SimulatorHandle) -> list[web.RouteDef]:
    async def counters(request: web.Request) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        return json_response({name: handle.states[name].counters for name in names})

    async def get_config(request: web.Request) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        return json_response({name: handle.states[name].config for name in names})

    async def post_config(request: web.Request) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        try:
            changes = _json_decoder.decode(await request.read())
        except msgspec.DecodeError as error:
            return json_response({"error": f"invalid JSON: {error}"}, 400)
        if not isinstance(changes, dict):
            return json_response({"error": "expected a JSON object"}, 400)
        try:
            # Validate against every selected provider before changing any of them.
            for name in names:
                updated_config(handle.states[name].config, changes)
        except ValueError as error:
            return json_response({"error": str(error)}, 400)
        return json_response({name: handle.states[name].update(changes) for name in names})

    async def reset(request: web.Request) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        for name in names:
            handle.reset(name)
        return json_response({"reset": names})

    return [
        web.get("/_sim/counters", counters),
        web.get("/_sim/config", get_config),
        web.post("/_sim/config", post_config),
        web.post("/_sim/reset", reset),
    ]


def build_app(handle: SimulatorHandle) -> web.Application:
    """One application serving every simulator of `handle` plus the control endpoints."""
    app = web.Application()
    for simulator in handle.simulators.values():
        for route in simulator.routes():
            app.router.add_route(route.method, route.path, _wrap(simulator, route))
    app.router.add_routes(_control_routes(handle))
    return app


async def _deliver(session: aiohttp.ClientSession, state: ProviderState, job: CallbackJob) -> None:
    """Push one report, retrying a few times; counted as sent/ok/failed/retried."""
    counters = state.counters
    config = state.config
    for attempt in range(config.dlr_retries + 1):
        if attempt:
            await anyio.sleep(config.dlr_retry_delay_s * attempt)
            counters.dlr_retried += 1
        counters.dlr_sent += 1
        try:
            with anyio.fail_after(config.dlr_timeout_s):
                async with session.request(job.method, job.url) as response:
                    await response.read()
                    if response.status in job.ok_statuses:
                        counters.dlr_ok += 1
                        return
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass  # the receiver is down or slow: the loop retries, then it counts as failed
    counters.dlr_failed += 1


async def _send_callbacks(session: aiohttp.ClientSession, state: ProviderState) -> None:
    limiter = anyio.CapacityLimiter(CALLBACK_CONCURRENCY)

    async def deliver(job: CallbackJob) -> None:
        async with limiter:
            await _deliver(session, state, job)

    async with anyio.create_task_group() as task_group:
        async for job in state.callbacks_in:
            wait = job.due - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            task_group.start_soon(deliver, job)


async def serve_simulators(
    providers: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: SimulatorConfig | None = None,
    configs: Mapping[str, SimulatorConfig] | None = None,
    clock: Clock = time.time,
    task_status: anyio.abc.TaskStatus[SimulatorHandle] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `providers` (names or `all`) on one port until cancelled.

    `config` applies to every provider, `configs` overrides it per provider. Reports
    `task_status.started(handle)` once the socket listens; cleanup runs shielded.
    """
    names = resolve_providers(providers)
    base = config or SimulatorConfig()
    simulators: dict[str, ProviderSimulator] = {}
    for name in names:
        provider_config = (configs or {}).get(name, base)
        state = ProviderState(name, msgspec.structs.replace(provider_config), clock)
        simulators[name] = SIMULATORS[name](state)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    handle = SimulatorHandle(host, listener.getsockname()[1], simulators)
    runner = web.AppRunner(
        build_app(handle), access_log=None, handle_signals=False, shutdown_timeout=0.5
    )
    session: aiohttp.ClientSession | None = None
    try:
        await runner.setup()
        site = web.SockSite(runner, listener)
        await site.start()
        session = aiohttp.ClientSession()
        async with anyio.create_task_group() as task_group:
            for simulator in simulators.values():
                task_group.start_soon(_send_callbacks, session, simulator.state)
            task_status.started(handle)
            await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            for simulator in simulators.values():
                simulator.state.callbacks_out.close()
                simulator.state.callbacks_in.close()
            if session is not None:
                await session.close()
            await runner.cleanup()
            listener.close()
