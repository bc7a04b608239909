"""Concurrent accepts of one event-loop turn go to the journal as one call.

Front doors accept independently: 200 HTTP requests of one message each, in flight at once,
were 200 `journal.accept` calls, each its own operation on the writer thread with its own
statements (the messages' INSERT, their feed events, the account's day count) inside the
group commit. `CoalescingJournal.accept` lets the calls made in the same event-loop turn
join the first one's: the turn's calls are sent, after the calls already due in it, as
one `accept`, and each caller is answered with the results of its own groups, in order.

Nothing changes for a caller but the grouping: its messages are committed before it is
answered, a client id repeated by two joined calls is a duplicate in the second (as it
would be in the same transaction), and a journal error refuses every call of that turn
(they were one operation). The journal call runs in a task of its own, not in a caller's,
so no caller's cancellation cuts it: the others are always answered, a cancelled caller
stops waiting at once, and what was committed stays (engine.ingress.accept); nobody
queues a cancelled caller's messages, so `on_abandoned` (the scheduler's feeder) is told
once they are committed. A task of
its own costs less than shielding the first caller's call: anyio's cancel scopes, two a
turn, were about 17,000 instructions of each request of one message (callgrind).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from engine.journal import Duplicate
from engine.models import Message

Results = list[list[Message] | Duplicate]
# The calls of one turn: each one's groups and where to answer it.
Joined = list[tuple[Sequence[Sequence[Message]], "asyncio.Future[Results]"]]


class AcceptJournal(Protocol):
    async def accept(self, groups: Sequence[Sequence[Message]]) -> Results: ...


class CoalescingJournal:
    """`accept` as the journal's, calls of one event-loop turn joined (module docstring)."""

    def __init__(
        self, journal: AcceptJournal, on_abandoned: Callable[[], None] | None = None
    ) -> None:
        """`on_abandoned` is called after a commit that holds messages of a caller that
        stopped waiting (cancelled): they are in the journal, on no queue."""
        self._journal = journal
        self._on_abandoned = on_abandoned
        self._joining: Joined | None = None  # the calls of this turn, not yet sent
        # The journal calls under way (asyncio keeps only a weak reference to a task).
        self._sending: set[asyncio.Task[None]] = set()
        self.calls = 0  # journal.accept calls made (tests, and a gauge of the joining)

    async def accept(self, groups: Sequence[Sequence[Message]]) -> Results:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Results] = loop.create_future()
        joining = self._joining
        if joining is None:
            # Sent once the callbacks already due in this turn (the other calls) have run.
            joining = self._joining = []
            loop.call_soon(self._send, loop, joining)
        joining.append((groups, answer))
        return await answer

    def _send(self, loop: asyncio.AbstractEventLoop, joined: Joined) -> None:
        self._joining = None
        self.calls += 1
        task = loop.create_task(self._run(joined))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run(self, joined: Joined) -> None:
        """One journal call for the joined calls' groups; each answered with its own slice
        of the results, or the journal's error. A caller that stopped waiting (cancelled)
        is answered nothing: its messages stay, and `on_abandoned` is told."""
        merged = joined[0][0] if len(joined) == 1 else [g for theirs, _ in joined for g in theirs]
        try:
            results = await self._journal.accept(merged)
        except Exception as error:
            for _, answer in joined:
                if not answer.done():
                    answer.set_exception(error)
            return
        except BaseException:  # the loop is closing: nobody is answered
            for _, answer in joined:
                answer.cancel()
            raise
        start = 0
        abandoned = False
        for theirs, answer in joined:
            end = start + len(theirs)
            if not answer.done():
                answer.set_result(results[start:end])
            elif any(type(result) is list and result for result in results[start:end]):
                abandoned = True  # committed for a caller that stopped waiting
            start = end
        if abandoned and self._on_abandoned is not None:
            self._on_abandoned()
