"""Two SMPP servers (two nodes) on one PostgreSQL SMPP store: a receipt goes to a receiving
bind on either node by the bind group rule across them, a bind that goes without answering
its deliver_sm releases the receipt to the other node's bind, each receipt is acknowledged
once, and a store that cannot be written is waited out. In-process: one SQLite journal and
router stand in for the rest of the cluster (the report is made on the node whose sink the
router picks); the store, the claims and the notifications are real PostgreSQL
(tests/servers/postgres.py)."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psycopg
import pytest
from structlog.testing import capture_logs

from engine.ingress.events import EventRouter
from engine.journal.postgres_schema import create_or_migrate
from engine.journal.sqlite import open_sqlite_journal
from engine.smpp import pdu as p
from engine.smpp.server import SmppSettings, serve_smpp
from engine.smpp.store_postgres import open_postgres_store
from tests.engine.smpp.harness import RecordingScheduler, SmppHarness, build_acceptor
from tests.engine.smpp.raw_client import RawClient

pytestmark = pytest.mark.anyio

NODES = ("node-a", "node-b")


@asynccontextmanager
async def two_nodes(directory: Path, dsn: str) -> AsyncIterator[tuple[SmppHarness, list[int]]]:
    """Both nodes' SMPP ports; the harness reports on the node started last (node-b)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        create_or_migrate(connection, "test")
        for node in NODES:
            connection.execute(
                "INSERT INTO nodes (node, run, started_at, heartbeat_at) VALUES (%s, 'r', %s, %s)",
                (node, time.time(), time.time() + 3600),
            )
    async with open_sqlite_journal(directory / "journal.db") as journal:
        router = EventRouter(lambda origin, lines: None)
        scheduler = RecordingScheduler()
        acceptor = build_acceptor(journal, scheduler)
        async with anyio.create_task_group() as tg:
            ports: list[int] = []
            for node in NODES:
                ports.append(
                    await tg.start(
                        functools.partial(
                            serve_smpp,
                            SmppSettings(),
                            accept=acceptor.accept,
                            events=router,
                            journal=journal,
                            store=functools.partial(open_postgres_store, dsn, node, lease_s=15),
                            host="127.0.0.1",
                            port=0,
                            unbind_wait_s=0.2,
                        )
                    )
                )
            yield SmppHarness(ports[0], journal, router, scheduler, []), ports
            tg.cancel_scope.cancel()


async def receipt_for(client: RawClient, message_id: str, *, answer: bool = True) -> None:
    """The next PDU is the receipt of `message_id` (acknowledged unless `answer` is False)."""
    receipt = await client.read()
    assert isinstance(receipt, p.DeliverSm)
    assert receipt.optional.receipted_message_id == message_id
    if answer:
        await client.send(p.DeliverSmResp(sequence_number=receipt.sequence_number))


async def nothing_more(client: RawClient, dsn: str) -> None:
    """No receipt is owed any more, and none comes before the answer to an enquire_link."""
    await wait_for_count(dsn, "SELECT count(*) FROM smpp_receipts", 0)
    await client.send(p.EnquireLink(sequence_number=client.next_sequence()))
    assert isinstance(await client.read(), p.EnquireLinkResp)


def count_of(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(sql).fetchone()
    return int(row[0]) if row is not None else 0


async def wait_for_count(dsn: str, sql: str, wanted: int) -> None:
    deadline = time.monotonic() + 5
    while (found := await anyio.to_thread.run_sync(count_of, dsn, sql)) != wanted:
        assert time.monotonic() < deadline, f"{sql}: {found}, not {wanted}"
        await anyio.sleep(0.01)  # a poll of the store's state


async def test_a_receipt_goes_to_its_groups_receiver_on_the_other_node(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        two_nodes(tmp_path, postgres_dsn) as (harness, (port_a, port_b)),
        await RawClient.connect(port_b) as transmitter,
        await RawClient.connect(port_b) as other_group,
        await RawClient.connect(port_a) as same_group,
    ):
        await transmitter.bind(p.BindTransmitter, system_type="link-a")
        await other_group.bind(p.BindReceiver, system_type="link-b")
        await same_group.bind(p.BindReceiver, system_type="link-a")
        # Each node has written its receiving binds (a node does so as they come).
        await wait_for_count(postgres_dsn, "SELECT count(*) FROM smpp_binds", 2)
        answer = await transmitter.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "DELIVRD")
        # The report is made on node-b, where link-b receives; link-a receives on node-a,
        # and gets it.
        await receipt_for(same_group, answer.message_id)
        await nothing_more(other_group, postgres_dsn)
        await nothing_more(same_group, postgres_dsn)


async def test_a_bind_that_goes_unanswered_leaves_its_receipt_to_the_other_nodes_bind(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with two_nodes(tmp_path, postgres_dsn) as (harness, (port_a, port_b)):
        async with await RawClient.connect(port_a) as transceiver:
            await transceiver.bind()
            answer = await transceiver.submit(registered_delivery=1)
            (message,) = await harness.scheduler.wait_for(1)
            # The report is made on node-b; the only receiving bind is on node-a.
            harness.report(message, "DELIVRD")
            await receipt_for(transceiver, answer.message_id, answer=False)
        # It went without answering: a receiver on node-b gets the receipt, once.
        async with await RawClient.connect(port_b) as receiver:
            await receiver.bind(p.BindReceiver)
            await receipt_for(receiver, answer.message_id)
            await nothing_more(receiver, postgres_dsn)


async def test_a_report_that_cannot_be_stored_is_tried_again_until_it_can(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        two_nodes(tmp_path, postgres_dsn) as (harness, (port_a, _)),
        await RawClient.connect(port_a) as transceiver,
    ):
        await transceiver.bind()
        answer = await transceiver.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        with (
            psycopg.connect(postgres_dsn, autocommit=True) as connection,
            capture_logs() as logged,
        ):
            connection.execute("ALTER TABLE smpp_receipts RENAME TO smpp_receipts_away")
            harness.report(message, "DELIVRD")
            deadline = time.monotonic() + 5
            while not any(line["event"] == "smpp_store_failed" for line in logged):
                assert time.monotonic() < deadline, "the report was not tried"
                await anyio.sleep(0.01)  # a look at the log lines captured so far
            connection.execute("ALTER TABLE smpp_receipts_away RENAME TO smpp_receipts")
        (failed, *_) = [line for line in logged if line["event"] == "smpp_store_failed"]
        assert failed["during"] == "receipts"
        assert "smpp_receipts" in failed["error"]
        await receipt_for(transceiver, answer.message_id)
        await nothing_more(transceiver, postgres_dsn)
