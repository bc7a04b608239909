"""Slow and idle clients on every listener: slowloris, stalled PDUs, thousands of idle sockets.

Each listener bounds how long a connection may hold a slot without doing its part:
NDJSON sockets close a connection that completes no line within `[ingress]
idle_timeout_s`; the HTTP listener closes one that has not sent a whole request head
within `[http] idle_timeout_s` and answers 408 to a body slower than `body_timeout_s`;
an SMPP session that does not bind in `session_init_s`, or stops answering, is closed
by its timers (SMPP v3.4 section 7.2). Well-behaved clients are served throughout. The
timeouts are set short here; the dribbling clients write a byte every 100 ms for at most
a few seconds (bounded loops), and every wait is bounded.
"""

from __future__ import annotations

import resource
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec
import pytest

from engine.config import Settings
from engine.smpp import pdu as p
from engine.smpp.codec import HEADER, PduReader, encode_pdu
from tests.engine.daemon_harness import connected, daemon_settings, running_daemon

pytestmark = pytest.mark.anyio

IDLE_S = 0.5
DRIBBLE_S = 0.1  # one byte per 100 ms: never idle by bytes, never a complete line
CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def settings_with(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    settings = daemon_settings(tmp_path)
    changes = {
        name: msgspec.structs.replace(getattr(settings, name), **values)
        for name, values in sections.items()
    }
    return msgspec.structs.replace(settings, **changes)


async def dribble(stream: anyio.abc.ByteStream, data: bytes) -> bool:
    """Send `data` a byte at a time; True if the server closed the connection first."""
    for index in range(len(data)):
        try:
            await stream.send(data[index : index + 1])
        except CLOSED:
            return True
        await anyio.sleep(DRIBBLE_S)
    return False


async def read_until_closed(
    stream: anyio.abc.ByteStream,
    timeout_s: float = 5.0,
    enough: Callable[[bytes], bool] = lambda received: False,
) -> bytes:
    """Everything the server writes until it closes the connection, or until `enough`
    of it has come (bounded)."""
    received = b""
    with anyio.fail_after(timeout_s):
        while not enough(received):
            try:
                received += await stream.receive()
            except CLOSED:
                break
    return received


async def closed_while_dribbling(
    stream: anyio.abc.ByteStream,
    data: bytes,
    enough: Callable[[bytes], bool] = lambda received: False,
) -> tuple[bool, bytes]:
    """Dribble `data` while reading: (did the server close it, or write `enough`, before
    the dribble ended; what it wrote)."""
    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def reader() -> None:
            outcome["received"] = await read_until_closed(stream, len(data) * 0.5, enough)
            tg.cancel_scope.cancel()  # closed or answered: stop dribbling

        tg.start_soon(reader)
        await dribble(stream, data)
    return "received" in outcome, outcome.get("received", b"")


async def served_meanwhile(work: Callable[[], Awaitable[None]], rounds: int) -> None:
    """A well-behaved client's work, repeated while the slow ones stall."""
    for _ in range(rounds):
        await work()
        await anyio.sleep(0.1)


# ── NDJSON sockets ─────────────────────────────────────────────────────────────


async def test_ndjson_slowloris_is_closed_and_other_clients_are_served(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, ingress={"idle_timeout_s": IDLE_S})
    line = b'{"to": "+250788100070", "text": "' + b"s" * 40 + b'"}'
    async with running_daemon(settings) as daemon:
        slow = await anyio.connect_tcp("127.0.0.1", daemon.tcp_port)
        async with slow, connected(daemon, unix=True) as good, anyio.create_task_group() as tg:
            sent = 0

            async def good_client() -> None:
                nonlocal sent
                sent += 1
                await good.send({"to": f"+25078810{sent:04d}", "text": "served", "dlr": False})
                # Lines complete well inside IDLE_S, so this client is never idle.
                await good.wait_for(lambda events: len(good.of("accepted")) == sent)

            tg.start_soon(served_meanwhile, good_client, 8)
            closed, received = await closed_while_dribbling(slow, line)
        assert closed, "the dribbling client was never closed"
        assert received == b""  # its partial line was never answered as a line
        assert len(good.of("accepted")) == sent == 8


async def test_ndjson_blank_lines_keep_a_waiting_client_open(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, ingress={"idle_timeout_s": IDLE_S})
    async with running_daemon(settings) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", daemon.tcp_port)
        async with stream, anyio.create_task_group() as tg:
            received: list[bytes] = []

            async def reader() -> None:
                received.append(await read_until_closed(stream, timeout_s=10))

            tg.start_soon(reader)
            for _ in range(6):  # 6 × 0.2 s: longer than IDLE_S, each gap shorter
                await stream.send(b"\n")
                await anyio.sleep(0.2)
            await stream.send(b'{"to": "+250788100071", "text": "still here", "dlr": false}\n')
            # Then it writes nothing more: the reader ends when the daemon closes it.
    (events,) = received
    kinds = [msgspec.json.decode(line)["event"] for line in events.splitlines()]
    assert kinds[0] == "accepted"  # served after 1.2 s of blank lines, then closed once idle


# ── HTTP listener ──────────────────────────────────────────────────────────────


async def test_http_head_sent_byte_by_byte_is_closed_while_scrapes_go_on(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, http={"idle_timeout_s": IDLE_S, "body_timeout_s": IDLE_S})
    head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Pad: yyyy"
    async with running_daemon(settings) as daemon, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{daemon.http_port}"

        async def scrape() -> None:
            assert (await http.get(f"{base}/healthz")).status_code == 200
            assert b"septet_circuit_state" in (await http.get(f"{base}/metrics")).content

        slow = await anyio.connect_tcp("127.0.0.1", daemon.http_port)
        async with slow, anyio.create_task_group() as tg:
            tg.start_soon(served_meanwhile, scrape, 8)
            closed, received = await closed_while_dribbling(slow, head)
        assert closed, "the slowloris client was never closed"
        assert not received.startswith(b"HTTP/1.1 200")


async def test_http_callback_body_too_slow_is_answered_408(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, http={"idle_timeout_s": 5.0, "body_timeout_s": IDLE_S})
    body = b"dnis=250788100072&command=deliver&dlvrMsgId=1&dlvrMsgStat=D"
    async with running_daemon(settings) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", daemon.http_port)
        async with stream:
            await stream.send(
                b"POST /dlr/dsc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            answered, received = await closed_while_dribbling(
                stream, body, lambda received: b"\r\n\r\n" in received
            )
    assert answered, "the slow body was waited for to the end"
    assert received.startswith(b"HTTP/1.1 408")


# ── SMPP ───────────────────────────────────────────────────────────────────────

SMPP_TIMERS = {
    "session_init_s": IDLE_S,
    "enquire_link_s": 0.3,
    "response_s": 0.3,
    "inactivity_s": 2.0,
}


def bind_pdu() -> bytes:
    # The embedded default's demo account (docs/design.md), not a secret.
    return encode_pdu(p.BindTransceiver(sequence_number=1, system_id="demo", password="demo"))


def submit_pdu(sequence: int, to: str) -> bytes:
    return encode_pdu(
        p.SubmitSm(
            sequence_number=sequence,
            source_addr="SEPTET",
            dest_addr_ton=1,  # international (SMPP v3.4 5.2.5)
            dest_addr_npi=1,  # E.164 (SMPP v3.4 5.2.6)
            destination_addr=to,
            short_message=b"over smpp",
        )
    )


class SmppPeer:
    """A minimal ESME on septet's own codec: it answers enquire_link unless told not to."""

    def __init__(self, stream: anyio.abc.ByteStream, answer_probes: bool = True) -> None:
        self.stream = stream
        self.answer_probes = answer_probes
        self.frames = PduReader()
        self.seen: list[tuple[int, int, int]] = []  # (command_id, status, sequence)

    async def expect(self, command_id: int, timeout_s: float = 5.0) -> tuple[int, int]:
        """Read until a PDU `command_id` arrives; (status, sequence)."""
        with anyio.fail_after(timeout_s):
            while True:
                for frame in self.frames.feed(await self.stream.receive()):
                    _, command, status, sequence = HEADER.unpack_from(frame)
                    self.seen.append((command, status, sequence))
                    if command == p.ENQUIRE_LINK and self.answer_probes:
                        await self.stream.send(
                            encode_pdu(p.EnquireLinkResp(sequence_number=sequence))
                        )
                    if command == command_id:
                        return status, sequence

    async def until_closed(self, timeout_s: float = 5.0) -> None:
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    data = await self.stream.receive()
                except CLOSED:
                    return
                for frame in self.frames.feed(data):
                    self.seen.append(HEADER.unpack_from(frame)[1:])


async def test_smpp_stalled_sessions_are_closed_and_a_bound_client_is_served(
    tmp_path: Path,
) -> None:
    settings = daemon_settings(tmp_path)
    settings = msgspec.structs.replace(
        settings, smpp=msgspec.structs.replace(settings.smpp, **SMPP_TIMERS)
    )
    async with running_daemon(settings) as daemon:
        good = SmppPeer(await anyio.connect_tcp("127.0.0.1", daemon.smpp_port))
        await good.stream.send(bind_pdu())
        assert (await good.expect(p.BIND_TRANSCEIVER_RESP))[0] == p.ESME_ROK

        # Never binds: 6 of a bind's 16 header octets, then nothing.
        unbound = SmppPeer(await anyio.connect_tcp("127.0.0.1", daemon.smpp_port))
        await unbound.stream.send(bind_pdu()[:6])
        # Binds, then stalls inside a submit_sm header and ignores enquire_link.
        stalled = SmppPeer(
            await anyio.connect_tcp("127.0.0.1", daemon.smpp_port), answer_probes=False
        )
        await stalled.stream.send(bind_pdu())
        assert (await stalled.expect(p.BIND_TRANSCEIVER_RESP))[0] == p.ESME_ROK
        await stalled.stream.send(submit_pdu(2, "250788100073")[:10])

        async with anyio.create_task_group() as tg:
            tg.start_soon(unbound.until_closed)
            tg.start_soon(stalled.until_closed)
            # Meanwhile the bound client submits and answers the server's probes.
            for sequence in range(2, 8):
                await good.stream.send(submit_pdu(sequence, f"25078810{sequence:04d}"))
                assert (await good.expect(p.SUBMIT_SM_RESP))[0] == p.ESME_ROK
                await anyio.sleep(0.1)
        # SMPP v3.4 section 7.2: the stalled session was probed, then closed for silence.
        assert p.ENQUIRE_LINK in [command for command, _, _ in stalled.seen]
        assert not unbound.seen  # nothing to answer: closed by the session-init timer
        # The good client, probed too, is still bound.
        await good.stream.send(submit_pdu(9, "250788100079"))
        assert (await good.expect(p.SUBMIT_SM_RESP))[0] == p.ESME_ROK
        await good.stream.aclose()


# ── thousands of idle connections ──────────────────────────────────────────────

IDLE_CONNECTIONS = 2000
CONNECTION_LIMIT = 1000
IDLE_S_MANY = 2.0
KEEP_ALIVE_S = 0.4  # well inside IDLE_S_MANY


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"this test needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def keep_alive(send: Callable[[bytes], Awaitable[None]], until: anyio.Event) -> None:
    """Blank lines, the listener's keep-alive, every KEEP_ALIVE_S until `until` is set or
    the connection is closed."""
    with anyio.move_on_after(60):  # bounded
        while not until.is_set():
            try:
                await send(b"\n")
            except CLOSED:
                return
            with anyio.move_on_after(KEEP_ALIVE_S):
                await until.wait()


async def test_thousands_of_idle_connections_are_capped_and_reaped(tmp_path: Path) -> None:
    """The connections let in keep their slots with blank lines until the listener has
    taken every connection in, and only then fall idle: so no slot is freed while others
    still connect (however long that takes), and the counts are exact."""
    # Client and server ends of every connection live in this process.
    raise_fd_limit(2 * IDLE_CONNECTIONS + 1000)
    settings = settings_with(
        tmp_path, ingress={"idle_timeout_s": IDLE_S_MANY, "max_connections": CONNECTION_LIMIT}
    )
    async with running_daemon(settings) as daemon, connected(daemon) as good:
        sent = 0

        async def good_client() -> None:
            nonlocal sent
            sent += 1
            await good.send({"to": f"+25078820{sent:04d}", "text": "served", "dlr": False})
            await good.wait_for(lambda events: len(good.of("accepted")) == sent)

        await good_client()
        endings: dict[int, bytes] = {}
        all_in = anyio.Event()  # the listener has taken every connection in
        last_ended = anyio.Event()

        async def hold(index: int, stream: anyio.abc.ByteStream) -> None:
            async with stream, anyio.create_task_group() as tg:
                tg.start_soon(keep_alive, stream.send, all_in)
                endings[index] = await read_until_closed(stream, timeout_s=60)
                tg.cancel_scope.cancel()
            if index == IDLE_CONNECTIONS - 1:
                last_ended.set()

        async def served_until_all_in() -> None:
            """The good client sends a message every KEEP_ALIVE_S: served while the
            flood comes in and while the listener is full, and never idle meanwhile."""
            while not all_in.is_set():
                await good_client()
                with anyio.move_on_after(KEEP_ALIVE_S):
                    await all_in.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(served_until_all_in)
            for index in range(IDLE_CONNECTIONS):
                tg.start_soon(hold, index, await anyio.connect_tcp("127.0.0.1", daemon.tcp_port))
            # The listener takes connections in the order they came: once the last one
            # has ended (refused: the listener is full), it has taken every one in.
            with anyio.fail_after(60):
                await last_ended.wait()
            # Served while the listener is full, and a new client on the other listener.
            full_at = sent
            await good.wait_for(lambda events: len(good.of("accepted")) >= full_at + 3)
            async with connected(daemon, unix=True) as other:
                await other.send({"to": "+250788200999", "text": "unix", "dlr": False})
                await other.wait_for(lambda events: bool(other.of("accepted")))
            all_in.set()  # now every connection let in falls idle
        refused = [ending for ending in endings.values() if b"too many connections" in ending]
        reaped = [ending for ending in endings.values() if ending == b""]
        # The good client holds one slot; every other connection past the limit was
        # refused at once, and every one let in was closed once idle.
        assert len(refused) == IDLE_CONNECTIONS - (CONNECTION_LIMIT - 1)
        assert len(reaped) == CONNECTION_LIMIT - 1
        # The slots are free again: a new TCP client is served.
        async with connected(daemon) as late:
            await late.send({"to": "+250788200998", "text": "after", "dlr": False})
            await late.wait_for(lambda events: bool(late.of("accepted")))
        assert sent >= 4
