"""The JournalReader on SQLite: read-only queries on a connection and a thread of their own.

The journal's writer thread owns its connection and commits in groups (engine.journal.sqlite); a
status query or a page of an application's messages must not wait in that line nor make
it wait. SQLite's WAL lets a second connection read while the writer writes: this one is
opened read-only (`mode=ro`), lives on a worker thread of its own (one at a time, an anyio
CapacityLimiter of 1), and sees the last committed state. Nothing here writes.

    message()       one by msg_id
    page()          an account's messages, newest first, filtered, by cursor
    feed()          an account's durable event feed from a cursor (engine.feed's query)
    counts()        the backlog by phase (engine.observe), off the writer thread
    history()       one message's events in order (engine.feed's query)
    stats()         the file's size and the messages by state (`septet journal stats`)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final, TypeVar

import anyio
import anyio.to_thread

from engine import feed
from engine.journal.interface import MessagePage, StorageStats, StoredMessage
from engine.journal.reading import SCAN_ROWS, SQL_COLUMNS, TOP, page_from_rows, stored_from_row
from engine.journal.sqlite import count_kept_events, count_states
from engine.journal.sqlite_schema import SCHEMA_VERSION

T = TypeVar("T")

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
SQL_BY_STATUS: Final = "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status"
SQL_OLDEST: Final = "SELECT min(msg_id) FROM messages"
# SQLite's `PRAGMA auto_vacuum` values by name.
AUTO_VACUUM_MODES: Final = {0: "none", 1: "full", 2: "incremental"}


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class SqliteReader:
    """The JournalReader (engine.journal.interface) on its own connection and thread
    (module docstring)."""

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

    async def stats(self) -> StorageStats:
        """The file's size on disk (with its WAL and its free pages), how it gives pages
        back (auto_vacuum), and the messages by lifecycle state."""

        def read(connection: sqlite3.Connection) -> StorageStats:
            by_status = {
                str(status or "?"): int(n) for status, n in connection.execute(SQL_BY_STATUS)
            }
            oldest = connection.execute(SQL_OLDEST).fetchone()[0]
            free = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
            page = int(connection.execute("PRAGMA page_size").fetchone()[0])
            vacuum = int(connection.execute("PRAGMA auto_vacuum").fetchone()[0])
            return StorageStats(
                location=str(self.path),
                file_bytes=_size(self.path),
                wal_bytes=_size(self.path.with_name(self.path.name + "-wal")),
                free_bytes=free * page,
                auto_vacuum=AUTO_VACUUM_MODES.get(vacuum, str(vacuum)),
                schema_version=SCHEMA_VERSION,
                by_status=by_status,
                oldest_msg_id=None if oldest is None else int(oldest),
            )

        return await self.run(read)

    async def feed(self, account: str, after: int, limit: int) -> tuple[list[bytes], int]:
        """`account`'s events after cursor `after`, and the cursor to read on from."""
        page = await self.run(lambda connection: feed.read_feed(connection, account, after, limit))
        return page.events, page.next_cursor

    async def history(self, msg_id: str) -> list[bytes]:
        """A message's events, oldest first (none for an unknown message)."""
        return await self.run(lambda connection: feed.history(connection, msg_id)) or []


@contextlib.asynccontextmanager
async def open_sqlite_reader(path: str | Path) -> AsyncIterator[SqliteReader]:
    """A reader of the journal at `path` (opened by the writer first: it makes the file)."""
    reader = SqliteReader(path)
    await reader.open()
    try:
        yield reader
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()
