"""pytest fixtures that run a journal test once per backend, through the one factory.

Registered in tests/conftest.py, so any test may ask for them:

    journal_backend   parametrised over BACKENDS: a test that asks for it, or for a fixture
                      below, runs once per backend, its id ending in [sqlite] or
                      [postgresql] (`-k sqlite` / `-k postgresql` picks one)
    journal_settings  the [journal] settings of a fresh, empty store for this test
    opener            opens the test's journal through engine.journal.open_journal, the
                      daemon's own factory, with a clock and the accounts whose feed is
                      kept; the same store every time (a second open is a restart)
    journal           the test's journal, opened once for the test
    reader            its JournalReader (engine.journal.open_reader), opened after it

How a backend joins:

1. its `JournalBackend` value goes into BACKENDS, and its journal class into
   BackendJournal (the tests reach the writer's `_execute` through it);
2. `journal_settings` gets a branch returning the settings of a fresh store for one test.
   A backend that needs a server asks for its fixture there, through
   `request.getfixturevalue(...)`, so the other backends' runs never start it
   (PostgreSQL: `postgres_dsn` of tests/servers/postgres.py, a database per test);
3. run the neutral tests (tests/engine/test_journal.py, test_feed.py,
   test_journal_accounts.py) with `-k <backend>`: a failure is a difference from the
   contract in engine/journal/interface.py.

What only one backend has is tested in a module of its own whose docstring says so
(tests/engine/test_journal_sqlite.py, tests/engine/test_journal_postgres.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Protocol

import pytest

from engine.config import JournalSettings
from engine.journal import JournalBackend, JournalReader, open_journal, open_reader
from engine.journal.postgres import PostgresJournal
from engine.journal.sqlite import SqliteJournal

__all__ = [
    "BACKENDS",
    "BackendJournal",
    "JournalOpener",
    "journal",
    "journal_backend",
    "journal_settings",
    "opener",
    "reader",
]

BACKENDS = (JournalBackend.SQLITE.value, JournalBackend.POSTGRESQL.value)
BackendJournal = SqliteJournal | PostgresJournal


class JournalOpener(Protocol):
    def __call__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        feed_accounts: Collection[str] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[BackendJournal]:
        """The test's journal, opened (again) on the backend under test."""
        ...


@pytest.fixture(params=BACKENDS)
def journal_backend(request: pytest.FixtureRequest) -> str:
    """The backend this run of the test is on (a JournalBackend value)."""
    return str(request.param)


@pytest.fixture
def journal_settings(
    journal_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> JournalSettings:
    """`[journal]` settings of a fresh, empty store on the backend under test."""
    match JournalBackend(journal_backend):
        case JournalBackend.SQLITE:
            return JournalSettings(backend=journal_backend, path=str(tmp_path / "septet.db"))
        case JournalBackend.POSTGRESQL:
            dsn = request.getfixturevalue("postgres_dsn")
            return JournalSettings(backend=journal_backend, dsn=str(dsn))


@pytest.fixture
def opener(journal_settings: JournalSettings) -> JournalOpener:
    @contextlib.asynccontextmanager
    async def open_it(
        *, clock: Callable[[], float] = time.time, feed_accounts: Collection[str] | None = None
    ) -> AsyncIterator[BackendJournal]:
        async with open_journal(
            journal_settings, clock=clock, feed_accounts=feed_accounts
        ) as opened:
            assert isinstance(opened, SqliteJournal | PostgresJournal)
            yield opened

    return open_it


@pytest.fixture
async def journal(opener: JournalOpener) -> AsyncIterator[BackendJournal]:
    async with opener() as opened:
        yield opened


@pytest.fixture
async def reader(
    journal: BackendJournal, journal_settings: JournalSettings
) -> AsyncIterator[JournalReader]:
    """The read-only reader of the test's journal (opened after it: it makes the store)."""
    async with open_reader(journal_settings) as opened:
        yield opened
