"""Journal retention ([journal] keep_days): finished messages pruned in small background turns.

What goes, once older than the keep (docs/operations.md "Retention"):

    messages         final (delivered, undeliverable, ..., cancelled) and final before the cut
    outbox           NDJSON event lines kept for a client that went away, stored before the cut
    orphan_receipts  reports that matched no message, stored before the cut
    account_days     daily quota counters of days before yesterday and before the cut

The feed's events have their own keep (`[events] keep_s`, engine.feed's sweep); webhook
deliveries leave the journal when delivered or given up (engine.feed.settle_deliveries).

No index is added for this (each index entry is paid on the send path, issue 16): messages
are scanned by their primary key from the oldest up, one window of `limit` rows a turn, each
turn its own short transaction on the writer, so the send path's commits go between them.
msg_ids (and outbox ids) grow with time, so `Marks` remembers which id was next at which
time: a message accepted after the cut cannot have become final before it, so a pass stops
at the first id handed out after the cut instead of reading the recent rows, and outbox
rows below the id that was next at the cut are older than it. Marks live in memory; after
a restart the first pass reads to the end, and outbox lines wait one keep before they go.

Pure: `Marks` and `PrunePass` take the time as an argument. The SQL runs on the journal's
writer thread (`prune_turn`, called by engine.journal); the loop is engine.feed's sweep loop.
"""

from __future__ import annotations

import sqlite3
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple, Protocol

import msgspec

from engine.feed import serve_turns

SECONDS_PER_DAY: Final = 86400.0
# Rows a turn looks at (messages) or deletes (the other tables): one short transaction.
PRUNE_BATCH: Final = 500
# A pass that reached its end waits this long before the next one, or a quarter of the
# keep when that is shorter (a keep of minutes, as the retention bench uses).
PRUNE_INTERVAL_S: Final = 60.0
# Marks kept at most; a mark is added when the last one is older than keep / MARKS_PER_KEEP
# (so the cut is known to within that fraction of the keep, erring on keeping rows).
MARKS_PER_KEEP: Final = 512
# Free pages returned to the file system by one turn (auto_vacuum = INCREMENTAL), and only
# when more than a quarter of the file (and at least VACUUM_FLOOR_PAGES) is free: pages a
# prune frees are reused by new rows, so a steady journal keeps its size without churn.
VACUUM_PAGES: Final = 512
VACUUM_FLOOR_PAGES: Final = 1024


class Mark(NamedTuple):
    """At `at` (Unix seconds), the next msg_id and the next outbox row id to be handed out."""

    at: float
    next_msg_id: int
    next_outbox_id: int


class Marks:
    """High-water marks of ids over time (module docstring). Pure."""

    def __init__(self, keep_s: float) -> None:
        self._every_s = keep_s / MARKS_PER_KEEP
        self._marks: list[Mark] = []

    def add(self, mark: Mark) -> None:
        """Remember `mark` unless the last one is recent (marks come in time order)."""
        if self._marks and mark.at - self._marks[-1].at < self._every_s:
            return
        self._marks.append(mark)

    def forget_before(self, cut: float) -> None:
        """Drop marks no cut at or after `cut` needs: all but the last one at or before it."""
        index = bisect_right(self._marks, cut, key=lambda mark: mark.at)
        if index > 1:
            del self._marks[: index - 1]

    def first_after(self, cut: float) -> Mark | None:
        """The earliest mark at or after `cut`: ids from its `next_msg_id` on were handed out
        after the cut. None when there is none yet."""
        index = bisect_left(self._marks, cut, key=lambda mark: mark.at)
        return self._marks[index] if index < len(self._marks) else None

    def last_before(self, cut: float) -> Mark | None:
        """The latest mark at or before `cut`: ids below its `next_outbox_id` are older."""
        index = bisect_right(self._marks, cut, key=lambda mark: mark.at)
        return self._marks[index - 1] if index else None

    def __len__(self) -> int:
        return len(self._marks)


class PruneTurn(msgspec.Struct, frozen=True):
    """One turn's bounds for the writer: messages with msg_id in (after, below) that are
    final before `cut`; outbox rows with id below `outbox_below`; `limit` rows at most."""

    cut: float
    after: int
    below: int | None
    outbox_below: int
    limit: int


class Pruned(msgspec.Struct, frozen=True):
    """What one turn deleted per table, the last msg_id it looked at (None: it reached the
    end of its window), and the ids that were next (for the marks)."""

    deleted: dict[str, int]
    last_msg_id: int | None
    next_msg_id: int
    next_outbox_id: int


class PrunePass:
    """Walks the messages from the oldest up, turn by turn, and starts over at the end. Pure."""

    def __init__(self, keep_s: float, *, limit: int = PRUNE_BATCH) -> None:
        self.keep_s = keep_s
        self.limit = limit
        self.marks = Marks(keep_s)
        self._after = 0

    def plan(self, now: float) -> PruneTurn:
        cut = now - self.keep_s
        self.marks.forget_before(cut)
        first = self.marks.first_after(cut)
        older = self.marks.last_before(cut)
        return PruneTurn(
            cut=cut,
            after=self._after,
            below=None if first is None else first.next_msg_id,
            outbox_below=0 if older is None else older.next_outbox_id,
            limit=self.limit,
        )

    def done(self, now: float, pruned: Pruned) -> bool:
        """Take a turn's result; True when the pass reached its end (the loop then waits)."""
        self.marks.add(Mark(now, pruned.next_msg_id, pruned.next_outbox_id))
        self._after = pruned.last_msg_id or 0
        others_full = any(
            count >= self.limit for table, count in pruned.deleted.items() if table != "messages"
        )
        return pruned.last_msg_id is None and not others_full


