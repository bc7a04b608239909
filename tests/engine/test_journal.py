"""The Journal contract (engine/journal/interface.py) on every backend: ids, idempotency,
group commit, every change, queries. Each test runs once per backend
(tests/engine/journal_backends.py); what only SQLite has is in test_journal_sqlite.py,
what only PostgreSQL has in test_journal_postgres.py."""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

import anyio
import anyio.abc
import pytest

from engine.journal import (
    Change,
    Duplicate,
    Journal,
    JournalError,
    MarkCharged,
    MarkFinal,
    MarkInflight,
    MarkPolled,
    MarkRetry,
    MarkSubmitted,
    SchedulePolls,
    StoreEvents,
    StoreOrphanReceipt,
)
from engine.journal.sqlite import SqliteJournal
from engine.models import Message
from tests.engine.journal_backends import BackendJournal, JournalOpener

pytestmark = pytest.mark.anyio

# `journal` and `opener` (tests/engine/journal_backends.py): each test that takes one runs
# on every backend.


def make_message(
    to: str = "+250782589800",
    *,
    client_ref: str | None = None,
    priority: int = 0,
    due_at: float = 100.0,
    bridges: tuple[str, ...] = ("dsc", "bsg"),
    dlr: bool = True,
    text: str = "Hello",
) -> Message:
    return Message(
        msg_id="",
        reference="",
        origin="client-1",
        client_ref=client_ref,
        to=to,
        sender="ACME",
        text=text,
        encoding="GSM-7",
        segments=1,
        cost=0.02,
        currency="USD",
        bridges=bridges,
        priority=priority,
        accepted_at=due_at,
        due_at=due_at,
        dlr=dlr,
    )


async def stored_row(journal: BackendJournal, columns: str, msg_id: str) -> tuple[object, ...]:
    """Columns of a message's row as the journal stores them, on either backend."""
    sql = f"SELECT {columns} FROM messages WHERE msg_id = "  # noqa: S608 - the test's own
    if isinstance(journal, SqliteJournal):
        return tuple(
            await journal._execute(
                lambda c: c.execute(sql + "?", (int(msg_id),)).fetchone(), write=False
            )
        )
    row = await journal._execute(
        lambda c: c.execute(sql + "%s", (int(msg_id),)).fetchone(), write=False
    )
    assert row is not None
    return tuple(row)


async def accept_one(journal: Journal, message: Message) -> Message:
    [group] = await journal.accept([[message]])
    assert isinstance(group, list)
    return group[0]


async def park_writer(journal: BackendJournal, tg: anyio.abc.TaskGroup) -> threading.Event:
    """Park the writer thread until the returned event is set, so callers pile up in its
    queue and the next group holds all of them."""
    holding, release = threading.Event(), threading.Event()

    def park(connection: object) -> None:
        holding.set()
        release.wait(timeout=10)

    tg.start_soon(functools.partial(journal._execute, park, write=False))
    assert await anyio.to_thread.run_sync(holding.wait, 10)
    return release


# ── accept ─────────────────────────────────────────────────────────────────────


async def test_accept_assigns_increasing_ids_and_references_that_continue_after_reopen(
    opener: JournalOpener,
) -> None:
    async with opener() as journal:
        instance = journal.instance
        results = await journal.accept(
            [[make_message("+250782589801"), make_message("+250782589802")], [make_message()]]
        )
    assert re.fullmatch(r"[a-z0-9]{6}", instance)
    first_ids = [m.msg_id for group in results if isinstance(group, list) for m in group]
    assert first_ids == ["1", "2", "3"]
    async with opener() as journal:
        assert journal.instance == instance
        later = await accept_one(journal, make_message())
        stored = await journal.get(["1", "2", "3", "4"])
    assert later.msg_id == "4"
    assert later.reference == f"{instance}-4"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", later.reference)
    assert sorted(stored, key=int) == ["1", "2", "3", "4"]
    assert stored["2"].to == "+250782589802"
    assert stored["2"].reference == f"{instance}-2"


