"""The durable journal: what the engine stores, behind one interface, one module per backend.

    interface.py      the Journal and JournalReader protocols, the changes (MarkInflight ...
                      StoreEvents) and answers, JournalError, the state names all share
    writer.py         the group-commit writer thread, generic over a store's connection
                      (the SMPP store, engine.smpp.store, uses it too)
    sqlite_transactions.py  the writer's statements on a sqlite3 connection
    sqlite.py         SqliteJournal: the embedded default, one SQLite file (WAL)
    sqlite_schema.py  its schema and the migrations from older files
    sqlite_reader.py  its JournalReader: a read-only connection of its own
    postgres.py       PostgresJournal: one database several nodes share (cluster mode),
                      with postgres_schema.py, postgres_sql.py and postgres_reader.py
    reading.py        what both backends' readers share (rows to StoredMessage, pages)

The PostgreSQL modules import psycopg (the extra septet[postgresql]): they are imported
only when `[journal] backend = "postgresql"` opens them.

`open_journal` and `open_reader` are the factories: they pick the backend by
`[journal] backend`. Every public name of the interface is re-exported here, so the
engine imports from `engine.journal` and never from a backend's module.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING

from engine.feed import AppendEvents
from engine.journal.interface import (
    STATE_NAMES,
    STATUS_OF_OUTCOME,
    Change,
    Decide,
    Duplicate,
    Journal,
    JournalBackend,
    JournalError,
    JournalFullError,
    JournalReader,
    Listed,
    MarkCharged,
    MarkConfirmed,
    MarkFinal,
    MarkInflight,
    MarkPolled,
    MarkRetry,
    MarkSubmitted,
    MarkUnconfirmed,
    MessagePage,
    PollDue,
    SchedulePolls,
    StorageStats,
    StoredMessage,
    StoreEvents,
    StoreOrphanReceipt,
    journal_backend,
)
from engine.journal.sqlite import open_sqlite_journal
from engine.journal.sqlite_reader import open_sqlite_reader

if TYPE_CHECKING:
    from engine.config import JournalSettings

__all__ = [
    "STATE_NAMES",
    "STATUS_OF_OUTCOME",
    "AppendEvents",
    "Change",
    "Decide",
    "Duplicate",
    "Journal",
    "JournalBackend",
    "JournalError",
    "JournalFullError",
    "JournalReader",
    "Listed",
    "MarkCharged",
    "MarkConfirmed",
    "MarkFinal",
    "MarkInflight",
    "MarkPolled",
    "MarkRetry",
    "MarkSubmitted",
    "MarkUnconfirmed",
    "MessagePage",
    "PollDue",
    "SchedulePolls",
    "StorageStats",
    "StoreEvents",
    "StoreOrphanReceipt",
    "StoredMessage",
    "journal_backend",
    "max_size_bytes",
    "open_journal",
    "open_reader",
]


def max_size_bytes(settings: JournalSettings) -> int | None:
    """`[journal] max_size_mb` in bytes (None: no cap)."""
    if settings.max_size_mb is None:
        return None
    return int(settings.max_size_mb * (1 << 20))


@contextlib.asynccontextmanager
async def open_journal(
    settings: JournalSettings,
    *,
    on_commit: Callable[[float, int], None] | None = None,
    clock: Callable[[], float] = time.time,
    feed_accounts: Collection[str] | None = None,
) -> AsyncIterator[Journal]:
    """Open (or create) the journal `settings` describe, on its backend, for the block.

    JournalError, with a sentence naming the store and the cause, when it cannot be
    opened (or `[journal] backend` names none this septet has). `on_commit(seconds,
    operations)` is called after each commit; `clock` stamps the feed's events;
    `feed_accounts`: the accounts whose events the feed keeps (None: every account's).
    Leaving the block finishes every queued operation and closes the store, even when
    the block is cancelled.
    """
    match journal_backend(settings.backend):
        case JournalBackend.SQLITE:
            async with open_sqlite_journal(
                settings.path,
                synchronous=settings.synchronous,
                on_commit=on_commit,
                max_size_bytes=max_size_bytes(settings),
                cache_mb=settings.cache_mb,
                clock=clock,
                feed_accounts=feed_accounts,
            ) as journal:
                yield journal
        case JournalBackend.POSTGRESQL:
            from engine.journal.postgres import open_postgres_journal

            async with open_postgres_journal(
                _dsn_of(settings), on_commit=on_commit, clock=clock, feed_accounts=feed_accounts
            ) as shared:
                yield shared


@contextlib.asynccontextmanager
async def open_reader(settings: JournalSettings) -> AsyncIterator[JournalReader]:
    """A reader of the journal `settings` describe (opened after the journal: the journal
    makes the store)."""
    match journal_backend(settings.backend):
        case JournalBackend.SQLITE:
            async with open_sqlite_reader(settings.path) as reader:
                yield reader
        case JournalBackend.POSTGRESQL:
            from engine.journal.postgres_reader import open_postgres_reader

            async with open_postgres_reader(_dsn_of(settings)) as shared_reader:
                yield shared_reader


def _dsn_of(settings: JournalSettings) -> str:
    if settings.dsn is None:
        raise JournalError(
            'journal.backend is "postgresql", but journal.dsn is not set: give the database'
            ' as "postgresql://user@host:5432/dbname" (or "env:NAME").'
        )
    return settings.dsn
