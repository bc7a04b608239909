"""Keeps the scrape-time backlog gauges of engine.metrics.Operations current, cheaply.

A scrape must stay cheap on any journal: the backlog by state and the events kept for
clients that left are counted at most once per interval, when a scrape finds the last
count older than that (no scrape, no count), and every other scrape reads the last count
(septet_backlog_messages, septet_outbox_events).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from engine.journal import JournalError
from engine.metrics import Operations

log = structlog.get_logger("septet.observe")

# Seconds a backlog count is served before a scrape counts again. A count walks the
# index of the waiting messages (engine.journal.sqlite.count_states): 87-106 ms for a million
# waiting messages (bench/backlog_count.py, bench/results/backlog_count.json), too much
# for every scrape, nothing once per interval. The daemon counts on the read-only
# connection (the JournalReader, engine.journal), so the writer's commits never wait for it.
BACKLOG_INTERVAL_S = 15.0


class CountingJournal(Protocol):
    async def counts(self) -> dict[str, int]: ...

    async def kept_events_count(self) -> int: ...


class BacklogCounter:
    """Counts the journal's backlog into `operations.backlog`, at most once per
    `interval_s` of `clock`."""

    def __init__(
        self,
        journal: CountingJournal,
        operations: Operations,
        *,
        interval_s: float = BACKLOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._operations = operations
        self._interval_s = interval_s
        self._clock = clock
        self._counted_at: float | None = None

    async def refresh(self) -> None:
        """Count now if the last count is older than the interval (or there is none)."""
        now = self._clock()
        if self._counted_at is not None and now - self._counted_at < self._interval_s:
            return
        # Set before the await: a scrape meanwhile reads the last count, never counts too.
        self._counted_at = now
        try:
            self._operations.backlog = await self._journal.counts()
            self._operations.kept_events = await self._journal.kept_events_count()
        except JournalError as error:
            # The last count stays; the journal's own failure is reported where it happens.
            log.warning("backlog_not_counted", error=str(error))
