"""An aiohttp app on a free 127.0.0.1 port, for the HTTP client tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve_app(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    """Serve `routes` until the block ends; yields the base URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    await web.SockSite(runner, listener).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
