"""pytest fixtures for a real PostgreSQL server: one per test session, started on first use.

`postgres_server` starts it (bench.postgres: a temporary directory, 127.0.0.1 and a free port)
only when a test asks for it, so tests that do not need PostgreSQL never pay for it, and stops
it when the session ends, whatever the outcome. `postgres_dsn` gives each test a database of
its own (CREATE DATABASE: a few milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.postgres import PostgresUnavailableError, TemporaryPostgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    try:
        server = TemporaryPostgres.start()
    except PostgresUnavailableError as error:
        pytest.fail(f"PostgreSQL is needed for this test and cannot be started: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: TemporaryPostgres) -> str:
    """A new, empty database on the session's server: its libpq connection string."""
    return postgres_server.create_database()
