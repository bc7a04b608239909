"""The one HTTP client seam: perform a driver's `HttpCall` over a pooled keep-alive connection.

This is the only engine module that imports an HTTP client library (DESIGN.md, "One HTTP
client seam"). aiohttp was chosen by measurement (bench/http_clients.py): on one client
core it costs a fraction of the CPU per request of httpx's default transport and keeps
its rate under a 200-connection pool. Two layers, httpcore-style, so the transport can be
swapped without touching a caller:

    BridgeClient        base URL, query encoding, lazy start in the running loop
        │  perform(method, url, headers, body) -> HttpReply
        ▼
    AiohttpTransport    one ClientSession + TCPConnector per bridge; every aiohttp and
                        asyncio exception is mapped here, at the boundary

A caller sees only `HttpReply` or one of this exception tree, never a library's own:

    TransportError                 maybe_sent: may the provider have received the request?
    ├── ConnectFailed              maybe_sent=False: refused, DNS, connect or pool timeout,
    │                              client closed; resending cannot double-send
    ├── ReplyLost                  maybe_sent=True: written (or possibly written), no complete
    │                              reply: read timeout, reset or disconnect mid-reply
    └── ReplyTooLarge              maybe_sent=True: a reply arrived but its body passed the cap

An HTTP error status (4xx, 5xx) is a reply, not an exception: the driver reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote

import aiohttp
import anyio
from multidict import CIMultiDict
from yarl import URL

from bridges.base import HttpCall, HttpReply

# A provider's answer to a send or a status poll is a few KiB at most; anything past this
# is a misbehaving endpoint, not a reply a driver could parse.
DEFAULT_MAX_REPLY_BYTES = 1024 * 1024

# RFC 3986 §2.3: only unreserved characters stay literal in a query key or value, so '+'
# (read as a space by form decoders), ',', '|', '&', '=' and every non-ASCII byte (UTF-8,
# RFC 3986 §2.5) are percent-encoded, and a space becomes %20. Route Mobile style GET APIs
# carry message text in the query, where a '+' left literal would arrive as a space.
_QUERY_SAFE = ""
# A driver's path is already a path: keep its separators, sub-delims and any %XX it holds.
_PATH_SAFE = "/%:@!$&'()*+,;="


class TransportError(Exception):
    """The request could not be completed; `maybe_sent` says whether it may have arrived."""

    maybe_sent: bool = True


class ConnectFailed(TransportError):  # noqa: N818 -- the seam's API names
    """Nothing was sent: the connection (or a free pooled one) could not be had."""

    maybe_sent = False


class ReplyLost(TransportError):  # noqa: N818 -- the seam's API names
    """The request was (or may have been) written, but no complete reply came back."""

    maybe_sent = True


class ReplyTooLarge(TransportError):  # noqa: N818 -- the seam's API names
    """The provider answered with a body larger than the client accepts."""

    maybe_sent = True


def _quote_query_part(text: str) -> str:
    # ASCII letters and digits are unreserved: skip quote() for them (most keys, numbers,
    # credentials and codes), which costs a microsecond or more per call.
    if text.isascii() and text.isalnum():
        return text
    return quote(text, safe=_QUERY_SAFE)


def encode_query(query: Sequence[tuple[str, str]]) -> str:
    """`k=v&k=v` in the given order, every reserved or non-ASCII character percent-encoded."""
    return "&".join(
        [f"{_quote_query_part(key)}={_quote_query_part(value)}" for key, value in query]
    )


def build_url(base_url: str, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """The full, already-encoded URL of a call: base URL, then `path`, then the query."""
    url = base_url.rstrip("/")
    if path:
        url += "/" + quote(path.lstrip("/"), safe=_PATH_SAFE)
    if query:
        url += "?" + encode_query(query)
    return url


def join_reply_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header names; a repeated header's values joined by ", " (RFC 9110 §5.3)."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class AiohttpTransport:
    """One aiohttp session and connection pool; maps every failure into the seam's tree.

    Must be built inside the running event loop (aiohttp binds its session to it) and
    closed there with `aclose()`.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        timeout_s: float,
        user_agent: str,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self._max_reply_bytes = max_reply_bytes
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=max_connections,
            keepalive_timeout=30.0,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # `connect` bounds the wait for a pooled connection plus the connect itself;
            # `total` is longer than `connect` so it can only fire after the connect phase,
            # where the request may already be on the wire (see _perform's TimeoutError).
            timeout=aiohttp.ClientTimeout(
                total=connect_timeout_s + timeout_s,
                connect=connect_timeout_s,
                sock_connect=connect_timeout_s,
                sock_read=timeout_s,
            ),
            # Provider APIs authenticate by key or header; a cookie one provider sets must
            # never ride along on a later call.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Ask for the body as-is; a server that compresses anyway is decoded by aiohttp
            # and the size cap counts decoded bytes. A driver's own headers override these.
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            # No invented Content-Type on a body the driver left untyped.
            skip_auto_headers=("Content-Type",),
            raise_for_status=False,
            trust_env=False,
        )
        # aiohttp silently resends an idempotent request (GET, PUT, DELETE) once when a
        # reused keep-alive connection drops (RFC 9112 §9.3.1 allows it). Route Mobile
        # style APIs send SMS with a GET, so that resend could deliver a message twice;
        # the engine decides on resends itself (DESIGN.md "Nothing accepted is lost").
        # aiohttp's own test_utils turns it off the same way.
        self._session._retry_connection = False

    async def perform(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> HttpReply:
        try:
            return await self._perform(method, url, headers, body)
        except aiohttp.ConnectionTimeoutError as error:
            raise ConnectFailed(f"connect timeout: {error}") from error
        except aiohttp.SocketTimeoutError as error:
            raise ReplyLost(f"read timeout: {error}") from error
        except aiohttp.ClientConnectorError as error:
            # Refused, unreachable, DNS failure, TLS handshake failure: before any byte
            # of the request was written.
            raise ConnectFailed(f"cannot connect: {error}") from error
        except aiohttp.InvalidURL as error:
            raise ConnectFailed(f"invalid URL: {error}") from error
        except (aiohttp.ClientError, OSError) as error:
            # Disconnects, resets, truncated payloads, malformed replies: the request was
            # written or being written, so the provider may have it.
            raise ReplyLost(f"{type(error).__name__}: {error}") from error
        except TimeoutError as error:
            # The `total` timer (asyncio.TimeoutError is this builtin since Python 3.11):
            # it outlasts the connect timer, so the request may already be sent.
            raise ReplyLost("no reply within the total timeout") from error

    async def _perform(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> HttpReply:
        response = await self._session.request(
            method,
            URL(url, encoded=True),
            headers=CIMultiDict(headers) if headers else None,
            data=body or None,
            # A redirect is the provider's answer for the driver to read; following it
            # would resend the call somewhere else.
            allow_redirects=False,
        )
        try:
            length = response.content_length
            if length is not None and length > self._max_reply_bytes:
                raise ReplyTooLarge(f"reply of {length} bytes exceeds {self._max_reply_bytes}")
            if length is not None and "Content-Encoding" not in response.headers:
                content = await response.read()
            else:
                content = await self._read_capped(response)
            return HttpReply(
                status=response.status,
                body=content,
                headers=join_reply_headers(response.headers.items()),
            )
        except BaseException:
            # A half-read body leaves the connection unusable for the next request.
            response.close()
            raise
        finally:
            response.release()

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            received += len(chunk)
            if received > self._max_reply_bytes:
                raise ReplyTooLarge(f"reply body exceeds {self._max_reply_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._session.close()


class BridgeClient:
    """The HTTP client of one bridge: performs its driver's calls against `base_url`.

    The pool is started on the first request, inside the running loop, and holds at most
    `max_connections` keep-alive connections. `connect_timeout_s` bounds getting a
    connection (pool wait included); `timeout_s` bounds each wait for reply bytes.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 100,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 30.0,
        user_agent: str = "septet/0.1",
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.base_url = base_url
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._user_agent = user_agent
        self._max_reply_bytes = max_reply_bytes
        self._transport: AiohttpTransport | None = None
        self._closed = False

    def _started_transport(self) -> AiohttpTransport:
        if self._closed:
            raise ConnectFailed("the bridge client is closed")
        if self._transport is None:
            self._transport = AiohttpTransport(
                max_connections=self._max_connections,
                connect_timeout_s=self._connect_timeout_s,
                timeout_s=self._timeout_s,
                user_agent=self._user_agent,
                max_reply_bytes=self._max_reply_bytes,
            )
        return self._transport

    async def request(self, call: HttpCall) -> HttpReply:
        """Perform `call`; an HTTP error status is a reply, a failure a `TransportError`."""
        transport = self._started_transport()
        url = build_url(self.base_url, call.path, call.query)
        return await transport.perform(call.method, url, call.headers, call.body)

    async def aclose(self) -> None:
        """Close the pool; safe to call more than once, and before any request."""
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            # Shielded and bounded: closing runs during shutdown, often inside a cancelled
            # scope, and aiohttp's close must neither be cut short nor wait on a peer that
            # hangs (a simulated "timeout" fault, a dead provider).
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await transport.aclose()

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
