"""engine.ingress.coalesce on a real SQLite journal: accepts made in one event-loop turn are
one journal call and one commit, each caller answered with its own messages; a client id
two of them share is a duplicate in the later; a cancelled caller's messages stay, the
others are answered, and the feeder is told of them once committed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from engine.ingress.coalesce import CoalescingJournal, Results
from engine.journal import Duplicate
from engine.journal.sqlite import open_sqlite_journal
from engine.models import Message

pytestmark = pytest.mark.anyio


def message(to: str, client_ref: str | None = None) -> Message:
    return Message(
        msg_id="",
        reference="",
        origin="api",
        account="acme",
        client_ref=client_ref,
        to=to,
        sender=None,
        text="hi",
        encoding="GSM-7",
        segments=1,
        cost=0.01,
        currency="EUR",
        bridges=("dsc",),
        accepted_at=1_780_000_000.0,
        due_at=1_780_000_000.0,
    )


async def test_calls_of_one_turn_are_one_journal_call_each_answered_its_own(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        woken: list[int] = []
        coalescing = CoalescingJournal(journal, on_abandoned=lambda: woken.append(1))
        commits = journal.commits
        answers: dict[int, Results] = {}

        async def one(index: int, groups: Sequence[Sequence[Message]]) -> None:
            answers[index] = await coalescing.accept(groups)

        calls = [
            [[message("+250788100001", "a")]],
            [[message("+250788100002"), message("+250788100003")], [message("+250788100004")]],
            [[message("+250788100005", "a")]],  # the first call's id: a duplicate
            [[message("+250788100006", "b")]],
        ]
        async with anyio.create_task_group() as tg:
            for index, groups in enumerate(calls):
                tg.start_soon(one, index, groups)
        assert coalescing.calls == 1
        assert journal.commits == commits + 1
        first, second, third, fourth = (answers[index] for index in range(4))
        assert [[m.to for m in group] for group in first if not isinstance(group, Duplicate)] == [
            ["+250788100001"]
        ]
        assert [[m.to for m in g] for g in second if not isinstance(g, Duplicate)] == [
            ["+250788100002", "+250788100003"],
            ["+250788100004"],
        ]
        (duplicate,) = third
        assert isinstance(duplicate, Duplicate)
        assert duplicate.msg_ids == [calls[0][0][0].msg_id]
        assert [m.client_ref for g in fourth if not isinstance(g, Duplicate) for m in g] == ["b"]
        ids = [m.msg_id for groups in calls for group in groups for m in group if m.msg_id]
        assert len(ids) == len(set(ids)) == 5
        for msg_id in ids:
            assert await journal.get(msg_id) is not None
        assert woken == []  # every caller was answered: each queues its own


async def test_a_cancelled_first_caller_still_lets_the_others_be_answered(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        woken: list[int] = []
        coalescing = CoalescingJournal(journal, on_abandoned=lambda: woken.append(1))
        first = [[message("+250788100001")]]
        answered: list[Results] = []
        cancelled: list[bool] = []

        async def leader() -> None:
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled as it calls: its call is still made for the others
                await coalescing.accept(first)  # stops waiting at once
                cancelled.append(False)
            cancelled.append(scope.cancelled_caught)

        async def follower() -> None:
            answered.append(await coalescing.accept([[message("+250788100002")]]))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(leader)
                tg.start_soon(follower)
        assert cancelled == [True]
        assert coalescing.calls == 1
        (followers,) = answered[0]
        assert not isinstance(followers, Duplicate)
        assert [m.to for m in followers] == ["+250788100002"]
        # The leader's message was committed with the follower's: it stays.
        assert first[0][0].msg_id
        assert await journal.get(first[0][0].msg_id) is not None
        # Nobody queues it: the feeder is told, once, after the commit.
        assert woken == [1]
