"""Measure which HTTP client library engine/http_io.py should use: rate and client CPU per request.

Compared, each on one client core against an aiohttp server pinned to the other core:
httpx 0.28 with its default transport, httpx on the aiohttp transport (httpx-aiohttp),
aiohttp directly, septet's own HTTP/1.1 transport (engine.http11: asyncio protocols and
httptools) called directly like aiohttp, and septet's seam (engine.http_io.BridgeClient,
that transport underneath) to show what the seam adds. Two loads: a server that answers
at once (pool 10) and one that takes 50 ms per request (200 connections, 200 in flight),
which is the shape of a provider API under a full dispatcher. Each case runs for a fixed
time after a warm-up; the figure is the median over repeats. CPU per request is
`time.process_time()` spent by the client process divided by the requests it completed.

    python -m bench.http_clients [--quick] [--out FILE] [--seconds S] [--repeats N]
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import httpx
import psutil
import uvloop
from aiohttp import web
from httpx_aiohttp import HttpxAiohttpClient

from bench.common import base_parser, format_table, median, write_results
from bridges.base import HttpCall
from engine.http11 import Http11Transport
from engine.http_io import BridgeClient

NAME = "http_clients"
# A provider's typical answer to a send: a short JSON object.
REPLY_BODY = b'{"status":"ok","message_id":"4a1b0c5e-9d2f-4e8a-b7c6-123456789abc"}'
REQUEST_BODY = b'{"to":"+250782589800","from":"ACME","text":"Hello from septet"}'
REQUEST_HEADERS = {"Content-Type": "application/json"}


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: int
    pool: int
    concurrency: int


SCENARIOS = (
    Scenario("0 ms, pool 10", latency_ms=0, pool=10, concurrency=50),
    Scenario("50 ms, 200 connections", latency_ms=50, pool=200, concurrency=200),
)


# ── The server: its own process, its own core ────────────────────────────────────────


async def handle_send(request: web.Request) -> web.Response:
    await request.read()
    latency_ms = int(request.match_info["latency_ms"])
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    return web.Response(body=REPLY_BODY, content_type="application/json")


async def serve_bench_server(ready: multiprocessing.connection.Connection) -> None:
    app = web.Application()
    app.router.add_post("/send/{latency_ms}", handle_send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    await web.SockSite(runner, listener).start()
    ready.send(listener.getsockname()[1])
    # Serve until the parent closes its end of the pipe.
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    loop.add_reader(ready.fileno(), closed.set)
    await closed.wait()
    loop.remove_reader(ready.fileno())
    await runner.cleanup()


def run_server_process(ready: multiprocessing.connection.Connection, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    uvloop.run(serve_bench_server(ready))


# ── The clients, one adapter each ────────────────────────────────────────────────────


class BenchClient(Protocol):
    async def post(self) -> None: ...

    async def aclose(self) -> None: ...


class HttpxClient:
    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url

    async def post(self) -> None:
        response = await self._client.post(self._url, content=REQUEST_BODY, headers=REQUEST_HEADERS)
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpClient:
    def __init__(self, url: str, pool: int) -> None:
        connector = aiohttp.TCPConnector(limit=pool, limit_per_host=pool)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        )
        self._url = url

    async def post(self) -> None:
        async with self._session.post(
            self._url, data=REQUEST_BODY, headers=REQUEST_HEADERS
        ) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")

    async def aclose(self) -> None:
        await self._session.close()


class SeptetClient:
    def __init__(self, base_url: str, path: str, pool: int) -> None:
        self._client = BridgeClient(base_url, max_connections=pool, timeout_s=60.0)
        self._call = HttpCall(
            method="POST",
            path=path,
            headers=tuple(REQUEST_HEADERS.items()),
            body=REQUEST_BODY,
        )

    async def post(self) -> None:
        reply = await self._client.request(self._call)
        if reply.status != 200:
            raise RuntimeError(f"status {reply.status}")

    async def aclose(self) -> None:
        await self._client.aclose()


class Http11Client:
    """septet's own transport, measured like "aiohttp directly": one URL, one call each."""

    def __init__(self, url: str, pool: int) -> None:
        self._transport = Http11Transport(
            max_connections=pool, connect_timeout_s=5.0, timeout_s=60.0, user_agent="septet/0.1"
        )
        self._url = url
        self._headers = tuple(REQUEST_HEADERS.items())

    async def post(self) -> None:
        reply = await self._transport.perform("POST", self._url, self._headers, REQUEST_BODY)
        if reply.status != 200:
            raise RuntimeError(f"status {reply.status}")

    async def aclose(self) -> None:
        await self._transport.aclose()


def httpx_limits(pool: int) -> httpx.Limits:
    return httpx.Limits(max_connections=pool, max_keepalive_connections=pool)


def make_httpx(base_url: str, path: str, pool: int) -> BenchClient:
    client = httpx.AsyncClient(limits=httpx_limits(pool), timeout=60.0)
    return HttpxClient(client, base_url + path)


