"""The one HTTP client seam: perform a driver's `HttpCall` over a pooled keep-alive connection.

This is the only engine module that drivers' calls go through (docs/design.md, "One HTTP client
seam"). The transport underneath is septet's own HTTP/1.1 client (engine/http11.py), chosen
by measurement: bench/http_clients.py runs httpx, httpx on aiohttp, aiohttp and it side by
side, and it spends several times less CPU per request than aiohttp, the fastest library.
Two layers, httpcore-style, so the transport can be swapped without touching a caller:

    BridgeClient        base URL, query encoding, lazy start in the running loop
        │  perform(method, url, headers, body) -> HttpReply
        ▼
    Http11Transport     keep-alive pools of asyncio protocols, httptools parsing; every
                        socket and parser failure is mapped there, at the boundary

A caller sees only `HttpReply` or the exception tree of engine/http_errors.py
(TransportError: ConnectFailed, ReplyLost, ReplyTooLarge), never a library's own.
"""

from __future__ import annotations

import functools
from collections.abc import Coroutine, Sequence
from typing import Any
from urllib.parse import quote

import anyio

from bridges.base import HttpCall, HttpReply
from engine.http11 import Http11Transport
from engine.http_errors import DEFAULT_MAX_REPLY_BYTES, ConnectFailed

# RFC 3986 §2.3: only unreserved characters stay literal in a query key or value, so '+'
# (read as a space by form decoders), ',', '|', '&', '=' and every non-ASCII byte (UTF-8,
# RFC 3986 §2.5) are percent-encoded, and a space becomes %20. Route Mobile style GET APIs
# carry message text in the query, where a '+' left literal would arrive as a space.
_QUERY_SAFE = ""
# A driver's path is already a path: keep its separators, sub-delims and any %XX it holds.
_PATH_SAFE = "/%:@!$&'()*+,;="


# RFC 3986 §2.3's unreserved characters: what quote() keeps with safe="".
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_PERCENT = ord("%")


def _quote_query_part(text: str) -> str:
    """quote(text, safe=_QUERY_SAFE), faster for ASCII. Letters and digits alone are kept
    as they are (most keys, numbers, credentials and codes). Other ASCII text has each
    distinct reserved character replaced in one pass, '%' first: quote() goes through
    it a byte at a time in Python, 1.5 us a recipient for a batch's comma-separated
    destinations."""
    if not text.isascii():
        return quote(text, safe=_QUERY_SAFE)
    if text.isalnum():
        return text
    reserved = set(text.encode().translate(None, _UNRESERVED))
    if _PERCENT in reserved:
        text = text.replace("%", "%25")
        reserved.discard(_PERCENT)
    for code in reserved:
        text = text.replace(chr(code), f"%{code:02X}")
    return text


def encode_query(query: Sequence[tuple[str, str]]) -> str:
    """`k=v&k=v` in the given order, every reserved or non-ASCII character percent-encoded."""
    return "&".join(
        [f"{_quote_query_part(key)}={_quote_query_part(value)}" for key, value in query]
    )


# Distinct keys a QueryEncoder remembers; a driver sends a dozen at most.
_QUERY_MEMO_KEYS = 64


class QueryEncoder:
    """`encode_query` for one bridge's calls, remembering each key's last `k=v`: most of a
    provider's query is the same on every call (credentials, sender, type, flags; a
    campaign's text), and is encoded once instead of once per request. Bounded by the
    number of distinct keys, never by the values sent."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        # key -> (its last value, "key=" encoded, that pair encoded)
        self._last: dict[str, tuple[str, str, str]] = {}

    def encode(self, query: Sequence[tuple[str, str]]) -> str:
        last = self._last
        parts: list[str] = []
        for key, value in query:
            known = last.get(key)
            if known is None:
                prefix = _quote_query_part(key) + "="
                pair = prefix + _quote_query_part(value)
                if len(last) < _QUERY_MEMO_KEYS:
                    last[key] = (value, prefix, pair)
            elif known[0] == value:
                pair = known[2]
            else:
                # A value that changes per call (a destination, a text): the key's
                # encoding is still the one remembered.
                prefix = known[1]
                pair = prefix + _quote_query_part(value)
                last[key] = (value, prefix, pair)
            parts.append(pair)
        return "&".join(parts)


@functools.lru_cache(maxsize=256)
def _url_base(base_url: str, path: str) -> str:
    """Base URL and encoded path (a driver's few paths, asked for at every request)."""
    url = base_url.rstrip("/")
    if path:
        url += "/" + quote(path.lstrip("/"), safe=_PATH_SAFE)
    return url


def build_url(base_url: str, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """The full, already-encoded URL of a call: base URL, then `path`, then the query."""
    url = _url_base(base_url, path)
    if query:
        url += "?" + encode_query(query)
    return url


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
        self._transport: Http11Transport | None = None
        self._closed = False
        self._query = QueryEncoder()

    def _started_transport(self) -> Http11Transport:
        if self._closed:
            raise ConnectFailed("the bridge client is closed")
        if self._transport is None:
            self._transport = Http11Transport(
                max_connections=self._max_connections,
                connect_timeout_s=self._connect_timeout_s,
                timeout_s=self._timeout_s,
                user_agent=self._user_agent,
                max_reply_bytes=self._max_reply_bytes,
            )
        return self._transport

    def request(self, call: HttpCall) -> Coroutine[Any, Any, HttpReply]:
        """Perform `call`; an HTTP error status is a reply, a failure a `TransportError`.

        Awaited as a coroutine function is (`await client.request(call)`): it returns the
        transport's own coroutine rather than one of its own wrapping it, a frame fewer
        to make and resume at every request. A closed client raises at the call."""
        transport = self._started_transport()
        url = _url_base(self.base_url, call.path)
        if call.query:
            url += "?" + self._query.encode(call.query)
        return transport.perform(call.method, url, call.headers, call.body)

    async def aclose(self) -> None:
        """Close the pool; safe to call more than once, and before any request."""
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            # Shielded and bounded: closing runs during shutdown, often inside a cancelled
            # scope, and the transport's close must neither be cut short nor wait on a peer that
            # hangs (a simulated "timeout" fault, a dead provider).
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await transport.aclose()

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
