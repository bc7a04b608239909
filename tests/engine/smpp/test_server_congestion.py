"""serve_smpp over the real journal, ingress and scheduler with a full bridge queue: a
submit_sm waits in line with socket clients for a slot, reserved before its commit, and
is answered ESME_RTHROTTLED with nothing journaled when `congestion_wait_s` runs out."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from engine.ingress.accept import Acceptor
from engine.ingress.events import EventRouter
from engine.ingress.prepare import CONGESTED, LineError, LinePreparer
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.pricing import default_price_tables
from engine.routing import Router, default_routes
from engine.scheduler import BridgeQueue, Scheduler
from engine.smpp import pdu as p
from engine.smpp.server import SmppSettings, refusal_status, serve_smpp
from engine.smpp.store import open_store
from tests.engine.ingress.test_ndjson import occupant  # a socket client's message in the queue
from tests.engine.smpp.harness import BRIDGES
from tests.engine.smpp.raw_client import RawClient

pytestmark = pytest.mark.anyio


class ObservedScheduler(Scheduler):
    """The real scheduler; says when a submission starts waiting in line for room."""

    def __init__(self, queues: dict[str, BridgeQueue], journal: SqliteJournal) -> None:
        super().__init__(queues, journal)
        self.reserving = anyio.Event()

    async def reserve(self, bridges: Sequence[str]) -> None:
        self.reserving.set()
        await super().reserve(bridges)


@dataclass
class Congested:
    port: int
    journal: SqliteJournal
    queue: BridgeQueue  # dsc's, where 250... numbers go; capacity 1, full at the start
    scheduler: ObservedScheduler


@asynccontextmanager
async def congested_server(
    directory: Path, settings: SmppSettings | None = None
) -> AsyncIterator[Congested]:
    async with open_sqlite_journal(directory / "journal.db") as journal:
        queues = {name: BridgeQueue(name, 1) for name in BRIDGES}
        scheduler = ObservedScheduler(queues, journal)
        acceptor = Acceptor(
            LinePreparer(
                router=Router(default_routes(), None, BRIDGES),
                prices=default_price_tables(),
                default_senders={},
                max_text_chars=1600,
                max_recipients=10,
                default_region=None,
            ),
            journal,
            scheduler,
            room=scheduler,
        )
        queue = queues["dsc"]
        queue.put_nowait(occupant("occupant"))
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                functools.partial(
                    serve_smpp,
                    settings or SmppSettings(),
                    accept=acceptor.accept,
                    events=EventRouter(lambda origin, lines: None),
                    journal=journal,
                    store=lambda: open_store(directory / "journal.smpp.db"),
                    host="127.0.0.1",
                    port=0,
                    congested=lambda: any(q.room() == 0 for q in queues.values()),
                )
            )
            yield Congested(port, journal, queue, scheduler)
            tg.cancel_scope.cancel()


async def test_a_submit_waits_its_turn_behind_a_socket_client_then_gets_through(
    tmp_path: Path,
) -> None:
    async with (
        congested_server(tmp_path) as server,
        await RawClient.connect(server.port) as client,
        anyio.create_task_group() as tg,
    ):
        queue = server.queue
        # A socket client is already waiting for room with two messages.
        tg.start_soon(queue.put_many, [occupant("s1"), occupant("s2")])
        await anyio.wait_all_tasks_blocked()
        assert queue.waiting == 1
        await client.bind()
        # Sent, not awaited: its answer comes only once a slot does.
        await client.send(
            p.SubmitSm(
                sequence_number=client.next_sequence(),
                source_addr="ACME",
                dest_addr_ton=1,  # international (SMPP v3.4 5.2.5)
                destination_addr="250788123456",
                short_message=b"hello",
            )
        )
        with anyio.fail_after(5):
            await server.scheduler.reserving.wait()
        assert queue.waiting == 2  # in line behind the socket client, not refused
        assert await server.journal.pending_count() == 0  # nothing journaled yet

        queue._pop(1)  # room: the socket client's turn comes first
        await anyio.wait_all_tasks_blocked()
        assert "s1" in queue
        assert await server.journal.pending_count() == 0

        queue._pop(1)  # then the submit's: journaled, queued, answered
        with anyio.fail_after(5):
            answer = await client.read()
        assert isinstance(answer, p.SubmitSmResp)
        assert answer.command_status == p.ESME_ROK
        assert await server.journal.pending_count() == 1
        (queued,) = queue.ids
        assert queued not in {"s1", "s2"}  # the submit's message holds the slot
        assert queue.waiting == 1  # the socket client's next turn comes after it
        tg.cancel_scope.cancel()


async def test_a_submit_past_its_wait_is_throttled_and_nothing_is_journaled(
    tmp_path: Path,
) -> None:
    settings = SmppSettings(congestion_wait_s=0)
    async with (
        congested_server(tmp_path, settings) as server,
        await RawClient.connect(server.port) as client,
    ):
        await client.bind()
        answer = await client.submit()
        assert answer.command_status == p.ESME_RTHROTTLED  # SMPP v3.4 5.1.3
        assert await server.journal.pending_count() == 0
        assert server.queue.waiting == 0
        server.queue._pop(1)
        assert server.queue.room() == server.queue.capacity  # no slot left reserved
        # With room, the same submit goes through at once.
        assert (await client.submit()).command_status == p.ESME_ROK
        assert await server.journal.pending_count() == 1


async def test_a_part_of_a_long_message_is_throttled_while_queues_are_full(
    tmp_path: Path,
) -> None:
    # A stored part is acknowledged and its message then waits for room without bound,
    # so under congestion parts are refused before they are stored.
    async with (
        congested_server(tmp_path) as server,
        await RawClient.connect(server.port) as client,
    ):
        await client.bind()
        udh = bytes((5, 0x00, 3, 0x42, 2, 1))  # 8-bit reference, part 1 of 2
        answer = await client.submit(esm_class=0x40, short_message=udh + b"first half")
        assert answer.command_status == p.ESME_RTHROTTLED
        server.queue._pop(1)
        answer = await client.submit(esm_class=0x40, short_message=udh + b"first half")
        assert answer.command_status == p.ESME_ROK


def test_the_congested_refusal_is_answered_throttled() -> None:
    assert refusal_status(LineError(CONGESTED, kind="congested")) == p.ESME_RTHROTTLED


def test_a_submission_the_journal_could_not_take_is_answered_system_error() -> None:
    refusal = LineError(
        "not accepted, send it again later: The journal could not be written: disk full.",
        kind="journal",
    )
    assert refusal_status(refusal) == p.ESME_RSYSERR
