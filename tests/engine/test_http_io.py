"""engine.http_io against real HTTP servers on 127.0.0.1: round trips, pooling, failures."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, quote

import anyio
import msgspec
import pytest
from aiohttp import web
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from bridges.base import HttpCall
from engine.http_errors import ConnectFailed, ReplyLost, ReplyTooLarge, TransportError
from engine.http_io import BridgeClient, QueryEncoder, build_url, encode_query
from tests.engine.http_harness import serve_app

pytestmark = pytest.mark.anyio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Echo(msgspec.Struct):
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


ECHO_DECODER = msgspec.json.Decoder(Echo)


@contextlib.asynccontextmanager
async def serve_raw(
    handle: Callable[[SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A bare TCP server whose `handle` speaks (or breaks) HTTP by hand."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 -- anyio, not Django
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handle)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            task_group.cancel_scope.cancel()
    await listener.aclose()


async def read_request_head(stream: BufferedByteReceiveStream) -> bytes:
    return await stream.receive_until(b"\r\n\r\n", 65536)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    document = Echo(
        method=request.method,
        raw_path=request.raw_path,
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
    )
    return web.Response(body=msgspec.json.encode(document), content_type="application/json")


# ── URL building (pure) ──────────────────────────────────────────────────────────────


def test_encode_query_percent_encodes_everything_reserved() -> None:
    query = (
        ("message", "a+b, c|d é"),
        ("destination", "250782589800,250788123456"),
        ("empty", ""),
    )
    assert encode_query(query) == (
        "message=a%2Bb%2C%20c%7Cd%20%C3%A9&destination=250782589800%2C250788123456&empty="
    )


def test_encode_query_encodes_ascii_text_as_quote_does() -> None:
    """Every ASCII character, alone and among others ('%' first or after its escape's
    digits), a batch's comma-separated destinations: what urllib's quote() makes."""
    samples = [chr(code) for code in range(128)]
    samples += ["".join(chr(code) for code in range(128)), "%2C,%", "a b+c|d&e=f", ""]
    samples.append(",".join(f"9198{n:08d}" for n in range(100)))
    for text in samples:
        assert encode_query([("v", text)]) == "v=" + quote(text, safe="")


def test_encode_query_keeps_ascii_alphanumerics_and_encodes_other_letters() -> None:
    # The fast path skips quote() only for ASCII letters and digits; "é" and "٣" are
    # alphanumeric to Python too and must still be percent-encoded.
    query = (("username", "Septet2"), ("word", "café"), ("digit", "٣"), ("dash", "a-b"))
    assert encode_query(query) == ("username=Septet2&word=caf%C3%A9&digit=%D9%A3&dash=a-b")


def test_a_query_encoder_encodes_every_call_as_encode_query_does() -> None:
    """Remembered pairs are reused only for the same value: a changed credential, text
    or flag is encoded afresh, in the call's own order, and many keys stay correct."""
    encoder = QueryEncoder()
    calls = [
        (("username", "demo"), ("dlr", "0"), ("destination", "919810000001"), ("message", "a b")),
        (("username", "demo"), ("dlr", "0"), ("destination", "919810000002"), ("message", "a b")),
        (("username", "dem0"), ("dlr", "1"), ("destination", "1,2"), ("message", "a+b")),
        (("message", "a+b"), ("username", "demo"), ("dlr", "0")),
        tuple((f"k{n}", f"v {n}") for n in range(100)),
        tuple((f"k{n}", f"w&{n}") for n in range(100)),
        (),
    ]
    for query in calls:
        assert encoder.encode(query) == encode_query(query)


def test_build_url_joins_base_path_and_query() -> None:
    assert build_url("http://h:1/api/", "/v1/send", (("a", "1"),)) == "http://h:1/api/v1/send?a=1"
    assert build_url("http://h:1", "") == "http://h:1"
    assert build_url("http://h:1", "bulk sms/x%2Fy") == "http://h:1/bulk%20sms/x%2Fy"


# ── Round trips ──────────────────────────────────────────────────────────────────────