# ── The statements (on the journal's writer thread, in its transaction) ────────────────

# The window's rows by primary key, then those final before the cut among them.
SQL_WINDOW_END: Final = (
    "SELECT max(msg_id), count(*) FROM (SELECT msg_id FROM messages"
    " WHERE msg_id > ? AND msg_id < ? ORDER BY msg_id LIMIT ?)"
)
SQL_PRUNE_MESSAGES: Final = (
    "DELETE FROM messages WHERE msg_id > ? AND msg_id <= ? AND state = 3 AND final_at < ?"
)
SQL_PRUNE_OUTBOX: Final = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id < ? ORDER BY id LIMIT ?)"
)
SQL_PRUNE_ORPHANS: Final = (
    "DELETE FROM orphan_receipts WHERE id IN"
    " (SELECT id FROM orphan_receipts ORDER BY id LIMIT ?) AND at < ?"
)
SQL_PRUNE_DAYS: Final = "DELETE FROM account_days WHERE day < ?"
SQL_NEXT_OUTBOX_ID: Final = "SELECT coalesce(max(id), 0) + 1 FROM outbox"
NO_END: Final = 1 << 62


def prune_turn(connection: sqlite3.Connection, turn: PruneTurn, next_msg_id: int) -> Pruned:
    """Delete one turn's rows (module docstring); the caller commits."""
    execute = connection.execute
    below = NO_END if turn.below is None else turn.below
    last, looked = execute(SQL_WINDOW_END, (turn.after, below, turn.limit)).fetchone()
    messages = 0
    if looked:
        messages = execute(SQL_PRUNE_MESSAGES, (turn.after, last, turn.cut)).rowcount
    outbox = execute(SQL_PRUNE_OUTBOX, (turn.outbox_below, turn.limit)).rowcount
    orphans = execute(SQL_PRUNE_ORPHANS, (turn.limit, turn.cut)).rowcount
    yesterday = int(turn.cut // SECONDS_PER_DAY) - 1
    days = execute(SQL_PRUNE_DAYS, (yesterday,)).rowcount
    return Pruned(
        deleted={
            "messages": max(messages, 0),
            "outbox": max(outbox, 0),
            "orphan_receipts": max(orphans, 0),
            "account_days": max(days, 0),
        },
        last_msg_id=int(last) if looked == turn.limit else None,
        next_msg_id=next_msg_id,
        next_outbox_id=int(execute(SQL_NEXT_OUTBOX_ID).fetchone()[0]),
    )


def release_free_pages(connection: sqlite3.Connection) -> int:
    """Give up to VACUUM_PAGES free pages back to the file system when many are free and the
    file allows it (auto_vacuum = INCREMENTAL); returns how many pages were free before."""
    execute = connection.execute
    if execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return 0
    free = int(execute("PRAGMA freelist_count").fetchone()[0])
    pages = int(execute("PRAGMA page_count").fetchone()[0])
    if free > max(VACUUM_FLOOR_PAGES, pages // 4):
        execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
    return free


# ── The loop (on the event loop) ───────────────────────────────────────────────────


class PrunedJournal(Protocol):
    async def prune(self, turn: PruneTurn) -> Pruned: ...


async def prune_once(
    journal: PrunedJournal,
    prune_pass: PrunePass,
    clock: Callable[[], float],
    on_pruned: Callable[[Mapping[str, int]], None],
) -> bool:
    """One turn of `prune_pass` on `journal`; True when the pass reached its end."""
    now = clock()
    pruned = await journal.prune(prune_pass.plan(now))
    if any(pruned.deleted.values()):
        on_pruned(pruned.deleted)
    return prune_pass.done(now, pruned)


async def serve_pruning(
    journal: PrunedJournal,
    keep_s: float,
    *,
    on_pruned: Callable[[Mapping[str, int]], None],
    clock: Callable[[], float] = time.time,
    limit: int = PRUNE_BATCH,
    interval_s: float | None = None,
) -> None:
    """Forever: prune what ended more than `keep_s` ago, a turn at a time (engine.feed's
    sweep loop); `on_pruned` gets each turn's deletions by table (the metric)."""
    prune_pass = PrunePass(keep_s, limit=limit)
    wait_s = min(PRUNE_INTERVAL_S, keep_s / 4) if interval_s is None else interval_s
    await serve_turns(lambda: prune_once(journal, prune_pass, clock, on_pruned), wait_s)


async def purge(
    journal: PrunedJournal, older_than_s: float, *, clock: Callable[[], float] = time.time
) -> dict[str, int]:
    """One whole pass now (`septet journal purge`): what ended more than `older_than_s`
    ago; returns the rows deleted by table. Outbox lines carry no time of their own: only
    the daemon's sweep, which has seen their ids over time, deletes them."""
    totals: dict[str, int] = {}

    def count(deleted: Mapping[str, int]) -> None:
        for table, rows in deleted.items():
            totals[table] = totals.get(table, 0) + rows

    prune_pass = PrunePass(older_than_s)
    finished = False
    while not finished:  # bounded turns until one reaches the newest ended message
        finished = await prune_once(journal, prune_pass, clock, count)
    return totals
