"""Round-trip harness: a real driver and BridgeClient against one in-process simulator.

    driver.build_send ──HttpCall──▶ BridgeClient ══HTTP 127.0.0.1══▶ serve_simulators
    driver.parse_send ◀─HttpReply──┘                                       │ reports
    driver.parse_callback ◀── InboundRequest ◀── CallbackReceiver ◀════════┘ (GET/POST)

The simulator runs on a fake clock (status polls, rate and duplicate windows move only
when a test advances it); callbacks are pushed on the event loop's own time after a
short `dlr_delay_s`, and every wait for them is bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from aiohttp import web

from bridges.base import (
    BridgeDriver,
    CallbackRejected,
    InboundRequest,
    OutboundMessage,
    Outcome,
    Receipt,
    StatusQuery,
)
from bridges.sim.core import (
    ProviderCounters,
    ProviderSimulator,
    ProviderState,
    SimulatorConfig,
)
from engine.http_errors import ReplyLost
from engine.http_io import BridgeClient
from tests.bridges.sim.conftest import FakeClock, running

# A read timeout far below the simulators' hang, so a "timeout_after" fault ends in
# ReplyLost quickly; long enough that a local reply never trips it.
IMPATIENT_TIMEOUT_S = 0.3
# Short enough that a test waits little for a pushed report, bounded by `within_s`.
QUICK_DLR_DELAY_S = 0.05


def outbound(
    number: int,
    to: str,
    text: str = "Hello from septet",
    *,
    encoding: Literal["GSM-7", "UCS-2"] = "GSM-7",
    sender: str | None = "ACME",
    flash: bool = False,
    dlr: bool = True,
    attempt: int = 1,
) -> OutboundMessage:
    """Message `number` of a test: `msg_id` and `reference` derive from it, as septet's do."""
    return OutboundMessage(
        msg_id=f"msg-{number}",
        to=to,
        text=text,
        encoding=encoding,
        reference=f"ref_{number}",
        sender=sender,
        flash=flash,
        dlr=dlr,
        attempt=attempt,
    )


def retried(batch: Sequence[OutboundMessage], *, maybe_sent: bool = True) -> list[OutboundMessage]:
    """The same messages on their next attempt (same reference, attempt + 1). `maybe_sent`:
    the last attempt may have reached the provider (a lost reply), as dispatch says."""
    return [
        OutboundMessage(
            msg_id=message.msg_id,
            to=message.to,
            text=message.text,
            encoding=message.encoding,
            reference=message.reference,
            sender=message.sender,
            flash=message.flash,
            dlr=message.dlr,
            validity_s=message.validity_s,
            attempt=message.attempt + 1,
            maybe_sent=maybe_sent,
        )
        for message in batch
    ]


class RoundTrip:
    """One simulator on a free port, its fake clock, and a BridgeClient pointed at it."""

    def __init__(
        self, provider: str, url: str, simulator: ProviderSimulator, clock: FakeClock
    ) -> None:
        self.provider = provider
        self.url = url
        self.simulator = simulator
        self.state: ProviderState = simulator.state
        self.clock = clock
        self.client = BridgeClient(url, connect_timeout_s=2.0, timeout_s=5.0)

    @property
    def counters(self) -> ProviderCounters:
        return self.state.counters

    def configure(self, **changes: Any) -> None:
        """Change the simulator's config at runtime, as POST /_sim/config does."""
        self.state.update(changes)

    async def send(
        self,
        driver: BridgeDriver,
        batch: Sequence[OutboundMessage],
        client: BridgeClient | None = None,
    ) -> list[Outcome]:
        """build_send → HTTP → parse_send, the dispatcher's path for one batch."""
        reply = await (client or self.client).request(driver.build_send(batch))
        return driver.parse_send(batch, reply)

    async def poll(self, driver: BridgeDriver, queries: Sequence[StatusQuery]) -> list[Receipt]:
        """build_status → HTTP → parse_status, the poller's path for one request."""
        call = driver.build_status(queries)
        if call is None:
            raise AssertionError(f"{driver.name} builds no status poll for {queries!r}")
        reply = await self.client.request(call)
        return driver.parse_status(queries, reply)

    async def lose_reply(self, driver: BridgeDriver, batch: Sequence[OutboundMessage]) -> None:
        """Send `batch` under a "timeout_after" fault: the simulator takes it, the reply
        never comes, the client raises ReplyLost. Faults are off again afterwards."""
        self.configure(fail_rate=1.0, faults={"timeout_after": 1.0}, hang_s=5.0)
        async with self.impatient_client() as impatient:
            try:
                await self.send(driver, batch, client=impatient)
            except ReplyLost:
                pass  # the lost reply is the point; the caller checks the simulator's counts
            else:
                raise AssertionError("the send under a timeout_after fault got a reply")
        self.configure(fail_rate=0.0)

    def impatient_client(self) -> BridgeClient:
        """A client that gives up on a reply after IMPATIENT_TIMEOUT_S (close it after use)."""
        return BridgeClient(self.url, connect_timeout_s=2.0, timeout_s=IMPATIENT_TIMEOUT_S)


