"""Read-only queries of the journal for applications (the HTTP API), on a connection of their own.

The journal's writer thread owns its connection and commits in groups (engine.journal); a
status query or a page of an application's messages must not wait in that line nor make
it wait. SQLite's WAL lets a second connection read while the writer writes: this one is
opened read-only (`mode=ro`), lives on a worker thread of its own (one at a time, an anyio
CapacityLimiter of 1), and sees the last committed state. Nothing here writes.

    StoredMessage   a message as stored, with the lifecycle state by name (the `status`
                    column) and the times and outcome the columns keep
    message()       one by msg_id
    page()          an account's messages, newest first, filtered, by cursor
    feed()          an account's durable event feed from a cursor (engine.feed's query)
    counts()        the backlog by phase (engine.observe), off the writer thread
    history()       one message's events in order (engine.feed's query)
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread
import msgspec

from engine import feed
from engine.journal import STATE_NAMES, count_kept_events, count_states
from engine.models import Message

T = TypeVar("T")

message_decoder: Final = msgspec.msgpack.Decoder(Message)

# The columns of a StoredMessage, in `_stored_from_row`'s order.
SQL_COLUMNS: Final = (
    "msg_id, due_at, attempt, bridge_index, provider_id, maybe_sent, body, status,"
    " submitted_at, final_at, code, error, submit_cost, submit_currency, state"
)
SQL_ONE: Final = f"SELECT {SQL_COLUMNS} FROM messages WHERE msg_id = ?"  # noqa: S608
# An account's messages newest first below a cursor (the journal's messages_account
# index), or those with one client id (messages_client_ref); the state and time filters
# are applied to the rows read, so a page reads at most `SCAN_ROWS` of them.
SQL_BELOW: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages INDEXED BY messages_account"  # noqa: S608
    " WHERE account = ? AND msg_id < ? ORDER BY msg_id DESC LIMIT ?"
)
SQL_BY_CLIENT_REF: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages"  # noqa: S608
    " WHERE account = ? AND client_ref = ? AND msg_id < ? ORDER BY msg_id DESC LIMIT ?"
)
# Every account's messages newest first below a cursor, or those in one state (the
# operator's `septet messages list`: a scan by primary key, on this thread).
SQL_LATEST: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages WHERE msg_id < ? ORDER BY msg_id DESC LIMIT ?"  # noqa: S608
)
SQL_LATEST_IN_STATE: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages"  # noqa: S608
    " WHERE msg_id < ? AND status = ? ORDER BY msg_id DESC LIMIT ?"
)
# Rows one page may look at, whatever its filters: a page that finds fewer than it asked
# for within them still hands back a cursor to go on from.
SCAN_ROWS: Final = 5000
# No msg_id reaches this: the cursor of a first page.
TOP: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as the journal holds it now. `status` is the lifecycle state's name
    (engine.models.State); times are Unix seconds."""

    message: Message
    status: str
    submitted_at: float | None
    final_at: float | None
    code: str | None
    error: str | None
    provider_cost: float | None
    provider_currency: str | None


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Messages newest first, and the cursor below the last row looked at (None: no more)."""

    messages: list[StoredMessage]
    next_cursor: int | None


def stored_from_row(row: Sequence[Any]) -> StoredMessage:
    message = message_decoder.decode(row[6])
    message.due_at = row[1]
    message.attempt = row[2]
    message.bridge_index = row[3]
    message.provider_id = row[4]
    message.maybe_sent_at = float(row[5] or 0.0)
    message.state = STATE_NAMES[row[14]]
    return StoredMessage(
        message=message,
        status=str(row[7] or ""),
        submitted_at=row[8],
        final_at=row[9],
        code=row[10],
        error=row[11],
        provider_cost=row[12],
        provider_currency=row[13],
    )


def page_from_rows(
    rows: Iterable[Sequence[Any]],
    cursor: int,
    *,
    status: str | None,
    since: float | None,
    limit: int,
) -> MessagePage:
    """A page from up to SCAN_ROWS rows read newest first below `cursor` (SQL_COLUMNS):
    those in `status`, accepted at or after `since` (msg_ids grow with accept time, so the
    scan stops at the first one older), at most `limit`. Every backend's reader's."""
    found: list[StoredMessage] = []
    scanned = 0
    last = cursor
    for row in rows:
        scanned += 1
        last = int(row[0])
        stored = stored_from_row(row)
        if since is not None and stored.message.accepted_at < since:
            return MessagePage(found, None)
        if status is not None and stored.status != status:
            continue
        found.append(stored)
        if len(found) == limit:
            return MessagePage(found, last)
    return MessagePage(found, last if scanned == SCAN_ROWS else None)


class JournalReader:
    """Read-only queries on their own connection and thread (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self) -> None:
        self._connection = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.execute("PRAGMA query_only = 1")
        return connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await anyio.to_thread.run_sync(connection.close, limiter=self._limiter)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the reader thread: the seam for other read-only queries
        (the event feed's, engine.feed)."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("the journal reader is closed")
        return await anyio.to_thread.run_sync(work, connection, limiter=self._limiter)

    async def message(self, msg_id: int) -> StoredMessage | None:
        def work(connection: sqlite3.Connection) -> StoredMessage | None:
            row = connection.execute(SQL_ONE, (msg_id,)).fetchone()
            return None if row is None else stored_from_row(row)

        return await self.run(work)

    async def page(
        self,
        account: str,
        *,
        below: int | None = None,
        client_ref: str | None = None,
        status: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> MessagePage:
        """`account`'s messages below msg_id `below`, newest first: at most `limit` of them
        with `client_ref`, lifecycle `status` and accepted at or after `since` (msg_ids
        grow with accept time, so the scan stops at the first one older)."""

        def work(connection: sqlite3.Connection) -> MessagePage:
            cursor = TOP if below is None else below
            if client_ref is not None:
                rows = connection.execute(
                    SQL_BY_CLIENT_REF, (account, client_ref, cursor, SCAN_ROWS)
                )
            else:
                rows = connection.execute(SQL_BELOW, (account, cursor, SCAN_ROWS))
            return page_from_rows(rows, cursor, status=status, since=since, limit=limit)

        return await self.run(work)

    async def latest(
        self, *, status: str | None, below: int | None, limit: int
    ) -> list[StoredMessage]:
        """Every account's messages below msg_id `below`, newest first, in lifecycle state
        `status` when given, at most `limit`."""

        def work(connection: sqlite3.Connection) -> list[StoredMessage]:
            cursor = TOP if below is None else below
            if status is None:
                rows = connection.execute(SQL_LATEST, (cursor, limit))
            else:
                rows = connection.execute(SQL_LATEST_IN_STATE, (cursor, status, limit))
            return [stored_from_row(row) for row in rows]

        return await self.run(work)

    async def counts(self) -> dict[str, int]:
        """Messages by phase as of the last commit (engine.observe's backlog gauge): the
        index walk runs here, never on the journal's writer thread."""
        return await self.run(count_states)

    async def kept_events_count(self) -> int:
        return await self.run(count_kept_events)

    async def feed(self, account: str, after: int, limit: int) -> tuple[list[bytes], int]:
        """`account`'s events after cursor `after`, and the cursor to read on from."""
        page = await self.run(lambda connection: feed.read_feed(connection, account, after, limit))
        return page.events, page.next_cursor

    async def history(self, msg_id: str) -> list[bytes]:
        """A message's events, oldest first (none for an unknown message)."""
        return await self.run(lambda connection: feed.history(connection, msg_id)) or []


@contextlib.asynccontextmanager
async def open_reader(path: str | Path) -> AsyncIterator[JournalReader]:
    """A reader of the journal at `path` (opened by the writer first: it makes the file)."""
    reader = JournalReader(path)
    await reader.open()
    try:
        yield reader
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()
