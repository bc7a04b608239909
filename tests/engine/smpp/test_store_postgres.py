"""What only the PostgreSQL SMPP store has: the nodes of a cluster share it. Ids are never
given twice by two nodes, a report settled on one node makes the receipts of ids another
node stored, and each receipt is claimed by one node at a time: by the bind group rule
across the nodes, and again once its node is dead. A dead node's waiting parts are taken,
and ids whose message is final in the journal end from its outcome. The tables come with
the journal's schema (version 2), migrated from version 1. Real PostgreSQL
(tests/servers/postgres.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from engine.journal.postgres_schema import (
    SCHEMA,
    SCHEMA_VERSION,
    SMPP_TABLES,
    create_or_migrate,
    schema_version,
)
from engine.smpp.receipts import build_receipt
from engine.smpp.storage import GivenId, Outcome, StoreError
from engine.smpp.store_postgres import PostgresSmppStore, open_postgres_store

pytestmark = pytest.mark.anyio

DELIVERED = Outcome("DELIVRD", "000", 100.0)
LINK_A = ("link-a", "")
LINK_B = ("link-b", "")
LEASE_S = 15.0


def given(value: int, msg_id: str, group: tuple[str, str] = LINK_A) -> GivenId:
    return GivenId(
        id=value,
        system_id="demo",
        msg_id=msg_id,
        registered_delivery=1,
        submitted_at=0.0,
        source_addr="ACME",
        destination_addr="250788123456",
        text_head="hi",
        bind_group=group,
    )


def set_heartbeat(dsn: str, node: str, at: float) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO nodes (node, run, started_at, heartbeat_at) VALUES (%s, 'r', %s, %s)"
            " ON CONFLICT (node) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            (node, at, at),
        )


@pytest.fixture
async def two_nodes(postgres_dsn: str) -> AsyncIterator[tuple[PostgresSmppStore, ...]]:
    async with (
        open_postgres_store(postgres_dsn, "node-a", lease_s=LEASE_S) as a,
        open_postgres_store(postgres_dsn, "node-b", lease_s=LEASE_S) as b,
    ):
        for node in ("node-a", "node-b"):
            set_heartbeat(postgres_dsn, node, time.time())
        yield a, b


async def owe(store: PostgresSmppStore, count: int, group: tuple[str, str]) -> list[int]:
    """`count` receipts owed for ids of `group`, made by `store`."""
    ids = [await store.allocate_id() for _ in range(count)]
    await store.add_ids([given(value, f"m{value}", group) for value in ids], build_receipt)
    made, _ = await store.settle_messages(
        {f"m{value}": DELIVERED for value in ids}, build_receipt, now=0
    )
    assert sorted(r.id for r in made) == ids
    return ids


async def test_two_nodes_never_give_the_same_id(two_nodes: tuple[PostgresSmppStore, ...]) -> None:
    a, b = two_nodes
    ids = [await store.allocate_id() for _ in range(150) for store in (a, b)]
    assert len(set(ids)) == len(ids)


async def test_a_report_settled_on_one_node_ends_the_ids_another_stored(
    two_nodes: tuple[PostgresSmppStore, ...],
) -> None:
    a, b = two_nodes
    stored = await a.allocate_id()
    await a.add_ids([given(stored, "7")], build_receipt)
    made, matched = await b.settle_messages({"7": DELIVERED}, build_receipt, now=0)
    assert ([r.id for r in made], matched) == ([stored], {"7"})
    # An outcome that outran the ids on one node meets them on the other.
    assert await b.settle_messages({"8": DELIVERED}, build_receipt, now=0) == ([], set())
    late = await a.allocate_id()
    assert [r.id for r in await a.add_ids([given(late, "8")], build_receipt)] == [late]


async def test_a_receipt_is_claimed_by_one_node_and_released_for_the_other(
    two_nodes: tuple[PostgresSmppStore, ...],
) -> None:
    a, b = two_nodes
    ids = await owe(a, 3, LINK_A)
    assert [r.id for r in await a.claim("demo", [LINK_A], 2)] == ids[:2]
    assert [r.id for r in await b.claim("demo", [LINK_A], 10)] == ids[2:]
    assert await b.claim("demo", [LINK_A], 10) == []
    await a.release(ids[:1])
    assert [r.id for r in await b.claim("demo", [LINK_A], 10)] == ids[:1]
    assert await b.release_all() == 2
    assert [r.id for r in await a.claim("demo", [LINK_A], 10)] == [ids[0], ids[2]]
    await a.delete_receipts(ids)
    assert (await a.counts())["receipts"] == 0


async def test_a_receipt_goes_to_its_groups_bind_on_any_node_else_to_any_bind(
    postgres_dsn: str, two_nodes: tuple[PostgresSmppStore, ...]
) -> None:
    a, b = two_nodes
    for_a, for_nobody = await owe(a, 1, LINK_A), await owe(a, 1, ("gone", ""))
    await b.set_receivers("demo", LINK_A, 1)
    # Node a receives as link-b only: link-a's receipt is for b's bind; a group bound
    # nowhere goes to any bind.
    assert [r.id for r in await a.claim("demo", [LINK_B], 10)] == for_nobody
    assert [r.id for r in await b.claim("demo", [LINK_A], 10)] == for_a
    # b's bind goes: a takes what b releases.
    await b.set_receivers("demo", LINK_A, 0)
    await b.release(for_a)
    assert [r.id for r in await a.claim("demo", [LINK_B], 10)] == for_a


async def test_a_dead_nodes_claims_and_binds_are_taken_by_a_live_one(
    postgres_dsn: str, two_nodes: tuple[PostgresSmppStore, ...]
) -> None:
    a, b = two_nodes
    ids = await owe(a, 2, LINK_A)
    await b.set_receivers("demo", LINK_A, 1)
    assert [r.id for r in await b.claim("demo", [LINK_A], 10)] == ids
    assert await a.claim("demo", [LINK_B], 10) == []  # b is live: its claims and binds hold
    set_heartbeat(postgres_dsn, "node-b", time.time() - LEASE_S - 1)
    assert [r.id for r in await a.claim("demo", [LINK_B], 10)] == ids
    assert await a.release_all() == 2  # and the dead node's binds are forgotten
    with psycopg.connect(postgres_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM smpp_binds").fetchone() == (0,)
    assert [r.id for r in await a.claim("demo", [LINK_B], 10)] == ids
    # A node taken for dead claims nothing until its heartbeat is written again.
    await a.release(ids)
    assert await b.claim("demo", [LINK_A], 10) == []


async def test_a_dead_nodes_waiting_parts_are_taken_at_resume_or_while_running(
    postgres_dsn: str, two_nodes: tuple[PostgresSmppStore, ...]
) -> None:
    a, b = two_nodes
    part = given(await b.allocate_id(), "")
    part.msg_id = None
    part.part_key = ("demo", "ACME", "250788123456", 9, 2)
    await b.add_ids([part], build_receipt)
    assert await a.waiting_parts() == []  # b is live: its parts are its own
    assert await a.adopt_parts() == []
    set_heartbeat(postgres_dsn, "node-b", time.time() - LEASE_S - 1)
    assert [row.id for row in await a.waiting_parts()] == [part.id]
    set_heartbeat(postgres_dsn, "node-b", time.time())
    assert await b.waiting_parts() == []  # a holds them now
    # A running node takes a dead node's parts, never its own again.
    assert await a.adopt_parts() == []
    set_heartbeat(postgres_dsn, "node-a", time.time() - LEASE_S - 1)
    assert [row.id for row in await b.adopt_parts()] == [part.id]


async def test_a_journal_at_schema_1_gets_the_smpp_tables(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        for statement in SCHEMA[: len(SCHEMA) - len(SMPP_TABLES)]:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (1)")
        assert create_or_migrate(connection, "test") == 1
        assert schema_version(connection) == SCHEMA_VERSION == 2
    async with open_postgres_store(postgres_dsn, "node-a", lease_s=LEASE_S) as store:
        assert await store.counts() == {"message_ids": 0, "outcomes": 0, "receipts": 0}


async def test_a_database_it_cannot_reach_is_a_sentence() -> None:
    with pytest.raises(StoreError) as refused:
        async with open_postgres_store(
            "postgresql://septet@127.0.0.1:9/none?connect_timeout=2", "node-a", lease_s=LEASE_S
        ):
            pytest.fail("the store opened")
    assert str(refused.value).startswith(
        "Cannot open the SMPP store in the journal at 127.0.0.1:9/none: "
    )


def journal_message(
    dsn: str, msg_id: int, state: int, outcome: str | None, final_at: float
) -> None:
    """A row of the journal's `messages` (the columns the SMPP store reads)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index,"
            " attempt, dlr, body, outcome, code, final_at)"
            " VALUES (%s, %s, 0, 0, '[]', 0, 0, true, '', %s, '5', %s)",
            (msg_id, state, outcome, final_at if state == 3 else None),
        )


