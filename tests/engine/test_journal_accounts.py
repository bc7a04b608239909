"""The journal's accounts (schema 8): client ids unique per account, an account's own
listing, the messages counted per account and UTC day, and the upgrade from schema 7."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import anyio
import msgspec
import pytest

from engine.journal import Duplicate, MarkFinal
from engine.journal.sqlite import open_sqlite_journal
from engine.journal.sqlite_schema import SCHEMA_VERSION
from engine.models import Message
from tests.engine.journal_backends import BackendJournal
from tests.engine.test_journal import make_message, park_writer
from tests.engine.test_journal_sqlite import UNDO_VERSION_8

pytestmark = pytest.mark.anyio

# `journal` (tests/engine/journal_backends.py): a test that takes it runs on every backend.


def of(account: str, ref: str | None, *, at: float = 100.0, to: str = "+250788100001") -> Message:
    message = make_message(to, client_ref=ref)
    message.account = account
    message.accepted_at = message.due_at = at
    return message


async def accept(journal: BackendJournal, *messages: Message) -> list[list[Message] | Duplicate]:
    return await journal.accept([[m] for m in messages])


async def test_the_same_client_id_in_two_accounts_is_two_messages(journal: BackendJournal) -> None:
    a, b, again = await accept(
        journal, of("acme", "order-1"), of("other", "order-1"), of("acme", "order-1")
    )
    assert isinstance(a, list)
    assert isinstance(b, list)
    assert again == Duplicate("order-1", [a[0].msg_id])
    stored = await journal.get([a[0].msg_id, b[0].msg_id])
    assert [stored[m[0].msg_id].account for m in (a, b)] == ["acme", "other"]


async def test_an_account_lists_its_own_messages_only_newest_first(journal: BackendJournal) -> None:
    results = await accept(
        journal,
        of("acme", "a", at=100.0),
        of("other", "a", at=101.0),
        of("acme", "b", at=102.0),
        of("acme", None, at=103.0),
    )
    ids = [r[0].msg_id for r in results if isinstance(r, list)]
    await journal.record(
        [MarkFinal(msg_id=ids[2], outcome="DELIVRD", code="0", error=None, at=104.0)]
    )
    listed = await journal.messages_of("acme")
    assert [item.message.msg_id for item in listed] == [ids[3], ids[2], ids[0]]
    assert [item.status for item in listed] == ["accepted", "delivered", "accepted"]
    assert [i.message.msg_id for i in await journal.messages_of("acme", client_ref="a")] == [ids[0]]
    delivered = await journal.messages_of("acme", status="delivered")
    assert [i.message.msg_id for i in delivered] == [ids[2]]
    assert [i.message.msg_id for i in await journal.messages_of("acme", since=102.0)] == [
        ids[3],
        ids[2],
    ]
    page = await journal.messages_of("acme", before=ids[3], limit=1)
    assert [i.message.msg_id for i in page] == [ids[2]]
    assert await journal.messages_of("nobody") == []


async def test_messages_are_counted_per_account_and_utc_day(journal: BackendJournal) -> None:
    day = 20_000
    late, early = day * 86400.0 - 1, day * 86400.0
    await accept(journal, of("acme", None, at=late), of("acme", None, at=early))
    await journal.accept([[of("acme", "two", at=early), of("acme", "two", at=early)]])
    await accept(journal, of("acme", "two", at=early))  # a duplicate counts nothing
    assert await journal.accepted_today("acme", day - 1) == 1
    assert await journal.accepted_today("acme", day) == 3
    assert await journal.accepted_today("other", day) == 0


async def test_accepts_sharing_a_commit_see_each_others_client_ids_and_counts(
    journal: BackendJournal,
) -> None:
    """One-message requests are an accept each, and a commit holds many: a client id one of
    them took is a duplicate for the next (SQLite writes their rows only at the commit's
    end), and each counts in its account's day."""
    day = 20_000
    at = day * 86400.0
    answers: dict[int, list[list[Message] | Duplicate]] = {}

    async def accept_in_task(n: int, message: Message) -> None:
        answers[n] = await journal.accept([[message]])

    plan = [of("acme", "order-1", at=at), of("acme", None, at=at), of("acme", "order-1", at=at)]
    plan += [of("other", "order-1", at=at), of("acme", "order-2", at=at)]
    commits = journal.commits
    async with anyio.create_task_group() as tg:
        release = await park_writer(journal, tg)
        for n, message in enumerate(plan):
            tg.start_soon(accept_in_task, n, message)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert journal.commits == commits + 1
    [first], [plain], [again], [theirs], [second] = (answers[n] for n in range(len(plan)))
    assert isinstance(first, list)
    assert again == Duplicate("order-1", [first[0].msg_id])
    assert isinstance(plain, list)
    assert isinstance(theirs, list)
    assert isinstance(second, list)
    ids = [int(group[0].msg_id) for group in (first, plain, theirs, second)]
    assert ids == sorted(ids)
    assert len(await journal.get([str(i) for i in ids])) == 4
    assert await journal.accepted_today("acme", day) == 3
    assert await journal.accepted_today("other", day) == 1
    assert await journal.pending_count() == 4


async def test_a_version_7_journal_gets_accounts(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with open_sqlite_journal(path) as journal:
        [first] = await journal.accept([[of("", "order-1")]])
        assert isinstance(first, list)
        old = first[0]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(UNDO_VERSION_8 + "PRAGMA user_version = 7;")
    async with open_sqlite_journal(path) as journal:
        # Rows from before accounts are account '' and keep their ids among themselves.
        again, fresh = await accept(journal, of("", "order-1"), of("acme", "order-1"))
        assert again == Duplicate("order-1", [old.msg_id])
        assert isinstance(fresh, list)
        assert [i.message.msg_id for i in await journal.messages_of("")] == [old.msg_id]
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        body = connection.execute(
            "SELECT account, body FROM messages WHERE msg_id = ?", (old.msg_id,)
        ).fetchone()
        assert body[0] == ""
        # (The body leaves out fields at their defaults: decoded, it is account '' too.)
        assert msgspec.msgpack.decode(body[1], type=Message).account == ""