async def test_a_call_with_a_bad_group_stores_nothing_and_the_journal_goes_on(
    journal: BackendJournal,
) -> None:
    good = [make_message("+250782589801"), make_message("+250782589802")]
    routeless = [make_message("+250782589803"), make_message("+250782589804", bridges=())]
    with pytest.raises(ValueError, match="has no bridge"):
        await journal.accept([good, routeless])
    assert await journal.pending_count() == 0
    assert await journal.get(["1", "2", "3", "4"]) == {}
    assert all(m.msg_id == "" for m in good + routeless)
    after = await accept_one(journal, make_message())
    if isinstance(journal, SqliteJournal):
        # The ids of the undone call are given out again: nobody ever saw them.
        assert after.msg_id == "1"
    else:
        # A sequence shared by the nodes never goes back: ids are unique, not dense.
        assert int(after.msg_id) > 4
    assert list(await journal.get([after.msg_id])) == [after.msg_id]


async def test_a_client_ref_seen_before_is_a_duplicate_naming_the_first_messages(
    journal: BackendJournal,
) -> None:
    [first] = await journal.accept(
        [[make_message("+250782589801", client_ref="A"), make_message(client_ref="A")]]
    )
    assert isinstance(first, list)
    again, fresh = await journal.accept(
        [[make_message("+250782589809", client_ref="A")], [make_message(client_ref="B")]]
    )
    assert again == Duplicate(client_ref="A", msg_ids=["1", "2"])
    assert isinstance(fresh, list)
    assert fresh[0].msg_id == "3"
    assert await journal.pending_count() == 3


async def test_the_same_client_ref_twice_in_one_call_is_stored_once(
    journal: BackendJournal,
) -> None:
    results = await journal.accept(
        [
            [make_message(client_ref="X"), make_message("+250782589802", client_ref="X")],
            [make_message(client_ref="X")],
            [make_message()],
        ]
    )
    assert isinstance(results[0], list)
    assert results[1] == Duplicate(client_ref="X", msg_ids=["1", "2"])
    assert isinstance(results[2], list)
    assert results[2][0].msg_id == "3"


async def test_groups_without_client_ref_are_never_duplicates(journal: BackendJournal) -> None:
    results = await journal.accept([[make_message()], [make_message()]])
    assert all(isinstance(group, list) for group in results)
    assert await journal.pending_count() == 2


async def test_concurrent_accepts_share_commits_and_all_complete(journal: BackendJournal) -> None:
    callers = 200
    got: list[str] = []

    async def accept_in_task(index: int) -> None:
        message = await accept_one(journal, make_message(client_ref=f"line-{index}"))
        got.append(message.msg_id)

    commits_before = journal.commits
    async with anyio.create_task_group() as tg:
        release = await park_writer(journal, tg)
        for index in range(callers):
            tg.start_soon(accept_in_task, index)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert sorted(got, key=int) == [str(i) for i in range(1, callers + 1)]
    assert 0 < journal.commits - commits_before < callers
    assert await journal.pending_count() == callers


async def test_a_bad_call_in_a_shared_commit_fails_alone(journal: BackendJournal) -> None:
    # Calls that pile up share one transaction; one with bad data is undone by itself and
    # the others still commit (the group is rerun with a savepoint per call).
    outcomes: dict[str, Message | ValueError] = {}

    async def accept_in_task(name: str, message: Message) -> None:
        try:
            outcomes[name] = await accept_one(journal, message)
        except ValueError as error:
            outcomes[name] = error

    commits_before = journal.commits
    async with anyio.create_task_group() as tg:
        release = await park_writer(journal, tg)
        tg.start_soon(accept_in_task, "first", make_message("+250782589801"))
        tg.start_soon(accept_in_task, "bad", make_message("+250782589802", bridges=()))
        tg.start_soon(accept_in_task, "last", make_message("+250782589803"))
        await anyio.wait_all_tasks_blocked()
        release.set()
    first, last, bad = outcomes["first"], outcomes["last"], outcomes["bad"]
    assert isinstance(first, Message)
    assert isinstance(last, Message)
    assert (first.to, last.to) == ("+250782589801", "+250782589803")
    assert isinstance(bad, ValueError)
    assert journal.commits - commits_before == 1
    assert await journal.pending_count() == 2
    stored = await journal.get([first.msg_id, last.msg_id])
    assert sorted(m.to for m in stored.values()) == ["+250782589801", "+250782589803"]


# ── changes ────────────────────────────────────────────────────────────────────


