"""septet's own HTTP/1.1 server: routes requests to handlers over asyncio protocols and httptools.

The server under every listener of the daemon (the API's, the callbacks', the metrics'),
in place of aiohttp's server at a fraction of its CPU per request. The same shape as the
client (engine.http11): one asyncio.Protocol per socket, `httptools.HttpRequestParser`
framing the requests, and per request one Task (handlers await journal commits), one
dict lookup for the route and one write for the answer.

    serve_http      listens until cancelled; at shutdown stops accepting, closes idle
        │           connections and gives each request being handled `shutdown_timeout_s`
        │           to finish, then cancels it unanswered (the client sends it again)
        ▼
    _Connection     parses requests as bytes arrive and answers them in order, one at a
        │           time (pipelined ones wait their turn); keep-alive, HTTP/1.0,
        │           `Connection: close`, `Expect: 100-continue`, chunked bodies
        ▼
    App             (engine.http_routes) the routes, (method, path) to handler, and the
                    listener's error page, which words what the server refuses

What is refused, as `Refusal` values the listener's error page words:

    MALFORMED          not HTTP/1.1 (the parser's error): 400, then the connection closes
    NOT_FOUND          no route has the path: 404
    METHOD_NOT_ALLOWED the path is routed for other methods: 405 with `Allow`
    BODY_TOO_LARGE     Content-Length or the body read past the app's `max_body_bytes`:
                       413 when the handler asks for the body, then the connection closes
    HEAD_TOO_LARGE     a request head past MAX_HEAD_BYTES: 431, then the connection closes
    HANDLER_FAILED     the handler raised (a bug, logged once with its traceback): 500

Timeouts: `idle_timeout_s` is armed when a connection opens and after each answer; when
it fires with no whole request head read the connection is closed, so it bounds both an
idle keep-alive connection and a client sending its head byte by byte (slowloris). A
handler bounds the wait for a body itself (`Request.read(timeout_s)`). An answer given
while the request's body is still unread (a refusal before the body, a body too slow or
too large) closes the connection after it: the write side first, then the rest once the
client stops sending or LINGER_S passes, so the answer is not lost to a reset.
"""

from __future__ import annotations

import asyncio
import enum
import http
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from email.utils import formatdate
from typing import TYPE_CHECKING, Final, cast

import anyio
import anyio.abc
import httptools
from multidict import MultiDict, MultiDictProxy

if TYPE_CHECKING:
    from engine.http_routes import App

# Bytes of one request head (request line and header fields) a client may send; aiohttp
# took 8190 per line. A bigger head is answered 431 (RFC 6585 section 5).
MAX_HEAD_BYTES: Final = 64 * 1024
# Requests parsed ahead of the one being answered before reading pauses (pipelining).
MAX_PIPELINED: Final = 32
# Seconds a connection closed with its request's body unread keeps reading (and dropping)
# what the client still sends, so the answer reaches it rather than a reset.
LINGER_S: Final = 2.0

TEXT_PLAIN: Final = "text/plain; charset=utf-8"
APPLICATION_JSON: Final = "application/json"

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES: Final = {
    status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus
}
_NO_MATCH_INFO: Final[Mapping[str, str]] = {}


class Refusal(enum.Enum):
    """What the server answers itself, before or instead of a handler (module docstring)."""

    MALFORMED = 400
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    BODY_TOO_LARGE = 413
    HEAD_TOO_LARGE = 431
    HANDLER_FAILED = 500


class BodyTooLarge(Exception):  # noqa: N818 - a refusal, raised out of Request.read
    """The body passes the app's `max_body_bytes`: the server answers Refusal.BODY_TOO_LARGE."""


class ClientGone(Exception):  # noqa: N818 - a signal out of Request.read
    """The client closed the connection before its body arrived: nothing is answered."""


class Response:
    """An answer: status, body bytes, content type, extra header fields (the engine's
    own values, never a client's); `close` ends the connection after it."""

    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = TEXT_PLAIN,
        headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.close = close


