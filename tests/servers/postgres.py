"""pytest fixtures for a real PostgreSQL server: one per test session, started on first use.

`postgres_server` starts it (bench.postgres: a temporary directory, 127.0.0.1 and a free port)
only when a test asks for it, so tests that do not need PostgreSQL never pay for it, and stops
it when the session ends, whatever the outcome. `postgres_dsn` gives each test a database of
its own, new and empty (CREATE DATABASE: 0.1 s on two busy cores, so the next one is made on
a thread while the test runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from bench.postgres import PostgresUnavailableError, TemporaryPostgres


class Databases:
    """New empty databases on `server`, one made ahead on a thread of its own: a test
    takes the one made while the test before it ran, and the next is started."""

    def __init__(self, server: TemporaryPostgres) -> None:
        self.server = server
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="create-database")
        self._next: Future[str] | None = None

    def take(self) -> str:
        made = self._next or self._maker.submit(self._create)
        self._next = self._maker.submit(self._create)
        return made.result()

    def _create(self) -> str:
        # A prefix of its own: a test may create databases on the server meanwhile.
        return self.server.create_database("ahead")

    def close(self) -> None:
        """Wait for the one being made (the server is stopped after)."""
        self._maker.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Databases]:
    try:
        server = TemporaryPostgres.start()
    except PostgresUnavailableError as error:
        pytest.fail(f"PostgreSQL is needed for this test and cannot be started: {error}")
    databases = Databases(server)
    try:
        yield databases
    finally:
        databases.close()
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(postgres_databases: Databases) -> TemporaryPostgres:
    return postgres_databases.server


@pytest.fixture
def postgres_dsn(postgres_databases: Databases) -> str:
    """A new, empty database on the session's server: its libpq connection string."""
    return postgres_databases.take()