async def test_a_message_goes_inflight_submitted_and_final(journal: BackendJournal) -> None:
    message = await accept_one(journal, make_message())
    await journal.record(
        [MarkInflight(msg_ids=[message.msg_id], bridge_index=1, attempt=2, at=5.0)]
    )
    [stuck] = await journal.inflight()
    assert (stuck.state, stuck.bridge_index, stuck.attempt, stuck.inflight_at) == (
        "inflight",
        1,
        2,
        5.0,
    )
    await journal.record(
        [MarkSubmitted(msg_id=message.msg_id, provider_id="P-1", cost=0.03, currency="EUR", at=6.0)]
    )
    found = await journal.find_by_provider_id("bsg", ["P-1", "P-unknown"])
    assert list(found) == ["P-1"]
    assert (found["P-1"].state, found["P-1"].provider_id) == ("submitted", "P-1")
    assert await journal.find_by_provider_id("dsc", ["P-1"]) == {}
    await journal.record(
        [MarkFinal(msg_id=message.msg_id, outcome="DELIVRD", code=None, error=None, at=7.0)]
    )
    assert (await journal.get([message.msg_id]))[message.msg_id].state == "final"
    assert await journal.pending_count() == 0
    assert await journal.counts() == {"accepted": 0, "inflight": 0, "submitted": 0, "final": 1}


async def test_changes_of_one_call_apply_in_order(journal: BackendJournal) -> None:
    message = await accept_one(journal, make_message())
    await journal.record(
        [
            MarkInflight(msg_ids=[message.msg_id], bridge_index=0, attempt=1, at=1.0),
            MarkRetry(
                msg_ids=[message.msg_id], due_at=500.0, attempt=1, bridge_index=1, reason="r"
            ),
            MarkInflight(msg_ids=[message.msg_id], bridge_index=1, attempt=2, at=2.0),
            MarkSubmitted(msg_id=message.msg_id, provider_id="Q", cost=None, currency=None, at=3.0),
        ]
    )
    stored = (await journal.get([message.msg_id]))[message.msg_id]
    assert (stored.state, stored.bridge_index, stored.attempt, stored.provider_id) == (
        "submitted",
        1,
        2,
        "Q",
    )


async def test_only_messages_that_asked_for_a_report_are_found_by_provider_id(
    journal: BackendJournal,
) -> None:
    reported = await accept_one(journal, make_message(dlr=True))
    quiet = await accept_one(journal, make_message(dlr=False))
    await journal.claim([reported, quiet], 0, 1.0)
    await journal.record(
        [
            MarkSubmitted(
                msg_id=reported.msg_id, provider_id="R", cost=None, currency=None, at=2.0
            ),
            MarkSubmitted(
                msg_id=quiet.msg_id, provider_id="Q", cost=None, currency=None, at=2.0, final=True
            ),
        ]
    )
    found = await journal.find_by_provider_id("dsc", ["R", "Q"])
    assert {pid: m.msg_id for pid, m in found.items()} == {"R": reported.msg_id}


async def test_find_and_record_records_what_decide_makes_of_the_messages_found(
    journal: BackendJournal,
) -> None:
    message = await accept_one(journal, make_message(dlr=True))
    await journal.claim([message], 0, 1.0)
    await journal.record(
        [MarkSubmitted(msg_id=message.msg_id, provider_id="F", cost=None, currency=None, at=2.0)]
    )
    seen: list[dict[str, str]] = []

    def decide(found: dict[str, Message]) -> tuple[list[Change], str]:
        seen.append({pid: m.state for pid, m in found.items()})
        final = MarkFinal(msg_id=message.msg_id, outcome="DELIVRD", code=None, error=None, at=3.0)
        return [final], "decided"

    assert await journal.find_and_record("dsc", ["F", "unknown"], decide) == "decided"
    assert seen[-1] == {"F": "submitted"}
    stored = (await journal.get([message.msg_id]))[message.msg_id]
    assert stored.state == "final"
    assert await journal.pending_count() == 0
    # Found again, final now: nothing decided, nothing recorded.
    assert await journal.find_and_record("dsc", ["F"], lambda found: ([], len(found))) == 1


async def test_a_failover_retry_moves_the_message_to_its_next_bridge(
    journal: BackendJournal,
) -> None:
    message = await accept_one(journal, make_message(due_at=1.0))
    assert await journal.claim([message], 0, 2.0) == [message]
    await journal.record(
        [MarkRetry(msg_ids=[message.msg_id], due_at=3.0, attempt=1, bridge_index=1, reason="down")]
    )
    [moved] = await journal.due(10.0, 10)
    assert (moved.bridge, moved.attempt) == ("bsg", 1)
    assert await journal.claim([moved], 1, 4.0) == [moved]
    await journal.record(
        [MarkSubmitted(msg_id=message.msg_id, provider_id="B-1", cost=None, currency=None, at=5.0)]
    )
    assert [d.message.msg_id for d in await journal.awaiting_poll("bsg", 10.0, 10)] == [
        message.msg_id
    ]
    assert await journal.awaiting_poll("dsc", 10.0, 10) == []
    assert list(await journal.find_by_provider_id("bsg", ["B-1"])) == ["B-1"]
    assert await journal.find_by_provider_id("dsc", ["B-1"]) == {}


