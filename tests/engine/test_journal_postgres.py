"""Tests for engine.journal.postgres on a real PostgreSQL: what only this backend has (the
schema's creation and versions, a DSN that is wrong or a server that is gone), and what a
cluster needs: two journals on one database, as two nodes, never both win a message, never
both take a client id, and hand out event ids in commit order."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest

from bench.postgres import TemporaryPostgres, free_port
from engine import retention
from engine.journal import Duplicate, JournalError, MarkFinal, MarkSubmitted
from engine.journal.postgres import PostgresJournal, describe_dsn, open_postgres_journal
from engine.journal.postgres_reader import open_postgres_reader
from engine.journal.postgres_schema import SCHEMA_VERSION
from engine.models import Message
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio


@pytest.fixture
async def journal(postgres_dsn: str) -> AsyncIterator[PostgresJournal]:
    async with open_postgres_journal(postgres_dsn) as opened:
        yield opened


@pytest.fixture
async def two_nodes(postgres_dsn: str) -> AsyncIterator[tuple[PostgresJournal, PostgresJournal]]:
    """Two journals on one database, each with its own connection and writer thread, as
    two septet processes would have."""
    async with (
        open_postgres_journal(postgres_dsn) as first,
        open_postgres_journal(postgres_dsn) as second,
    ):
        await first.join("node-a", "run-a", time.time())
        await second.join("node-b", "run-b", time.time())
        yield first, second


async def accept_one(journal: PostgresJournal, message: Message) -> Message:
    [group] = await journal.accept([[message]])
    assert isinstance(group, list)
    return group[0]


async def accept_many(journal: PostgresJournal, count: int) -> list[Message]:
    groups = await journal.accept([[make_message(f"+2507825{n:05d}")] for n in range(count)])
    return [message for group in groups if isinstance(group, list) for message in group]


# ── the schema ───────────────────────────────────────────────────────────────────


async def test_nodes_starting_together_create_the_schema_once(postgres_dsn: str) -> None:
    opened: list[str] = []

    async def open_one() -> None:
        async with open_postgres_journal(postgres_dsn) as journal:
            opened.append(journal.instance)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(open_one)
    assert len(opened) == 4
    assert len(set(opened)) == 1  # one instance name: references are unique cluster-wide
    with psycopg.connect(postgres_dsn) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]


async def test_a_schema_newer_than_this_septet_is_refused_with_a_sentence(
    postgres_dsn: str,
) -> None:
    async with open_postgres_journal(postgres_dsn) as journal:
        assert await journal.pending_count() == 0
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(JournalError, match=r"schema version \d+, newer than this septet"):
        async with open_postgres_journal(postgres_dsn) as journal:
            raise AssertionError(f"opened {journal.instance} on a newer schema")


# ── a wrong DSN, a server that is not there or goes away ──────────────────────────


def test_a_dsn_that_is_not_one_is_a_sentence() -> None:
    with pytest.raises(JournalError, match="not a PostgreSQL connection string"):
        describe_dsn("host=127.0.0.1 port")
    assert describe_dsn("postgresql://septet:secret@db.example:6543/sms") == "db.example:6543/sms"


async def test_an_unreachable_server_is_a_sentence_naming_it() -> None:
    port = free_port()  # nothing listens there
    dsn = f"postgresql://septet:secret@127.0.0.1:{port}/septet"
    with pytest.raises(JournalError) as raised:
        async with open_postgres_journal(dsn) as journal:
            raise AssertionError(f"opened {journal.instance} with nothing listening")
    sentence = str(raised.value)
    assert sentence.startswith(f"Cannot open the journal at 127.0.0.1:{port}/septet: ")
    assert "\n" not in sentence
    assert "secret" not in sentence  # the password is never said


async def test_a_dropped_connection_fails_that_group_and_the_next_one_reconnects(
    journal: PostgresJournal, postgres_dsn: str
) -> None:
    await accept_one(journal, make_message())
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'septet'"
        )
    with pytest.raises(JournalError, match=r"^The journal at .* could not be written: "):
        await journal.accept([[make_message("+250782589801")]])
    # Nothing of the failed group was kept; the next group connects again.
    second = await accept_one(journal, make_message("+250782589802"))
    assert await journal.pending_count() == 2
    assert (await journal.get([second.msg_id]))[second.msg_id].to == "+250782589802"


async def test_accept_answers_with_a_sentence_when_the_server_is_gone() -> None:
    with TemporaryPostgres.started() as server:
        dsn = server.create_database()
        async with open_postgres_journal(dsn) as journal:
            await accept_one(journal, make_message())
            server.stop()
            with anyio.fail_after(30):  # bounded: connect_timeout, not a hang
                with pytest.raises(JournalError, match="could not be written"):
                    await journal.accept([[make_message("+250782589801")]])
                with pytest.raises(JournalError, match="could not be written"):
                    await journal.accept([[make_message("+250782589802")]])


# ── two nodes on one database ─────────────────────────────────────────────────────


async def test_two_nodes_claiming_the_same_messages_at_once_win_each_exactly_once(
    two_nodes: tuple[PostgresJournal, PostgresJournal],
) -> None:
    first, second = two_nodes
    messages = await accept_many(first, 600)
    wins: dict[str, list[str]] = {"node-a": [], "node-b": []}

    async def claim_all(journal: PostgresJournal, node: str, reverse: bool) -> None:
        # Each node reads the waiting messages on its own (fresh copies) and claims them in
        # batches, one in the opposite order: every batch meets the other node's claims.
        copies = list((await journal.get([m.msg_id for m in messages])).values())
        copies.sort(key=lambda m: int(m.msg_id), reverse=reverse)
        for start in range(0, len(copies), 25):
            won = await journal.claim(copies[start : start + 25], 0, time.time())
            wins[node].extend(message.msg_id for message in won)

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim_all, first, "node-a", False)
        tg.start_soon(claim_all, second, "node-b", True)
    assert not set(wins["node-a"]) & set(wins["node-b"])
    assert sorted(wins["node-a"] + wins["node-b"], key=int) == [m.msg_id for m in messages]
    # Each claim is stamped with its winner: each node's inflight is its own.
    assert {m.msg_id for m in await first.inflight()} == set(wins["node-a"])
    assert {m.msg_id for m in await second.inflight()} == set(wins["node-b"])
    records = {record.node: record.claims for record in await first.nodes()}
    assert records == {"node-a": len(wins["node-a"]), "node-b": len(wins["node-b"])}


async def test_a_client_id_accepted_on_two_nodes_at_once_is_journaled_once(
    two_nodes: tuple[PostgresJournal, PostgresJournal],
) -> None:
    first, second = two_nodes
    answers: dict[str, list[list[Message] | Duplicate]] = {"a": [], "b": []}

    async def accept_refs(journal: PostgresJournal, name: str) -> None:
        for n in range(40):
            # Two recipients: a group shares its client id.
            group = [
                make_message("+250782589800", client_ref=f"ref-{n}"),
                make_message("+250782589801", client_ref=f"ref-{n}"),
            ]
            answers[name] += await journal.accept([group])

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept_refs, first, "a")
        tg.start_soon(accept_refs, second, "b")
    for mine, theirs in zip(answers["a"], answers["b"], strict=True):
        accepted = [answer for answer in (mine, theirs) if isinstance(answer, list)]
        duplicates = [answer for answer in (mine, theirs) if isinstance(answer, Duplicate)]
        assert len(accepted) == 1
        assert len(duplicates) == 1
        assert duplicates[0].msg_ids == [message.msg_id for message in accepted[0]]
    assert await first.pending_count() == 80


async def test_event_ids_are_in_commit_order_across_nodes(
    two_nodes: tuple[PostgresJournal, PostgresJournal],
) -> None:
    first, second = two_nodes
    # Each node's reader follows the feed with its cursor while both nodes write: an event
    # committed later with a lower id than one already read would be skipped for good.
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def read_on(journal: PostgresJournal, reader: list[int]) -> None:
        page = await journal.feed("default", reader[-1] if reader else 0, 1000)
        reader.extend(int(body.split(b",")[0].split(b":")[1]) for body in page.events)

    async def accept_and_read(journal: PostgresJournal, name: str) -> None:
        for n in range(30):
            await accept_one(journal, make_message(f"+2507825{n:05d}"))
            await read_on(journal, seen[name])

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept_and_read, first, "a")
        tg.start_soon(accept_and_read, second, "b")
    await read_on(first, seen["a"])
    await read_on(second, seen["b"])
    assert seen["a"] == list(range(1, 61))
    assert seen["b"] == list(range(1, 61))


async def test_a_dead_nodes_claims_are_taken_over_by_one_node(
    two_nodes: tuple[PostgresJournal, PostgresJournal],
) -> None:
    first, second = two_nodes
    messages = await accept_many(first, 30)
    assert len(await first.claim(messages, 0, time.time())) == 30
    taken = await second.take_claims("node-a", 20)
    assert len(taken) == 20
    assert await first.take_claims("node-a", 100) != []  # the rest, to node-a itself
    assert {m.msg_id for m in await second.inflight()} == {m.msg_id for m in taken}
    await second.record(
        [
            MarkSubmitted(
                msg_id=m.msg_id,
                provider_id=f"p{m.msg_id}",
                cost=None,
                currency=None,
                at=1.0,
                report_by=9.0,
            )
            for m in taken
        ]
    )
    claims = {record.node: record.claims for record in await second.nodes()}
    assert claims == {"node-a": 10, "node-b": 0}
    # A node holding claims is not forgotten; one holding none is (at the heartbeat seen).
    a, b = await first.node_record("node-a"), await first.node_record("node-b")
    assert a is not None
    assert b is not None
    assert not await second.forget_node("node-a", a.heartbeat_at)
    assert not await first.forget_node("node-b", b.heartbeat_at - 1)
    assert await first.forget_node("node-b", b.heartbeat_at)
    assert [record.node for record in await first.nodes()] == ["node-a"]


# ── retention and the read-only reader ───────────────────────────────────────────


async def test_retention_deletes_what_ended_before_the_cut_and_keeps_the_rest(
    journal: PostgresJournal,
) -> None:
    messages = await accept_many(journal, 5)
    ended = messages[:3]
    await journal.record(
        [
            MarkFinal(msg_id=m.msg_id, outcome="DELIVRD", code=None, error=None, at=10.0)
            for m in ended
        ]
    )
    deleted = await retention.purge(journal, 100.0, clock=lambda: 1000.0)
    assert deleted["messages"] == 3
    assert set(await journal.get([m.msg_id for m in messages])) == {m.msg_id for m in messages[3:]}
    assert await journal.counts() == {"accepted": 2, "inflight": 0, "submitted": 0, "final": 0}


async def test_the_reader_sees_what_any_node_committed(
    two_nodes: tuple[PostgresJournal, PostgresJournal], postgres_dsn: str
) -> None:
    first, second = two_nodes
    mine = await accept_one(first, make_message(client_ref="from-a"))
    theirs = await accept_one(second, make_message(client_ref="from-b"))
    async with open_postgres_reader(postgres_dsn) as reader:
        stored = await reader.message(int(theirs.msg_id))
        assert stored is not None
        assert (stored.message.client_ref, stored.status) == ("from-b", "accepted")
        page = await reader.page("", limit=10)
        assert [s.message.msg_id for s in page.messages] == [theirs.msg_id, mine.msg_id]
        assert page.next_cursor is None
        by_ref = await reader.page("", client_ref="from-a")
        assert [s.message.msg_id for s in by_ref.messages] == [mine.msg_id]
        assert await reader.counts() == {
            "accepted": 2,
            "inflight": 0,
            "submitted": 0,
            "final": 0,
        }
        events, cursor = await reader.feed("default", 0, 10)
        assert (len(events), cursor) == (2, 2)
        assert len(await reader.history(mine.msg_id)) == 1
        assert await reader.kept_events_count() == 0


async def test_two_nodes_accepting_the_same_client_ids_in_opposite_orders_never_deadlock(
    two_nodes: tuple[PostgresJournal, PostgresJournal],
) -> None:
    first, second = two_nodes
    answers: dict[str, list[list[Message] | Duplicate]] = {"a": [], "b": []}

    async def accept_batches(journal: PostgresJournal, name: str, reverse: bool) -> None:
        for batch in range(5):
            refs = [f"ref-{batch}-{n}" for n in range(20)]
            groups = [[make_message(client_ref=ref)] for ref in refs]
            answered = await journal.accept(groups[::-1] if reverse else groups)
            answers[name] += answered[::-1] if reverse else answered

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept_batches, first, "a", False)
            tg.start_soon(accept_batches, second, "b", True)
    for mine, theirs in zip(answers["a"], answers["b"], strict=True):
        assert [isinstance(answer, list) for answer in (mine, theirs)].count(True) == 1
    assert await first.pending_count() == 100


async def test_a_group_that_loses_its_client_id_to_another_node_is_its_duplicate(
    two_nodes: tuple[PostgresJournal, PostgresJournal], postgres_dsn: str
) -> None:
    """Deterministic form of the race: node A has inserted client id "order-7" and not yet
    committed when node B, which saw no such id, inserts it too. B waits on A's row; when A
    commits, B's group (two recipients) is answered as A's duplicate and none of it stays."""
    first, second = two_nodes
    holding, release = threading.Event(), threading.Event()

    def park(connection: object) -> None:
        holding.set()
        release.wait(timeout=20)

    def group() -> list[Message]:
        return [
            make_message("+250782589800", client_ref="order-7"),
            make_message("+250782589801", client_ref="order-7"),
        ]

    answers: dict[str, list[list[Message] | Duplicate]] = {}

    async def accept_on(journal: PostgresJournal, name: str) -> None:
        answers[name] = await journal.accept([group()])

    async with anyio.create_task_group() as tg:
        # A's accept and a parked write share one group: A's transaction stays open.
        tg.start_soon(accept_on, first, "a")
        tg.start_soon(functools.partial(first._execute, park, write=True))
        assert await anyio.to_thread.run_sync(holding.wait, 10)
        tg.start_soon(accept_on, second, "b")
        await wait_for_a_lock_wait(postgres_dsn)
        release.set()
    [mine], [theirs] = answers["a"], answers["b"]
    assert isinstance(mine, list)
    assert theirs == Duplicate("order-7", [message.msg_id for message in mine])
    assert await second.pending_count() == 2
    listed = await second.messages_of("", client_ref="order-7")
    assert sorted(item.message.msg_id for item in listed) == sorted(m.msg_id for m in mine)


async def wait_for_a_lock_wait(dsn: str) -> None:
    """Until a septet connection waits on a lock: the server watches its own activity
    (no event tells a client that), bounded by a statement timeout."""

    def wait() -> None:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SET statement_timeout = '10s'")
            admin.execute(
                "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_stat_activity"
                " WHERE application_name = 'septet' AND wait_event_type = 'Lock')"
                " LOOP PERFORM pg_sleep(0.01); END LOOP; END $$"
            )

    await anyio.to_thread.run_sync(wait)


async def test_a_group_the_server_rolls_back_to_break_a_deadlock_is_tried_again(
    two_nodes: tuple[PostgresJournal, PostgresJournal], postgres_dsn: str
) -> None:
    """Node A changes message 1 then 2 in one group, node B 2 then 1, each held open between
    the two: a real deadlock. PostgreSQL rolls one group back (40P01); the writer runs it
    again once the other committed, so both callers get their answer, not an error. (The
    changes are statements of their own: a group's recorded changes are written together
    at its end, in msg_id order, which makes no such cycle.)"""
    first, second = two_nodes
    one, two = await accept_many(first, 2)
    release = threading.Event()
    outcomes: list[str] = []

    def charged(message: Message, cost: float) -> Callable[[psycopg.Connection[Any]], object]:
        return lambda connection: connection.execute(
            "UPDATE messages SET submit_cost = %s, submit_currency = 'EUR' WHERE msg_id = %s",
            (cost, int(message.msg_id)),
        )

    async def record(
        journal: PostgresJournal, change: Callable[[psycopg.Connection[Any]], object]
    ) -> None:
        await journal._execute(change, write=True)
        outcomes.append("recorded")

    async def hold_group(journal: PostgresJournal, order: list[Message], cost: float) -> None:
        """The journal's next group: the first change, a wait, the second change."""
        holding = threading.Event()

        def park(connection: object) -> None:
            holding.set()
            release.wait(timeout=20)

        tg.start_soon(record, journal, charged(order[0], cost))
        tg.start_soon(functools.partial(journal._execute, park, write=True))
        tg.start_soon(record, journal, charged(order[1], cost))
        assert await anyio.to_thread.run_sync(holding.wait, 10)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await hold_group(first, [one, two], 1.0)
            await hold_group(second, [two, one], 2.0)
            release.set()
    assert outcomes == ["recorded"] * 4
    # The group tried again committed last: both messages carry its charge.
    costs = {row[0] for row in await stored_costs(postgres_dsn, [one, two])}
    assert len(costs) == 1
    with psycopg.connect(postgres_dsn) as admin:
        deadlocks = admin.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert deadlocks is not None
    assert deadlocks[0] >= 1


async def stored_costs(dsn: str, messages: list[Message]) -> list[tuple[object, ...]]:
    def read() -> list[tuple[object, ...]]:
        with psycopg.connect(dsn) as connection:
            return connection.execute(
                "SELECT submit_cost FROM messages WHERE msg_id = ANY(%s)",
                ([int(m.msg_id) for m in messages],),
            ).fetchall()

    return await anyio.to_thread.run_sync(read)
