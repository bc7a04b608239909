"""The durable event feed on a real journal, SQLite and PostgreSQL: events commit with their
state change, the feed reads are resumable and non-destructive, history is in order, the
retention sweep deletes only old rows (and never one a webhook still owes), ids never go
back."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from engine.feed import AppendEvents, DeliveryOutcome, FeedPage
from engine.journal import JournalError, MarkFinal
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import CancelledEvent, DeliveryReport, Message
from tests.engine.journal_backends import BackendJournal, JournalOpener
from tests.engine.test_journal import park_writer
from tests.engine.test_journal_sqlite import UNDO_VERSION_8, UNDO_VERSION_10

pytestmark = pytest.mark.anyio


T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def message(to: str, *, callback_url: str | None = None, client_ref: str | None = None) -> Message:
    return Message(
        msg_id="",
        reference="",
        origin="client-1",
        client_ref=client_ref,
        to=to,
        sender="ACME",
        text="Hello",
        encoding="GSM-7",
        segments=1,
        cost=0.02,
        currency="USD",
        bridges=("dsc",),
        accepted_at=T0,
        due_at=T0,
        callback_url=callback_url,
    )


async def accept(journal: BackendJournal, *messages: Message) -> list[Message]:
    [group] = await journal.accept([list(messages)])
    assert isinstance(group, list)
    return group


def report(msg_id: str, state: str = "DELIVRD") -> DeliveryReport:
    return DeliveryReport(
        id=None,
        msg_id=msg_id,
        ts=dt.datetime.fromtimestamp(T0 + 5, dt.UTC),
        state=state,
        provider_status=state,
        bridge="dsc",
    )


def decoded(bodies: list[bytes]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(body) for body in bodies]


def final_with_report(msg_id: str, *, account: str = "default") -> list[Any]:
    """What engine.lifecycle makes of a final report: the change, then its feed events."""
    return [
        MarkFinal(msg_id=msg_id, outcome="DELIVRD", code=None, error=None, at=T0 + 5),
        AppendEvents(account=account, msg_id=msg_id, callback_url=None, events=[report(msg_id)]),
    ]


async def test_accepting_a_message_puts_its_accepted_event_in_the_feed(
    opener: JournalOpener,
) -> None:
    async with opener(clock=Clock()) as journal:
        first, second = await accept(
            journal, message("+250788100001", client_ref="a"), message("+250788100002")
        )
        page = await journal.feed("default", 0, 10)
        events = decoded(page.events)
        assert [(e["event_id"], e["event"], e["msg_id"], e["id"]) for e in events] == [
            (1, "accepted", first.msg_id, "a"),
            (2, "accepted", second.msg_id, None),
        ]
        # The body is the NDJSON event with its id put first.
        assert page.events[0].startswith(b'{"event_id":1,"event":"accepted",')
        assert events[0]["to"] == "+250788100001"
        assert events[0]["ts"] == "1970-01-12T13:46:40Z"
        assert page.next_cursor == 2


async def test_the_feed_is_resumable_and_reading_it_takes_nothing_away(
    opener: JournalOpener,
) -> None:
    async with opener(clock=Clock()) as journal:
        messages = await accept(journal, *(message(f"+25078810000{n}") for n in range(5)))
        first = await journal.feed("default", 0, 2)
        assert [e["event_id"] for e in decoded(first.events)] == [1, 2]
        assert first.next_cursor == 2
        again = await journal.feed("default", 0, 2)
        assert again == first  # non-destructive: the same cursor reads the same events
        second = await journal.feed("default", first.next_cursor, 2)
        assert [e["event_id"] for e in decoded(second.events)] == [3, 4]
        await journal.record(final_with_report(messages[0].msg_id))
        third = await journal.feed("default", second.next_cursor, 10)
        assert [(e["event_id"], e["event"]) for e in decoded(third.events)] == [
            (5, "accepted"),
            (6, "dlr"),
        ]
        end = await journal.feed("default", third.next_cursor, 10)
        assert (end.events, end.next_cursor) == ([], 6)


async def test_an_account_reads_only_its_own_events(opener: JournalOpener) -> None:
    async with opener(clock=Clock()) as journal:
        [kept] = await accept(journal, message("+250788100001"))
        await journal.record(final_with_report(kept.msg_id, account="acme"))
        default = decoded((await journal.feed("default", 0, 10)).events)
        acme = decoded((await journal.feed("acme", 0, 10)).events)
        assert [e["event"] for e in default] == ["accepted"]
        assert [(e["event_id"], e["event"]) for e in acme] == [(2, "dlr")]
        assert (await journal.feed("nobody", 0, 10)).events == []


async def test_only_the_accounts_that_keep_a_feed_have_their_events_stored(
    opener: JournalOpener,
) -> None:
    """`feed_accounts` (the daemon's: accounts with an API key or `feed = true`): the others'
    events take their ids but no row, unless a webhook is owed for them."""
    async with opener(clock=Clock(), feed_accounts=["acme"]) as journal:
        quiet, hooked = await accept(
            journal,
            message("+250788100001"),
            message("+250788100002", callback_url="https://hooks.example.com/e"),
        )
        await journal.record(final_with_report(quiet.msg_id, account="default"))
        await journal.record(final_with_report(quiet.msg_id, account="acme"))
        default = decoded((await journal.feed("default", 0, 10)).events)
        acme = decoded((await journal.feed("acme", 0, 10)).events)
        # Ids 1 and 3 were handed out and not stored: no reader, no webhook.
        assert [(e["event_id"], e["event"], e["msg_id"]) for e in default] == [
            (2, "accepted", hooked.msg_id)
        ]
        assert [(e["event_id"], e["event"]) for e in acme] == [(4, "dlr")]
        history = await journal.history(quiet.msg_id)
        assert [e["event"] for e in decoded(history or [])] == ["dlr"]


async def test_a_record_of_several_lifecycle_steps_keeps_each_state_and_event_in_order(
    opener: JournalOpener,
) -> None:
    # What the dispatcher records for a request: each message's change, then its events,
    # one message after another (the backends write each kind of change together).
    async with opener(clock=Clock()) as journal:
        sent = await accept(journal, *(message(f"+25078810000{n}") for n in range(3)))
        await journal.record([step for m in sent for step in final_with_report(m.msg_id)])
        found = await journal.get([m.msg_id for m in sent])
        assert [found[m.msg_id].state for m in sent] == ["final"] * 3
        events = decoded((await journal.feed("default", 3, 10)).events)
        assert [(e["event_id"], e["event"], e["msg_id"]) for e in events] == [
            (4 + n, "dlr", m.msg_id) for n, m in enumerate(sent)
        ]
        assert await journal.pending_count() == 0


async def test_history_lists_a_messages_events_in_order(opener: JournalOpener) -> None:
    async with opener(clock=Clock()) as journal:
        one, two = await accept(journal, message("+250788100001"), message("+250788100002"))
        await journal.record(final_with_report(two.msg_id))
        cancelled = CancelledEvent(
            id=None, msg_id=one.msg_id, ts=dt.datetime.fromtimestamp(T0, dt.UTC)
        )
        await journal.record(
            [
                AppendEvents(
                    account="default", msg_id=one.msg_id, callback_url=None, events=[cancelled]
                )
            ]
        )
        assert [e["event"] for e in decoded(await journal.history(one.msg_id) or [])] == [
            "accepted",
            "cancelled",
        ]
        assert [e["event"] for e in decoded(await journal.history(two.msg_id) or [])] == [
            "accepted",
            "dlr",
        ]
        assert await journal.history("999") is None
        assert await journal.history("not-a-number") is None


async def test_an_event_that_cannot_be_stored_undoes_its_state_change(
    opener: JournalOpener,
) -> None:
    async with opener(clock=Clock()) as journal:
        [sent] = await accept(journal, message("+250788100001"))
        broken = AppendEvents(
            account="default", msg_id="x", callback_url=None, events=[report("x")]
        )
        with pytest.raises(ValueError, match="invalid literal"):
            await journal.record(
                [
                    MarkFinal(msg_id=sent.msg_id, outcome="DELIVRD", code=None, error=None, at=T0),
                    broken,
                ]
            )
        assert await journal.pending_count() == 1  # the final state went with its event
        assert [e["event"] for e in decoded(await journal.history(sent.msg_id) or [])] == [
            "accepted"
        ]


async def test_the_sweep_deletes_only_old_events_and_never_an_owed_one(
    opener: JournalOpener,
) -> None:
    clock = Clock()
    async with opener(clock=clock) as journal:
        old = await accept(
            journal,
            message("+250788100001"),
            message("+250788100002"),
            message("+250788100003", callback_url="http://127.0.0.1:9/hook"),
        )
        clock.now = T0 + 100
        new = await accept(journal, message("+250788100004"))
        # A bounded sweep: at most `limit` rows a call.
        assert await journal.sweep_events(T0 + 50, 1) == 1
        assert await journal.sweep_events(T0 + 50, 10) == 1  # the owed one stays
        kept = decoded((await journal.feed("default", 0, 10)).events)
        assert [e["msg_id"] for e in kept] == [old[2].msg_id, new[0].msg_id]
        # Once its webhook is delivered, it goes too; the new one is younger than the cut.
        await journal.settle_deliveries([DeliveryOutcome(event_id=3, attempts=1)])
        assert await journal.sweep_events(T0 + 50, 10) == 1
        assert [e["msg_id"] for e in decoded((await journal.feed("default", 0, 10)).events)] == [
            new[0].msg_id
        ]
        assert await journal.history(old[0].msg_id) == []  # known message, events swept


async def test_event_ids_never_go_back_after_a_sweep_and_a_restart(opener: JournalOpener) -> None:
    clock = Clock()
    async with opener(clock=clock) as journal:
        await accept(journal, message("+250788100001"), message("+250788100002"))
        assert await journal.sweep_events(T0 + 1, 10) == 2  # the table is empty now
    async with opener(clock=clock) as journal:
        await accept(journal, message("+250788100003"))
        page = await journal.feed("default", 0, 10)
        assert [e["event_id"] for e in decoded(page.events)] == [3]


async def test_deliveries_are_owed_with_the_event_and_settled_in_batches(
    opener: JournalOpener,
) -> None:
    clock = Clock()
    url = "http://127.0.0.1:9/hook"
    async with opener(clock=clock) as journal:
        one, two = await accept(
            journal,
            message("+250788100001", callback_url=url),
            message("+250788100002", callback_url=url),
        )
        await journal.record(
            [
                AppendEvents(
                    account="default",
                    msg_id=one.msg_id,
                    callback_url=url,
                    events=[report(one.msg_id)],
                )
            ]
        )
        due = await journal.due_deliveries(T0, 10)
        assert [(d.event_id, d.msg_id, d.url, d.attempts, d.gone) for d in due] == [
            (1, one.msg_id, url, 0, False),
            (2, two.msg_id, url, 0, False),
            (3, one.msg_id, url, 0, False),
        ]
        assert due[0].body is not None
        assert msgspec.json.decode(due[0].body)["event_id"] == 1
        assert [d.event_id for d in await journal.due_deliveries(T0, 10, frozenset({1, 2}))] == [3]
        await journal.settle_deliveries(
            [
                DeliveryOutcome(event_id=1, attempts=1, gone=True),  # 410 for message one
                DeliveryOutcome(event_id=2, attempts=1, next_at=T0 + 30),
            ]
        )
        [left] = await journal.due_deliveries(T0, 10)
        assert (left.event_id, left.gone) == (3, True)  # its URL is gone for this message
        assert await journal.next_delivery_at() == T0
        # After a time: the next retry, not one due by then (being sent, or read already).
        assert await journal.next_delivery_at(after=T0) == T0 + 30
        assert await journal.next_delivery_at(after=T0 + 30) is None
        assert await journal.deliveries_owed() == 2
        [retry] = await journal.due_deliveries(T0 + 30, 10, frozenset({3}))
        assert (retry.event_id, retry.attempts) == (2, 1)


async def test_a_version_6_journal_gets_the_feed(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path, clock=Clock()) as journal:
        [old] = await accept(journal, message("+250788100001"))
    with sqlite3.connect(path) as connection:
        connection.executescript(
            UNDO_VERSION_8 + "DROP TABLE events; DROP TABLE deliveries; DROP TABLE deliveries_gone;"
            " ALTER TABLE messages DROP COLUMN first_event; PRAGMA user_version = 6;"
        )
    async with open_sqlite_journal(path, clock=Clock()) as journal:
        assert await journal.history(old.msg_id) == []  # from before the feed: no events
        [new] = await accept(journal, message("+250788100002"))
        assert [e["msg_id"] for e in decoded((await journal.feed("default", 0, 10)).events)] == [
            new.msg_id
        ]


# ── packs: a run of one account's events in one commit (engine.feed) ───────────────


async def campaign(journal: BackendJournal) -> list[Message]:
    """20 messages of the default account (the 10th with a webhook) and 9 of acme's, in one
    accept (events 1-29), then the default's 20 reports in one record (30-49)."""
    hook = "http://127.0.0.1:9/hook"
    ours = [
        message(f"+2507881000{n:02d}", callback_url=hook if n == 9 else None) for n in range(20)
    ]
    theirs = [
        msgspec.structs.replace(message(f"+2507882000{n:02d}"), account="acme") for n in range(9)
    ]
    groups = await journal.accept([ours, theirs])
    assert all(isinstance(group, list) for group in groups)
    await journal.record(
        [
            *(
                MarkFinal(msg_id=m.msg_id, outcome="DELIVRD", code=None, error=None, at=T0)
                for m in ours
            ),
            *(
                AppendEvents(
                    account="default",
                    msg_id=m.msg_id,
                    callback_url=m.callback_url,
                    events=[report(m.msg_id)],
                )
                for m in ours
            ),
        ]
    )
    return ours


async def test_a_campaigns_events_are_read_one_by_one_whatever_rows_hold_them(
    opener: JournalOpener,
) -> None:
    async with opener(clock=Clock()) as journal:
        ours = await campaign(journal)
        pages: list[bytes] = []
        cursor = 0
        for _ in range(10):  # pages of 7 cut through every pack
            page = await journal.feed("default", cursor, 7)
            if not page.events:
                break
            pages += page.events
            cursor = page.next_cursor
        events = decoded(pages)
        assert [e["event_id"] for e in events] == [*range(1, 21), *range(30, 50)]
        assert [(e["event"], e["msg_id"]) for e in events] == [
            *(("accepted", m.msg_id) for m in ours),
            *(("dlr", m.msg_id) for m in ours),
        ]
        assert pages[3].startswith(b'{"event_id":4,"event":"accepted",')
        assert cursor == 49
        middle = await journal.feed("default", 4, 3)  # from inside a pack
        assert (middle.events, middle.next_cursor) == (pages[4:7], 7)
        acme = decoded((await journal.feed("acme", 0, 100)).events)
        assert [e["event_id"] for e in acme] == list(range(21, 30))
        # History picks the message's own events out of the packs, as stored.
        assert await journal.history(ours[2].msg_id) == [pages[2], pages[22]]
        # The events owed to the webhook are the same bodies the feed reads.
        due = await journal.due_deliveries(T0, 10)
        assert [(d.event_id, d.body) for d in due] == [(10, pages[9]), (39, pages[29])]


async def test_an_accept_of_one_message_groups_keeps_each_event_in_its_place(
    opener: JournalOpener,
) -> None:
    """The HTTP API's requests are a group per message: groups of several accounts, one
    that keeps no feed and one owed a webhook, in one accept, each event with its id."""
    hook = "https://hooks.example.com/e"

    def of(account: str, n: int, url: str | None = None) -> list[Message]:
        return [
            msgspec.structs.replace(
                message(f"+2507881000{n:02d}", callback_url=url), account=account
            )
        ]

    plan = [("acme", None)] * 9 + [("acme", hook)] + [("acme", None)] * 3 + [("quiet", None)]
    plan += [("other", None)] * 2 + [("acme", None)]
    async with opener(clock=Clock(), feed_accounts=["acme", "other"]) as journal:
        groups = await journal.accept(
            [of(account, n, url) for n, (account, url) in enumerate(plan)]
        )
        sent = [group[0] for group in groups if isinstance(group, list)]
        acme = decoded((await journal.feed("acme", 0, 100)).events)
        assert [e["msg_id"] for e in acme] == [m.msg_id for m in sent if m.account == "acme"]
        other = decoded((await journal.feed("other", 0, 100)).events)
        assert [e["msg_id"] for e in other] == [m.msg_id for m in sent if m.account == "other"]
        # Each event its own id, in the order of the messages.
        both = sorted(acme + other, key=lambda e: int(e["event_id"]))
        assert len({e["event_id"] for e in both}) == len(both)
        assert [e["msg_id"] for e in both] == [m.msg_id for m in sent if m.account != "quiet"]
        assert await journal.feed("quiet", 0, 100) == FeedPage([], 0)
        for one in sent:
            history = decoded(await journal.history(one.msg_id) or [])
            assert [e["msg_id"] for e in history] == (
                [] if one.account == "quiet" else [one.msg_id]
            )
        [due] = await journal.due_deliveries(T0, 10)
        assert (due.event_id, due.msg_id) == (acme[9]["event_id"], sent[9].msg_id)


async def test_a_sqlite_journal_packs_each_accounts_runs_and_sweeps_them_whole(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db", clock=Clock()) as journal:
        await campaign(journal)
        with sqlite3.connect(tmp_path / "septet.db") as connection:
            rows = connection.execute("SELECT id, account, n FROM events ORDER BY id").fetchall()
        # Runs of one account between its webhook's events; an owed event stays alone.
        assert rows == [
            (9, "default", 9),
            (10, "default", 1),
            (20, "default", 10),
            (29, "acme", 9),
            (38, "default", 9),
            (39, "default", 1),
            (49, "default", 10),
        ]
        # At most 3 rows: the first three by id, but event 10 is owed.
        assert await journal.sweep_events(T0 + 1, 3) == 9 + 10
        assert await journal.sweep_events(T0 + 1, 2000) == 9 + 9 + 10
        kept = decoded((await journal.feed("default", 0, 100)).events)
        assert [e["event_id"] for e in kept] == [10, 39]


async def test_a_sqlite_journal_packs_runs_from_three_events(tmp_path: Path) -> None:
    """The small commits of a lightly loaded daemon: two events stay a row each, three of
    one account make a pack; both read back as events of their own."""
    async with open_sqlite_journal(tmp_path / "septet.db", clock=Clock()) as journal:
        two = await accept(journal, *(message(f"+25078810000{n}") for n in range(2)))
        three = await accept(journal, *(message(f"+25078810001{n}") for n in range(3)))
        events = decoded((await journal.feed("default", 0, 100)).events)
        assert [(e["event_id"], e["msg_id"]) for e in events] == [
            (n + 1, m.msg_id) for n, m in enumerate([*two, *three])
        ]
        assert [e["msg_id"] for e in decoded(await journal.history(three[1].msg_id) or [])] == [
            three[1].msg_id
        ]
    with sqlite3.connect(tmp_path / "septet.db") as connection:
        rows = connection.execute("SELECT id, msg_id, n FROM events ORDER BY id").fetchall()
    assert rows == [(1, int(two[0].msg_id), 1), (2, int(two[1].msg_id), 1), (5, 0, 3)]


async def test_a_version_9_journal_reads_its_events_with_the_packs_written_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path, clock=Clock()) as journal:
        old = await accept(journal, message("+250788100001"), message("+250788100002"))
    with sqlite3.connect(path) as connection:
        connection.executescript(UNDO_VERSION_10 + "PRAGMA user_version = 9;")
    async with open_sqlite_journal(path, clock=Clock()) as journal:
        new = await accept(journal, *(message(f"+2507881001{n:02d}") for n in range(10)))
        events = decoded((await journal.feed("default", 0, 100)).events)
        assert [(e["event_id"], e["msg_id"]) for e in events] == [
            (n + 1, m.msg_id) for n, m in enumerate([*old, *new])
        ]
        assert [e["event"] for e in decoded(await journal.history(old[1].msg_id) or [])] == [
            "accepted"
        ]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 10
        rows = connection.execute("SELECT id, n FROM events ORDER BY id").fetchall()
        assert rows == [(1, 1), (2, 1), (12, 10)]


async def test_the_events_of_calls_sharing_a_commit_are_each_read_in_their_place(
    opener: JournalOpener,
) -> None:
    """Each one-message request's accept and each dispatcher's submits is a call of its own;
    calls that share a commit hand out their events' ids in call order, and every event
    reads back (feed, history) as stored alone. SQLite writes one account's events of the
    commit as one pack, whichever call they came from (engine.journal.sqlite)."""
    async with opener(clock=Clock()) as journal:
        sent = await accept(journal, *(message(f"+2507881000{n:02d}") for n in range(9)))
        fresh: list[Message] = []

        async def accept_fresh() -> None:
            fresh.extend(await accept(journal, message("+250788100099")))

        commits = journal.commits
        async with anyio.create_task_group() as tg:
            release = await park_writer(journal, tg)
            for n, one in enumerate(sent):
                tg.start_soon(journal.record, final_with_report(one.msg_id))
                if n == 4:
                    tg.start_soon(accept_fresh)
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert journal.commits == commits + 1
        events = decoded((await journal.feed("default", 9, 100)).events)
        order = [*sent[:5], *fresh, *sent[5:]]
        assert [(e["event_id"], e["msg_id"]) for e in events] == [
            (10 + n, m.msg_id) for n, m in enumerate(order)
        ]
        assert [e["event"] for e in events] == ["dlr"] * 5 + ["accepted"] + ["dlr"] * 4
        assert await journal.pending_count() == 1
        for one in sent:
            history = decoded(await journal.history(one.msg_id) or [])
            assert [(e["event"], e["msg_id"]) for e in history] == [
                ("accepted", one.msg_id),
                ("dlr", one.msg_id),
            ]
        middle = await journal.feed("default", 12, 3)  # from inside the commit's events
        assert [e["event_id"] for e in decoded(middle.events)] == [13, 14, 15]
    if isinstance(journal, SqliteJournal):
        with sqlite3.connect(journal.path) as connection:
            rows = connection.execute("SELECT id, n FROM events ORDER BY id").fetchall()
        assert rows == [(9, 9), (19, 10)]


async def test_a_bad_event_in_a_shared_sqlite_commit_fails_its_call_alone(tmp_path: Path) -> None:
    """SQLite holds a commit's events until its end, and a bad one still fails only the
    call that brought it: the others' states and events commit (the group runs again, each
    call in its own savepoint). (PostgreSQL fails such a group whole.)"""
    async with open_sqlite_journal(tmp_path / "septet.db", clock=Clock()) as journal:
        first, middle, last = await accept(
            journal, *(message(f"+25078810000{n}") for n in range(3))
        )
        # Another account's: an event alone in its run is a row of its own, and "x" no msg_id.
        broken = AppendEvents(account="other", msg_id="x", callback_url=None, events=[report("x")])
        outcomes: dict[str, BaseException | None] = {}

        async def record(name: str, changes: list[Any]) -> None:
            try:
                await journal.record(changes)
                outcomes[name] = None
            except ValueError as error:
                outcomes[name] = error

        async with anyio.create_task_group() as tg:
            release = await park_writer(journal, tg)
            tg.start_soon(record, "first", final_with_report(first.msg_id))
            tg.start_soon(record, "bad", [*final_with_report(middle.msg_id)[:1], broken])
            tg.start_soon(record, "last", final_with_report(last.msg_id))
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert outcomes["first"] is None
        assert outcomes["last"] is None
        assert isinstance(outcomes["bad"], ValueError)
        assert await journal.pending_count() == 1
        events = decoded((await journal.feed("default", 3, 100)).events)
        assert [(e["event"], e["msg_id"]) for e in events] == [
            ("dlr", first.msg_id),
            ("dlr", last.msg_id),
        ]
        ids = [e["event_id"] for e in events]
        assert ids == sorted(ids)
        assert [e["event"] for e in decoded(await journal.history(middle.msg_id) or [])] == [
            "accepted"
        ]


async def test_a_closed_journal_says_so(opener: JournalOpener) -> None:
    async with opener() as journal:
        assert (await journal.feed("default", 0, 10)).events == []  # open, and empty
    with pytest.raises(JournalError, match="is closed"):
        await journal.feed("default", 0, 10)
