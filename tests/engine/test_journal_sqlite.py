"""SQLite-only tests of the journal (engine.journal.sqlite, sqlite_schema): what only its file
has. Migrations from the old SQLite schemas, the file's errors (a missing or read-only
directory, a file that is not a journal), its pragmas (synchronous, the page cache), a full
disk and the size cap (max_page_count), the states by name as its columns hold them, and a
kill -9 in the middle of writing. Not run on PostgreSQL: none of it exists there
(test_journal_postgres.py has that backend's own)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from engine.config import JournalSettings
from engine.journal import (
    JournalError,
    JournalFullError,
    MarkFinal,
    MarkRetry,
    MarkSubmitted,
    MarkUnconfirmed,
    StoreEvents,
    open_journal,
)
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.journal.sqlite_schema import SCHEMA_VERSION
from engine.models import Message
from tests.engine.test_journal import accept_one, make_message, park_writer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sqlite_journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    """For what only the SQLite file has (its pages, its size cap)."""
    async with open_sqlite_journal(tmp_path / "septet.db") as opened:
        yield opened


# ── old files ──────────────────────────────────────────────────────────────────


# What schema 7 added (the event feed, engine.feed): dropped to make an older journal.
UNDO_VERSION_7 = (
    "DROP TABLE events; DROP TABLE deliveries; DROP TABLE deliveries_gone;"
    " ALTER TABLE messages DROP COLUMN first_event;"
)

# What schema 10 added (a feed row's count of events: packs, engine.feed), dropped to make
# an older journal; every older journal is made without it too (UNDO_VERSION_9 starts
# with it).
UNDO_VERSION_10 = "ALTER TABLE events DROP COLUMN n;"

# What schema 9 added (a delivery's method: Kannel's dlr-url GET), dropped to make an older
# journal; every older journal is made without it too (UNDO_VERSION_8 starts with it).
UNDO_VERSION_9 = UNDO_VERSION_10 + "ALTER TABLE deliveries DROP COLUMN method;"

# What schema 8 added (accounts): dropped to make an older journal.
UNDO_VERSION_8 = (
    UNDO_VERSION_9 + "DROP INDEX messages_client_ref;"
    "DROP INDEX messages_account;"
    "DROP TABLE account_days;"
    "ALTER TABLE messages DROP COLUMN account;"
    "CREATE INDEX messages_client_ref ON messages (client_ref) WHERE client_ref IS NOT NULL;"
)

# The schema septet wrote as version 2, kept here as it was: the upgrade tests start from it.
VERSION_2_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE messages (
    msg_id INTEGER PRIMARY KEY,
    state INTEGER NOT NULL,
    due_at REAL NOT NULL,
    priority INTEGER NOT NULL,
    bridges TEXT NOT NULL,
    bridge_index INTEGER NOT NULL,
    bridge TEXT GENERATED ALWAYS AS (json_extract(bridges, '$[' || bridge_index || ']')) VIRTUAL,
    attempt INTEGER NOT NULL,
    client_ref TEXT,
    dlr INTEGER NOT NULL,
    provider_id TEXT,
    last_polled_at REAL NOT NULL DEFAULT 0,
    inflight_at REAL,
    submitted_at REAL,
    submit_cost REAL,
    submit_currency TEXT,
    retry_reason TEXT,
    maybe_sent INTEGER NOT NULL DEFAULT 0,
    final_at REAL,
    outcome TEXT,
    code TEXT,
    error TEXT,
    body BLOB NOT NULL
);
CREATE INDEX messages_due ON messages (priority, due_at) WHERE state = 0;
CREATE INDEX messages_inflight ON messages (bridge_index) WHERE state = 1;
CREATE INDEX messages_awaiting ON messages (bridge, last_polled_at) WHERE state = 2 AND dlr = 1;
CREATE INDEX messages_provider_id ON messages (bridge, provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX messages_client_ref ON messages (client_ref) WHERE client_ref IS NOT NULL;
CREATE TABLE orphan_receipts (
    id INTEGER PRIMARY KEY,
    bridge TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    receipt BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX orphan_receipts_provider_id ON orphan_receipts (bridge, provider_id);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, line BLOB NOT NULL);
CREATE INDEX outbox_origin ON outbox (origin, id);
"""