async def test_round_trip_of_method_path_query_headers_and_body() -> None:
    async with (
        serve_app([web.route("*", "/{tail:.*}", echo)]) as base_url,
        BridgeClient(base_url + "/api") as client,
    ):
        reply = await client.request(
            HttpCall(
                method="PUT",
                path="/v1/sms",
                query=(("b", "2"), ("a", "1")),
                headers=(("X-Api-Key", "k3y"), ("Content-Type", "application/json")),
                body=b'{"to":"+250782589800"}',
            )
        )
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    seen = ECHO_DECODER.decode(reply.body)
    assert seen.method == "PUT"
    assert seen.raw_path == "/api/v1/sms?b=2&a=1"
    assert seen.headers["x-api-key"] == "k3y"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "septet/0.1"
    assert seen.body == b'{"to":"+250782589800"}'


async def test_route_mobile_style_query_values_arrive_exactly() -> None:
    values = (
        ("username", "demo"),
        ("message", "Hi+there, a|b ünïcødé 😀 100% & more=yes"),
        ("destination", "250782589800,250788123456"),
        ("message_hex", "004800690020263A"),
        ("source", "ACME Ltd"),
    )
    async with (
        serve_app([web.get("/bulksms/bulksms", echo)]) as base_url,
        BridgeClient(base_url) as client,
    ):
        reply = await client.request(HttpCall(method="GET", path="/bulksms/bulksms", query=values))
    seen = ECHO_DECODER.decode(reply.body)
    path, _, raw_query = seen.raw_path.partition("?")
    assert path == "/bulksms/bulksms"
    assert raw_query == encode_query(values)
    # Decoded by an independent parser, every value is the driver's, in order.
    assert parse_qsl(raw_query, keep_blank_values=True, strict_parsing=True) == list(values)


async def test_server_error_status_is_a_reply_with_lower_case_headers() -> None:
    async def unavailable(request: web.Request) -> web.Response:
        response = web.Response(status=503, body=b"try later", headers={"Retry-After": "7"})
        response.headers.add("X-Multi", "1")
        response.headers.add("X-Multi", "2")
        return response

    async with (
        serve_app([web.post("/send", unavailable)]) as base_url,
        BridgeClient(base_url) as client,
    ):
        reply = await client.request(HttpCall(method="POST", path="/send", body=b"x"))
    assert reply.status == 503
    assert reply.body == b"try later"
    assert reply.headers["retry-after"] == "7"
    assert reply.headers["x-multi"] == "1, 2"


async def test_no_cookies_kept_no_redirect_followed_no_content_type_invented() -> None:
    async def set_cookie_and_redirect(request: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": "/elsewhere"})
        response.set_cookie("session", "abc")
        return response

    async with (
        serve_app(
            [web.post("/send", set_cookie_and_redirect), web.post("/echo", echo)]
        ) as base_url,
        BridgeClient(base_url) as client,
    ):
        redirect = await client.request(HttpCall(method="POST", path="/send", body=b"x"))
        second = await client.request(HttpCall(method="POST", path="/echo", body=b"raw"))
    assert redirect.status == 302
    assert redirect.headers["location"] == "/elsewhere"
    seen = ECHO_DECODER.decode(second.body)
    assert "cookie" not in seen.headers
    assert "content-type" not in seen.headers
    assert seen.headers["accept-encoding"] == "identity"


# ── Failures map into the seam's exception tree ─────────────────────────────────────


async def test_connection_refused_is_connect_failed_and_not_sent() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with BridgeClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ConnectFailed) as caught:
            await client.request(HttpCall(method="POST", path="/send"))
    assert caught.value.maybe_sent is False
    assert isinstance(caught.value, TransportError)


async def test_server_that_never_answers_is_reply_lost() -> None:
    async def hang(stream: SocketStream) -> None:
        await read_request_head(BufferedByteReceiveStream(stream))
        await anyio.sleep_forever()

    async with serve_raw(hang) as base_url, BridgeClient(base_url, timeout_s=0.2) as client:
        with pytest.raises(ReplyLost) as caught:
            await client.request(HttpCall(method="POST", path="/send", body=b"x"))
    assert caught.value.maybe_sent is True


async def test_server_closing_mid_reply_is_reply_lost() -> None:
    async def truncate(stream: SocketStream) -> None:
        await read_request_head(BufferedByteReceiveStream(stream))
        await stream.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
        await stream.aclose()

    async with serve_raw(truncate) as base_url, BridgeClient(base_url) as client:
        with pytest.raises(ReplyLost) as caught:
            await client.request(HttpCall(method="GET", path="/status"))
    assert caught.value.maybe_sent is True


