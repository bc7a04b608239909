"""bench.webhook_receiver over a real socket: keep-alive POSTs answered 200 in order, events
counted once per Septet-Event-Id however often they come, and a head it cannot read
answered 400."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from bench.webhook_receiver import ReceiverProtocol, Tally, parse_head

pytestmark = pytest.mark.anyio


def post(event_id: int, body: bytes = b'{"event":"dlr"}') -> bytes:
    return (
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Septet-Event-Id: %d\r\nContent-Length: %d\r\n\r\n%s" % (event_id, len(body), body)
    )


def test_a_head_gives_its_line_length_and_event_id() -> None:
    head = post(7).split(b"\r\n\r\n")[0]
    assert parse_head(head) == (b"POST /events HTTP/1.1", 15, b"7")
    assert parse_head(b"POST / HTTP/1.1\r\nContent-Length: x") is None


async def test_posts_in_pieces_and_copies_are_counted_once() -> None:
    tally = Tally()
    server = await asyncio.get_running_loop().create_server(
        lambda: ReceiverProtocol(tally), "127.0.0.1", 0
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stream = post(1) + post(2) + post(1)  # the third is a copy of the first
        for index in range(0, len(stream), 7):  # a few bytes at a time
            writer.write(stream[index : index + 7])
            await writer.drain()
        replies = await asyncio.wait_for(reader.readexactly(3 * 38), 5)
        assert replies == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 3
        writer.write(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        count = msgspec.json.decode(await asyncio.wait_for(reader.readexactly(length), 5))
        assert (count["events"], count["requests"]) == (2, 3)
        assert count["first_at"] <= count["last_at"]
        assert sum(n for _, n in count["tenths"]) == 2  # new events only
        assert count["tenths"][0][0] == int(count["first_at"] * 10)
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: many\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 400")
        writer.close()