# (msg_id, state, bridge_index, dlr, provider_id, last_polled_at) of the rows
# write_version_2_journal stores, each message routed ("dsc", "bsg").
VERSION_2_ROWS = (
    (1, 0, 0, 1, None, 0.0),  # accepted
    (2, 2, 1, 1, "P-2", 0.0),  # submitted on bsg (after a failover), awaiting its report
    (3, 3, 0, 1, "P-3", 0.0),  # final on dsc, asked for a report: a late one is still matched
    (4, 3, 0, 0, "P-4", 0.0),  # final at submit: asked for no report
)


def write_version_2_journal(path: Path) -> None:
    """A journal file as septet wrote it at schema version 2."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(VERSION_2_SCHEMA)
        connection.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("instance", "v2test"), ("next_msg_id", 5), ("pending", 2), ("total", 4)],
        )
        for msg_id, state, bridge_index, dlr, provider_id, polled in VERSION_2_ROWS:
            message = make_message(f"+25078258980{msg_id}", dlr=bool(dlr))
            message.msg_id = str(msg_id)
            message.reference = f"v2test-{msg_id}"
            connection.execute(
                "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index,"
                " attempt, dlr, provider_id, last_polled_at, body)"
                ' VALUES (?, ?, 100.0, 0, \'["dsc","bsg"]\', ?, 1, ?, ?, ?, ?)',
                (
                    msg_id,
                    state,
                    bridge_index,
                    dlr,
                    provider_id,
                    polled,
                    msgspec.msgpack.encode(message),
                ),
            )
        connection.execute("PRAGMA user_version = 2")
        connection.commit()


def schema_of(path: Path) -> tuple[set[str], set[str]]:
    """The messages table's columns and every index's SQL, as SQLite keeps them."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_xinfo(messages)")}
        indexes = {
            row[0]
            for row in connection.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    return columns, indexes


async def test_a_version_2_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    write_version_2_journal(path)
    async with open_sqlite_journal(path) as journal:
        [accepted] = await journal.due(1000.0, 10)
        assert (accepted.msg_id, accepted.bridge) == ("1", "dsc")
        assert [d.message.msg_id for d in await journal.awaiting_poll("bsg", 10.0, 10)] == ["2"]
        assert await journal.awaiting_poll("dsc", 10.0, 10) == []
        found = await journal.find_by_provider_id("bsg", ["P-2", "P-3", "P-4"])
        assert {pid: m.msg_id for pid, m in found.items()} == {"P-2": "2"}
        found = await journal.find_by_provider_id("dsc", ["P-2", "P-3", "P-4"])
        assert {pid: m.state for pid, m in found.items()} == {"P-3": "final"}
        # The upgraded file goes on working: the accepted message is sent and reported.
        assert [m.msg_id for m in await journal.claim([accepted], 0, 5.0)] == ["1"]
        await journal.record(
            [MarkSubmitted(msg_id="1", provider_id="P-1", cost=None, currency=None, at=6.0)]
        )
        assert list(await journal.find_by_provider_id("dsc", ["P-1"])) == ["P-1"]
        assert await journal.counts() == {"accepted": 0, "inflight": 0, "submitted": 2, "final": 2}
    fresh = tmp_path / "fresh.db"
    async with open_sqlite_journal(fresh):
        pass  # opening creates the current schema, which the upgraded file must match
    assert schema_of(path) == schema_of(fresh)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    write_version_2_journal(path)
    # Make it what septet 0.1 wrote: no maybe_sent column, schema version 1.
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("ALTER TABLE messages DROP COLUMN maybe_sent")
        connection.execute("PRAGMA user_version = 1")
        connection.commit()
    async with open_sqlite_journal(path) as journal:
        [old] = await journal.due(1000.0, 10)
        assert (old.msg_id, old.to, old.maybe_sent) == ("1", "+250782589801", False)
        await journal.record(
            [
                MarkRetry(
                    msg_ids=[old.msg_id],
                    due_at=1.0,
                    attempt=1,
                    bridge_index=0,
                    reason="r",
                    maybe_sent_at=5.0,
                )
            ]
        )
        [retried] = await journal.due(1000.0, 10)
        assert retried.maybe_sent is True


async def test_a_version_4_journal_keeps_its_polls_at_the_strictest_floor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        messages = [await accept_one(journal, make_message(f"+44770090000{n}")) for n in (1, 2)]
        for message in messages:
            assert await journal.claim([message], 0, 1.0) == [message]
        await journal.record(
            [
                MarkSubmitted(
                    msg_id=m.msg_id, provider_id=f"P{m.msg_id}", cost=None, currency=None, at=2.0
                )
                for m in messages
            ]
        )
    # Make it what schema 4 wrote: no poll schedule, the awaiting index by last poll, one
    # message polled at 500.0 and the other never.
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            UNDO_VERSION_8 + UNDO_VERSION_7 + "DROP INDEX messages_awaiting;"
            "ALTER TABLE messages DROP COLUMN polls;"
            "ALTER TABLE messages DROP COLUMN next_poll_at;"
            "ALTER TABLE messages DROP COLUMN status;"
            "CREATE INDEX messages_awaiting ON messages (bridge, last_polled_at)"
            " WHERE state = 2 AND dlr = 1;"
            "PRAGMA user_version = 4;"
        )
        connection.execute(
            "UPDATE messages SET last_polled_at = 500.0 WHERE msg_id = ?", (messages[0].msg_id,)
        )
        connection.commit()
    async with open_sqlite_journal(path) as journal:
        due = await journal.awaiting_poll("dsc", now=559.0, limit=10)
        assert [(d.message.msg_id, d.polls, d.next_poll_at) for d in due] == [
            (messages[1].msg_id, 0, 0.0)
        ]
        due = await journal.awaiting_poll("dsc", now=560.0, limit=10)
        assert [(d.message.msg_id, d.polls) for d in due] == [
            (messages[1].msg_id, 0),
            (messages[0].msg_id, 1),
        ]
    fresh = tmp_path / "fresh.db"
    async with open_sqlite_journal(fresh):
        pass  # opening creates the current schema, which the upgraded file must match
    assert schema_of(path) == schema_of(fresh)