async def test_ids_of_a_message_final_in_the_journal_end_from_its_outcome(
    postgres_dsn: str, two_nodes: tuple[PostgresSmppStore, ...]
) -> None:
    a, b = two_nodes
    ids = [await a.allocate_id() for _ in range(4)]
    await a.add_ids([given(value, str(value)) for value in ids], build_receipt)
    lost, pending, recent, cancelled = ids
    journal_message(postgres_dsn, lost, 3, "UNDELIV", 100.0)
    journal_message(postgres_dsn, pending, 2, None, 0.0)
    journal_message(postgres_dsn, recent, 3, "DELIVRD", 300.0)
    journal_message(postgres_dsn, cancelled, 3, "CANCELLED", 100.0)
    # A window of three ids, then the rest, then (from the first again) nothing.
    made = await b.settle_final(before=200.0, build=build_receipt, window=3)
    assert [(r.id, r.state) for r in made] == [(lost, "UNDELIV")]
    assert " err:005 " in made[0].text
    made = await b.settle_final(before=200.0, build=build_receipt, window=3)
    assert [(r.id, r.state) for r in made] == [(cancelled, "DELETED")]
    assert await b.settle_final(before=200.0, build=build_receipt, window=3) == []
    assert await b.settle_final(before=200.0, build=build_receipt, window=3) == []
    assert (await a.counts())["message_ids"] == 2  # not final yet, or only just
