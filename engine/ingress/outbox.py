"""Events for clients that have gone: batched into the journal, given back to their identity.

What a session's connection is written first (KeptEvents) comes from here: the journal's
outbox table, then the events not yet stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import anyio
import structlog

from engine.ingress.events import EventSink
from engine.journal import JournalError, StoreEvents

log = structlog.get_logger("septet.ingress")

# The first wait before storing outbox events again after a journal write failed.
OUTBOX_RETRY_S = 1.0
# Kept events are read out of the journal this many at a time for a session's connection.
KEPT_BATCH = 1000


class OutboxJournal(Protocol):
    """engine.journal: the outbox table."""

    async def record(self, changes: Sequence[StoreEvents]) -> None: ...

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]: ...


class Outbox:
    """Events for identities with no connection: batched into the journal, never dropped.

    `lock` is held while a batch is being stored, so that `take_for` sees every event of
    an identity either here or in the journal, never on its way between the two.
    """

    def __init__(self) -> None:
        self.pending: dict[str, list[bytes]] = {}
        self.wake = anyio.Event()
        self.lock = anyio.Lock()

    def spill(self, origin: str, lines: list[bytes]) -> None:
        self.pending.setdefault(origin, []).extend(lines)
        self.wake.set()

    def take(self) -> list[StoreEvents]:
        changes = [
            StoreEvents(origin=origin, events=lines) for origin, lines in self.pending.items()
        ]
        self.pending = {}
        return changes

    def restore(self, changes: Sequence[StoreEvents]) -> None:
        """Put back what `take` gave when the journal could not store it, in order."""
        for change in changes:
            self.pending[change.origin] = [*change.events, *self.pending.get(change.origin, [])]
        self.wake.set()

    async def take_for(self, origin: str) -> list[bytes]:
        """The events of `origin` not yet stored: newer than any the journal holds for it
        once this returns (the store in progress, if any, has finished)."""
        async with self.lock:
            return self.pending.pop(origin, [])


async def serve_outbox(outbox: Outbox, journal: OutboxJournal) -> None:
    """Store events for clients that have gone; a journal that cannot be written (disk
    full) is waited out, the events held in the meantime."""
    delay = OUTBOX_RETRY_S
    while True:
        await outbox.wake.wait()
        outbox.wake = anyio.Event()
        async with outbox.lock:
            changes = outbox.take()
            if not changes:
                continue
            try:
                await journal.record(changes)
            except JournalError as error:
                log.error(
                    "journal_write_failed", during="outbox", retry_in_s=delay, error=str(error)
                )
                outbox.restore(changes)
                failed = True
            else:
                failed = False
        if failed:
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)
        else:
            delay = OUTBOX_RETRY_S


async def store_outbox_rest(outbox: Outbox, journal: OutboxJournal) -> None:
    """At shutdown: store every event still held, including those that come in while a
    store runs (delivery reports still being handled), after any store in progress."""
    async with outbox.lock:
        while changes := outbox.take():
            try:
                await journal.record(changes)
            except JournalError as error:
                log.error(
                    "events_not_kept",
                    events=sum(len(change.events) for change in changes),
                    error=str(error),
                )
                return


class KeptEvents:
    """What a session's connection is written first: the events kept for its identity,
    oldest first. The journal's, batch by batch (each leaves the journal as it is read);
    the outbox's not yet stored, being newer, go to the front of the sink's buffer, after
    those and before any live event."""

    def __init__(
        self, identity: str, sink: EventSink, outbox: Outbox, journal: OutboxJournal
    ) -> None:
        self._identity = identity
        self._sink = sink
        self._outbox = outbox
        self._journal = journal
        self._newest_taken = False

    async def next_batch(self) -> list[bytes]:
        """The next batch out of the journal, [] when none is left (or the journal cannot
        be read: they stay there, for the next connection)."""
        if not self._newest_taken:
            self._newest_taken = True
            self._sink.put_first(await self._outbox.take_for(self._identity))
        try:
            lines = await self._journal.take_events(self._identity, KEPT_BATCH)
        except JournalError as error:
            log.error(
                "journal_read_failed", during="kept_events", origin=self._identity, error=str(error)
            )
            return []
        # Stored lines end with their newline (engine.models.encode_event_line); one that
        # does not must still not run into the next.
        return [line if line.endswith(b"\n") else line + b"\n" for line in lines]
