"""Shared pytest configuration: anyio's built-in plugin, run on asyncio with uvloop, the
fixtures of servers some tests start for real (tests/servers), and the journal's tests run
once per backend (tests/engine/journal_backends.py)."""

from __future__ import annotations

import pytest

from tests.engine.journal_backends import (
    journal,
    journal_backend,
    journal_settings,
    opener,
    reader,
)
from tests.servers.postgres import postgres_databases, postgres_dsn, postgres_server
from tests.servers.redis import redis_server

__all__ = [
    "journal",
    "journal_backend",
    "journal_settings",
    "opener",
    "postgres_databases",
    "postgres_dsn",
    "postgres_server",
    "reader",
    "redis_server",
]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})
