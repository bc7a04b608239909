"""The real engine pieces an SMPP server needs, in-process: a journal on a temporary file,
the real LinePreparer and LineHandler, an EventRouter, and serve_smpp on a free port.

The scheduler is a recorder: tests see which messages were handed over, and play the
provider by emitting delivery reports (and the lifecycle's other events) through the
router. `AcceptGate` holds submissions before the journal until a test lets them go.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from engine.accounts import Account
from engine.ingress.accept import Acceptor
from engine.ingress.events import EventRouter
from engine.ingress.prepare import LineError, LinePreparer
from engine.journal import StoreEvents
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import CancelledEvent, DeliveryReport, Failed, Message, StatusEvent, Submission
from engine.pricing import default_price_tables
from engine.routing import Router, default_routes
from engine.smpp.server import Accept, SmppSettings, serve_smpp
from engine.smpp.store import open_store

BRIDGES = ("dsc", "routemobile", "bsg", "smsclub")


@dataclass
class RecordingScheduler:
    """Takes every message the handler schedules; `wake_feeder` is counted, not acted on."""

    messages: list[Message] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def put_many(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)
        self.arrived.set()
        self.arrived = anyio.Event()

    def wake_feeder(self) -> None:
        pass  # nothing is scheduled for later in these tests, so there is no feeder

    async def wait_for(self, count: int) -> list[Message]:
        with anyio.fail_after(5):
            while len(self.messages) < count:
                await self.arrived.wait()
        return self.messages


@dataclass
class SmppHarness:
    port: int
    journal: SqliteJournal
    router: EventRouter
    scheduler: RecordingScheduler
    spilled: list[tuple[str, bytes]]

    def report(self, message: Message, state: str = "DELIVRD", status: str = "0") -> None:
        """Play the provider: a delivery report for `message`, as dispatch would emit it."""
        self.router.emit(
            message.origin,
            DeliveryReport(
                id=message.client_ref,
                msg_id=message.msg_id,
                ts=dt.datetime.now(dt.UTC),
                state=state,
                provider_status=status,
                bridge=message.bridge,
            ),
        )

    def fail(self, message: Message, code: str, *, final: bool = True) -> None:
        self.router.emit(
            message.origin,
            Failed(
                id=message.client_ref,
                msg_id=message.msg_id,
                ts=dt.datetime.now(dt.UTC),
                error="the provider refused it",
                code=code,
                final=final,
            ),
        )

    def status(self, message: Message, state: str = "ENROUTE", status: str = "1") -> None:
        """A provider status that is not the message's end."""
        self.router.emit(
            message.origin,
            StatusEvent(
                id=message.client_ref,
                msg_id=message.msg_id,
                ts=dt.datetime.now(dt.UTC),
                state=state,
                provider_status=status,
                bridge=message.bridge,
            ),
        )

    def cancel(self, message: Message) -> None:
        self.router.emit(
            message.origin,
            CancelledEvent(
                id=message.client_ref, msg_id=message.msg_id, ts=dt.datetime.now(dt.UTC)
            ),
        )


class AcceptGate:
    """Wraps the handler's accept: each submission waits at the gate until `open`, so a
    test can hold submit_sm in progress. `waiting` counts those held."""

    def __init__(self) -> None:
        self.waiting = 0
        self._opened = anyio.Event()
        self._arrived = anyio.Event()

    def wrap(self, accept: Accept) -> Accept:
        async def gated(
            account: Account,
            origin: str,
            submissions: Sequence[Submission | bytes],
            *,
            room_wait_s: float | None = None,
            turn: anyio.Lock | None = None,
        ) -> list[list[Message] | LineError]:
            self.waiting += 1
            self._arrived.set()
            self._arrived = anyio.Event()
            await self._opened.wait()
            return await accept(account, origin, submissions, room_wait_s=room_wait_s, turn=turn)

        return gated

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(5):
            while self.waiting < count:
                await self._arrived.wait()

    def open(self) -> None:
        self._opened.set()


def build_acceptor(journal: SqliteJournal, scheduler: RecordingScheduler) -> Acceptor:
    preparer = LinePreparer(
        router=Router(default_routes(), None, BRIDGES),
        prices=default_price_tables(),
        default_senders={},
        max_text_chars=1600,
        max_recipients=1000,
        default_region=None,
    )
    return Acceptor(preparer, journal, scheduler)


@asynccontextmanager
async def smpp_harness(
    directory: Path,
    settings: SmppSettings | None = None,
    *,
    wrap_accept: Callable[[Accept], Accept] | None = None,
    unbind_wait_s: float = 1.0,
) -> AsyncIterator[SmppHarness]:
    """serve_smpp over the real ingress and journal files in `directory`, until the block
    ends; then it stops as the daemon stops it (cancelled: bound ESMEs are unbound)."""
    async with open_sqlite_journal(directory / "journal.db") as journal:
        spilled: list[tuple[str, bytes]] = []
        pending: list[StoreEvents] = []

        def spill(origin: str, lines: list[bytes]) -> None:
            spilled.extend((origin, line) for line in lines)
            pending.append(StoreEvents(origin=origin, events=lines))

        router = EventRouter(spill)
        scheduler = RecordingScheduler()
        acceptor = build_acceptor(journal, scheduler)
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                functools.partial(
                    serve_smpp,
                    settings or SmppSettings(),
                    accept=wrap_accept(acceptor.accept) if wrap_accept else acceptor.accept,
                    events=router,
                    journal=journal,
                    store=lambda: open_store(directory / "journal.smpp.db"),
                    host="127.0.0.1",
                    port=0,
                    unbind_wait_s=unbind_wait_s,
                )
            )
            yield SmppHarness(port, journal, router, scheduler, spilled)
            tg.cancel_scope.cancel()
        if pending:
            await journal.record(pending)