async def test_submits_with_and_without_a_price_and_report_are_stored_as_given(
    journal: BackendJournal,
) -> None:
    messages = [await accept_one(journal, make_message()) for _ in range(4)]
    await journal.claim(messages, 0, 1.0)
    await journal.record(
        [
            MarkSubmitted(msg_id="1", provider_id="A", cost=0.5, currency="EUR", at=2.0),
            MarkSubmitted(msg_id="2", provider_id="B", cost=None, currency=None, at=2.0),
            MarkSubmitted(
                msg_id="3", provider_id="C", cost=0.7, currency="RWF", at=2.0, final=True
            ),
            MarkSubmitted(
                msg_id="4", provider_id=None, cost=None, currency=None, at=2.0, final=True
            ),
        ]
    )
    assert await journal.counts() == {"accepted": 0, "inflight": 0, "submitted": 2, "final": 2}
    stored = await journal.get(["1", "2", "3", "4"])
    assert [stored[i].provider_id for i in "1234"] == ["A", "B", "C", None]
    assert [stored[i].state for i in "1234"] == ["submitted", "submitted", "final", "final"]
    columns = "submit_cost, submit_currency, submitted_at, outcome, final_at"
    rows = [await stored_row(journal, columns, msg_id) for msg_id in "1234"]
    assert rows == [
        (0.5, "EUR", 2.0, None, None),
        (None, None, 2.0, None, None),
        (0.7, "RWF", 2.0, "SUBMITTED", 2.0),
        (None, None, 2.0, "SUBMITTED", 2.0),
    ]


async def test_a_request_s_many_submits_are_each_stored_and_a_stale_one_dropped(
    journal: BackendJournal,
) -> None:
    """70 submits in one record (more rows than one statement takes on SQLite), one of them
    for a message already final: that one changes nothing, the others are stored."""
    [group] = await journal.accept([[make_message(dlr=False) for _ in range(70)]])
    assert isinstance(group, list)
    await journal.claim(group, 0, 1.0)
    await journal.record([MarkFinal(msg_id="70", outcome="EXPIRED", code=None, error=None, at=1.5)])
    await journal.record(
        [
            MarkSubmitted(
                msg_id=m.msg_id,
                provider_id=f"P-{m.msg_id}",
                cost=None,
                currency=None,
                at=2.0,
                final=True,
            )
            for m in group
        ]
    )
    assert await journal.counts() == {"accepted": 0, "inflight": 0, "submitted": 0, "final": 70}
    assert await journal.pending_count() == 0
    rows = [await stored_row(journal, "provider_id, outcome", m.msg_id) for m in group]
    assert rows == [(f"P-{n}", "SUBMITTED") for n in range(1, 70)] + [(None, "EXPIRED")]


async def test_a_charge_stated_in_a_report_is_kept_with_the_final_state_once(
    journal: BackendJournal,
) -> None:
    """Route Mobile states its charge only in the report: kept where a submit's charge is,
    in the commit that makes the message final; a later one finds it final and is dropped."""
    messages = [await accept_one(journal, make_message()) for _ in range(2)]
    await journal.claim(messages, 0, 1.0)
    await journal.record(
        [
            MarkSubmitted(msg_id="1", provider_id="A", cost=None, currency=None, at=2.0),
            MarkSubmitted(msg_id="2", provider_id="B", cost=None, currency=None, at=2.0),
        ]
    )
    await journal.record(
        [
            MarkCharged(msg_id="1", cost=2.0, currency="INR"),
            MarkFinal(msg_id="1", outcome="DELIVRD", code=None, error=None, at=3.0),
            MarkCharged(msg_id="2", cost=1.5, currency=None),
            MarkFinal(msg_id="2", outcome="UNDELIV", code="001", error=None, at=3.0),
        ]
    )
    assert await journal.pending_count() == 0
    await journal.record([MarkCharged(msg_id="1", cost=9.0, currency="USD")])
    await journal.record(
        [
            MarkCharged(msg_id="2", cost=9.0, currency="USD"),
            MarkFinal(msg_id="2", outcome="DELIVRD", code=None, error=None, at=4.0),
        ]
    )
    columns = "submit_cost, submit_currency, outcome"
    rows = [await stored_row(journal, columns, msg_id) for msg_id in "12"]
    assert rows == [(2.0, "INR", "DELIVRD"), (1.5, None, "UNDELIV")]
    assert await journal.pending_count() == 0  # the repeated final counted nothing


