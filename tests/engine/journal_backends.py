"""The journal's tests on every backend: the `journal` fixture is a fresh SQLite journal and
a fresh PostgreSQL one (tests/servers/postgres.py starts the server on first use), `reader`
its read-only reader, `opener` opens it again: each backend-neutral test runs on both."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

import pytest

from engine.journal import JournalReader
from engine.journal.postgres import PostgresJournal, open_postgres_journal
from engine.journal.postgres_reader import open_postgres_reader
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.journal.sqlite_reader import open_sqlite_reader

__all__ = [
    "BACKENDS",
    "BackendJournal",
    "JournalOpener",
    "journal",
    "journal_target",
    "opener",
    "reader",
]

BACKENDS = ("sqlite", "postgresql")
BackendJournal = SqliteJournal | PostgresJournal
# Opens (again) the test's journal on its backend, with a clock and the accounts whose
# feed is kept; the same file or database each time.
JournalOpener = Callable[..., contextlib.AbstractAsyncContextManager[BackendJournal]]


@pytest.fixture(params=BACKENDS)
def journal_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, where): a new SQLite file's path, or a new database's DSN."""
    backend = str(request.param)
    if backend == "sqlite":
        return backend, str(tmp_path / "septet.db")
    return backend, str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
async def journal(journal_target: tuple[str, str]) -> AsyncIterator[BackendJournal]:
    backend, where = journal_target
    if backend == "sqlite":
        async with open_sqlite_journal(where) as opened:
            yield opened
    else:
        async with open_postgres_journal(where) as pg:
            yield pg


@pytest.fixture
def opener(journal_target: tuple[str, str]) -> JournalOpener:
    backend, where = journal_target

    @contextlib.asynccontextmanager
    async def open_it(
        *, clock: Callable[[], float] = time.time, feed_accounts: Collection[str] | None = None
    ) -> AsyncIterator[BackendJournal]:
        if backend == "sqlite":
            async with open_sqlite_journal(
                where, clock=clock, feed_accounts=feed_accounts
            ) as opened:
                yield opened
        else:
            async with open_postgres_journal(where, clock=clock, feed_accounts=feed_accounts) as pg:
                yield pg

    return open_it


@pytest.fixture
async def reader(
    journal: BackendJournal, journal_target: tuple[str, str]
) -> AsyncIterator[JournalReader]:
    """The read-only reader of the test's journal (opened after it), on its backend."""
    backend, where = journal_target
    if backend == "sqlite":
        async with open_sqlite_reader(where) as opened:
            yield opened
    else:
        async with open_postgres_reader(where) as pg:
            yield pg
