"""Concurrent accepts of one event-loop turn go to the journal as one call.

Front doors accept independently: 200 HTTP requests of one message each, in flight at once,
were 200 `journal.accept` calls, each its own operation on the writer thread with its own
statements (the messages' INSERT, their feed events, the account's day count) inside the
group commit. `CoalescingJournal.accept` lets the calls made in the same event-loop turn
join the first one's: it waits one turn, sends every joined call's groups as one
`accept`, and answers each caller with the results of its own groups, in order.

Nothing changes for a caller but the grouping: its messages are committed before it is
answered, a client id repeated by two joined calls is a duplicate in the second (as it
would be in the same transaction), and a journal error refuses every call of that turn
(they were one operation). The journal call is shielded from the first caller's
cancellation, so the others are always answered; the cancellation is felt after it, and
what was committed stays (engine.ingress.accept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import anyio
import anyio.lowlevel

from engine.journal import Duplicate
from engine.models import Message

Results = list[list[Message] | Duplicate]


class AcceptJournal(Protocol):
    async def accept(self, groups: Sequence[Sequence[Message]]) -> Results: ...


class CoalescingJournal:
    """`accept` as the journal's, calls of one event-loop turn joined (module docstring)."""

    def __init__(self, journal: AcceptJournal) -> None:
        self._journal = journal
        # The calls joining this turn's first one: their groups and where to answer.
        self._joining: list[tuple[Sequence[Sequence[Message]], asyncio.Future[Results]]] | None
        self._joining = None
        self.calls = 0  # journal.accept calls made (tests, and a gauge of the joining)

    async def accept(self, groups: Sequence[Sequence[Message]]) -> Results:
        joining = self._joining
        if joining is not None:
            answer: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
            joining.append((groups, answer))
            return await answer
        joined: list[tuple[Sequence[Sequence[Message]], asyncio.Future[Results]]] = []
        self._joining = joined
        try:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # the other calls of this turn join
        finally:
            self._joining = None
        self.calls += 1
        if not joined:
            return await self._journal.accept(groups)
        merged = [*groups, *(group for theirs, _ in joined for group in theirs)]
        with anyio.CancelScope(shield=True):  # the joined calls are answered whatever comes
            outcome = await self._run(merged, joined)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome[: len(groups)]

    async def _run(
        self,
        merged: Sequence[Sequence[Message]],
        joined: list[tuple[Sequence[Sequence[Message]], asyncio.Future[Results]]],
    ) -> Results | BaseException:
        """One journal call for the merged groups; each joined call answered with its own
        slice (the first call's groups come first), or the journal's error."""
        try:
            results = await self._journal.accept(merged)
        except Exception as error:
            for _, answer in joined:
                if not answer.done():
                    answer.set_exception(error)
            return error
        start = len(merged) - sum(len(theirs) for theirs, _ in joined)
        for theirs, answer in joined:
            end = start + len(theirs)
            if not answer.done():  # a caller cancelled meanwhile: its messages stay
                answer.set_result(results[start:end])
            start = end
        return results