async def test_groups_with_and_without_client_ref_in_one_call_keep_their_order(
    journal: BackendJournal,
) -> None:
    results = await journal.accept(
        [
            [make_message(client_ref="a")],
            [make_message(), make_message()],
            [make_message(client_ref="b")],
            [make_message(client_ref="a")],
        ]
    )
    assert [[m.msg_id for m in r] if isinstance(r, list) else r for r in results] == [
        ["1"],
        ["2", "3"],
        ["4"],
        Duplicate("a", ["1"]),
    ]
    stored = await journal.get(["1", "2", "3", "4"])
    assert [stored[i].client_ref for i in "1234"] == ["a", None, None, "b"]
    assert [stored[i].dlr for i in "1234"] == [True] * 4
    [again] = await journal.accept([[make_message(client_ref="b")]])
    assert again == Duplicate("b", ["4"])
    assert await journal.pending_count() == 4


async def test_a_retry_makes_the_message_due_again_later(journal: BackendJournal) -> None:
    message = await accept_one(journal, make_message(due_at=100.0))
    await journal.record(
        [MarkInflight(msg_ids=[message.msg_id], bridge_index=0, attempt=0, at=1.0)]
    )
    assert await journal.due(1000.0, 10) == []
    await journal.record(
        [MarkRetry(msg_ids=[message.msg_id], due_at=300.0, attempt=1, bridge_index=1, reason="5xx")]
    )
    assert await journal.due(299.0, 10) == []
    assert await journal.next_due_at() == 300.0
    [again] = await journal.due(300.0, 10)
    assert (again.msg_id, again.state, again.attempt, again.bridge) == (
        message.msg_id,
        "accepted",
        1,
        "bsg",
    )


async def test_the_first_final_state_wins_and_counts_once(journal: BackendJournal) -> None:
    message = await accept_one(journal, make_message())
    await journal.record(
        [
            MarkFinal(msg_id=message.msg_id, outcome="UNDELIV", code="1", error=None, at=1.0),
            MarkFinal(msg_id=message.msg_id, outcome="DELIVRD", code=None, error=None, at=2.0),
            MarkRetry(msg_ids=[message.msg_id], due_at=0.0, attempt=1, bridge_index=0, reason="x"),
        ]
    )
    assert await journal.pending_count() == 0
    assert (await journal.get([message.msg_id]))[message.msg_id].state == "final"
    outcome = await stored_row(journal, "outcome, code", message.msg_id)
    assert outcome == ("UNDELIV", "1")


async def test_changes_naming_unknown_messages_are_ignored(journal: BackendJournal) -> None:
    message = await accept_one(journal, make_message())
    await journal.record(
        [
            MarkInflight(msg_ids=["999", "not-a-number"], bridge_index=0, attempt=1, at=1.0),
            MarkFinal(msg_id="12345", outcome="DELIVRD", code=None, error=None, at=1.0),
            MarkSubmitted(msg_id=message.msg_id, provider_id="P", cost=None, currency=None, at=2.0),
        ]
    )
    assert await journal.pending_count() == 1
    assert (await journal.get([message.msg_id]))[message.msg_id].state == "submitted"


async def test_claim_is_a_compare_and_set_on_accepted_messages(journal: BackendJournal) -> None:
    first = await accept_one(journal, make_message())
    second = await accept_one(journal, make_message())
    won = await journal.claim([first, second], 0, 10.0)
    assert [m.msg_id for m in won] == [first.msg_id, second.msg_id]
    assert all(m.state == "inflight" and m.inflight_at == 10.0 for m in won)
    assert await journal.claim([first], 0, 11.0) == []
    # A stale copy (the journal moved the message on to a retry) is not sent.
    await journal.record(
        [MarkRetry(msg_ids=[second.msg_id], due_at=0.0, attempt=1, bridge_index=0, reason="r")]
    )
    stale = make_message()
    stale.msg_id = second.msg_id
    assert await journal.claim([stale], 0, 12.0) == []
    [fresh] = await journal.due(1000.0, 10)
    assert [m.msg_id for m in await journal.claim([fresh], 0, 13.0)] == [second.msg_id]