async def test_open_journal_opens_the_backend_its_settings_name(tmp_path: Path) -> None:
    settings = JournalSettings(backend="sqlite", path=str(tmp_path / "septet.db"))
    async with open_journal(settings) as journal:
        assert isinstance(journal, SqliteJournal)
        await accept_one(journal, make_message())
    async with open_sqlite_journal(tmp_path / "septet.db") as reopened:
        assert await reopened.pending_count() == 1


async def test_an_unknown_backend_is_a_sentence(tmp_path: Path) -> None:
    settings = JournalSettings(backend="postgres", path=str(tmp_path / "septet.db"))
    with pytest.raises(JournalError) as caught:
        async with open_journal(settings):
            pass  # opening is what fails
    assert str(caught.value) == (
        "journal.backend 'postgres' is not a journal backend of this septet; it has 'sqlite',"
        " 'postgresql'."
    )
    assert not (tmp_path / "septet.db").exists()


async def test_a_missing_directory_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "septet.db"
    with pytest.raises(JournalError) as caught:
        async with open_sqlite_journal(path):
            pass  # opening is what fails (or, below, what is tested)
    assert str(caught.value) == (
        f"Cannot open the journal {path}: the directory {path.parent} does not exist."
    )


async def test_a_read_only_directory_is_a_sentence(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # Root writes through permission bits; sysfs refuses to create files even for root.
        directory = Path("/sys")
    else:
        directory = tmp_path / "locked"
        directory.mkdir()
        directory.chmod(0o555)
    path = directory / "septet.db"
    with pytest.raises(JournalError, match=r"the directory .* is not writable") as caught:
        async with open_sqlite_journal(path):
            pass  # opening is what fails (or, below, what is tested)
    assert str(path) in str(caught.value)
    assert caught.value.__cause__ is None


async def test_a_file_that_is_not_a_journal_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    path.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(JournalError, match=r"Cannot open the journal .*septet\.db: file is not a"):
        async with open_sqlite_journal(path):
            pass  # opening is what fails (or, below, what is tested)


async def test_an_unknown_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="synchronous must be one of"):
        async with open_sqlite_journal(tmp_path / "septet.db", synchronous="SOMETIMES"):
            pass  # opening is what fails (or, below, what is tested)


async def test_the_page_cache_is_the_configured_size(tmp_path: Path) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db", cache_mb=4) as journal:
        size = await journal._execute(
            lambda c: c.execute("PRAGMA cache_size").fetchone()[0], write=False
        )
    assert size == -4096  # KiB


