"""Events for clients that have gone: batched into the journal, given back to their identity.

What a session's connection is written first (KeptEvents) comes from here: the journal's
outbox table, then the events not yet stored.

In a cluster (docs/cluster.md) a client's events may be made on another node: a report
that node took, a message that node sent. That node has no connection of the client, so it
keeps them in the outbox, which every node shares, and `serve_kept_for_live` on the node
the client is connected to takes them out and writes them to it: at once when the journal
says new lines were kept (PostgreSQL's LISTEN/NOTIFY), and every `poll_s` in any case.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
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
# In a cluster, how often a node looks for lines other nodes kept for its clients when no
# notification came (the fallback; with PostgreSQL's NOTIFY they come at once).
KEPT_POLL_S = 1.0


class OutboxJournal(Protocol):
    """engine.journal: the outbox table."""

    async def record(self, changes: Sequence[StoreEvents]) -> None: ...

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]: ...


class SharedOutboxJournal(OutboxJournal, Protocol):
    async def kept_origins(self, origins: Collection[str]) -> list[str]: ...


class LiveRouter(Protocol):
    """engine.ingress.events.EventRouter."""

    def live_origins(self) -> list[str]: ...

    def emit_lines(self, origin: str, lines: list[bytes]) -> None: ...


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


class KeptWake:
    """Set by the journal when another node kept events (a NOTIFY): the next take runs
    at once instead of at the next poll."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await self._event.wait()
        self._event = anyio.Event()


async def take_kept_for_live(router: LiveRouter, journal: SharedOutboxJournal) -> int:
    """One turn: the lines kept for identities connected here, out of the journal and to
    their sinks (a sink that closed meanwhile spills them back). Returns how many."""
    origins = router.live_origins()
    if not origins:
        return 0
    taken = 0
    for origin in await journal.kept_origins(origins):
        while lines := await journal.take_events(origin, KEPT_BATCH):
            taken += len(lines)
            router.emit_lines(
                origin, [line if line.endswith(b"\n") else line + b"\n" for line in lines]
            )
            if len(lines) < KEPT_BATCH:
                break
    return taken


async def serve_kept_for_live(
    router: LiveRouter, journal: SharedOutboxJournal, wake: KeptWake, *, poll_s: float
) -> None:
    """Forever (cluster mode): events other nodes kept for clients connected here reach
    them (module docstring). A journal that cannot be read is tried again at the next turn:
    the lines stay in it."""
    while True:
        await wake.wait(poll_s)
        try:
            taken = await take_kept_for_live(router, journal)
        except JournalError as error:
            log.error("journal_read_failed", during="kept_for_live", error=str(error))
            continue
        if taken:
            log.debug("kept_events_delivered", events=taken)


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