async def test_a_claim_of_many_where_one_was_taken_wins_only_the_others(
    journal: BackendJournal,
) -> None:
    """The many-message claim is one statement; when it does not win them all, each
    message is asked alone, and the one another claim took stays out."""
    messages = [await accept_one(journal, make_message()) for _ in range(5)]
    assert await journal.claim([messages[2]], 0, 10.0) == [messages[2]]
    won = await journal.claim(messages, 0, 11.0)
    assert [m.msg_id for m in won] == [m.msg_id for m in messages if m is not messages[2]]
    stored = await journal.get([m.msg_id for m in messages])
    assert {stored[m.msg_id].inflight_at for m in won} == {11.0}
    assert stored[messages[2].msg_id].inflight_at == 10.0


async def test_claims_and_records_of_one_group_each_get_their_own_answer(
    journal: BackendJournal,
) -> None:
    """Several callers in one event-loop turn share a group commit (PostgreSQL writes their
    claims and changes together at its end): each claim wins on its own bridge at its own
    time, a message two callers claim goes to the first only, the recorded change lands."""
    first, second, third, done = [await accept_one(journal, make_message()) for _ in range(4)]
    await journal.record(
        [MarkRetry(msg_ids=[third.msg_id], due_at=0.0, attempt=1, bridge_index=1, reason="r")]
    )
    third = (await journal.get([third.msg_id]))[third.msg_id]
    final = MarkFinal(msg_id=done.msg_id, outcome="REJECTD", code=None, error=None, at=9.0)
    commits = journal.commits
    answers: dict[int, list[Message]] = {}

    async def claim(n: int, messages: list[Message], bridge: int, at: float, **kw: Any) -> None:
        answers[n] = await journal.claim(messages, bridge, at, **kw)

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, 0, [first, second], 0, 10.0)
        tg.start_soon(claim, 1, [make_copy(second)], 0, 11.0)
        tg.start_soon(functools.partial(claim, 2, [third], 1, 12.0, record=[final]))
    assert journal.commits == commits + 1
    assert [[m.msg_id for m in answers[n]] for n in range(3)] == [
        [first.msg_id, second.msg_id],
        [],
        [third.msg_id],
    ]
    stored = await journal.get([m.msg_id for m in (first, second, third, done)])
    assert [
        (stored[m.msg_id].state, stored[m.msg_id].bridge_index, stored[m.msg_id].inflight_at)
        for m in (first, second, third)
    ] == [("inflight", 0, 10.0), ("inflight", 0, 10.0), ("inflight", 1, 12.0)]
    assert stored[done.msg_id].state == "final"


def make_copy(message: Message) -> Message:
    """Another caller's copy of `message` (what a second dispatcher would hold)."""
    copy = make_message()
    copy.msg_id = message.msg_id
    return copy


async def test_a_request_of_many_is_accepted_claimed_and_submitted_whole(
    journal: BackendJournal,
) -> None:
    """Counts that cross every multi-row INSERT size (64, 16, 4, 1): every row written,
    claimed in one statement and submitted, with its own provider id and price."""
    count = 64 + 16 + 4 + 3
    [group] = await journal.accept(
        [[make_message(f"+2507825{index:05d}", dlr=False) for index in range(count)]]
    )
    assert not isinstance(group, Duplicate)
    first = int(group[0].msg_id)
    assert [int(m.msg_id) for m in group] == list(range(first, first + count))
    assert len(await journal.claim(group, 0, 10.0)) == count
    await journal.record(
        [
            MarkSubmitted(
                msg_id=m.msg_id,
                provider_id=f"P-{index}",
                cost=0.01 * index if index % 2 else None,
                currency="USD" if index % 2 else None,
                at=11.0,
                final=True,
            )
            for index, m in enumerate(group)
        ]
    )
    stored = await journal.get([m.msg_id for m in group])
    assert [stored[m.msg_id].provider_id for m in group] == [f"P-{i}" for i in range(count)]
    assert {stored[m.msg_id].state for m in group} == {"final"}
    assert await journal.pending_count() == 0
    assert await journal.counts() == {"accepted": 0, "inflight": 0, "submitted": 0, "final": count}