async def test_a_full_disk_fails_the_whole_group_and_the_journal_recovers(
    sqlite_journal: SqliteJournal,
) -> None:
    journal = sqlite_journal
    await accept_one(journal, make_message())
    page_count = await journal._execute(
        lambda c: c.execute("PRAGMA page_count").fetchone()[0], write=False
    )
    # SQLITE_FULL, the same error a full disk gives: no page may be added to the file.
    await journal._execute(
        lambda c: c.execute(f"PRAGMA max_page_count = {page_count}").fetchone(), write=False
    )
    outcomes: list[str] = []
    big = [make_message(f"+2507825{index:05d}", text="x" * 1000) for index in range(50)]

    async def try_accept(group: list[Message]) -> None:
        try:
            await journal.accept([group])
        except JournalError as error:
            outcomes.append(str(error))

    async def try_record() -> None:
        try:
            await journal.record([StoreEvents(origin="gone", events=[b"{}\n"])])
        except JournalError as error:
            outcomes.append(str(error))

    async with anyio.create_task_group() as tg:
        release = await park_writer(journal, tg)
        tg.start_soon(try_accept, big)
        tg.start_soon(try_record)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert len(outcomes) == 2
    assert all(
        outcome == f"The journal {journal.path} could not be written: database or disk is full."
        for outcome in outcomes
    )
    assert await journal.pending_count() == 1
    assert await journal.take_events(None, 10) == []
    await journal._execute(
        lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone(), write=False
    )
    [stored] = await journal.accept([big])
    assert isinstance(stored, list)
    assert [m.msg_id for m in stored][:2] == ["2", "3"]
    assert await journal.pending_count() == 51


# ── crash safety ───────────────────────────────────────────────────────────────

WRITER_SCRIPT = """
import sys
import anyio
from engine.journal.sqlite import open_sqlite_journal
from engine.models import Message

async def writer(journal, worker):
    for index in range(100_000):
        message = Message(
            msg_id="", reference="", origin="o", client_ref=f"{worker}-{index}",
            to="+250782589800", sender=None, text="Hello", encoding="GSM-7", segments=1,
            cost=0.02, currency="USD", bridges=("dsc",), accepted_at=1.0, due_at=1.0,
        )
        [group] = await journal.accept([[message]])
        print(group[0].msg_id, flush=True)

async def main():
    async with open_sqlite_journal(sys.argv[1]) as journal:
        async with anyio.create_task_group() as tg:
            for worker in range(4):
                tg.start_soon(writer, journal, worker)

anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
"""


