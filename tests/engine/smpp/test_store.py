"""The SMPP store: ids never given twice, receipts made atomically and once per id, state
kept across opens; run against both stores (the SQLite file, the PostgreSQL journal's
database: `-k sqlite` / `-k postgresql` picks one). Old SQLite files migrated, and what
only the SQLite file has, are tested on it alone (the PostgreSQL store's own behaviour, its
receipt claims, is in test_store_postgres.py)."""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import msgspec
import pytest

from engine.smpp.receipts import build_receipt
from engine.smpp.store import (
    NO_GROUP,
    SCHEMA_VERSION,
    BuildReceipt,
    GivenId,
    Outcome,
    PendingReceipt,
    SmppStore,
    StoreError,
    open_store,
    store_path_for,
)
from engine.smpp.store_postgres import open_postgres_store

pytestmark = pytest.mark.anyio

DELIVERED = Outcome("DELIVRD", "000", 100.0)
UNDELIVERABLE = Outcome("UNDELIV", "005", 90.0)


def given(value: int, msg_id: str | None, **fields: object) -> GivenId:
    values: dict[str, object] = {
        "registered_delivery": 1,
        "submitted_at": 0.0,
        "source_addr": "ACME",
        "destination_addr": "250788123456",
        "text_head": "hi",
    }
    values.update(fields)
    return GivenId(id=value, system_id="demo", msg_id=msg_id, **values)  # type: ignore[arg-type]


def receipt(row: GivenId, outcome: Outcome) -> PendingReceipt | None:
    if not row.registered_delivery:
        return None
    return PendingReceipt(
        id=row.id,
        system_id=row.system_id,
        source_addr=row.destination_addr,
        destination_addr=row.source_addr,
        text=f"id:{row.id} stat:{outcome.state}",
        state=outcome.state,
        message_state=2,
    )


