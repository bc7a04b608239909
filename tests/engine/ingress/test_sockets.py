"""NDJSON client connections: identities, session lines, kept events and the outbox."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import msgspec
import pytest

from engine.accounts import Accounts, AccountSettings
from engine.config import IngressSettings
from engine.ingress import outbox as outbox_module
from engine.ingress import sockets
from engine.ingress.events import EventRouter, EventSink
from engine.ingress.outbox import KeptEvents, Outbox, serve_outbox
from engine.ingress.sessions import FirstLine, Session, session_line, session_origin
from engine.ingress.sockets import ClientServer, read_opening
from engine.journal import JournalError, StoreEvents
from tests.engine.ingress.test_ndjson import AcceptJournal, room_handler

pytestmark = pytest.mark.anyio

TOKEN_A = "client-A_0123456789"
TOKEN_B = "client-B_0123456789"
A = session_origin(TOKEN_A)
B = session_origin(TOKEN_B)
MESSAGE = b'{"to": "+250788100001", "text": "hi"}'
ACCOUNTS = Accounts({"demo": AccountSettings()})


class OutboxTable:
    """engine.journal's outbox: rows in the order stored; `gate` holds a store."""

    def __init__(self, rows: Sequence[tuple[str, bytes]] = ()) -> None:
        self.rows = list(rows)
        self.gate: anyio.Event | None = None
        self.storing = anyio.Event()
        self.fail_reads = False

    async def record(self, changes: Sequence[StoreEvents]) -> None:
        self.storing.set()
        if self.gate is not None:
            await self.gate.wait()
        for change in changes:
            self.rows += [(change.origin, line) for line in change.events]

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]:
        if self.fail_reads:
            raise JournalError("The journal could not be read: disk I/O error.")
        taken = [row for row in self.rows if origin in (None, row[0])][:limit]
        for row in taken:
            self.rows.remove(row)
        return [line for _, line in taken]

    def of(self, origin: str) -> list[bytes]:
        return [line for row_origin, line in self.rows if row_origin == origin]


class Setup:
    def __init__(self, table: OutboxTable) -> None:
        self.table = table
        self.outbox = Outbox()
        self.events = EventRouter(self.outbox.spill)
        self.handler, self.accepting, _ = room_handler(capacity=100)
        settings = IngressSettings(tcp=None, unix=None, idle_timeout_s=30.0)
        self.server = ClientServer(
            settings, self.handler, self.events, self.outbox, table, ACCOUNTS, run="run2"
        )


