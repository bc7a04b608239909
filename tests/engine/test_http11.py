"""engine.http11 against real sockets on 127.0.0.1: exact bytes, pooling, framing, failures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import socket
import ssl
import struct
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
import trustme
from aiohttp import web

from engine.http11 import Http11Transport
from engine.http_errors import ConnectFailed, ReplyLost, ReplyTooLarge
from tests.engine.http_harness import serve_app

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both loops the engine may run on: their transports differ in the details."""
    backend: tuple[str, dict[str, bool]] = request.param
    return backend


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def make_transport(**overrides: float | int | str | ssl.SSLContext) -> Http11Transport:
    settings: dict[str, float | int | str | ssl.SSLContext] = {
        "max_connections": 4,
        "connect_timeout_s": 5.0,
        "timeout_s": 5.0,
        "user_agent": "septet-test",
    }
    settings.update(overrides)
    return Http11Transport(**settings)  # type: ignore[arg-type]


class RawServer:
    """A bare TCP server whose handler speaks (or breaks) HTTP by hand; counts connections."""

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self.accepted = 0
        self.requests: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away first: what several tests provoke on purpose
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One whole request (head and Content-Length body), recorded."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            for writer in self._writers:
                writer.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()


ServerHandler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def raw_server(handle: ServerHandler) -> RawServer:
    holder: list[RawServer] = []

    async def bound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle(holder[0], reader, writer)

    server = RawServer(bound)
    holder.append(server)
    return server


def answer_each(reply: bytes) -> RawServer:
    """A raw server answering every request on a connection with the same bytes."""

    async def handle(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(reply)
            await writer.drain()

    return raw_server(handle)


async def until_no_connections(transport: Http11Transport) -> None:
    """Let the loop deliver a peer's close; bounded, and never a real sleep."""
    for _ in range(10_000):
        if transport.open_connections == 0:
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("the transport never noticed the close")


# ── What goes on the wire ────────────────────────────────────────────────────────────


async def test_get_with_query_arrives_byte_exact() -> None:
    server = answer_each(OK_REPLY)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            reply = await transport.perform(
                "GET", base_url + "/api/send?to=%2B250&text=a%20b", (), b""
            )
        finally:
            await transport.aclose()
    host = base_url.removeprefix("http://")
    assert server.requests == [
        b"GET /api/send?to=%2B250&text=a%20b HTTP/1.1\r\n"
        b"Host: " + host.encode() + b"\r\n"
        b"User-Agent: septet-test\r\n"
        b"Accept-Encoding: identity\r\n"
        b"\r\n"
    ]
    assert reply.status == 200
    assert reply.body == b"ok"
    assert reply.headers == {"content-length": "2"}


async def test_post_body_arrives_byte_exact_with_driver_headers() -> None:
    server = answer_each(OK_REPLY)
    body = '{"text":"Привіт"}'.encode()
    async with server.running() as base_url:
        transport = make_transport()
        try:
            await transport.perform(
                "POST",
                base_url + "/sms",
                (("Content-Type", "application/json"), ("Authorization", "Bearer demo")),
                body,
            )
        finally:
            await transport.aclose()
    host = base_url.removeprefix("http://")
    assert server.requests == [
        b"POST /sms HTTP/1.1\r\n"
        b"Host: " + host.encode() + b"\r\n"
        b"User-Agent: septet-test\r\n"
        b"Accept-Encoding: identity\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Authorization: Bearer demo\r\n"
        b"\r\n" + body
    ]


async def test_driver_headers_replace_defaults_case_insensitively() -> None:
    server = answer_each(OK_REPLY)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            await transport.perform("POST", base_url, (("user-agent", "provider-sdk/2"),), b"")
        finally:
            await transport.aclose()
    (request,) = server.requests
    assert request.lower().count(b"user-agent:") == 1
    assert b"user-agent: provider-sdk/2\r\n" in request
    # An empty POST still says its length (RFC 9110 §8.6); the target defaults to "/".
    assert request.startswith(b"POST / HTTP/1.1\r\n")
    assert b"Content-Length: 0\r\n" in request


async def test_aiohttp_server_reads_the_request_as_sent() -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"method": request.method, "path": request.raw_path, "type": request.content_type},
            headers={"X-Echo-Length": str(len(body))},
        )

    async with serve_app([web.route("*", "/{tail:.*}", echo)]) as base_url:
        transport = make_transport()
        try:
            reply = await transport.perform(
                "PUT", base_url + "/v1/sms?id=7", (("Content-Type", "text/plain"),), b"hello"
            )
        finally:
            await transport.aclose()
    assert reply.status == 200
    assert reply.headers["x-echo-length"] == "5"
    assert reply.body == b'{"method": "PUT", "path": "/v1/sms?id=7", "type": "text/plain"}'


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("ftp://127.0.0.1/x", ()),
        ("not a url", ()),
        ("http://user:secret@127.0.0.1/x", ()),
        ("http://127.0.0.1:99999/x", ()),
        ("http://127.0.0.1/a b", ()),
        ("http://127.0.0.1/a?b=\x7f", ()),
        ("http://127.0.0.1/a?b=c\td", ()),
        ("http://127.0.0.1/\u00e9?b=c d", ()),  # not ASCII: the regular expression asks
        ("http://127.0.0.1/x", (("X-Evil", "a\r\nInjected: yes"),)),
    ],
)
async def test_bad_url_or_header_fails_before_sending(
    url: str, headers: tuple[tuple[str, str], ...]
) -> None:
    transport = make_transport()
    try:
        with pytest.raises(ConnectFailed) as caught:
            await transport.perform("GET", url, headers, b"")
    finally:
        await transport.aclose()
    assert caught.value.maybe_sent is False