async def test_a_claim_commits_the_changes_it_carries_first(journal: BackendJournal) -> None:
    done = await accept_one(journal, make_message(dlr=False))
    nxt = await accept_one(journal, make_message())
    [won] = await journal.claim([done], 0, 10.0)
    submitted = MarkSubmitted(
        msg_id=won.msg_id, provider_id="P-9", cost=0.02, currency="USD", at=11.0, final=True
    )
    claimed = await journal.claim([nxt], 0, 12.0, record=[submitted])
    assert [m.msg_id for m in claimed] == [nxt.msg_id]
    stored = await journal.get([done.msg_id, nxt.msg_id])
    assert (stored[done.msg_id].state, stored[done.msg_id].provider_id) == ("final", "P-9")
    assert stored[nxt.msg_id].state == "inflight"
    # A final MarkSubmitted ends the message in one update: nothing is pending for it.
    assert await journal.pending_count() == 1
    assert await journal.counts() == {"accepted": 0, "inflight": 1, "submitted": 0, "final": 1}


async def test_polling_bookkeeping_orders_who_is_asked_next(journal: BackendJournal) -> None:
    ids = []
    for index in range(3):
        message = await accept_one(journal, make_message(f"+25078258980{index}"))
        await journal.record(
            [
                MarkInflight(msg_ids=[message.msg_id], bridge_index=0, attempt=0, at=1.0),
                MarkSubmitted(
                    msg_id=message.msg_id, provider_id=f"P{index}", cost=None, currency=None, at=2.0
                ),
            ]
        )
        ids.append(message.msg_id)
    quiet = await accept_one(journal, make_message(dlr=False))
    await journal.record(
        [MarkSubmitted(msg_id=quiet.msg_id, provider_id="PQ", cost=None, currency=None, at=2.0)]
    )
    # New ones come first, unscheduled (due since 0), by msg_id; dlr=0 ones never.
    due = await journal.awaiting_poll("dsc", now=10.0, limit=10)
    assert [(d.message.msg_id, d.polls, d.next_poll_at) for d in due] == [
        (ids[0], 0, 0.0),
        (ids[1], 0, 0.0),
        (ids[2], 0, 0.0),
    ]
    await journal.record([SchedulePolls(msg_ids=ids, at=40.0)])
    assert await journal.awaiting_poll("dsc", now=39.0, limit=10) == []
    # Scheduling twice keeps the first time: it is the first poll's, once.
    await journal.record([SchedulePolls(msg_ids=[ids[0]], at=90.0)])
    await journal.record([MarkPolled(msg_ids=[ids[0]], at=41.0, next_at=60.0)])
    await journal.record([MarkPolled(msg_ids=[ids[1]], at=41.0, next_at=50.0)])
    due = await journal.awaiting_poll("dsc", now=45.0, limit=10)
    assert [(d.message.msg_id, d.polls, d.next_poll_at) for d in due] == [(ids[2], 0, 40.0)]
    due = await journal.awaiting_poll("dsc", now=60.0, limit=10)
    assert [(d.message.msg_id, d.polls) for d in due] == [(ids[2], 0), (ids[1], 1), (ids[0], 1)]
    await journal.record([MarkPolled(msg_ids=[ids[1]], at=61.0, next_at=100.0)])
    due = await journal.awaiting_poll("dsc", now=100.0, limit=1)
    assert [(d.message.msg_id, d.polls) for d in due] == [(ids[2], 0)]
    assert [(d.message.msg_id, d.polls) for d in await journal.awaiting_poll("dsc", 100.0, 10)][
        -1
    ] == (ids[1], 2)
    assert await journal.awaiting_poll("bsg", now=1000.0, limit=10) == []
    # A final message is no longer asked about, and a late poll mark leaves it alone.
    await journal.record(
        [MarkFinal(msg_id=ids[2], outcome="DELIVRD", code=None, error=None, at=101.0)]
    )
    await journal.record([MarkPolled(msg_ids=[ids[2]], at=102.0, next_at=103.0)])
    assert ids[2] not in [d.message.msg_id for d in await journal.awaiting_poll("dsc", 1e9, 10)]


async def test_orphan_receipts_are_taken_once(journal: BackendJournal) -> None:
    await journal.record(
        [
            StoreOrphanReceipt(bridge="dsc", provider_id="P1", receipt=b"first", at=1.0),
            StoreOrphanReceipt(bridge="dsc", provider_id="P2", receipt=b"other", at=1.0),
            StoreOrphanReceipt(bridge="bsg", provider_id="P1", receipt=b"elsewhere", at=1.0),
            StoreOrphanReceipt(bridge="dsc", provider_id="P1", receipt=b"second", at=2.0),
        ]
    )
    assert await journal.orphan_receipt_ids() == [
        ("dsc", "P1", 1.0),
        ("dsc", "P2", 1.0),
        ("bsg", "P1", 1.0),
    ]
    assert await journal.take_orphan_receipts("dsc", ["P1", "P9"]) == [b"first", b"second"]
    assert await journal.take_orphan_receipts("dsc", ["P1"]) == []
    assert await journal.take_orphan_receipts("bsg", ["P1"]) == [b"elsewhere"]