async def test_a_size_cap_refuses_new_messages_but_not_the_work_already_promised(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db", max_size_bytes=1 << 20) as journal:
        accepted: list[Message] = []
        refusal: JournalFullError | None = None
        for index in range(100_000):  # bounded: 1 MiB holds far fewer
            group = [make_message(f"+2507825{index:05d}", text="x" * 150)]
            try:
                [result] = await journal.accept([group])
            except JournalFullError as error:
                refusal = error
                break
            assert isinstance(result, list)
            accepted.extend(result)
        assert refusal is not None
        assert "is full" in str(refusal)
        assert "journal.max_size_mb" in str(refusal)
        assert 100 < len(accepted) < 100_000
        assert await journal.pending_count() == len(accepted)
        # What was accepted can still go out and end: the reserve holds its changes.
        for message in accepted:
            await journal.record(
                [
                    MarkSubmitted(
                        msg_id=message.msg_id,
                        provider_id=f"P-{message.msg_id}",
                        cost=0.02,
                        currency="USD",
                        at=1.0,
                    )
                ]
            )
        await journal.record(
            [
                MarkFinal(msg_id=m.msg_id, outcome="DELIVRD", code=None, error=None, at=2.0)
                for m in accepted
            ]
        )
        assert await journal.pending_count() == 0
        assert await journal.integrity_check() == "ok"


async def test_every_accept_that_returned_survives_a_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    acknowledged: list[str] = []
    with anyio.fail_after(60):
        async with await anyio.open_process(
            [sys.executable, str(script), str(path)], stderr=None
        ) as process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            while len(acknowledged) < 400:
                acknowledged.append((await lines.receive_until(b"\n", 32)).decode())
            process.send_signal(signal.SIGKILL)
            # What was printed before the kill is still in the pipe: it was acknowledged too.
            try:
                while True:
                    acknowledged.append((await lines.receive_until(b"\n", 32)).decode())
            except (anyio.IncompleteRead, anyio.EndOfStream):
                pass  # the writer was killed mid-line: what it acknowledged is complete
            assert await process.wait() == -signal.SIGKILL
    async with open_sqlite_journal(path) as journal:
        assert await journal.integrity_check() == "ok"
        stored = await journal.get(acknowledged)
        assert set(stored) == set(acknowledged)
        assert await journal.pending_count() >= len(acknowledged)
        fresh = await accept_one(journal, make_message())
    assert int(fresh.msg_id) > max(int(msg_id) for msg_id in acknowledged)


async def test_the_journal_stores_each_message_s_lifecycle_state_by_name(tmp_path: Path) -> None:
    """`status` holds engine.lifecycle's name for each message (the integer `state` is the
    phase the indexes use): accepted, in flight, submitted, unconfirmed, final by name."""
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        groups = await journal.accept(
            [[make_message(f"+25078258981{n}", dlr=True)] for n in range(5)]
        )
        ids = [group[0].msg_id for group in groups if isinstance(group, list)]
        claimed = await journal.claim(
            [group[0] for group in groups if isinstance(group, list)][:4], 0, 10.0
        )
        assert len(claimed) == 4
        await journal.record(
            [
                MarkSubmitted(
                    msg_id=ids[1],
                    provider_id="p1",
                    cost=None,
                    currency=None,
                    at=11.0,
                    report_by=99.0,
                ),
                MarkUnconfirmed(
                    msg_id=ids[2], at=11.0, maybe_sent_at=10.0, report_by=99.0, error="lost"
                ),
                MarkRetry(msg_ids=[ids[3]], due_at=20.0, attempt=1, bridge_index=0, reason="5xx"),
            ]
        )
        await journal.record(
            [MarkFinal(msg_id=ids[1], outcome="DELIVRD", code=None, error=None, at=12.0)]
        )
    with contextlib.closing(sqlite3.connect(path)) as connection:
        status = dict(connection.execute("SELECT msg_id, status FROM messages").fetchall())
    assert [status[int(msg_id)] for msg_id in ids] == [
        "inflight",
        "delivered",
        "unconfirmed",
        "scheduled",
        "accepted",
    ]


async def test_a_version_5_journal_gets_its_states_by_name(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        groups = await journal.accept([[make_message("+250782589820", dlr=True)]])
        [message] = groups[0] if isinstance(groups[0], list) else []
        await journal.claim([message], 0, 10.0)
        await journal.record(
            [MarkFinal(msg_id=message.msg_id, outcome="UNDELIV", code="1", error=None, at=12.0)]
        )
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            UNDO_VERSION_8
            + UNDO_VERSION_7
            + "ALTER TABLE messages DROP COLUMN status; PRAGMA user_version = 5;"
        )
    async with open_sqlite_journal(path) as reopened:  # opening it runs the migration
        assert await reopened.pending_count() == 0
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT status FROM messages").fetchall() == [("undeliverable",)]
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_body_written_with_every_field_reads_as_one_without_defaults(
    tmp_path: Path,
) -> None:
    """Bodies leave out fields at their defaults (Message omit_defaults); a body written
    before, with every field, reads back the same message, and the new one is smaller."""
    path = tmp_path / "j.db"
    async with open_sqlite_journal(path) as journal:
        message = await accept_one(journal, make_message(dlr=False))
    full = msgspec.msgpack.encode(msgspec.structs.asdict(message))
    with contextlib.closing(sqlite3.connect(path)) as connection:
        (short,) = connection.execute(
            "SELECT body FROM messages WHERE msg_id = ?", (int(message.msg_id),)
        ).fetchone()
        assert len(short) < len(full)
        assert "flash" in msgspec.msgpack.decode(full)
        assert "flash" not in msgspec.msgpack.decode(short)
        with connection:
            connection.execute(
                "UPDATE messages SET body = ? WHERE msg_id = ?", (full, int(message.msg_id))
            )
    async with open_sqlite_journal(path) as journal:
        stored = (await journal.get([message.msg_id]))[message.msg_id]
    assert stored == message
