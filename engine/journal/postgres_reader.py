"""Read-only queries of the PostgreSQL journal for applications, on a connection of their own.

engine.journal.sqlite_reader's counterpart (the HTTP API, the admin commands and the backlog gauge
read through it): the same answers, StoredMessage and MessagePage, from the same scan
(`page_from_rows`), on a connection that lives on a worker thread of its own (one query at
a time) and never waits in the writer's line. Each query sees what is committed, on every
node. A dropped connection is made again at the next query.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread
import psycopg

from engine.journal.interface import JournalError, MessagePage, StorageStats, StoredMessage
from engine.journal.postgres import Connection, PostgresLink, describe_dsn, reason_of
from engine.journal.postgres_schema import SCHEMA_VERSION
from engine.journal.reading import SCAN_ROWS, SQL_COLUMNS, TOP, page_from_rows, stored_from_row

__all__ = ["PostgresReader", "open_postgres_reader"]

T = TypeVar("T")

SQL_ONE: Final = f"SELECT {SQL_COLUMNS} FROM messages WHERE msg_id = %s"  # noqa: S608
SQL_BELOW: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages"  # noqa: S608
    " WHERE account = %s AND msg_id < %s ORDER BY msg_id DESC LIMIT %s"
)
SQL_BY_CLIENT_REF: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages"  # noqa: S608
    " WHERE account = %s AND client_ref = %s AND msg_id < %s ORDER BY msg_id DESC LIMIT %s"
)
SQL_LATEST: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages WHERE msg_id < %s ORDER BY msg_id DESC LIMIT %s"  # noqa: S608
)
SQL_LATEST_IN_STATE: Final = (
    f"SELECT {SQL_COLUMNS} FROM messages"  # noqa: S608
    " WHERE msg_id < %s AND status = %s ORDER BY msg_id DESC LIMIT %s"
)
SQL_COUNTS: Final = (
    "SELECT (SELECT count(*) FROM messages WHERE state = 0),"
    " (SELECT count(*) FROM messages WHERE state = 1),"
    " (SELECT coalesce(sum(pending), 0) FROM counters),"
    " (SELECT coalesce(sum(total), 0) FROM counters)"
)


SQL_STATS: Final = "SELECT pg_database_size(current_database()), (SELECT min(msg_id) FROM messages)"
SQL_BY_STATUS: Final = "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status"


class PostgresReader:
    """The JournalReader (engine.journal.interface) on its own connection and thread
    (module docstring)."""

    def __init__(self, dsn: str) -> None:
        self._link = PostgresLink(dsn, describe_dsn(dsn))
        self._limiter = anyio.CapacityLimiter(1)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._link.close, limiter=self._limiter)

    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` on the reader's thread; a sentence when the database fails."""

        def call() -> T:
            try:
                return work(self._link.ready())
            except psycopg.Error as error:
                raise JournalError(
                    f"The journal at {self._link.where} could not be read: {reason_of(error)}."
                ) from None

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def message(self, msg_id: int) -> StoredMessage | None:
        def work(connection: Connection) -> StoredMessage | None:
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
        """As JournalReader.page."""

        def work(connection: Connection) -> MessagePage:
            cursor = TOP if below is None else below
            if client_ref is not None:
                parameters: tuple[Any, ...] = (account, client_ref, cursor, SCAN_ROWS)
                rows = connection.execute(SQL_BY_CLIENT_REF, parameters).fetchall()
            else:
                rows = connection.execute(SQL_BELOW, (account, cursor, SCAN_ROWS)).fetchall()
            return page_from_rows(rows, cursor, status=status, since=since, limit=limit)

        return await self.run(work)

    async def latest(
        self, *, status: str | None, below: int | None, limit: int
    ) -> list[StoredMessage]:
        def work(connection: Connection) -> list[StoredMessage]:
            cursor = TOP if below is None else below
            if status is None:
                rows = connection.execute(SQL_LATEST, (cursor, limit)).fetchall()
            else:
                rows = connection.execute(SQL_LATEST_IN_STATE, (cursor, status, limit)).fetchall()
            return [stored_from_row(row) for row in rows]

        return await self.run(work)

    async def counts(self) -> dict[str, int]:
        """Messages by phase, on every node (engine.observe's backlog gauge)."""

        def work(connection: Connection) -> dict[str, int]:
            row = connection.execute(SQL_COUNTS).fetchone()
            accepted, inflight, pending, total = (int(v) for v in row) if row else (0, 0, 0, 0)
            return {
                "accepted": accepted,
                "inflight": inflight,
                "submitted": pending - accepted - inflight,
                "final": total - pending,
            }

        return await self.run(work)

    async def kept_events_count(self) -> int:
        def work(connection: Connection) -> int:
            row = connection.execute("SELECT count(*) FROM outbox").fetchone()
            return int(row[0]) if row is not None else 0

        return await self.run(work)

    async def stats(self) -> StorageStats:
        """The database's size and the messages by lifecycle state. Its write-ahead log and
        free space are the server's own (vacuumed by its autovacuum): not counted here."""

        def work(connection: Connection) -> StorageStats:
            row = connection.execute(SQL_STATS).fetchone()
            size, oldest = (int(row[0]), row[1]) if row is not None else (0, None)
            by_status = {
                str(status or "?"): int(n) for status, n in connection.execute(SQL_BY_STATUS)
            }
            return StorageStats(
                location=self._link.where,
                file_bytes=size,
                wal_bytes=0,
                free_bytes=0,
                auto_vacuum="server",
                schema_version=SCHEMA_VERSION,
                by_status=by_status,
                oldest_msg_id=None if oldest is None else int(oldest),
            )

        return await self.run(work)

    async def feed(self, account: str, after: int, limit: int) -> tuple[list[bytes], int]:
        """`account`'s events after cursor `after`, and the cursor to read on from."""
        limit = max(1, min(limit, 1000))

        def work(connection: Connection) -> tuple[list[bytes], int]:
            rows = connection.execute(
                "SELECT id, body FROM events WHERE account = %s AND id > %s ORDER BY id LIMIT %s",
                (account, max(after, 0), limit),
            ).fetchall()
            if not rows:
                return [], max(after, 0)
            return [bytes(row[1]) for row in rows], int(rows[-1][0])

        return await self.run(work)

    async def history(self, msg_id: str) -> list[bytes]:
        """A message's events, oldest first (none for an unknown message)."""
        if not msg_id.isdigit():
            return []

        def work(connection: Connection) -> list[bytes]:
            rows = connection.execute(
                "SELECT body FROM events WHERE msg_id = %s ORDER BY id", (int(msg_id),)
            )
            return [bytes(row[0]) for row in rows]

        return await self.run(work)


@contextlib.asynccontextmanager
async def open_postgres_reader(dsn: str) -> AsyncIterator[PostgresReader]:
    """A reader of the PostgreSQL journal `dsn` names (opened by the writer first)."""
    reader = PostgresReader(dsn)
    try:
        yield reader
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()
