"""engine.http_server over real sockets on 127.0.0.1: the HTTP/1.1 a listener must get right."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import anyio
import anyio.abc
import msgspec
import pytest

from engine.http_routes import App, Route
from engine.http_server import MAX_HEAD_BYTES, Request, Response, serve_http, text_response
from engine.ingress.http_api import problem_page

pytestmark = pytest.mark.anyio

CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """A raw socket: writes bytes as given, reads answers one by one."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _more(self) -> None:
        self.buffer += await self.stream.receive()

    async def answer(self) -> Answer:
        with anyio.fail_after(2):
            while b"\r\n\r\n" not in self.buffer:
                await self._more()
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *fields = head.decode("latin-1").split("\r\n")
            headers = {}
            for field in fields:
                name, _, value = field.partition(":")
                headers[name.lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                await self._more()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(int(status_line.split()[1]), headers, body)

    async def closed(self) -> bool:
        """True once the server closes the connection (within 2 s), with nothing more said."""
        with anyio.fail_after(2):
            try:
                while True:
                    await self._more()
            except CLOSED:
                return self.buffer == b""


class Handlers:
    """Echo and friends; `release` lets a held handler finish."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.holding = anyio.Event()

    async def echo(self, request: Request) -> Response:
        body = await request.read(0.2)
        if body is None:
            return text_response(408, "too slow\n", close=True)
        text = f"{request.method} {request.path} {request.query_string} {len(body)}\n"
        return Response(200, text.encode() + body)

    async def hold(self, request: Request) -> Response:
        self.holding.set()
        await self.release.wait()
        return text_response(200, "held\n")

    async def fail(self, request: Request) -> Response:
        raise RuntimeError("a bug")

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/echo/{name}", self.echo, allow_head=True),
            Route("POST", "/echo/{name}", self.echo),
            Route("GET", "/hold", self.hold),
            Route("GET", "/fail", self.fail),
        ]


@asynccontextmanager
async def served(
    handlers: Handlers, *, idle_timeout_s: float = 5.0, shutdown_timeout_s: float = 1.0
) -> AsyncIterator[tuple[int, anyio.CancelScope]]:
    """The server on a free port: (port, the scope that stops it)."""
    app = App(handlers.routes(), max_body_bytes=1000)
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[int]) -> None:
            with scope:
                await serve_http(
                    app,
                    "127.0.0.1",
                    0,
                    idle_timeout_s=idle_timeout_s,
                    shutdown_timeout_s=shutdown_timeout_s,
                    task_status=task_status,
                )

        port = await tg.start(run)
        yield port, scope
        tg.cancel_scope.cancel()


@asynccontextmanager
async def connection(port: int) -> AsyncIterator[Client]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        yield Client(stream)


async def test_keep_alive_serves_requests_one_after_another_on_one_connection() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        for n in range(3):
            await client.stream.send(b"GET /echo/%d?a=b HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            answer = await client.answer()
            assert (answer.status, answer.body) == (200, b"GET /echo/%d a=b 0\n" % n)
            assert "connection" not in answer.headers


async def test_pipelined_requests_are_answered_in_order() -> None:
    handlers = Handlers()
    async with served(handlers) as (port, _), connection(port) as client:
        await client.stream.send(
            b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo/b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /echo/c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await handlers.holding.wait()
        handlers.release.set()
        answers = [await client.answer() for _ in range(3)]
    assert [a.body for a in answers] == [b"held\n", b"POST /echo/b  2\nhi", b"GET /echo/c  0\n"]


async def test_expect_100_continue_asks_for_the_body() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(
            b"POST /echo/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        with anyio.fail_after(2):
            while b"\r\n\r\n" not in client.buffer:
                await client._more()
        assert client.buffer == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.buffer = b""
        await client.stream.send(b"hello")
        answer = await client.answer()
    assert (answer.status, answer.body) == (200, b"POST /echo/e  5\nhello")


async def test_a_chunked_body_is_read_whole() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(
            b"POST /echo/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        await client.stream.send(b"2\r\nde\r\n0\r\n\r\n")
        answer = await client.answer()
    assert (answer.status, answer.body) == (200, b"POST /echo/c  5\nabcde")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /echo/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001,
        b"POST /echo/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3e9\r\n" + b"x" * 1001 + b"\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_over_the_limit_is_answered_413_and_the_connection_closed(
    request_bytes: bytes,
) -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(request_bytes)
        answer = await client.answer()
        assert answer.status == 413
        assert answer.body == b"the request body is larger than 1000 bytes\n"
        assert answer.headers["connection"] == "close"
        assert await client.closed()


async def test_a_head_over_the_limit_is_answered_431_and_closed() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(b"GET /echo/a HTTP/1.1\r\nHost: x\r\n")
        with anyio.fail_after(2):
            try:
                for _ in range(MAX_HEAD_BYTES // 1000 + 1):
                    await client.stream.send(b"X-Pad: " + b"p" * 1000 + b"\r\n")
            except CLOSED:
                pass  # closed while still sending: the answer was read below or is lost
        answer = await client.answer()
        assert answer.status == 431
        assert await client.closed()


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /echo/a HTTP/1.1\r\nHost x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["header-without-colon", "tls-hello"],
)
async def test_a_malformed_request_is_answered_400_and_closed(request_bytes: bytes) -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(request_bytes)
        answer = await client.answer()
        assert (answer.status, answer.body) == (400, b"the request is not valid HTTP/1.1\n")
        assert await client.closed()


async def test_an_idle_connection_and_a_trickled_head_are_closed_after_the_idle_timeout() -> None:
    async with served(Handlers(), idle_timeout_s=0.2) as (port, _):
        async with connection(port) as idle:
            assert await idle.closed()
        async with connection(port) as slow:
            await slow.stream.send(b"GET /echo/a HTTP/1.1\r\n")
            assert await slow.closed()
        async with connection(port) as served_then_idle:
            await served_then_idle.stream.send(b"GET /echo/a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await served_then_idle.answer()).status == 200
            assert await served_then_idle.closed()


async def test_a_body_that_does_not_arrive_is_the_handlers_to_answer_then_closed() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(
            b"POST /echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc"
        )
        answer = await client.answer()  # the handler waits 0.5 s
        assert (answer.status, answer.headers["connection"]) == (408, "close")
        assert await client.closed()


async def test_http_1_0_is_closed_unless_kept_alive() -> None:
    async with served(Handlers()) as (port, _):
        async with connection(port) as client:
            await client.stream.send(b"GET /echo/a HTTP/1.0\r\n\r\n")
            answer = await client.answer()
            assert (answer.status, answer.headers["connection"]) == (200, "close")
            assert await client.closed()
        async with connection(port) as client:
            for _ in range(2):
                await client.stream.send(b"GET /echo/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                answer = await client.answer()
                assert (answer.status, answer.headers["connection"]) == (200, "keep-alive")


async def test_connection_close_is_honoured() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(b"GET /echo/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await client.answer()).headers["connection"] == "close"
        assert await client.closed()


async def test_unknown_paths_methods_and_failing_handlers_are_answered_and_served_on() -> None:
    async with served(Handlers()) as (port, _), connection(port) as client:
        await client.stream.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.answer())[::2] == (404, b"404: Not Found")
        await client.stream.send(b"PUT /echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = await client.answer()
        assert (answer.status, answer.body) == (405, b"405: Method Not Allowed")
        assert answer.headers["allow"] == "GET, HEAD, POST"
        await client.stream.send(b"GET /echo/ HTTP/1.1\r\nHost: x\r\n\r\n")  # empty segment
        assert (await client.answer()).status == 404
        await client.stream.send(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.answer()).status == 500
        await client.stream.send(b"HEAD /echo/h HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(2):
            while b"\r\n\r\n" not in client.buffer:
                await client._more()
        head, _, rest = client.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Length: 16\r\n" in head  # "HEAD /echo/h  0\n", as a GET would get
        assert rest == b""  # no body after a HEAD's head
        client.buffer = b""
        await client.stream.send(b"GET /echo/ok%21 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.answer()).body == b"GET /echo/ok!  0\n"


async def test_at_shutdown_a_handler_that_finishes_in_time_is_answered() -> None:
    handlers = Handlers()
    async with served(handlers) as (port, scope), connection(port) as client:
        await client.stream.send(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        await handlers.holding.wait()
        scope.cancel()
        handlers.release.set()
        answer = await client.answer()
        assert (answer.status, answer.body) == (200, b"held\n")
        assert await client.closed()


async def test_at_shutdown_a_handler_still_running_is_cut_off_unanswered() -> None:
    handlers = Handlers()
    async with (
        served(handlers, shutdown_timeout_s=0.1) as (port, scope),
        connection(port) as idle,
        connection(port) as busy,
    ):
        await busy.stream.send(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        await handlers.holding.wait()
        scope.cancel()
        assert await idle.closed()
        assert await busy.closed()  # nothing was answered: the client sends it again


async def test_the_apis_error_page_words_the_servers_refusals_as_problems() -> None:
    app = App(
        Handlers().routes(), max_body_bytes=10, error_page=problem_page, answer_exception=None
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http(
                app, "127.0.0.1", 0, idle_timeout_s=5, shutdown_timeout_s=1, task_status=task_status
            )
        )
        async with connection(port) as client:
            await client.stream.send(b"DELETE /echo/a HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await client.answer()
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["allow"] == "GET, HEAD, POST"
            assert msgspec.json.decode(answer.body) == {
                "type": "https://septet.invalid/problems/method-not-allowed",
                "title": "Method Not Allowed",
                "status": 405,
                "detail": "/echo/a does not take DELETE; it takes GET, HEAD, POST",
            }
            await client.stream.send(b"GET /echo/a HTTP/1.1\r\nHost: x\r\nBad Field\r\n\r\n")
            answer = await client.answer()
            assert answer.headers["content-type"] == "application/problem+json"
            detail = msgspec.json.decode(answer.body)["detail"]
            assert (answer.status, detail) == (400, "the request is not valid HTTP/1.1")
            assert await client.closed()
        tg.cancel_scope.cancel()


async def test_header_fields_are_read_by_lower_case_name_a_repeated_one_joined() -> None:
    async def fields(request: Request) -> Response:
        return Response(200, msgspec.json.encode(request.headers))

    app = App([Route("GET", "/fields", fields)], max_body_bytes=1000)
    async with anyio.create_task_group() as tg:

        async def run(*, task_status: anyio.abc.TaskStatus[int]) -> None:
            await serve_http(
                app, "127.0.0.1", 0, idle_timeout_s=5, shutdown_timeout_s=1, task_status=task_status
            )

        port = await tg.start(run)
        async with connection(port) as client:
            for _ in range(2):  # the second head is read afresh, nothing left of the first
                await client.stream.send(
                    b"GET /fields HTTP/1.1\r\nHost: x\r\nX-Twice: a\r\nX-Empty:\r\n"
                    b"x-TWICE: b\r\nX-Latin: caf\xe9\r\n\r\n"
                )
                answer = await client.answer()
                assert msgspec.json.decode(answer.body) == {
                    "host": "x",
                    "x-twice": "a, b",
                    "x-empty": "",
                    "x-latin": "caf\u00e9",
                }
            await client.stream.send(b"GET /fields HTTP/1.1\r\nHost: y\r\n\r\n")
            assert msgspec.json.decode((await client.answer()).body) == {"host": "y"}
        tg.cancel_scope.cancel()
