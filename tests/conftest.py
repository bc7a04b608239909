"""Shared pytest configuration: anyio's built-in plugin, run on asyncio with uvloop, and the
fixtures of servers some tests start for real (tests/servers)."""

from __future__ import annotations

import pytest

from tests.servers.postgres import postgres_dsn, postgres_server
from tests.servers.redis import redis_server

__all__ = ["postgres_dsn", "postgres_server", "redis_server"]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})
