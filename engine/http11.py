"""septet's own HTTP/1.1 client transport: keep-alive pools of asyncio protocols, httptools parsing.

The transport under `engine.http_io.BridgeClient`, in place of aiohttp's client at a fraction
of its CPU per request (bench/http_clients.py). It does the
least a bridge needs and nothing a provider call never uses:

    Http11Transport     URL → (pool, target); request head built in one string; per-call
        │               deadlines; maps every failure into the seam's exception tree
        ▼
    _Pool               one per (scheme, host, port): idle connections (LIFO, so the
        │               warmest is reused and the oldest age out), a FIFO of requests
        │               waiting for one (the connection that frees first writes the next
        │               straight away), at most `max_connections` open or opening
        ▼
    _Connection         one asyncio.Protocol per socket; `httptools.HttpResponseParser`
                        frames the reply (Content-Length, chunked, until close)

What it costs per request: one Future, one write, one parse; no Task, no `wait_for`, and
timers are lazy: a connection keeps one timer handle and only moves a deadline number as
bytes arrive, the handle re-arming itself when it fires early (likewise one handle per pool
for the requests queued on it). The request head is one f-string; its header lines are
checked and joined once per (method, headers) and cached.

Failures, as `engine/http_errors.py` draws them:

    ConnectFailed   nothing was written: bad URL or header, refused, DNS, TLS handshake,
                    connect timeout, no free pooled connection within the connect timeout,
                    a connection closed by the peer before the request, transport closed
    ReplyLost       the request was (or may have been) written: read or total timeout,
                    reset or EOF before the reply ended, malformed reply, unsupported
                    Transfer- or Content-Encoding, a failed write on a reused connection
    ReplyTooLarge   Content-Length or the (decoded) body passes `max_reply_bytes`

A request is never resent (RFC 9112 §9.3.1 would allow it for idempotent methods; Route
Mobile sends SMS by GET, so a silent resend could deliver twice). Idle connections older
than `keepalive_idle_s` are dropped before reuse so that a server's own idle close rarely
meets a request. Redirects are replies. Compressed bodies are not asked for
(`Accept-Encoding: identity`); a server that sends gzip or deflate anyway is decoded with
zlib and the size cap counts decoded bytes.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple, NoReturn, cast

import httptools

from bridges.base import HttpReply
from engine.http_errors import (
    DEFAULT_MAX_REPLY_BYTES,
    ConnectFailed,
    ReplyLost,
    ReplyTooLarge,
    TransportError,
)

# A server's idle close usually comes after 5-75 s (nginx 75 s, aiohttp 75 s, many APIs
# behind load balancers 60 s); dropping our own idle connections first keeps the race
# "server closes while we write" rare. The race itself still ends in ReplyLost, never a resend.
DEFAULT_KEEPALIVE_IDLE_S = 15.0

# scheme://authority; the rest up to a fragment is the request target (path and query), a
# fragment is never sent (RFC 9110 §4.2.5 — it is not part of the target). The target is
# cut with str.find, not matched: a regular expression walks its query a character at a time.
_URL_PATTERN = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)")
# RFC 9112 §3.2: the target is one token of visible characters; a space or control byte
# would split the request line or inject a header.
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")
# RFC 9110 §9.1: a method is a token.
_METHOD_PATTERN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 §8.6: a user agent sends Content-Length for a body, and for POST/PUT/PATCH even
# when empty; these methods define no body, so a bodiless one goes without.
_BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# The default headers a driver's own header of the same name replaces.
_LENGTH_FROM_DRIVER, _LENGTH_IF_BODY, _LENGTH_ALWAYS = 0, 1, 2
# Distinct (method, headers) heads remembered per pool; drivers send a handful.
_HEAD_CACHE_SIZE = 64


def _safe_target(target: str) -> bool:
    """No control character, space or DEL in a request target (_UNSAFE_TARGET). An ASCII
    target is asked with two C-level scans: among ASCII characters exactly the controls
    and DEL are not printable; the regular expression costs several times more."""
    if target.isascii():
        return target.isprintable() and " " not in target
    return _UNSAFE_TARGET.search(target) is None


class _HeadParts(NamedTuple):
    default_lines: str  # Host, User-Agent, Accept-Encoding unless the driver sets its own
    length_rule: int  # when to add Content-Length: _LENGTH_*
    driver_lines: str


class _StopParsing(Exception):  # noqa: N818 -- a signal out of a parser callback, not an error
    """Raised inside an httptools callback to stop `feed_data`; the reason is on the connection."""


class _Connection(asyncio.Protocol):
    """One socket: writes a request, parses its reply, hands itself back to the pool."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._timeout_s = pool.timeout_s
        self._max_reply_bytes = pool.max_reply_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.made = False
        self.closed = False
        self.lost = False
        self._lost_waiter: asyncio.Future[None] | None = None
        self.idle = False
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._total_deadline = 0.0
        # The request in flight and its reply so far.
        self._future: asyncio.Future[HttpReply] | None = None
        self._head_only = False
        # The reply's header fields so far: lower-cased names, a repeated field's values
        # joined by ", " (RFC 9110 §5.3).
        self._fields: dict[str, str] = {}
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._chunks: list[bytes] = []
        self._received = 0
        self._until_close = False
        self._content_coding: str | None = None
        self._decoder: zlib._Decompress | None = None
        self._complete = False
        self._reusable = True
        self._failure: TransportError | None = None

    # ── asyncio.Protocol ─────────────────────────────────────────────────────────────

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.made = True
        self._pool.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._future is None:
            # Bytes nobody asked for on an idle connection: its framing can't be trusted.
            self.close(abort=True)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ReplyLost("the server switched protocols unasked"))
            return
        except httptools.HttpParserError as error:
            if not self._complete:
                failure = self._failure or ReplyLost(f"malformed reply: {error}")
                failure.__cause__ = error
                self._fail(failure)
                return
        if self._complete:
            self._finish()
            return
        deadline = self._loop.time() + self._timeout_s
        self._deadline = deadline if deadline < self._total_deadline else self._total_deadline

    def eof_received(self) -> bool:
        self._end_of_stream(None)
        # False: let the transport close itself (RFC 9112 §9.6, a half-closed connection
        # can carry no further reply).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_of_stream(exc)
        self.close(abort=True)
        self.lost = True
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    # ── httptools callbacks ──────────────────────────────────────────────────────────

    def on_message_begin(self) -> None:
        if self._complete:
            # Bytes past the end of our reply: a response we never asked for (RFC 9112
            # §9.3.2); keep the reply, never the connection.
            self._reusable = False
            raise _StopParsing
        self._fields = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        # RFC 9110 §5.5: field values are octets; Latin-1 maps each to one character and
        # never fails, and is what ASCII values are anyway.
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        fields = self._fields
        fields[key] = f"{fields[key]}, {text}" if key in fields else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # RFC 9110 §15.2: an interim reply (103 Early Hints, a stray 100) precedes the
            # real one on the same connection.
            return
        # Fields after this are a chunked body's trailers, never the reply's headers.
        headers, self._fields = self._fields, {}
        self._status = status
        self._headers = headers
        if self._head_only:
            # RFC 9110 §9.3.2: a reply to HEAD has no content whatever its Content-Length;
            # the parser cannot be told, so the reply ends here and the connection with it.
            self._complete = True
            self._reusable = False
            raise _StopParsing
        length = headers.get("content-length")
        transfer_encoding = headers.get("transfer-encoding")
        if transfer_encoding is not None and transfer_encoding.strip().lower() != "chunked":
            self._stop(ReplyLost(f"unsupported transfer-encoding {transfer_encoding!r}"))
        coding = headers.get("content-encoding")
        if coding is not None:
            coding = coding.strip().lower()
            if coding in ("gzip", "x-gzip", "deflate"):
                self._content_coding = coding
            elif coding not in ("", "identity"):
                self._stop(ReplyLost(f"unsupported content-encoding {coding!r}"))
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                self._stop(ReplyLost(f"malformed Content-Length {length!r}"))
            if self._content_coding is None and declared > self._max_reply_bytes:
                self._stop(
                    ReplyTooLarge(f"reply of {declared} bytes exceeds {self._max_reply_bytes}")
                )
        # RFC 9112 §6.3 rule 8: neither Content-Length nor chunked: the body runs to EOF.
        self._until_close = length is None and transfer_encoding is None

    def on_body(self, body: bytes) -> None:
        if self._content_coding is not None:
            self._decode(body)
            return
        self._received += len(body)
        if self._received > self._max_reply_bytes:
            self._stop(ReplyTooLarge(f"reply body exceeds {self._max_reply_bytes} bytes"))
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._headers is not None:
            self._complete = True
            # Asked here: once the parser moves on to the next message it forgets the
            # reply's version and Connection header (RFC 9112 §9.3).
            if not self._parser.should_keep_alive():
                self._reusable = False

    # ── the request ──────────────────────────────────────────────────────────────────

    def send(
        self, future: asyncio.Future[HttpReply], data: bytes, head_only: bool, total_deadline: float
    ) -> None:
        """Write one request; `future` gets its reply or the failure."""
        if self.closed:
            # The peer closed it between connect (or hand-over) and now: nothing written.
            future.set_exception(ConnectFailed("the connection closed before the request"))
            return
        self._future = future
        self._head_only = head_only
        self._status = 0
        self._headers = None
        self._chunks = []
        self._received = 0
        self._content_coding = None
        self._decoder = None
        self._complete = False
        self._reusable = True
        self._failure = None
        self._total_deadline = total_deadline
        deadline = self._loop.time() + self._timeout_s
        if deadline > total_deadline:
            deadline = total_deadline
        self._deadline = deadline
        timer = self._timer
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
        elif timer.when() > deadline:
            timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)
        assert self._transport is not None
        try:
            self._transport.write(data)
        except (OSError, RuntimeError) as error:
            # A reused connection the peer just dropped: part of the request may be out.
            failure = ReplyLost(f"write failed: {error}")
            failure.__cause__ = error
            self._fail(failure)

    def cancel_request(self, future: asyncio.Future[HttpReply]) -> bool:
        """If `future` is in flight here, drop it: a half-done exchange spoils the socket."""
        if self._future is not future:
            return False
        self._future = None
        self.close(abort=True)
        return True

    def fail_request(self, error: TransportError) -> None:
        if self._future is not None:
            self._fail(error)
        else:
            self.close(abort=True)

    def close(self, *, abort: bool) -> None:
        """Stop using this connection and give its pool slot back; safe to repeat."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()
        self._pool.forget(self)

    def is_fresh(self, oldest_usable: float) -> bool:
        """Idle since after `oldest_usable`, and its socket not closing."""
        transport = self._transport
        return (
            self.idle_since > oldest_usable and transport is not None and not transport.is_closing()
        )

    async def wait_lost(self) -> None:
        """Until the event loop has let go of the socket."""
        if not self.lost:
            self._lost_waiter = self._loop.create_future()
            await self._lost_waiter

    def _on_timer(self) -> None:
        self._timer = None
        if self._future is None:
            return
        now = self._loop.time()
        if now < self._deadline:
            # Bytes arrived since the handle was armed and moved the deadline on.
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
        elif now >= self._total_deadline:
            self._fail(ReplyLost("no complete reply within the total timeout"))
        else:
            self._fail(ReplyLost(f"read timeout: no reply byte for {self._timeout_s} s"))

    def _stop(self, failure: TransportError) -> NoReturn:
        self._failure = failure
        raise _StopParsing

    def _decode(self, data: bytes) -> None:
        if not data:
            return
        decoder = self._decoder
        if decoder is None:
            if self._content_coding == "deflate":
                # RFC 9110 §8.4.1.2: "deflate" is the zlib format (RFC 1950), whose first
                # byte says method 8; some servers send raw deflate (RFC 1951) instead.
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            else:
                wbits = 16 + zlib.MAX_WBITS  # gzip (RFC 1952)
            decoder = self._decoder = zlib.decompressobj(wbits)
        room = self._max_reply_bytes - self._received
        try:
            # One byte more than fits is enough to know it doesn't.
            decoded = decoder.decompress(data, room + 1)
        except zlib.error as error:
            self._stop(ReplyLost(f"corrupt {self._content_coding} body: {error}"))
        self._received += len(decoded)
        if self._received > self._max_reply_bytes:
            self._stop(ReplyTooLarge(f"decoded reply exceeds {self._max_reply_bytes} bytes"))
        self._chunks.append(decoded)

    def _body(self) -> bytes:
        decoder = self._decoder
        if decoder is not None:
            tail = decoder.flush()
            if tail:
                self._received += len(tail)
                if self._received > self._max_reply_bytes:
                    raise ReplyTooLarge(f"decoded reply exceeds {self._max_reply_bytes} bytes")
                self._chunks.append(tail)
            if not decoder.eof:
                raise ReplyLost(f"truncated {self._content_coding} body")
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def _finish(self) -> None:
        future = self._future
        assert future is not None
        assert self._headers is not None
        self._future = None
        try:
            body = self._body()
        except TransportError as failure:
            self._future = future
            self._fail(failure)
            return
        reply = HttpReply(status=self._status, body=body, headers=self._headers)
        if self._reusable and not self._until_close and not self.closed:
            self._pool.release(self)
        else:
            # `Connection: close`, HTTP/1.0 without keep-alive, or a body framed by EOF
            # (RFC 9112 §9.3): this connection carries no further request.
            self.close(abort=False)
        if not future.done():
            future.set_result(reply)

    def _fail(self, failure: TransportError) -> None:
        future = self._future
        self._future = None
        self.close(abort=True)
        if future is not None and not future.done():
            future.set_exception(failure)

    def _end_of_stream(self, exc: Exception | None) -> None:
        if self._future is None:
            # An idle connection the server closed: never hand it out again.
            self.close(abort=True)
            return
        if exc is None and self._headers is not None and self._until_close:
            self._reusable = False
            self._complete = True
            self._finish()
            return
        reason = f": {exc}" if exc is not None else ""
        failure = ReplyLost(f"connection closed before the reply was complete{reason}")
        failure.__cause__ = exc
        self._fail(failure)


class _SlotGranted(Exception):  # noqa: N818 -- a hand-over signal, not an error
    """Set on a queued request's future: a connection closed and its slot is the caller's."""


class _QueuedRequest(NamedTuple):
    """A request waiting for a free connection: written by whichever connection frees first."""

    deadline: float  # ConnectFailed if still queued then (the connect timeout)
    future: asyncio.Future[HttpReply]
    data: bytes
    head_only: bool
    total_deadline: float


class _Pool:
    """Connections to one origin: idle ones, requests queued for one, and the slot count."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        default_headers: tuple[tuple[str, str], ...],
        max_connections: int,
        timeout_s: float,
        max_reply_bytes: int,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.default_headers = default_headers
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.max_reply_bytes = max_reply_bytes
        self.idle: list[_Connection] = []
        self.queue: deque[_QueuedRequest] = deque()
        # Open connections plus slots reserved by callers opening one.
        self.size = 0
        self.connections: set[_Connection] = set()
        # (method, driver headers) → (default lines, Content-Length rule, driver lines).
        self.head_cache: dict[tuple[str, tuple[tuple[str, str], ...]], _HeadParts] = {}
        # (method, header names) → (default lines, Content-Length rule): what a head whose
        # values change per call (a webhook's signature) still shares with the last one.
        self.shape_cache: dict[tuple[str, tuple[str, ...]], tuple[str, int]] = {}
        self._queue_timer: asyncio.TimerHandle | None = None

    def head_parts(self, method: str, headers: Sequence[tuple[str, str]]) -> _HeadParts:
        """The request head around its target, checked once per (method, headers)."""
        key = (method, headers) if type(headers) is tuple else None
        if key is not None:
            parts = self.head_cache.get(key)
            if parts is not None:
                return parts
        shape_key = (method, tuple([name for name, _ in headers]))
        shape = self.shape_cache.get(shape_key)
        if shape is None:
            shape = self._head_shape(method, shape_key[1])
            if len(self.shape_cache) >= _HEAD_CACHE_SIZE:
                self.shape_cache.clear()
            self.shape_cache[shape_key] = shape
        driver_lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
        # RFC 9110 §5.5: CR and LF never occur in a field; one would inject a header.
        if driver_lines.count("\n") != len(headers) or driver_lines.count("\r") != len(headers):
            raise ConnectFailed("a request header holds CR or LF")
        parts = _HeadParts(shape[0], shape[1], driver_lines)
        if key is not None:
            if len(self.head_cache) >= _HEAD_CACHE_SIZE:
                # Headers that change per call (a signature, a timestamp) must not grow it.
                self.head_cache.clear()
            self.head_cache[key] = parts
        return parts

    def _head_shape(self, method: str, header_names: tuple[str, ...]) -> tuple[str, int]:
        """The default lines a head with these header names gets, and its Content-Length
        rule; the method checked."""
        if _METHOD_PATTERN.fullmatch(method) is None:
            raise ConnectFailed(f"invalid method {method!r}")
        names = {name.lower() for name in header_names}
        default_lines = "".join(
            f"{name}: {value}\r\n"
            for name, value in self.default_headers
            if name.lower() not in names
        )
        if "content-length" in names:
            return default_lines, _LENGTH_FROM_DRIVER
        if method in _BODILESS_METHODS:
            return default_lines, _LENGTH_IF_BODY
        return default_lines, _LENGTH_ALWAYS

    def take_idle(self, oldest_usable: float) -> _Connection | None:
        """The most recently used idle connection still fresh; stale ones are closed."""
        idle = self.idle
        while idle:
            connection = idle.pop()
            connection.idle = False
            if connection.is_fresh(oldest_usable):
                return connection
            connection.close(abort=False)
        return None

    def enqueue(self, request: _QueuedRequest) -> None:
        self.queue.append(request)
        if self._queue_timer is None:
            self._queue_timer = self.loop.call_at(request.deadline, self._expire_queue)

    def release(self, connection: _Connection) -> None:
        """A clean connection is free: it writes the first queued request, else idles."""
        queue = self.queue
        while queue:
            request = queue.popleft()
            if not request.future.done():
                connection.send(
                    request.future, request.data, request.head_only, request.total_deadline
                )
                return
        connection.idle = True
        connection.idle_since = self.loop.time()
        self.idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection closed: drop it and pass its slot on."""
        if connection not in self.connections:
            return
        self.connections.remove(connection)
        if connection.idle:
            connection.idle = False
            self.idle.remove(connection)
        self.free_slot()

    def free_slot(self) -> None:
        queue = self.queue
        while queue:
            request = queue.popleft()
            if not request.future.done():
                # The slot moves to the queued caller, who opens its own connection.
                request.future.set_exception(_SlotGranted())
                return
        self.size -= 1

    def withdraw(self, future: asyncio.Future[HttpReply]) -> None:
        """Its caller was cancelled: pass on a granted slot, drop a half-done exchange."""
        if future.done() and not future.cancelled():
            if isinstance(future.exception(), _SlotGranted):
                self.free_slot()
            return
        for connection in self.connections:
            if connection.cancel_request(future):
                return

    def _expire_queue(self) -> None:
        # Requests queue in arrival order with the same connect timeout, so deadlines rise
        # along the queue: one handle at the head's deadline serves them all.
        self._queue_timer = None
        now = self.loop.time()
        queue = self.queue
        while queue:
            request = queue[0]
            if not request.future.done():
                if request.deadline > now:
                    self._queue_timer = self.loop.call_at(request.deadline, self._expire_queue)
                    return
                request.future.set_exception(ConnectFailed("no free pooled connection in time"))
            queue.popleft()

    def close(self) -> list[_Connection]:
        """Fail every queued request and every one in flight; returns the connections closed."""
        if self._queue_timer is not None:
            self._queue_timer.cancel()
            self._queue_timer = None
        queue, self.queue = self.queue, deque()
        for request in queue:
            if not request.future.done():
                request.future.set_exception(ConnectFailed("the transport is closed"))
        connections = list(self.connections)
        for connection in connections:
            connection.fail_request(ReplyLost("the transport was closed mid-request"))
        return connections


class Http11Transport:
    """HTTP/1.1 over pooled keep-alive connections.

    `max_connections` caps the connections open to each origin (a bridge has one).
    `connect_timeout_s` bounds waiting for a pooled connection plus opening one;
    `timeout_s` bounds each wait for reply bytes, and connect + timeout the whole call.
    `keepalive_idle_s`: an idle connection older than this is closed, not reused.
    `ssl_context` replaces the system trust store (a private CA, tests).
    """

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        timeout_s: float,
        user_agent: str,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        keepalive_idle_s: float = DEFAULT_KEEPALIVE_IDLE_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._user_agent = user_agent
        self._max_reply_bytes = max_reply_bytes
        self._keepalive_idle_s = keepalive_idle_s
        self._ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        # URL prefix "scheme://authority" → pool; several spellings may share one pool.
        self._pools_by_prefix: dict[str, _Pool] = {}
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._closed = False

    async def perform(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> HttpReply:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise ConnectFailed("the transport is closed")
        match = _URL_PATTERN.match(url)
        if match is None:
            raise ConnectFailed(f"invalid URL {url!r}")
        prefix = url[: match.end(2)]
        pool = self._pools_by_prefix.get(prefix)
        if pool is None:
            pool = self._new_pool(loop, prefix, match[1], match[2])
        fragment = url.find("#", match.end())
        target = url[match.end() : fragment if fragment >= 0 else len(url)] or "/"
        if target[0] == "?":
            target = "/" + target
        if not _safe_target(target):
            raise ConnectFailed(f"invalid request target {target!r}")
        default_lines, length_rule, driver_lines = pool.head_parts(method, headers)
        if length_rule == _LENGTH_ALWAYS or (body and length_rule == _LENGTH_IF_BODY):
            head = (
                f"{method} {target} HTTP/1.1\r\n{default_lines}"
                f"Content-Length: {len(body)}\r\n{driver_lines}\r\n"
            )
        else:
            head = f"{method} {target} HTTP/1.1\r\n{default_lines}{driver_lines}\r\n"
        data = head.encode() + body if body else head.encode()

        now = loop.time()
        connect_deadline = now + self._connect_timeout_s
        total_deadline = connect_deadline + self._timeout_s
        head_only = method == "HEAD"
        future: asyncio.Future[HttpReply] = loop.create_future()
        connection = pool.take_idle(now - self._keepalive_idle_s) if pool.idle else None
        if connection is not None:
            connection.send(future, data, head_only, total_deadline)
        elif pool.size < pool.max_connections:
            pool.size += 1
            connection = await self._connect(pool, connect_deadline)
            connection.send(future, data, head_only, total_deadline)
        else:
            # The connection that frees first writes it (one Future, no hand-over task).
            pool.enqueue(_QueuedRequest(connect_deadline, future, data, head_only, total_deadline))
        while True:
            try:
                return await future
            except _SlotGranted:
                # A closed connection's slot was handed to this request: open its own.
                connection = await self._connect(pool, connect_deadline)
            except asyncio.CancelledError:
                pool.withdraw(future)
                raise
            future = loop.create_future()
            connection.send(future, data, head_only, total_deadline)

    @property
    def open_connections(self) -> int:
        """Connections open now, over every origin (idle or carrying a request)."""
        return sum(len(pool.connections) for pool in self._pools.values())

    async def aclose(self) -> None:
        """Close every connection and fail every queued request; safe to call more than once."""
        self._closed = True
        connections: list[_Connection] = []
        for pool in self._pools.values():
            connections.extend(pool.close())
        for connection in connections:
            await connection.wait_lost()

    async def _connect(self, pool: _Pool, deadline: float) -> _Connection:
        """Open a connection in the slot the caller holds; the slot is freed on failure."""
        assert self._loop is not None
        made: list[_Connection] = []

        def make_connection() -> _Connection:
            connection = _Connection(pool)
            made.append(connection)
            return connection

        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await self._loop.create_connection(
                    make_connection,
                    pool.host,
                    pool.port,
                    ssl=pool.ssl_context,
                    server_hostname=pool.host if pool.ssl_context is not None else None,
                )
        except BaseException as error:
            if made and made[0].made:
                # Connected but not handed to us (cancelled at the last moment): closing
                # it (once, however often asked) frees the slot.
                made[0].close(abort=True)
            else:
                pool.free_slot()
            if isinstance(error, TimeoutError):
                raise ConnectFailed(f"connect timeout to {pool.host}:{pool.port}") from error
            if isinstance(error, Exception):
                # Refused, unreachable, DNS, TLS handshake: before any byte of the request.
                message = f"cannot connect to {pool.host}:{pool.port}: {error}"
                raise ConnectFailed(message) from error
            raise
        if self._closed:
            connection.close(abort=True)
            raise ConnectFailed("the transport is closed")
        return connection

    def _new_pool(
        self, loop: asyncio.AbstractEventLoop, prefix: str, scheme: str, authority: str
    ) -> _Pool:
        scheme = scheme.lower()
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise ConnectFailed(f"unsupported URL scheme {scheme!r}")
        if "@" in authority:
            raise ConnectFailed("credentials in the URL are not supported; send a header")
        host, port = _split_authority(authority, default_port)
        pool = self._pools.get((scheme, host, port))
        if pool is None:
            host_header = f"[{host}]" if ":" in host else host
            if port != default_port:
                host_header += f":{port}"
            ssl_context = None
            if scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                ssl_context = self._ssl_context
            pool = _Pool(
                loop=loop,
                host=host,
                port=port,
                ssl_context=ssl_context,
                default_headers=(
                    ("Host", host_header),
                    ("User-Agent", self._user_agent),
                    # Ask for the body as-is (RFC 9110 §12.5.3).
                    ("Accept-Encoding", "identity"),
                ),
                max_connections=self._max_connections,
                timeout_s=self._timeout_s,
                max_reply_bytes=self._max_reply_bytes,
            )
            self._pools[(scheme, host, port)] = pool
        self._pools_by_prefix[prefix] = pool
        return pool


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    """(host, port) of `host`, `host:port`, `[v6]` or `[v6]:port` (RFC 3986 §3.2.2)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ConnectFailed(f"invalid host {authority!r}")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConnectFailed(f"invalid host {authority!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ConnectFailed(f"no host in {authority!r}")
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConnectFailed(f"invalid port in {authority!r}")
    return host.lower(), int(port_text)