def make_httpx_aiohttp(base_url: str, path: str, pool: int) -> BenchClient:
    client = HttpxAiohttpClient(limits=httpx_limits(pool), timeout=60.0)
    return HttpxClient(client, base_url + path)


def make_aiohttp(base_url: str, path: str, pool: int) -> BenchClient:
    return AiohttpClient(base_url + path, pool)


def make_septet(base_url: str, path: str, pool: int) -> BenchClient:
    return SeptetClient(base_url, path, pool)


def make_http11(base_url: str, path: str, pool: int) -> BenchClient:
    return Http11Client(base_url + path, pool)


CLIENTS: dict[str, Callable[[str, str, int], BenchClient]] = {
    "httpx 0.28 default transport": make_httpx,
    "httpx on aiohttp transport (httpx-aiohttp)": make_httpx_aiohttp,
    "aiohttp directly": make_aiohttp,
    "septet Http11Transport (engine.http11)": make_http11,
    "septet BridgeClient (engine.http_io)": make_septet,
}


# ── The load loop ────────────────────────────────────────────────────────────────────


@dataclasses.dataclass(frozen=True)
class Sample:
    requests: int
    errors: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float = 0.0


async def drive(post: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> Sample:
    """`concurrency` workers post back to back until `seconds` have passed."""
    completed = 0
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal completed, errors
        while time.perf_counter() < deadline:
            try:
                await post()
            except Exception:  # a failed request counts, it must not end the run
                errors += 1
            else:
                completed += 1

    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sample(
        requests=completed,
        errors=errors,
        seconds=time.perf_counter() - wall_start,
        cpu_seconds=time.process_time() - cpu_start,
    )


async def measure_case(
    make: Callable[[str, str, int], BenchClient],
    base_url: str,
    scenario: Scenario,
    seconds: float,
    server_cpu: Callable[[], float],
) -> Sample:
    client = make(base_url, f"/send/{scenario.latency_ms}", scenario.pool)
    try:
        # Warm-up opens the pool's connections and any lazy imports before the clock runs.
        await drive(client.post, scenario.concurrency, min(0.5, seconds / 4))
        server_start = server_cpu()
        sample = await drive(client.post, scenario.concurrency, seconds)
        return dataclasses.replace(sample, server_cpu_seconds=server_cpu() - server_start)
    finally:
        await client.aclose()


def measure(
    base_url: str,
    scenarios: tuple[Scenario, ...],
    seconds: float,
    repeats: int,
    server_cpu: Callable[[], float],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for scenario in scenarios:
        for client_name, make in CLIENTS.items():
            samples = [
                uvloop.run(measure_case(make, base_url, scenario, seconds, server_cpu))
                for _ in range(repeats)
            ]
            rates = [s.requests / s.seconds for s in samples]
            cpu_per_request = [
                s.cpu_seconds / s.requests * 1e6 if s.requests else float("nan") for s in samples
            ]
            # Near 1.0 the server's core, not the client, set the rate.
            server_busy = [s.server_cpu_seconds / s.seconds for s in samples]
            results.append(
                {
                    "client": client_name,
                    "scenario": scenario.name,
                    "latency_ms": scenario.latency_ms,
                    "pool": scenario.pool,
                    "concurrency": scenario.concurrency,
                    "requests_per_s": median(rates),
                    "cpu_us_per_request": median(cpu_per_request),
                    "server_core_busy": median(server_busy),
                    "requests": sum(s.requests for s in samples),
                    "errors": sum(s.errors for s in samples),
                    "repeats": [
                        {
                            "requests_per_s": rate,
                            "cpu_us_per_request": cpu,
                            "requests": s.requests,
                            "errors": s.errors,
                        }
                        for rate, cpu, s in zip(rates, cpu_per_request, samples, strict=True)
                    ],
                }
            )
    return results


def pick_cores() -> tuple[int | None, int | None]:
    """(server core, client core), or (None, None) when fewer than two cores are ours."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("--seconds", type=float, default=None, help="measured time per case")
    parser.add_argument("--repeats", type=int, default=None, help="runs per case (median)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 4.0)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)

    server_core, client_core = pick_cores()
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    server = context.Process(target=run_server_process, args=(child_end, server_core))
    server.start()
    child_end.close()
    try:
        if not parent_end.poll(30):
            raise RuntimeError("bench server did not start")
        port = parent_end.recv()
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})
        server_process = psutil.Process(server.pid)

        def server_cpu() -> float:
            times = server_process.cpu_times()
            return float(times.user + times.system)

        results = measure(f"http://127.0.0.1:{port}", SCENARIOS, seconds, repeats, server_cpu)
    finally:
        parent_end.close()
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()

    for row in results:
        row["pinned"] = client_core is not None
    print(
        format_table(
            ["client", "scenario", "req/s", "CPU µs/req", "server busy", "errors"],
            [
                [
                    row["client"],
                    row["scenario"],
                    row["requests_per_s"],
                    row["cpu_us_per_request"],
                    f"{row['server_core_busy']:.0%}",
                    row["errors"],
                ]
                for row in results
            ],
        )
    )
    path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
