"""Shared pytest configuration: anyio's built-in plugin, run on asyncio with uvloop."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})