StoreOpener = Callable[[], contextlib.AbstractAsyncContextManager[SmppStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens the test's store on the backend under test; the same store every time (a
    second open is a restart)."""

    @contextlib.asynccontextmanager
    async def open_it() -> AsyncIterator[SmppStore]:
        if request.param == "sqlite":
            async with open_store(tmp_path / "s.db") as store:
                yield store
        else:
            dsn = str(request.getfixturevalue("postgres_dsn"))
            async with open_postgres_store(dsn, "node-a", lease_s=15) as shared:
                yield shared

    return open_it


def test_store_path_sits_beside_the_journal() -> None:
    assert store_path_for("data/septet.db") == Path("data/septet.smpp.db")


async def test_ids_are_never_reused_after_their_rows_are_gone(opener: StoreOpener) -> None:
    async with opener() as store:
        first, second = await store.allocate_id(), await store.allocate_id()
        assert await store.add_ids([given(first, "10"), given(second, "10")], receipt) == []
        made, matched = await store.settle_messages(
            {"10": DELIVERED, "11": DELIVERED}, receipt, now=0
        )
        assert sorted(r.id for r in made) == [first, second]
        assert matched == {"10"}
        await store.delete_receipts([first, second])
        assert await store.counts() == {"message_ids": 0, "outcomes": 1, "receipts": 0}
    async with opener() as store:
        assert await store.allocate_id() > second


async def test_waiting_parts_and_receipts_survive_reopening(opener: StoreOpener) -> None:
    async with opener() as store:
        part = given(
            await store.allocate_id(), None, part_key=("demo", "A", "B", 7, 2), part_octets=b"half"
        )
        linked = given(await store.allocate_id(), "5")
        await store.add_ids([part, linked], receipt)
        await store.settle_messages({"5": DELIVERED}, receipt, now=0)
    async with opener() as store:
        (waiting,) = await store.waiting_parts()
        assert waiting.part_key == ("demo", "A", "B", 7, 2)
        assert waiting.part_octets == b"half"
        (pending,) = await store.pending_receipts()
        assert pending.id == linked.id
        assert await store.link([given(waiting.id, "6")], receipt) == []
        assert await store.waiting_parts() == []


async def test_a_second_final_outcome_makes_no_second_receipt_even_after_reopening(
    opener: StoreOpener,
) -> None:
    async with opener() as store:
        await store.add_ids([given(1, "7"), given(2, "7")], receipt)
        made, _ = await store.settle_messages({"7": UNDELIVERABLE}, receipt, now=0)
        assert [(r.id, r.state) for r in made] == [(1, "UNDELIV"), (2, "UNDELIV")]
        again, _ = await store.settle_messages({"7": DELIVERED}, receipt, now=1)
        assert again == []
    async with opener() as store:
        after_restart, _ = await store.settle_messages({"7": DELIVERED}, receipt, now=2)
        assert after_restart == []
        assert [r.state for r in await store.pending_receipts()] == ["UNDELIV", "UNDELIV"]


async def test_an_outcome_that_outran_its_ids_waits_for_them_and_the_first_one_counts(
    opener: StoreOpener,
) -> None:
    async with opener() as store:
        # The message's reports arrive before its id is stored: a failed, then a dlr.
        assert await store.settle_messages({"8": UNDELIVERABLE}, receipt, now=0) == ([], set())
        assert await store.settle_messages({"8": DELIVERED}, receipt, now=1) == ([], set())
    async with opener() as store:  # kept across a restart
        made = await store.add_ids([given(3, "8"), given(4, "9")], receipt)
        assert [(r.id, r.state) for r in made] == [(3, "UNDELIV")]
        assert await store.counts() == {"message_ids": 1, "outcomes": 1, "receipts": 1}
        # The parts of a long message joined after the report: the same.
        await store.settle_messages({"10": DELIVERED}, receipt, now=2)
        await store.add_ids([given(5, None), given(6, None)], receipt)
        joined = await store.link([given(5, "10"), given(6, "10")], receipt)
        assert [(r.id, r.state) for r in joined] == [(5, "DELIVRD"), (6, "DELIVRD")]
        assert await store.waiting_parts() == []


async def test_an_id_with_no_receipt_asked_keeps_no_row_once_journaled(opener: StoreOpener) -> None:
    async with opener() as store:
        single = await store.allocate_id()
        await store.add_ids([given(single, "3", registered_delivery=0)], receipt)
        # Parts wait as rows, then leave when joined into one message.
        parts = [given(await store.allocate_id(), None, registered_delivery=0) for _ in range(2)]
        await store.add_ids(parts, receipt)
        assert len(await store.waiting_parts()) == 2
        for part in parts:
            part.msg_id = "4"
        assert await store.link(parts, receipt) == []
        assert await store.counts() == {"message_ids": 0, "outcomes": 0, "receipts": 0}
    async with opener() as store:
        assert await store.allocate_id() > parts[-1].id  # the ids are never given again


async def test_kept_outcomes_are_forgotten_after_a_while(opener: StoreOpener) -> None:
    async with opener() as store:
        await store.settle_messages({"1": DELIVERED}, receipt, now=100)
        await store.settle_messages({"2": DELIVERED}, receipt, now=200)
        assert await store.forget_outcomes(before=150) == 1
        assert await store.add_ids([given(1, "1")], receipt) == []
        assert [r.id for r in await store.add_ids([given(2, "2")], receipt)] == [2]


# ── batches (engine.journal.writer: one transaction, a savepoint per call) ──────


async def test_a_call_that_fails_on_its_own_data_is_undone_alone(opener: StoreOpener) -> None:
    def refuse(row: GivenId, outcome: Outcome) -> PendingReceipt | None:
        raise ValueError(f"no receipt for id {row.id}")

    async with opener() as store:
        first, second = await store.allocate_id(), await store.allocate_id()
        await store.add_ids([given(first, "10"), given(second, "11")], receipt)
        settled: dict[str, tuple[list[PendingReceipt], set[str]]] = {}
        refused: dict[str, ValueError] = {}

        async def settle(msg_id: str, build: BuildReceipt) -> None:
            try:
                settled[msg_id] = await store.settle_messages({msg_id: DELIVERED}, build, now=0)
            except ValueError as error:
                refused[msg_id] = error

        async with anyio.create_task_group() as tg:
            tg.start_soon(settle, "10", refuse)
            tg.start_soon(settle, "11", receipt)
        assert [(msg_id, str(error)) for msg_id, error in refused.items()] == [
            ("10", f"no receipt for id {first}")
        ]
        made, matched = settled["11"]
        assert ([r.id for r in made], matched) == ([second], {"11"})
        # The refused call changed nothing: its id still waits for its report.
        assert await store.counts() == {"message_ids": 1, "outcomes": 0, "receipts": 1}
        made, _ = await store.settle_messages({"10": DELIVERED}, receipt, now=0)
        assert [r.id for r in made] == [first]


async def test_a_storage_failure_fails_its_batch_with_a_sentence_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with open_store(path) as store:
        with pytest.raises(StoreError) as failed:
            await store._run(lambda connection: connection.execute("INSERT INTO gone VALUES (1)"))
        assert str(failed.value) == (
            f"The SMPP store {path} could not be written: no such table: gone."
        )
        first = await store.allocate_id()
        assert await store.add_ids([given(first, "10")], receipt) == []
    async with open_store(path) as store:
        assert await store.counts() == {"message_ids": 1, "outcomes": 0, "receipts": 0}
        assert await store.allocate_id() > first


async def test_a_closed_store_says_so(opener: StoreOpener) -> None:
    async with opener() as store:
        pass  # open and close it at once: the test is what it says afterwards
    with pytest.raises(StoreError, match="is closed"):
        await store.counts()


# ── old files ──────────────────────────────────────────────────────────────────

# The schema as septet wrote it before the file had a version (user_version 0).
UNVERSIONED_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE message_ids ("
    " id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, msg_id TEXT, body BLOB NOT NULL)",
    "CREATE INDEX message_ids_msg_id ON message_ids (msg_id) WHERE msg_id IS NOT NULL",
    "CREATE INDEX message_ids_waiting ON message_ids (id) WHERE msg_id IS NULL",
    "CREATE TABLE receipts (id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, body BLOB NOT NULL)",
)


def write_unversioned_store(path: Path) -> None:
    """A file from before issue 16: rows without the NPI fields, receipts without TON/NPI."""
    old_row = {
        "id": 41,
        "system_id": "demo",
        "msg_id": "12",
        "registered_delivery": 1,
        "submitted_at": 0.0,
        "source_addr": "ACME",
        "destination_addr": "250788123456",
        "text_head": "old",
        "source_addr_ton": 5,
        "dest_addr_ton": 1,
    }
    old_receipt = {
        "id": 40,
        "system_id": "demo",
        "source_addr": "250788123456",
        "destination_addr": "ACME",
        "text": "id:40 stat:DELIVRD",
        "state": "DELIVRD",
        "message_state": 2,
    }
    with sqlite3.connect(path) as connection:
        for statement in UNVERSIONED_SCHEMA:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO message_ids VALUES (41, 'demo', '12', ?)",
            (msgspec.msgpack.encode(old_row),),
        )
        connection.execute(
            "INSERT INTO receipts VALUES (40, 'demo', ?)", (msgspec.msgpack.encode(old_receipt),)
        )
        connection.execute("INSERT INTO meta VALUES ('next_id', 42)")
    connection.close()


async def test_a_store_from_before_the_schema_version_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.smpp.db"
    write_unversioned_store(path)
    async with open_store(path) as store:
        assert await store.allocate_id() == 42
        (pending,) = await store.pending_receipts()
        assert (pending.id, pending.source_addr_ton, pending.dest_addr_npi) == (40, 0, 0)
        made, matched = await store.settle_messages({"12": DELIVERED}, receipt, now=0)
        assert matched == {"12"}
        assert [r.id for r in made] == [41]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    connection.close()
    async with open_store(path) as store:  # a migrated file opens as it is
        assert await store.counts() == {"message_ids": 0, "outcomes": 0, "receipts": 2}


async def test_an_old_row_keeps_the_ton_it_had(tmp_path: Path) -> None:
    path = tmp_path / "old.smpp.db"
    write_unversioned_store(path)
    seen: list[GivenId] = []

    def remember(row: GivenId, outcome: Outcome) -> PendingReceipt | None:
        seen.append(row)
        return receipt(row, outcome)

    async with open_store(path) as store:
        await store.settle_messages({"12": DELIVERED}, remember, now=0)
    (row,) = seen
    assert (row.source_addr_ton, row.source_addr_npi, row.dest_addr_ton, row.dest_addr_npi) == (
        5,
        0,
        1,
        0,
    )


async def test_the_bind_group_is_kept_with_ids_and_receipts_across_reopening(
    opener: StoreOpener,
) -> None:
    link_a = ("link-a", "")
    async with opener() as store:
        waiting = given(await store.allocate_id(), "7", bind_group=link_a)
        owed = given(await store.allocate_id(), "8", bind_group=link_a)
        await store.add_ids([waiting, owed], build_receipt)
        await store.settle_messages({"8": DELIVERED}, build_receipt, now=0)
    async with opener() as store:
        (pending,) = await store.pending_receipts()
        assert (pending.id, pending.bind_group) == (owed.id, link_a)
        made, _ = await store.settle_messages({"7": DELIVERED}, build_receipt, now=0)
        assert [(r.id, r.bind_group) for r in made] == [(waiting.id, link_a)]


async def test_rows_from_before_bind_groups_are_in_the_empty_group(tmp_path: Path) -> None:
    path = tmp_path / "old.smpp.db"
    write_unversioned_store(path)
    async with open_store(path) as store:
        (pending,) = await store.pending_receipts()
        made, _ = await store.settle_messages({"12": DELIVERED}, build_receipt, now=0)
        assert [pending.bind_group] + [r.bind_group for r in made] == [NO_GROUP, NO_GROUP]


async def test_a_store_from_a_newer_septet_is_refused_with_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "new.smpp.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="written by a newer septet") as refused:
        async with open_store(path) as store:
            pytest.fail(f"the store opened: {store}")
    assert str(path) in str(refused.value)


async def test_a_file_that_is_not_a_store_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "junk.smpp.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="Cannot open the SMPP store"):
        async with open_store(path) as store:
            pytest.fail(f"the store opened: {store}")


async def test_store_files_are_created_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "septet.smpp.db"
    async with open_store(path) as store:
        first = await store.allocate_id()
        await store.add_ids([given(first, "10")], receipt)
        for name in ("septet.smpp.db", "septet.smpp.db-wal", "septet.smpp.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