async def test_the_outbox_keeps_lines_per_origin_in_order(journal: BackendJournal) -> None:
    await journal.record(
        [
            StoreEvents(origin="a", events=[b'{"n":1}\n', b'{"n":2}\n']),
            StoreEvents(origin="b", events=[b'{"n":3}\n']),
            StoreEvents(origin="a", events=[b'{"n":4}\n']),
        ]
    )
    assert await journal.take_events("a", 2) == [b'{"n":1}\n', b'{"n":2}\n']
    assert await journal.take_events(None, 10) == [b'{"n":3}\n', b'{"n":4}\n']
    assert await journal.take_events(None, 10) == []


# ── queries ────────────────────────────────────────────────────────────────────


async def test_due_orders_by_priority_then_due_time_then_id(journal: BackendJournal) -> None:
    plan = [(0, 10.0), (5, 30.0), (0, 5.0), (5, 20.0), (9, 40.0), (0, 10.0), (3, 999.0)]
    for priority, due_at in plan:
        await accept_one(journal, make_message(priority=priority, due_at=due_at))
    due = await journal.due(100.0, 10)
    assert [m.msg_id for m in due] == ["5", "4", "2", "3", "1", "6"]
    assert [m.msg_id for m in await journal.due(100.0, 3)] == ["5", "4", "2"]
    assert [m.msg_id for m in await journal.due(100.0, 3, exclude={"5", "2", "1"})] == [
        "4",
        "3",
        "6",
    ]
    page = await journal.due(100.0, 2)
    assert [m.msg_id for m in await journal.due(100.0, 10, after=page[-1])] == ["2", "3", "1", "6"]
    assert await journal.next_due_at() == 5.0
    assert await journal.next_due_at(after=40.0) == 999.0
    assert await journal.next_due_at(after=999.0) is None
    assert await journal.due(100.0, 0) == []
    # A window: only what falls due after `since`, in the same order.
    assert [m.msg_id for m in await journal.due(30.0, 10, since=10.0)] == ["4", "2"]
    assert [m.msg_id for m in await journal.due(30.0, 10, since=10.0, exclude={"2"})] == ["4"]
    assert await journal.due(40.0, 10, since=40.0) == []


async def test_references_are_found_only_for_this_journal(journal: BackendJournal) -> None:
    message = await accept_one(journal, make_message())
    found = await journal.find_by_reference([message.reference, "zzzzzz-1", "garbage"])
    assert list(found) == [message.reference]
    assert found[message.reference].msg_id == message.msg_id


async def test_counts_by_state(journal: BackendJournal) -> None:
    messages = [await accept_one(journal, make_message()) for _ in range(4)]
    await journal.claim(messages[:3], 0, 1.0)
    await journal.record(
        [
            MarkSubmitted(
                msg_id=messages[1].msg_id, provider_id="A", cost=None, currency=None, at=2.0
            ),
            MarkFinal(msg_id=messages[2].msg_id, outcome="FAILED", code="E", error="no", at=2.0),
        ]
    )
    assert await journal.counts() == {"accepted": 1, "inflight": 1, "submitted": 1, "final": 1}
    assert await journal.pending_count() == 3
    assert await journal.integrity_check() == "ok"


async def test_inflight_messages_are_found_after_a_reopen(
    opener: JournalOpener,
) -> None:
    async with opener() as journal:
        messages = [await accept_one(journal, make_message()) for _ in range(3)]
        await journal.claim(messages[1:], 0, 7.0)
    async with opener() as journal:
        stuck = await journal.inflight()
        assert await journal.pending_count() == 3
    assert [m.msg_id for m in stuck] == ["2", "3"]
    assert all(m.state == "inflight" and m.inflight_at == 7.0 for m in stuck)


async def test_a_closed_journal_says_so(opener: JournalOpener) -> None:
    async with opener() as journal:
        pass  # open and close it at once: the test is what it says afterwards
    with pytest.raises(JournalError, match="is closed"):
        await journal.pending_count()