def text_response(
    status: int, text: str, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> Response:
    return Response(status, text.encode(), TEXT_PLAIN, headers, close=close)


class Request:
    """One request: method, path (percent-decoded), the raw query, header fields by
    lower-case name (one sent twice joined with ", ", RFC 9110 section 5.3), the peer's
    address, the route's `{name}` segments, and the body (`read`; `body` itself once
    `complete`)."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_continued",
        "_query",
        "_size",
        "_too_large",
        "_waiter",
        "body",
        "complete",
        "headers",
        "keep_alive",
        "match_info",
        "method",
        "path",
        "query_string",
        "remote",
        "version",
    )

    def __init__(
        self,
        connection: _Connection | None,
        method: str,
        target: bytes,
        headers: dict[str, str],
        version: str = "1.1",
        keep_alive: bool = True,
        remote: str = "",
    ) -> None:
        self._connection = connection
        self.method = method
        path, _, query = target.partition(b"?")
        if not path.startswith(b"/"):  # absolute-form (RFC 9112 section 3.2.2) or "*"
            path, query = _origin_form(target)
        text = path.decode("utf-8", "replace")
        self.path = urllib.parse.unquote(text) if "%" in text else text
        self.query_string = query.decode("utf-8", "replace")
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.remote = remote
        self.match_info = _NO_MATCH_INFO
        self.body = b""
        self._chunks: list[bytes] = []
        self._size = 0
        self.complete = False
        self._too_large = False
        self._continued = False  # the client was asked for its body (Expect)
        self._waiter: asyncio.Future[bytes | None] | None = None
        self._query: MultiDictProxy[str] | None = None

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query's parameters, in order, a name possibly more than once."""
        if self._query is None:
            pairs = urllib.parse.parse_qsl(self.query_string, keep_blank_values=True)
            self._query = MultiDictProxy(MultiDict(pairs))
        return self._query

    @property
    def content_type(self) -> str:
        """The body's media type, lower case and without parameters; as aiohttp,
        application/octet-stream when the request names none (RFC 9110 section 8.3)."""
        value = self.headers.get("content-type")
        if value is None:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()

    async def read(self, timeout_s: float) -> bytes | None:
        """The whole body, or None when it has not arrived within `timeout_s`; raises
        BodyTooLarge past the app's limit. A body already here is returned at once."""
        if self.complete:
            return self.body
        if self._too_large:
            raise BodyTooLarge
        connection = self._connection
        if connection is None:
            return None
        # RFC 9110 section 10.1.1: a client that sent Expect waits to be asked.
        if not self._continued and self.headers.get("expect", "").lower() == "100-continue":
            self._continued = True
            connection.write_raw(_CONTINUE)
        waiter: asyncio.Future[bytes | None] = connection.loop.create_future()
        self._waiter = waiter
        timer = connection.loop.call_later(timeout_s, _settle, waiter, None)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _origin_form(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of an absolute-form target; "*" and what does not parse route nowhere."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return target, b""
    return url.path or b"/", url.query or b""


def _settle(waiter: asyncio.Future[bytes | None], value: bytes | None) -> None:
    if not waiter.done():
        waiter.set_result(value)


class _Connection(asyncio.Protocol):
    """One socket: parses its requests, runs each one's handler in turn, writes the answers."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._app = server.app
        self.loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote = ""
        # The request head being read: its target and fields.
        self._url = b""
        self._headers: dict[str, str] = {}
        self._in_body = False
        self._head_bytes = 0
        self._reading: Request | None = None  # head read, body not yet whole
        self._current: Request | None = None  # being handled
        self._waiting: deque[Request | Refusal] = deque()  # pipelined, in order
        self.task: asyncio.Task[None] | None = None
        self._stopped = False  # no more parsing: answer what came, then close
        self._closing = False
        self._read_paused = False
        self._write_paused = False
        self._idle_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ── asyncio.Protocol ──

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclass, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) else ""
        self._server.connections.add(self)
        if self._server.closing:
            self._close(lingering=False)
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = self._stopped = True
        self._server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reading = self._reading
        if reading is not None and reading._waiter is not None and not reading._waiter.done():
            reading._waiter.set_exception(ClientGone())

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return  # after a refusal or while lingering: dropped
        if not self._in_body:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop(None)  # the requests so far are answered, then it closes
        except httptools.HttpParserError:
            self._stop(Refusal.MALFORMED)
        else:
            if not self._in_body and self._head_bytes > MAX_HEAD_BYTES:
                self._stop(Refusal.HEAD_TOO_LARGE)

    def eof_received(self) -> bool:
        # The client sends no more: what it asked is still answered, then it closes.
        # Returning False lets the transport close itself when nothing is left to answer.
        self._stopped = True
        return self._current is not None or bool(self._waiting)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._current is None and not self._closing:
            self._next()

    # ── httptools.HttpRequestParser's callbacks ──

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower().decode("latin-1")
        headers = self._headers
        if key in headers:
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}"
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers = self._headers
        target = self._url
        self._url, self._headers = b"", {}  # what on_message_begin did, one call fewer
        keep_alive = parser.should_keep_alive()
        # The version matters to the answer only for an HTTP/1.0 client asking for
        # keep-alive, which it does with a Connection field.
        version = parser.get_http_version() if keep_alive and "connection" in headers else "1.1"
        request = Request(
            self,
            parser.get_method().decode("latin-1"),
            target,
            headers,
            version,
            keep_alive,
            self._remote,
        )
        self._in_body = True
        self._head_bytes = 0
        self._reading = request
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self._app.max_body_bytes:
            request._too_large = True
        if self._current is None and not self._waiting:
            self._start(request)
            return
        self._waiting.append(request)
        if len(self._waiting) >= MAX_PIPELINED and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def on_body(self, chunk: bytes) -> None:
        request = self._reading
        if request is None or request._too_large:
            return
        request._size += len(chunk)
        if request._size <= self._app.max_body_bytes:
            request._chunks.append(chunk)
            return
        request._too_large = True
        request._chunks = []
        waiter = request._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(BodyTooLarge())

    def on_message_complete(self) -> None:
        request = self._reading
        self._reading = None
        self._in_body = False
        if request is None or request._too_large:
            return
        chunks = request._chunks
        request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request._chunks = []
        request.complete = True
        waiter = request._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(request.body)

    # ── answering ──

    def _start(self, request: Request) -> None:
        self._current = request
        self.task = self.loop.create_task(self._serve(request))

    async def _serve(self, request: Request) -> None:
        """The request's Task: its handler's answer, or what the app says instead."""
        app = self._app
        handler = app.resolve(request)
        if isinstance(handler, tuple):
            response = app.unrouted(request, handler)
        else:
            try:
                response = await handler(request)
            except ClientGone:
                return  # the connection is gone: nobody to answer
            except Exception as error:
                response = app.failed(request, error)
        self._answer(request, response)

    def _answer(self, request: Request, response: Response) -> None:
        self._current = None
        if self._closing or self._transport is None:
            return
        close = (
            not request.keep_alive
            or response.close
            or not request.complete
            or self._server.closing
            or (self._stopped and not self._waiting)
        )
        head = self._head(response, close, request.version)
        if request.method == "HEAD":
            self._transport.write(head)
        else:
            self._transport.write(head + response.body)
        if close:
            self._close(lingering=not request.complete)
        else:
            self._next()

    def _head(self, response: Response, close: bool, version: str) -> bytes:
        status = response.status
        line = _STATUS_LINES.get(status) or f"{status} Unknown"
        extra = ""
        if response.headers:
            extra = "".join(f"{name}: {value}\r\n" for name, value in response.headers.items())
        if close:
            extra += "Connection: close\r\n"
        elif version == "1.0":
            extra += "Connection: keep-alive\r\n"
        return (
            f"HTTP/1.1 {line}\r\nContent-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\nDate: {self._server.date()}\r\n"
            f"{extra}\r\n"
        ).encode("latin-1")

    def _next(self) -> None:
        """The next pipelined request, or the refusal that ended parsing; else idle."""
        if self._write_paused:
            return  # resume_writing calls again
        if self._waiting:
            item = self._waiting.popleft()
            if self._read_paused and len(self._waiting) < MAX_PIPELINED // 2:
                self._read_paused = False
                if self._transport is not None:
                    self._transport.resume_reading()
            if isinstance(item, Refusal):
                self._refuse(item)
            else:
                self._start(item)
        elif self._stopped:
            self._close(lingering=True)
        else:
            self._arm_idle()

    def _stop(self, refusal: Refusal | None) -> None:
        """Parse no more; answer what was read (then `refusal`, if any), then close."""
        self._stopped = True
        if refusal is not None:
            self._waiting.append(refusal)
        if self._current is None:
            self._next()

    def _refuse(self, refusal: Refusal) -> None:
        if self._closing or self._transport is None:
            return
        response = self._app.refused(refusal, None)
        self._transport.write(self._head(response, True, "1.1") + response.body)
        self._close(lingering=True)

    def write_raw(self, data: bytes) -> None:
        if not self._closing and self._transport is not None:
            self._transport.write(data)

    def _close(self, *, lingering: bool) -> None:
        """Close; `lingering`: the write side first, reading on until the client closes
        or LINGER_S passes (module docstring)."""
        transport = self._transport
        self._stopped = True
        if self._closing or transport is None:
            return
        self._closing = True
        if lingering and transport.can_write_eof():
            transport.write_eof()
            if self._read_paused:
                transport.resume_reading()
            self._timer = self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def _arm_idle(self) -> None:
        self._idle_deadline = self.loop.time() + self._server.idle_timeout_s
        if self._timer is None:
            self._timer = self.loop.call_at(self._idle_deadline, self._on_idle)

    def _on_idle(self) -> None:
        self._timer = None
        if self._closing or self._current is not None or self._waiting:
            return  # busy: armed again after the answer
        if self.loop.time() < self._idle_deadline:
            self._timer = self.loop.call_at(self._idle_deadline, self._on_idle)
            return
        self._close(lingering=False)

    def shut(self) -> None:
        """At shutdown: close now when idle, else after the answer being made."""
        if self._current is None:
            self._close(lingering=False)

    def cut(self) -> None:
        """At shutdown's end: close, whatever is unanswered (the client sends it again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closing = self._stopped = True
        if self._transport is not None:
            self._transport.close()


class _Server:
    """What the connections of one listener share: the app, the timeout, the Date line."""

    def __init__(self, app: App, idle_timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.loop = loop
        self.connections: set[_Connection] = set()
        self.closing = False
        self._date_second = 0
        self._date = ""

    def connection(self) -> _Connection:
        return _Connection(self)

    def date(self) -> str:
        """The Date field (RFC 9110 section 6.6.1), made once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True)
        return self._date

    async def shutdown(self, timeout_s: float) -> None:
        """Close idle connections; give requests being handled `timeout_s`, then cancel
        them unanswered and close the rest."""
        self.closing = True
        for connection in list(self.connections):
            connection.shut()
        tasks = [c.task for c in self.connections if c.task is not None and not c.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for connection in list(self.connections):
            connection.cut()


async def serve_http(
    app: App,
    host: str,
    port: int,
    *,
    idle_timeout_s: float,
    shutdown_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled (over TLS with `ssl_context`); reports
    the bound port. Shutdown as the module docstring says."""
    loop = asyncio.get_running_loop()
    server = _Server(app, idle_timeout_s, loop)
    listening = await loop.create_server(
        server.connection, host or None, port, reuse_address=True, ssl=ssl_context
    )
    try:
        task_status.started(listening.sockets[0].getsockname()[1])
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            listening.close()
            await server.shutdown(shutdown_timeout_s)
