"""Serve any set of provider simulators on one aiohttp port, with faults, counters and reports.

    serve_simulators(["dsc", "bsg"], port=0, task_status=...)  ──started──▶ SimulatorHandle
      ├─ aiohttp low-level server + Dispatcher: each provider's own paths (they do not
      │  collide) + /_sim/* control
      └─ per provider, one report drainer (its due-time heap) feeding a fixed pool of
         senders (callbacks with retries, counted)

Every provider route is wrapped once: latency, then (send requests only) a fault drawn
with `fail_rate` from the configured mix, then the provider's handler; the reply status
is counted per route. Control endpoints: GET /_sim/counters, GET|POST /_sim/config
(partial JSON update), POST /_sim/reset, each taking an optional `?provider=`.

Requests reach the handlers through aiohttp's low-level `web.Server` and a `Dispatcher`
(one dict lookup per exact path) rather than `web.Application` and its router: the
application's per-request routing, match-info and middleware machinery cost about as
much as a whole simulated send (bench/simulators.py; the target is 10,000 sends a
second on one core).
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import anyio
import anyio.abc
import msgspec
from aiohttp import web
from anyio.streams.memory import MemoryObjectReceiveStream

from bridges.sim.bsg import BsgSimulator
from bridges.sim.core import (
    PATH_PARAMETERS,
    CallbackJob,
    Clock,
    Handler,
    ProviderSimulator,
    ProviderState,
    Route,
    SimulatorConfig,
    json_response,
    text_response,
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
CALLBACK_CONCURRENCY = 64  # reports in flight at once, per provider
# Reports falling due within this window leave together: one wake-up of the drainer per
# window instead of one per report when thousands a second fall due.
REPORT_COALESCE_S = 0.005
_HANG_POLL_S = 0.05
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
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


async def _hang(request: web.BaseRequest, state: ProviderState) -> None:
    """Hold the request until the client gives up (or `hang_s` passes)."""
    deadline = anyio.current_time() + state.config.hang_s
    while anyio.current_time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await anyio.sleep(_HANG_POLL_S)


def _abort(request: web.BaseRequest) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nothing reaches the client; aiohttp drops the write to the aborted transport.
    return web.Response(status=499)


async def _faulty(
    simulator: ProviderSimulator, request: web.BaseRequest, handler: Handler, fault: str
) -> web.StreamResponse:
    """Run `handler` under `fault` (docs/providers.md, "What every simulator offers")."""
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

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        config = state.config
        if config.latency_ms or config.jitter_ms:
            delay_ms = config.latency_ms
            if config.jitter_ms:
                delay_ms += state.random.uniform(0.0, config.jitter_ms)
            await anyio.sleep(delay_ms / 1000.0)
        label = fixed_label or f"{request.method} {path}"
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


class Dispatcher:
    """Method and path to handler, for aiohttp's low-level server.

    An exact path is one dict lookup; a path with `{name}` segments is a pattern, tried
    in the order added, and its values reach the handler as `request[PATH_PARAMETERS]`.
    A known path with another method gets 405 (with Allow), an unknown path 404, with
    the bodies aiohttp's router gives.
    """

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method` ("*" = any) on `path`."""
        if "{" not in path:
            self.exact.setdefault(path, {})[method] = handler
            return
        pattern = re.compile(
            "".join(
                f"(?P<{part}>[^/]+)" if index % 2 else re.escape(part)
                for index, part in enumerate(_PATH_PARAMETER.split(path))
            )
        )
        for existing, methods in self.patterns:
            if existing.pattern == pattern.pattern:
                methods[method] = handler
                return
        self.patterns.append((pattern, {method: handler}))

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        methods = self.exact.get(path)
        if methods is None:
            for pattern, candidates in self.patterns:
                match = pattern.fullmatch(path)
                if match is not None:
                    request[PATH_PARAMETERS] = match.groupdict()
                    methods = candidates
                    break
            else:
                return text_response("404: Not Found", 404)
        handler = methods.get(request.method) or methods.get("*")
        if handler is None:
            response = text_response("405: Method Not Allowed", 405)
            response.headers["Allow"] = ",".join(sorted(methods))
            return response
        if "Expect" in request.headers:
            await _expect(request)
        return await handler(request)


async def _expect(request: web.BaseRequest) -> None:
    """Answer `Expect: 100-continue` (RFC 9110 section 10.1.1) as aiohttp's router does."""
    if request.version >= (1, 1) and request.headers["Expect"].lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


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


def _selected(handle: SimulatorHandle, request: web.BaseRequest) -> list[str] | web.Response:
    provider = request.query.get("provider")
    if provider is None:
        return list(handle.simulators)
    if provider not in handle.simulators:
        return json_response({"error": f"provider {provider!r} is not served here"}, 404)
    return [provider]


def _control_routes(handle: SimulatorHandle) -> list[tuple[str, str, Handler]]:
    async def counters(request: web.BaseRequest) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        return json_response({name: handle.states[name].counters for name in names})

    async def get_config(request: web.BaseRequest) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        return json_response({name: handle.states[name].config for name in names})

    async def post_config(request: web.BaseRequest) -> web.Response:
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

    async def reset(request: web.BaseRequest) -> web.Response:
        names = _selected(handle, request)
        if isinstance(names, web.Response):
            return names
        for name in names:
            handle.reset(name)
        return json_response({"reset": names})

    return [
        ("GET", "/_sim/counters", counters),
        ("GET", "/_sim/config", get_config),
        ("POST", "/_sim/config", post_config),
        ("POST", "/_sim/reset", reset),
    ]


def build_dispatcher(handle: SimulatorHandle) -> Dispatcher:
    """One dispatcher serving every simulator of `handle` plus the control endpoints."""
    dispatcher = Dispatcher()
    for simulator in handle.simulators.values():
        for route in simulator.routes():
            dispatcher.add(route.method, route.path, _wrap(simulator, route))
    for method, path, handler in _control_routes(handle):
        dispatcher.add(method, path, handler)
    return dispatcher


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
    """Drain the provider's report heap into a fixed pool of senders (no task per report)."""
    ready_out, ready_in = anyio.create_memory_object_stream[CallbackJob](math.inf)

    async def send_ready(jobs: MemoryObjectReceiveStream[CallbackJob]) -> None:
        async with jobs:
            async for job in jobs:
                await _deliver(session, state, job)

    async with anyio.create_task_group() as task_group, ready_out:
        with ready_in:
            for _ in range(CALLBACK_CONCURRENCY):
                task_group.start_soon(send_ready, ready_in.clone())
        while True:
            for job in await state.due_reports():
                ready_out.send_nowait(job)
            await anyio.sleep(REPORT_COALESCE_S)


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
    # access_log=None: a log line per request would cost more than the request.
    server = web.Server(build_dispatcher(handle), access_log=None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
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
            if session is not None:
                await session.close()
            await runner.cleanup()
            listener.close()
