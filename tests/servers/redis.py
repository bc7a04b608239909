"""pytest fixture for a real redis-server: one per test that asks for it.

`redis_server` starts it (bench.redis_server: a temporary directory, 127.0.0.1, a free port,
no persistence) only for the tests that name it, and stops it after the test whatever the
outcome. One per test, not per session: tests stop, restart and empty it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redis_server import RedisServer, RedisServerError


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
    except RedisServerError as error:
        pytest.fail(f"redis-server is needed for this test and cannot be started: {error}")
    try:
        yield server
    finally:
        server.stop()
