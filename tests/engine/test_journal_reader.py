"""The journal's readers (engine.journal.sqlite_reader, postgres_reader) on a real SQLite file and
a real PostgreSQL database; the journal's cancel compare-and-set on both."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from engine import lifecycle
from engine.journal import JournalReader, MarkFinal
from tests.engine.journal_backends import BackendJournal
from tests.engine.test_journal import accept_one, make_message, park_writer

pytestmark = pytest.mark.anyio

# Each test runs on every backend: `journal` and `reader` (tests/engine/journal_backends.py).


async def test_a_message_reads_back_with_its_state_by_name(
    journal: BackendJournal, reader: JournalReader
) -> None:
    message = await accept_one(journal, make_message(client_ref="r1"))
    stored = await reader.message(int(message.msg_id))
    assert stored is not None
    assert (stored.message.to, stored.message.client_ref, stored.status) == (
        message.to,
        "r1",
        "accepted",
    )
    await journal.claim([message], 0, 101.0)
    stored = await reader.message(int(message.msg_id))
    assert stored is not None
    assert (stored.status, stored.message.state) == ("inflight", "inflight")
    assert await reader.message(999) is None


async def test_a_page_is_newest_first_filtered_and_resumes_by_cursor(
    journal: BackendJournal, reader: JournalReader
) -> None:
    ids = []
    for n in range(7):
        message = make_message(client_ref=f"c{n}", due_at=100.0 + n)
        message.account = "acme"
        ids.append((await accept_one(journal, message)).msg_id)
    other = make_message(client_ref="c2")
    other.account = "someone-else"
    await accept_one(journal, other)
    seen: list[str] = []
    below = None
    for _ in range(10):
        page = await reader.page("acme", below=below, limit=3)
        seen += [stored.message.msg_id for stored in page.messages]
        below = page.next_cursor
        if below is None:
            break
    assert seen == ids[::-1]
    by_ref = await reader.page("acme", client_ref="c2")
    assert [s.message.msg_id for s in by_ref.messages] == [ids[2]]
    since = await reader.page("acme", since=104.0)
    assert [s.message.msg_id for s in since.messages] == ids[4:][::-1]
    assert since.next_cursor is None
    assert len((await reader.page("someone-else")).messages) == 1
    assert (await reader.page("nobody")).messages == []
    assert (await reader.page("acme", status="delivered")).messages == []


async def test_cancel_wins_only_over_a_waiting_message_never_carried(
    journal: BackendJournal, reader: JournalReader
) -> None:
    waiting = await accept_one(journal, make_message(due_at=500.0))
    step = lifecycle.on_cancel(waiting, 100.0)
    assert step is not None
    assert await journal.cancel(step.changes) is True
    assert await journal.cancel(step.changes) is False  # final already
    assert await journal.claim([waiting], 0, 600.0) == []  # a queued copy is not sent
    stored = await reader.message(int(waiting.msg_id))
    assert stored is not None
    assert stored.status == "cancelled"
    assert await journal.pending_count() == 0
    claimed = await accept_one(journal, make_message())
    late = lifecycle.on_cancel(claimed, 100.0)
    assert late is not None
    await journal.claim([claimed], 0, 101.0)
    assert await journal.cancel(late.changes) is False
    stored = await reader.message(int(claimed.msg_id))
    assert stored is not None
    assert stored.status == "inflight"


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_claim_and_a_cancel_in_one_commit_exactly_one_wins(
    journal: BackendJournal, reader: JournalReader, cancel_first: bool
) -> None:
    message = await accept_one(journal, make_message())
    step = lifecycle.on_cancel(message, 100.0)
    assert step is not None
    outcome: dict[str, object] = {}

    async def cancel() -> None:
        outcome["cancelled"] = await journal.cancel(step.changes)

    async def claim() -> None:
        outcome["claimed"] = bool(await journal.claim([message], 0, 101.0))

    async with anyio.create_task_group() as tg:
        release = await park_writer(journal, tg)
        # Both wait behind the parked writer and run in one group, in this order.
        for work in (cancel, claim) if cancel_first else (claim, cancel):
            tg.start_soon(work)
            await anyio.lowlevel.checkpoint()
        release.set()
    assert outcome["cancelled"] is not outcome["claimed"]
    stored = await reader.message(int(message.msg_id))
    assert stored is not None
    assert stored.status == ("cancelled" if outcome["cancelled"] else "inflight")
    if not journal.shared:
        # SQLite runs a group's operations in order: the first one wins. PostgreSQL's
        # optimistic group writes every caller's claims as one statement at its end, so a
        # cancel in the same group wins whatever the order (and one in a later group loses):
        # the promise there is only that exactly one wins.
        assert outcome == {"cancelled": cancel_first, "claimed": not cancel_first}


async def test_a_cancel_step_has_one_final_change(journal: BackendJournal) -> None:
    with pytest.raises(ValueError, match="exactly one MarkFinal"):
        await journal.cancel([])
    final = MarkFinal(msg_id="1", outcome="CANCELLED", code=None, error=None, at=1.0)
    with pytest.raises(ValueError, match="exactly one MarkFinal"):
        await journal.cancel([final, final])


async def test_the_backlog_is_counted_off_the_writer_thread(
    journal: BackendJournal, reader: JournalReader
) -> None:
    _, second, third = [await accept_one(journal, make_message()) for _ in range(3)]
    await journal.claim([second], 0, 101.0)
    await journal.record(
        [MarkFinal(msg_id=third.msg_id, outcome="DELIVRD", code=None, error=None, at=102.0)]
    )
    expected = {"accepted": 1, "inflight": 1, "submitted": 0, "final": 1}
    assert await journal.counts() == expected
    async with anyio.create_task_group() as tg:
        release = await park_writer(journal, tg)
        try:
            # The writer is busy (a long commit): the reader's count does not wait for it.
            with anyio.fail_after(5):
                assert await reader.counts() == expected
                assert await reader.kept_events_count() == 0
        finally:
            release.set()