class Peer:
    """The client end of a connection: sends bytes, reads NDJSON lines."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def lines(self, count: int) -> list[bytes]:
        with anyio.fail_after(5):
            while self.buffer.count(b"\n") < count:
                self.buffer += await self.stream.receive()
        *lines, self.buffer = self.buffer.split(b"\n", count)
        return lines

    async def events(self, count: int) -> list[dict[str, object]]:
        return [msgspec.json.decode(line) for line in await self.lines(count)]


@asynccontextmanager
async def connection(setup: Setup, *first: bytes) -> AsyncIterator[Peer]:
    """A client connected to `setup.server` through a socket pair, `first` sent."""
    ours, theirs = socket.socketpair()
    server_end = await anyio.abc.UNIXSocketStream.from_socket(theirs)
    client_end = await anyio.abc.UNIXSocketStream.from_socket(ours)
    async with client_end, anyio.create_task_group() as tg:
        tg.start_soon(setup.server.serve_client, server_end, "unix")
        if first:
            await client_end.send(b"".join(line + b"\n" for line in first))
        yield Peer(client_end)
        tg.cancel_scope.cancel()


# ── the outbox ─────────────────────────────────────────────────────────────────


def test_outbox_events_put_back_after_a_failed_store_keep_their_order() -> None:
    outbox = Outbox()
    outbox.spill("client-1", [b"1", b"2"])
    taken = outbox.take()
    outbox.spill("client-1", [b"3"])  # arrived while the journal was failing
    outbox.restore(taken)
    [change] = outbox.take()
    assert (change.origin, change.events) == ("client-1", [b"1", b"2", b"3"])
    assert outbox.take() == []


async def test_kept_events_on_their_way_into_the_journal_are_neither_missed_nor_doubled() -> None:
    table = OutboxTable([(A, b"stored-1")])
    table.gate = anyio.Event()
    outbox = Outbox()
    outbox.spill(A, [b"storing-2"])
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.extend(data.split())

    sink = EventSink(A, write)
    router = EventRouter(outbox.spill)
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_outbox, outbox, table)
        await table.storing.wait()  # "storing-2" is between the outbox and the journal
        router.register(sink)
        kept = KeptEvents(A, sink, outbox, table)
        tg.start_soon(sink.serve, router.emit_lines, kept.next_batch)
        sink.emit(b"live-3")
        await anyio.wait_all_tasks_blocked()
        assert written == []  # the kept events wait for the store to end
        table.gate.set()
        with anyio.fail_after(5):
            await sink.flush()
        tg.cancel_scope.cancel()
    assert written == [b"stored-1", b"storing-2", b"live-3"]
    assert table.rows == []


# ── the first line ─────────────────────────────────────────────────────────────


def chunks(*parts: bytes) -> sockets.Receive:
    queue = list(parts)

    async def receive() -> bytes:
        return queue.pop(0) if queue else b""

    return receive


async def read_all(receive: sockets.Receive) -> bytes:
    data = b""
    while chunk := await receive():
        data += chunk
    return data


async def test_a_session_line_is_read_off_and_the_rest_follows() -> None:
    opening = await read_opening(
        chunks(b'{"session": "client-A_', b'0123456789"}\n{"to":', b' "x"}\n'), 1000
    )
    assert isinstance(opening.first, FirstLine)
    assert isinstance(opening.first.session, Session)
    assert opening.first.session.origin(None) == A
    assert opening.lines_read == 1
    assert await read_all(opening.receive) == b'{"to": "x"}\n'


@pytest.mark.parametrize(
    "parts",
    [
        (MESSAGE + b"\n", MESSAGE + b"\n"),
        (MESSAGE[:10], MESSAGE[10:]),  # the last line, with no newline
        (b"\n", session_line(TOKEN_A) + b"\n"),  # a blank first line: no session
        (b"x" * 60, b"x" * 60, b"\n"),  # too long for a session line
        (),
    ],
)
async def test_without_a_session_line_every_byte_is_read_again(parts: tuple[bytes, ...]) -> None:
    opening = await read_opening(chunks(*parts), 100)
    assert opening.first is None
    assert opening.lines_read == 0
    assert await read_all(opening.receive) == b"".join(parts)


# ── connections ────────────────────────────────────────────────────────────────


async def test_a_session_gets_its_kept_events_first_in_order_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "KEPT_BATCH", 2)  # several batches
    table = OutboxTable(
        [
            (A, b'{"n":1}'),
            (B, b'{"n":"b"}'),
            (A, b'{"n":2}'),
            ("unix:run1:1", b'{"n":"old"}'),
            (A, b'{"n":3}'),
        ]
    )
    setup = Setup(table)
    setup.outbox.spill(A, [b'{"n":4}\n'])  # not yet stored
    async with connection(setup, session_line(TOKEN_A), MESSAGE) as peer:
        events = await peer.events(6)
    assert events[:4] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert (events[4]["event"], events[4]["origin"]) == ("session", A)  # the kept ones end
    assert events[5]["event"] == "accepted"
    assert [m.origin for m in setup.accepting.accepted] == [A]
    # They left the journal; nobody else's did.
    assert table.rows == [(B, b'{"n":"b"}'), ("unix:run1:1", b'{"n":"old"}')]
    assert setup.outbox.pending == {}
    async with connection(setup, session_line(TOKEN_A), MESSAGE) as peer:
        again = await peer.events(2)
    assert [e["event"] for e in again] == ["session", "accepted"]


async def test_another_session_or_a_connection_without_one_gets_none_of_them() -> None:
    table = OutboxTable([(A, b'{"n":1}'), ("unix:run1:1", b'{"n":"old"}')])
    setup = Setup(table)
    async with connection(setup, session_line(TOKEN_B), MESSAGE) as peer:
        opened, answer = await peer.events(2)
        assert (opened["event"], opened["origin"], answer["event"]) == ("session", B, "accepted")
        setup.events.emit_lines(A, [b'{"n":2}\n'])  # an event of A while B is here
    async with connection(setup, MESSAGE) as peer:  # the same number as run 1's client
        [answer] = await peer.events(1)
        assert answer["event"] == "accepted"
    assert [m.origin for m in setup.accepting.accepted] == [B, "unix:run2:2"]
    assert table.of(A) == [b'{"n":1}']
    assert table.of("unix:run1:1") == [b'{"n":"old"}']
    assert setup.outbox.pending == {A: [b'{"n":2}\n']}


async def test_a_session_gets_its_live_events_on_its_newest_connection() -> None:
    setup = Setup(OutboxTable())
    async with connection(setup, session_line(TOKEN_A), MESSAGE) as first:
        await first.events(2)
        async with connection(setup, session_line(TOKEN_A), MESSAGE) as second:
            await second.events(2)
            setup.events.emit_lines(A, [b'{"n":1}\n'])
            assert await second.events(1) == [{"n": 1}]
    assert setup.outbox.pending == {}


@pytest.mark.parametrize(
    ("first", "error"),
    [
        (b'{"session": "short"}', "a session token is 16 to 128 characters"),
        (b'{"session": 7}', 'a session line is {"session": "<token>"} with no other field'),
    ],
)
async def test_a_refused_session_line_is_one_sentence_and_nothing_more_is_read(
    first: bytes, error: str
) -> None:
    setup = Setup(OutboxTable([(A, b'{"n":1}')]))
    async with connection(setup, first, MESSAGE) as peer:
        [refusal] = await peer.events(1)
        with anyio.fail_after(5):
            assert await read_all(peer_receive(peer)) == b""  # then the connection ends
    assert refusal["event"] == "rejected"
    assert refusal["line"] == 1
    assert str(refusal["error"]).startswith(error)
    assert setup.accepting.accepted == []
    assert setup.table.of(A) == [b'{"n":1}']


def peer_receive(peer: Peer) -> sockets.Receive:
    async def receive() -> bytes:
        try:
            return await peer.stream.receive()
        except anyio.EndOfStream:
            return b""

    return receive


async def test_kept_events_stay_kept_when_the_journal_cannot_be_read() -> None:
    table = OutboxTable([(A, b'{"n":1}')])
    table.fail_reads = True
    setup = Setup(table)
    async with connection(setup, session_line(TOKEN_A), MESSAGE) as peer:
        events = await peer.events(2)
    assert [e["event"] for e in events] == ["session", "accepted"]
    assert table.of(A) == [b'{"n":1}']


async def test_each_run_names_its_connections_apart() -> None:
    setup = Setup(OutboxTable())
    runs = {
        ClientServer(
            IngressSettings(), setup.handler, setup.events, setup.outbox, setup.table, ACCOUNTS
        ).run
        for _ in range(3)
    }
    assert len(runs) == 3


async def test_a_stdin_client_may_present_a_session_too() -> None:
    setup = Setup(OutboxTable([(A, b'{"n":1}')]))
    written: list[bytes] = []
    done = anyio.Event()

    async def write(data: bytes) -> None:
        written.extend(data.splitlines())

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            setup.server.serve_stdio, chunks(session_line(TOKEN_A) + b"\n" + MESSAGE), write, done
        )
        with anyio.fail_after(5):
            await done.wait()
            while len(written) < 3:
                await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert written[0] == b'{"n":1}'
    assert [msgspec.json.decode(line)["event"] for line in written[1:]] == ["session", "accepted"]
    assert isinstance(setup.accepting, AcceptJournal)
    assert [m.origin for m in setup.accepting.accepted] == [A]


async def test_a_first_line_dribbled_byte_by_byte_is_read_up_to_its_newline() -> None:
    line = session_line(TOKEN_A) + b"\n" + MESSAGE + b"\n"
    calls = 0

    async def receive() -> bytes:
        nonlocal calls
        calls += 1
        return line[calls - 1 : calls]

    opening = await read_opening(receive, 64 * 1024)
    assert isinstance(opening.first, FirstLine)
    assert calls == len(session_line(TOKEN_A)) + 1  # not a byte past the newline
    assert await read_all(opening.receive) == MESSAGE + b"\n"