# ── Pooling ──────────────────────────────────────────────────────────────────────────


async def test_sequential_requests_reuse_one_connection() -> None:
    server = answer_each(OK_REPLY)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            for _ in range(5):
                reply = await transport.perform("GET", base_url + "/", (), b"")
                assert reply.body == b"ok"
        finally:
            await transport.aclose()
    assert server.accepted == 1
    assert len(server.requests) == 5


async def test_pool_cap_is_honoured_under_concurrency() -> None:
    in_flight = 0
    most_in_flight = 0
    peers: set[int] = set()
    cap_reached = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, most_in_flight
        peername = request.transport.get_extra_info("peername") if request.transport else None
        assert peername is not None
        peers.add(peername[1])
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        if in_flight == 2:
            cap_reached.set()
        await cap_reached.wait()
        in_flight -= 1
        return web.Response(text="ok")

    replies: list[int] = []
    async with serve_app([web.get("/", handle)]) as base_url:
        transport = make_transport(max_connections=2)
        try:

            async def one() -> None:
                replies.append((await transport.perform("GET", base_url + "/", (), b"")).status)

            async with anyio.create_task_group() as task_group:
                for _ in range(8):
                    task_group.start_soon(one)
        finally:
            await transport.aclose()
    assert replies == [200] * 8
    assert most_in_flight == 2
    assert len(peers) == 2


