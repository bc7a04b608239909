"""A webhook receiver for tests, run as its own process so a test can kill -9 it.

    python -m tests.engine.webhooks.receiver PORT RECORD_FILE

Each POST is appended to RECORD_FILE as one JSON line (the path, the Septet-Event-Id and
Septet-Signature headers, the body as text) before the 200 is sent: store, then
acknowledge, as docs/webhooks.md asks of a receiver. A POST to a path ending in /gone is
recorded and answered 410. Prints "listening" once the port is open.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
from aiohttp import web


def build_app(record: Path) -> web.Application:
    out = record.open("ab", buffering=0)  # each line reaches the OS before the reply

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        line = {
            "path": request.path,
            "event_id": request.headers.get("Septet-Event-Id"),
            "signature": request.headers.get("Septet-Signature"),
            "body": body.decode(),
        }
        out.write(msgspec.json.encode(line) + b"\n")
        return web.Response(status=410 if request.path.endswith("/gone") else 200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app


async def main(port: int, record: Path) -> None:
    runner = web.AppRunner(build_app(record))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
