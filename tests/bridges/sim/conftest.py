"""Helpers for simulator tests: run simulators in-process, a fake clock, a report receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import anyio
import pytest
from aiohttp import web

from bridges.sim.core import SimulatorConfig
from bridges.sim.runner import SimulatorHandle, serve_simulators

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@asynccontextmanager
async def running(
    providers: Sequence[str],
    config: SimulatorConfig | None = None,
    clock: FakeClock | None = None,
) -> AsyncIterator[SimulatorHandle]:
    """Simulators serving on a free 127.0.0.1 port for the body of the `async with`."""
    async with anyio.create_task_group() as task_group:
        handle: SimulatorHandle = await task_group.start(
            partial(serve_simulators, providers, config=config, clock=clock or FakeClock())
        )
        try:
            yield handle
        finally:
            task_group.cancel_scope.cancel()


class Receiver:
    """A tiny callback receiver: records each request, answers from a list of statuses."""

    def __init__(self, statuses: Sequence[int] = (200,)) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str]]] = []  # every request, in order
        self.delivered: list[tuple[str, dict[str, str]]] = []  # those answered 200/202
        self.arrived = anyio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        seen = (request.method, dict(request.query))
        self.requests.append(seen)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status in (200, 202):
            self.delivered.append(seen)
            self.arrived.set()
        return web.Response(status=status, text="OK")

    async def wait_for(self, count: int, within_s: float = 5.0) -> None:
        """Wait (bounded) until `count` requests were answered with success."""
        with anyio.fail_after(within_s):
            while len(self.delivered) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()


@asynccontextmanager
async def receiving(statuses: Sequence[int] = (200,)) -> AsyncIterator[Receiver]:
    receiver = Receiver(statuses)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def eventually(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait (bounded) until `predicate()` holds; for counters updated just after a reply."""
    with anyio.fail_after(within_s):
        # Counters have no event to wait on; the loop is bounded by the cancel scope.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)