async def test_connection_close_reply_is_not_reused() -> None:
    server = answer_each(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    async with server.running() as base_url:
        transport = make_transport()
        try:
            for _ in range(3):
                assert (await transport.perform("GET", base_url, (), b"")).body == b"ok"
        finally:
            await transport.aclose()
    assert server.accepted == 3


async def test_queued_request_gets_the_slot_of_a_closed_connection() -> None:
    server = answer_each(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    bodies: list[bytes] = []
    async with server.running() as base_url:
        transport = make_transport(max_connections=1)
        try:

            async def one() -> None:
                bodies.append((await transport.perform("GET", base_url, (), b"")).body)

            async with anyio.create_task_group() as task_group:
                for _ in range(3):
                    task_group.start_soon(one)
        finally:
            await transport.aclose()
    assert bodies == [b"ok"] * 3
    assert server.accepted == 3


async def test_idle_connection_closed_by_server_is_replaced() -> None:
    async def reply_then_close(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(OK_REPLY)  # says nothing of closing, then closes while idle
        await writer.drain()

    server = raw_server(reply_then_close)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            await transport.perform("GET", base_url, (), b"")
            await until_no_connections(transport)
            reply = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert reply.body == b"ok"
    assert server.accepted == 2
    assert len(server.requests) == 2


async def test_idle_connection_older_than_the_limit_is_not_reused() -> None:
    server = answer_each(OK_REPLY)
    async with server.running() as base_url:
        transport = make_transport(keepalive_idle_s=0.0)
        try:
            for _ in range(3):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert server.accepted == 3


async def test_request_is_never_resent_when_a_reused_connection_drops() -> None:
    async def answer_once_then_swallow(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(OK_REPLY)
        await writer.drain()
        await server.read_request(reader)  # take the second request, answer nothing

    server = raw_server(answer_once_then_swallow)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            await transport.perform("GET", base_url + "/send?to=1", (), b"")
            with pytest.raises(ReplyLost) as caught:
                await transport.perform("GET", base_url + "/send?to=2", (), b"")
        finally:
            await transport.aclose()
    assert caught.value.maybe_sent is True
    assert server.accepted == 1
    assert [request.split(b" ")[1] for request in server.requests] == [b"/send?to=1", b"/send?to=2"]


# ── Reply framing ────────────────────────────────────────────────────────────────────


async def test_chunked_reply_is_joined() -> None:
    async def chunked(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            await writer.drain()

    server = raw_server(chunked)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            first = await transport.perform("GET", base_url, (), b"")
            second = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert first.body == second.body == b"hello world"
    assert server.accepted == 1


async def test_a_chunked_replys_trailers_are_not_its_headers() -> None:
    server = answer_each(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n"
        b"2\r\nok\r\n0\r\nX-Trailer: late\r\nX-Head: 2\r\n\r\n"
    )
    async with server.running() as base_url:
        transport = make_transport()
        try:
            first = await transport.perform("GET", base_url, (), b"")
            second = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    for reply in (first, second):
        assert reply.body == b"ok"
        assert reply.headers == {"transfer-encoding": "chunked", "x-head": "1"}


async def test_reply_framed_by_close_ends_at_eof() -> None:
    async def http10(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    server = raw_server(http10)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            reply = await transport.perform("GET", base_url, (), b"")
            second = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert reply.body == second.body == b"all of it"
    assert server.accepted == 2


async def test_interim_reply_is_skipped_and_head_reply_has_no_body() -> None:
    server = answer_each(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"
    )
    head_server = answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    async with server.running() as base_url, head_server.running() as head_url:
        transport = make_transport()
        try:
            reply = await transport.perform("GET", base_url, (), b"")
            head = await transport.perform("HEAD", head_url, (), b"")
        finally:
            await transport.aclose()
    assert reply.headers == {"content-length": "2", "x-final": "yes"}
    assert reply.body == b"ok"
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == "1234"


async def test_error_statuses_and_redirects_are_replies() -> None:
    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such route")

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="busy", headers={"Retry-After": "7"})

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    routes = [web.get("/missing", not_found), web.get("/busy", unavailable), web.get("/old", moved)]
    async with serve_app(routes) as base_url:
        transport = make_transport()
        try:
            missing = await transport.perform("GET", base_url + "/missing", (), b"")
            busy = await transport.perform("GET", base_url + "/busy", (), b"")
            old = await transport.perform("GET", base_url + "/old", (), b"")
        finally:
            await transport.aclose()
    assert (missing.status, missing.body) == (404, b"no such route")
    assert (busy.status, busy.body, busy.headers["retry-after"]) == (503, b"busy", "7")
    assert (old.status, old.headers["location"]) == (302, "/elsewhere")


async def test_repeated_headers_are_joined() -> None:
    server = answer_each(
        b"HTTP/1.1 200 OK\r\nX-Part: a\r\nSet-Cookie: s=1\r\nx-part: b\r\nContent-Length: 0\r\n\r\n"
    )
    async with server.running() as base_url:
        transport = make_transport()
        try:
            reply = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert reply.headers == {"x-part": "a, b", "set-cookie": "s=1", "content-length": "0"}


async def test_gzip_and_deflate_replies_are_decoded() -> None:
    text = b"delivered " * 50
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    replies = {
        "/gzip": ("gzip", gzip.compress(text)),
        "/deflate": ("deflate", zlib.compress(text)),
        "/raw-deflate": ("deflate", raw_deflate.compress(text) + raw_deflate.flush()),
    }

    async def compressed(request: web.Request) -> web.Response:
        coding, body = replies[request.path]
        return web.Response(body=body, headers={"Content-Encoding": coding})

    routes = [web.get(path, compressed) for path in replies]
    async with serve_app(routes) as base_url:
        transport = make_transport()
        try:
            bodies = [
                (await transport.perform("GET", base_url + path, (), b"")).body for path in replies
            ]
        finally:
            await transport.aclose()
    assert bodies == [text, text, text]


async def test_unsupported_content_encoding_is_reply_lost() -> None:
    server = answer_each(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc")
    async with server.running() as base_url:
        transport = make_transport()
        try:
            with pytest.raises(ReplyLost, match="content-encoding"):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()


# ── Size cap ─────────────────────────────────────────────────────────────────────────


async def test_oversized_content_length_is_too_large() -> None:
    server = answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    async with server.running() as base_url:
        transport = make_transport(max_reply_bytes=100)
        try:
            with pytest.raises(ReplyTooLarge) as caught:
                await transport.perform("GET", base_url, (), b"")
            # The half-read connection is dropped; the next call gets a fresh one.
            with pytest.raises(ReplyTooLarge):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert caught.value.maybe_sent is True
    assert server.accepted == 2


async def test_oversized_chunked_body_is_too_large() -> None:
    chunk = b"x" * 60
    server = answer_each(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"3c\r\n" + chunk + b"\r\n") * 3
        + b"0\r\n\r\n"
    )
    async with server.running() as base_url:
        transport = make_transport(max_reply_bytes=100)
        try:
            with pytest.raises(ReplyTooLarge):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()


async def test_cap_counts_decoded_bytes_of_a_compressed_reply() -> None:
    bomb = gzip.compress(b"\0" * 100_000)
    server = answer_each(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
        + str(len(bomb)).encode()
        + b"\r\n\r\n"
        + bomb
    )
    async with server.running() as base_url:
        transport = make_transport(max_reply_bytes=10_000)
        try:
            with pytest.raises(ReplyTooLarge):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()


# ── Failures ─────────────────────────────────────────────────────────────────────────


async def test_refused_connection_is_connect_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = make_transport()
    try:
        with pytest.raises(ConnectFailed) as caught:
            await transport.perform("POST", f"http://127.0.0.1:{port}/send", (), b"{}")
    finally:
        await transport.aclose()
    assert caught.value.maybe_sent is False
    assert transport.open_connections == 0


async def test_eof_and_reset_mid_reply_are_reply_lost() -> None:
    async def cut_short(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npartial")
        await writer.drain()
        if len(server.requests) == 2:
            # SO_LINGER 0: close with a TCP reset instead of a FIN.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    server = raw_server(cut_short)
    async with server.running() as base_url:
        transport = make_transport()
        try:
            with pytest.raises(ReplyLost):
                await transport.perform("GET", base_url, (), b"")
            with pytest.raises(ReplyLost):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert server.accepted == 2


async def test_garbage_reply_is_reply_lost() -> None:
    server = answer_each(b"SMTP ready\r\n\r\n")
    async with server.running() as base_url:
        transport = make_transport()
        try:
            with pytest.raises(ReplyLost, match="malformed"):
                await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert transport.open_connections == 0


async def test_silent_server_is_a_read_timeout() -> None:
    async def silent(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await asyncio.Event().wait()

    server = raw_server(silent)
    async with server.running() as base_url:
        transport = make_transport(timeout_s=0.05)
        try:
            with pytest.raises(ReplyLost, match="timeout") as caught:
                await transport.perform("POST", base_url, (), b"x")
        finally:
            await transport.aclose()
    assert caught.value.maybe_sent is True


# ── Waiting, cancelling, closing ─────────────────────────────────────────────────────


def hold_first_request(
    received: asyncio.Event,
) -> ServerHandler:
    """The first connection's request is never answered; later connections are served."""

    async def handle(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        first = server.accepted == 1
        while True:
            await server.read_request(reader)
            if first:
                received.set()
                # Hold until the client hangs up; its EOF ends the read below.
                await reader.read()
                return
            writer.write(OK_REPLY)
            await writer.drain()

    return handle


async def test_pool_wait_times_out_as_connect_failed() -> None:
    received = asyncio.Event()
    server = raw_server(hold_first_request(received))
    async with server.running() as base_url:
        transport = make_transport(max_connections=1, connect_timeout_s=0.05, timeout_s=30.0)
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(transport.perform, "GET", base_url, (), b"")
                await received.wait()
                with pytest.raises(ConnectFailed) as caught:
                    await transport.perform("GET", base_url, (), b"")
                task_group.cancel_scope.cancel()
        finally:
            await transport.aclose()
    assert caught.value.maybe_sent is False
    assert len(server.requests) == 1


async def test_cancelled_request_closes_its_connection_and_frees_the_slot() -> None:
    received = asyncio.Event()
    server = raw_server(hold_first_request(received))
    async with server.running() as base_url:
        transport = make_transport(max_connections=1)
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(transport.perform, "GET", base_url, (), b"")
                await received.wait()
                task_group.cancel_scope.cancel()
            reply = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert reply.body == b"ok"
    assert server.accepted == 2


async def test_cancelled_waiter_leaves_the_queue() -> None:
    received = asyncio.Event()
    server = raw_server(hold_first_request(received))
    async with server.running() as base_url:
        transport = make_transport(max_connections=1)
        try:
            async with anyio.create_task_group() as holder:
                holder.start_soon(transport.perform, "GET", base_url, (), b"")
                await received.wait()
                async with anyio.create_task_group() as waiter:
                    waiter.start_soon(transport.perform, "GET", base_url, (), b"")
                    await anyio.wait_all_tasks_blocked()
                    waiter.cancel_scope.cancel()
                holder.cancel_scope.cancel()
            reply = await transport.perform("GET", base_url, (), b"")
        finally:
            await transport.aclose()
    assert reply.body == b"ok"
    # The cancelled waiter was never written anywhere.
    assert len(server.requests) == 2


async def test_aclose_fails_waiters_and_requests_in_flight() -> None:
    received = asyncio.Event()
    server = raw_server(hold_first_request(received))
    outcomes: dict[str, BaseException] = {}
    async with server.running() as base_url:
        transport = make_transport(max_connections=1)

        async def perform(name: str) -> None:
            try:
                await transport.perform("GET", base_url, (), b"")
            except (ConnectFailed, ReplyLost) as error:
                outcomes[name] = error

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(perform, "in flight")
            await received.wait()
            task_group.start_soon(perform, "waiting")
            await anyio.wait_all_tasks_blocked()
            await transport.aclose()
        with pytest.raises(ConnectFailed):
            await transport.perform("GET", base_url, (), b"")
    assert isinstance(outcomes["in flight"], ReplyLost)
    assert isinstance(outcomes["waiting"], ConnectFailed)
    assert transport.open_connections == 0


async def test_no_socket_or_task_outlives_aclose() -> None:
    server = answer_each(OK_REPLY)
    tasks_before = len(asyncio.all_tasks())
    # Garbage an earlier test left in this process is collected now, so a warning it
    # raises is not taken for one of this test's.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with server.running() as base_url:
            transport = make_transport(max_connections=3)
            async with anyio.create_task_group() as task_group:
                for _ in range(6):
                    task_group.start_soon(transport.perform, "GET", base_url, (), b"")
            assert transport.open_connections == 3
            assert len(asyncio.all_tasks()) == tasks_before + 3  # the server's handlers
            await transport.aclose()
            assert transport.open_connections == 0
        del transport
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert len(asyncio.all_tasks()) == tasks_before


# ── TLS ──────────────────────────────────────────────────────────────────────────────


async def test_https_against_a_private_ca() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"secure {request.secure}")

    app = web.Application()
    app.add_routes([web.get("/", hello)])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    await web.SockSite(runner, listener, ssl_context=server_context).start()
    try:
        trusting = make_transport(ssl_context=client_context)
        untrusting = make_transport()
        try:
            first = await trusting.perform("GET", f"https://localhost:{port}/", (), b"")
            second = await trusting.perform("GET", f"https://localhost:{port}/", (), b"")
            with pytest.raises(ConnectFailed):
                await untrusting.perform("GET", f"https://localhost:{port}/", (), b"")
            assert trusting.open_connections == 1
        finally:
            await trusting.aclose()
            await untrusting.aclose()
    finally:
        await runner.cleanup()
    assert first.body == second.body == b"secure True"