async def test_dropped_keep_alive_get_is_not_resent_behind_the_callers_back() -> None:
    # Route Mobile style APIs send SMS with a GET; a silent resend would double-send.
    requests_seen = 0

    async def answer_once_then_drop(stream: SocketStream) -> None:
        nonlocal requests_seen
        buffered = BufferedByteReceiveStream(stream)
        await read_request_head(buffered)
        requests_seen += 1
        await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_request_head(buffered)
        requests_seen += 1
        await stream.aclose()

    async with serve_raw(answer_once_then_drop) as base_url, BridgeClient(base_url) as client:
        first = await client.request(HttpCall(method="GET", path="/send"))
        with pytest.raises(ReplyLost):
            await client.request(HttpCall(method="GET", path="/send"))
    assert first.body == b"ok"
    assert requests_seen == 2


async def test_waiting_too_long_for_a_pooled_connection_is_connect_failed() -> None:
    release = anyio.Event()
    held = anyio.Event()

    async def hold(request: web.Request) -> web.Response:
        held.set()
        await release.wait()
        return web.Response(body=b"done")

    async with (
        serve_app([web.post("/send", hold)]) as base_url,
        BridgeClient(base_url, max_connections=1, connect_timeout_s=0.2) as client,
        anyio.create_task_group() as task_group,
    ):
        replies = []

        async def first_request() -> None:
            replies.append(await client.request(HttpCall(method="POST", path="/send")))

        task_group.start_soon(first_request)
        await held.wait()
        try:
            with pytest.raises(ConnectFailed) as caught:
                await client.request(HttpCall(method="POST", path="/send"))
        finally:
            release.set()
    assert caught.value.maybe_sent is False
    assert [reply.body for reply in replies] == [b"done"]


async def test_reply_past_the_size_cap_is_reply_too_large() -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 2048)

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"y" * 512)
        await response.write_eof()
        return response

    async with (
        serve_app([web.get("/big", big), web.get("/chunked", big_chunked)]) as base_url,
        BridgeClient(base_url, max_reply_bytes=1024) as client,
    ):
        for path in ("/big", "/chunked"):
            with pytest.raises(ReplyTooLarge) as caught:
                await client.request(HttpCall(method="GET", path=path))
            assert caught.value.maybe_sent is True
        small = await client.request(HttpCall(method="GET", path="/missing"))
    assert small.status == 404


# ── Pooling ──────────────────────────────────────────────────────────────────────────


async def test_keep_alive_reuses_one_connection_for_sequential_requests() -> None:
    peers: set[object] = set()

    async def note_peer(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(body=b"ok")

    async with (
        serve_app([web.post("/send", note_peer)]) as base_url,
        BridgeClient(base_url) as client,
    ):
        for _ in range(50):
            reply = await client.request(HttpCall(method="POST", path="/send", body=b"x"))
            assert reply.status == 200
    assert len(peers) == 1


async def test_max_connections_is_respected_under_concurrency() -> None:
    limit = 3
    peers: set[object] = set()
    active = 0
    most_active = 0
    gate = anyio.Event()

    async def count_concurrency(request: web.Request) -> web.Response:
        nonlocal active, most_active
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        active += 1
        most_active = max(most_active, active)
        if active == limit:
            gate.set()
        await gate.wait()
        active -= 1
        return web.Response(body=b"ok")

    async with (
        serve_app([web.post("/send", count_concurrency)]) as base_url,
        BridgeClient(base_url, max_connections=limit) as client,
    ):
        statuses: list[int] = []

        async def send_one() -> None:
            reply = await client.request(HttpCall(method="POST", path="/send"))
            statuses.append(reply.status)

        async with anyio.create_task_group() as task_group:
            for _ in range(10):
                task_group.start_soon(send_one)
    assert statuses == [200] * 10
    assert most_active == limit
    assert len(peers) == limit


# ── Lifecycle ────────────────────────────────────────────────────────────────────────


async def test_aclose_is_idempotent_and_a_closed_client_sends_nothing() -> None:
    never_started = BridgeClient("http://127.0.0.1:9")
    await never_started.aclose()
    await never_started.aclose()

    async with serve_app([web.post("/send", echo)]) as base_url:
        client = BridgeClient(base_url)
        reply = await client.request(HttpCall(method="POST", path="/send"))
        await client.aclose()
        await client.aclose()
        with pytest.raises(ConnectFailed):
            await client.request(HttpCall(method="POST", path="/send"))
    assert reply.status == 200