@asynccontextmanager
async def round_trip(
    provider: str, config: SimulatorConfig | None = None
) -> AsyncIterator[RoundTrip]:
    """`provider`'s simulator on 127.0.0.1:0 with a fake clock, for the `async with` body."""
    clock = FakeClock()
    async with running([provider], config or SimulatorConfig(seed=7), clock) as handle:
        simulator = handle.simulators[provider]
        trip = RoundTrip(provider, handle.base_url(provider), simulator, clock)
        async with trip.client:
            yield trip


class CallbackReceiver:
    """septet's callback endpoint in miniature: `/dlr/<bridge>` fed to that driver.

    Answers as engine/listener.py does: 200 with the receipts taken, 401 when the driver
    raises CallbackRejected, 400 on a malformed callback.
    """

    def __init__(self) -> None:
        self.url = ""
        self.drivers: dict[str, BridgeDriver] = {}
        self.receipts: list[Receipt] = []
        self.taken: list[InboundRequest] = []  # callbacks the driver accepted
        self.refused: list[InboundRequest] = []  # CallbackRejected: answered 401
        self.malformed: list[InboundRequest] = []  # ValueError: answered 400
        self._arrived = anyio.Event()

    def endpoint(self, bridge: str) -> str:
        return f"{self.url}/dlr/{bridge}"

    async def handle(self, request: web.Request) -> web.Response:
        inbound = InboundRequest(
            method=request.method,
            query=dict(request.query),
            body=await request.read(),
            headers={name.lower(): value for name, value in request.headers.items()},
        )
        driver = self.drivers[request.match_info["bridge"]]
        try:
            receipts = driver.parse_callback(inbound)
        except CallbackRejected:
            self.refused.append(inbound)
            return self._answer(401)
        except ValueError:
            self.malformed.append(inbound)
            return self._answer(400)
        self.taken.append(inbound)
        self.receipts.extend(receipts)
        return self._answer(200)

    def _answer(self, status: int) -> web.Response:
        self._arrived.set()
        return web.Response(status=status, text="OK\n" if status == 200 else "refused\n")

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait (bounded) until `predicate()` holds; checked after every callback."""
        with anyio.fail_after(within_s):
            while not predicate():
                self._arrived = anyio.Event()
                await self._arrived.wait()


@asynccontextmanager
async def receiving_callbacks() -> AsyncIterator[CallbackReceiver]:
    """A CallbackReceiver on a free 127.0.0.1 port; register drivers in `.drivers`."""
    receiver = CallbackReceiver()
    app = web.Application()
    app.router.add_route("*", "/dlr/{bridge}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


def tampered(request: InboundRequest, **changes: str) -> InboundRequest:
    """`request` with some query values replaced: a forged callback."""
    query: Mapping[str, str] = {**request.query, **changes}
    return InboundRequest(
        method=request.method, query=query, body=request.body, headers=request.headers
    )
