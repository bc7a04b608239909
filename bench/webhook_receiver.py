"""A webhook receiver for benches: answers every POST 200 on keep-alive and counts the events.

It counts distinct `Septet-Event-Id`s (a copy delivered again counts once) and the requests,
and notes when the first and the last new event came, and how many came in each tenth of a
second. `GET /count` answers them as JSON: {"events": …, "requests": …, "first_at": …,
"last_at": …, "tenths": [[T, N], …]} (Unix seconds, null before any; N new events arrived
from T/10 s to (T+1)/10 s).

It parses only what it needs of HTTP/1.1 (a request line, headers, a Content-Length body) on
a bare asyncio protocol, so that receiving 5,000 events a second costs a bench's core little.
Not a general server: no chunked bodies, no TLS.

    python -m bench.webhook_receiver [--port 0]     # prints "port N" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Final, cast

import msgspec
import uvloop

HOST: Final = "127.0.0.1"
OK: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BAD: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD_BYTES: Final = 16 * 1024


class Tally:
    """What has arrived: distinct event ids, requests, and when."""

    def __init__(self) -> None:
        self.event_ids: set[bytes] = set()
        self.requests = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        # int(arrival × 10) -> new events that arrived in that tenth of a second.
        self.tenths: dict[int, int] = {}

    def add(self, event_id: bytes | None, now: float) -> None:
        self.requests += 1
        if event_id is None or event_id in self.event_ids:
            return
        self.event_ids.add(event_id)
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        tenth = int(now * 10)
        self.tenths[tenth] = self.tenths.get(tenth, 0) + 1

    def document(self) -> bytes:
        return msgspec.json.encode(
            {
                "events": len(self.event_ids),
                "requests": self.requests,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "tenths": sorted(self.tenths.items()),
            }
        )


def parse_head(head: bytes) -> tuple[bytes, int, bytes | None] | None:
    """(method + path line, Content-Length, Septet-Event-Id) of a request head, or None."""
    lines = head.split(b"\r\n")
    length = 0
    event_id = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            if not value.strip().isdigit():
                return None
            length = int(value)
        elif key == b"septet-event-id":
            event_id = value.strip()
    return lines[0], length, event_id


class ReceiverProtocol(asyncio.Protocol):
    """One keep-alive connection: requests in, one 200 each out, in order."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        answers: list[bytes] = []
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    answers.append(BAD)
                    self._buffer.clear()
                break
            parsed = parse_head(bytes(self._buffer[:end]))
            if parsed is None:
                answers.append(BAD)
                self._buffer.clear()
                break
            request_line, length, event_id = parsed
            if len(self._buffer) < end + 4 + length:
                break  # the body is still on its way
            del self._buffer[: end + 4 + length]
            if request_line.startswith(b"GET /count"):
                body = self._tally.document()
                answers.append(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                continue
            self._tally.add(event_id, time.time())
            answers.append(OK)
        if answers:
            self._transport.write(b"".join(answers))


async def serve(port: int) -> None:
    tally = Tally()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ReceiverProtocol(tally), HOST, port)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_receiver")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
