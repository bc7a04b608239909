"""Ingress: line splitting (over-long lines never buffered whole), SMPP submissions that
reserve queue room before their commit, and events that reach only their own identity."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Sequence

import anyio
import msgspec
import pytest

from bridges.registry import DRIVER_LIMITS
from engine.accounts import Account, AccountSettings
from engine.ingress.accept import Acceptor, Outcome
from engine.ingress.events import DiscardSink, EventRouter, EventSink
from engine.ingress.ndjson import LineHandler, LineSplitter
from engine.ingress.prepare import CONGESTED, BatchMemo, LineError, LinePreparer
from engine.journal import Duplicate, JournalError
from engine.models import (
    Failed,
    Message,
    StatusEvent,
    Submission,
    encode_event_line,
    utc_from_timestamp,
)
from engine.pricing import default_price_tables
from engine.routing import Router
from engine.scheduler import BridgeQueue, Scheduler


def test_complete_and_partial_lines() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}\n\n") == [b'{"b":2}', b""]
    assert splitter.finish() is None


def test_last_line_without_newline_is_returned_at_end() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"abc") == []
    assert splitter.finish() == b"abc"


def test_overlong_line_is_reported_once_and_skipped_as_it_arrives() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"x" * 8) == []
    assert splitter.feed(b"x" * 8) == [None]  # outgrew the cap: rejected now
    assert splitter.feed(b"x" * 1000) == []  # still the same line: skipped, not kept
    assert splitter.feed(b"yy\nok\n") == [b"ok"]


def test_overlong_line_inside_one_chunk() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"123456789\nabc\n") == [None, b"abc"]


def test_line_exactly_at_the_cap_is_kept() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"12345\n") == [b"12345"]
    assert splitter.feed(b"123") == []
    assert splitter.feed(b"45\n") == [b"12345"]


# ── SMPP submissions reserve queue room before their commit ───────────────────


class AcceptJournal:
    """Journals every group (ids 1, 2, ...) unless told to refuse, answer duplicate or
    hang; also the feeder's (empty) source of due messages."""

    def __init__(self) -> None:
        self.accepted: list[Message] = []
        self.refuse = False
        self.duplicate = False
        self.hang = False
        self.entered = anyio.Event()
        self.gate: anyio.Event | None = None  # when given, accept waits for it

    async def accept(self, groups: Sequence[Sequence[Message]]) -> list[list[Message] | Duplicate]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.hang:
            await anyio.sleep_forever()
        if self.refuse:
            raise JournalError("The journal could not be written: disk I/O error.")
        if self.duplicate:
            return [Duplicate(client_ref="ref", msg_ids=["7"]) for _ in groups]
        results: list[list[Message] | Duplicate] = []
        for group in groups:
            for message in group:
                message.msg_id = str(len(self.accepted) + 1)
                self.accepted.append(message)
            results.append(list(group))
        return results

    async def due(
        self,
        now: float,
        limit: int,
        *,
        exclude: Collection[str] = (),
        since: float | None = None,
    ) -> list[Message]:
        return []

    async def next_due_at(self, *, after: float) -> float | None:
        return None

    async def accepted_today(self, account: str, day: int) -> int:
        return 0


DEMO = Account("demo", AccountSettings())


def room_acceptor(capacity: int = 1) -> tuple[Acceptor, AcceptJournal, BridgeQueue]:
    journal = AcceptJournal()
    queue = BridgeQueue("dsc", capacity)
    scheduler = Scheduler({"dsc": queue}, journal)
    acceptor = Acceptor(
        LinePreparer(
            router=Router({"250": ("dsc",)}, None, ["dsc"]),
            prices={"dsc": default_price_tables()["dsc"]},
            default_senders={"dsc": "SEPTET"},
            max_text_chars=1600,
            max_recipients=10,
            default_region=None,
        ),
        journal,
        scheduler,
        room=scheduler,
    )
    return acceptor, journal, queue


def room_handler(capacity: int = 1) -> tuple[LineHandler, AcceptJournal, BridgeQueue]:
    acceptor, journal, queue = room_acceptor(capacity)
    return LineHandler(acceptor, max_line_bytes=65536), journal, queue


async def submit_one(
    acceptor: Acceptor,
    sub: Submission,
    *,
    room_wait_s: float | None = None,
    turn: anyio.Lock | None = None,
) -> Outcome:
    """One submission the SMPP way (engine.smpp.server)."""
    (outcome,) = await acceptor.accept(DEMO, "smpp:demo", [sub], room_wait_s=room_wait_s, turn=turn)
    return outcome


def occupant(msg_id: str) -> Message:
    """A message already in the queue (a socket client's)."""
    return Message(
        msg_id=msg_id,
        reference="",
        origin="tcp:1",
        client_ref=None,
        to="+250788000000",
        sender="SEPTET",
        text="queued",
        encoding="GSM-7",
        segments=1,
        cost=1.0,
        currency="RWF",
        bridges=("dsc",),
        accepted_at=0.0,
        due_at=0.0,
    )


SUBMISSION = Submission(to="+250788100000", text="hello", id="ref")


@pytest.mark.anyio
async def test_a_submission_with_room_is_journaled_and_queued_into_its_slot() -> None:
    acceptor, journal, queue = room_acceptor(capacity=2)
    result = await submit_one(acceptor, SUBMISSION, room_wait_s=2.0)
    assert isinstance(result, list)
    assert [m.msg_id for m in journal.accepted] == ["1"]
    assert "1" in queue
    assert queue.room() == 1


@pytest.mark.anyio
async def test_a_full_queue_past_the_wait_refuses_as_congested_and_journals_nothing() -> None:
    acceptor, journal, queue = room_acceptor()
    queue.put_nowait(occupant("q"))
    result = await submit_one(acceptor, SUBMISSION, room_wait_s=0)
    assert isinstance(result, LineError)
    assert (result.kind, result.error) == ("congested", CONGESTED)
    assert journal.accepted == []
    assert queue.waiting == 0
    queue._pop(1)
    assert queue.room() == queue.capacity  # nothing left reserved


@pytest.mark.anyio
async def test_a_submission_waits_for_room_then_takes_its_slot() -> None:
    acceptor, journal, queue = room_acceptor()
    queue.put_nowait(occupant("q"))
    results: list[list[Message] | LineError] = []

    async def submit() -> None:
        results.append(await submit_one(acceptor, SUBMISSION, room_wait_s=60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit)
        await anyio.wait_all_tasks_blocked()
        assert journal.accepted == []  # not journaled while it waits for room
        assert queue.waiting == 1
        queue._pop(1)
    assert isinstance(results[0], list)
    assert "1" in queue
    assert queue.room() == 0


@pytest.mark.anyio
async def test_one_bind_holds_one_place_in_the_line() -> None:
    # Two submits of one bind (one turn lock) and a socket client's put: the second
    # submit waits behind the socket client, not beside the first.
    acceptor, _, queue = room_acceptor()
    queue.put_nowait(occupant("q"))
    turn = anyio.Lock()
    order: list[str] = []

    async def submit(name: str, to: str) -> None:
        sub = Submission(to=to, text="hello", id=name)
        await submit_one(acceptor, sub, room_wait_s=60, turn=turn)
        order.append(name)

    async def socket_put() -> None:
        await queue.put_many([occupant("s")])
        order.append("socket")

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, "first", "+250788100001")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(submit, "second", "+250788100002")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(socket_put)
        await anyio.wait_all_tasks_blocked()
        assert queue.waiting == 2  # the first submit and the socket client
        for _ in range(3):
            queue._pop(1)
            await anyio.wait_all_tasks_blocked()
    assert order == ["first", "socket", "second"]


@pytest.mark.parametrize("failure", ["refuse", "duplicate", "hang"])
@pytest.mark.anyio
async def test_a_reserved_slot_goes_back_when_nothing_fills_it(failure: str) -> None:
    acceptor, journal, queue = room_acceptor()
    setattr(journal, failure, True)
    journal.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(submit_one, room_wait_s=2.0), acceptor, SUBMISSION)
        await journal.entered.wait()
        assert queue.room() == 0  # reserved before the commit
        journal.gate.set()
        if failure == "hang":
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()  # the bind went away mid-commit
    assert queue.room() == queue.capacity
    assert len(queue) == 0


# ── Events reach only the identity they belong to ──────────────────────────────


class ListSink:
    """A sink that keeps what it is given (an SMPP account's sink is this shape)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.closed = False
        self.lines: list[bytes] = []

    def emit(self, line: bytes) -> None:
        self.lines.append(line)

    def emit_many(self, lines: list[bytes]) -> None:
        self.lines += lines


TS = utc_from_timestamp(1_700_000_000.0)


def spilling_router() -> tuple[EventRouter, list[tuple[str, bytes]]]:
    kept: list[tuple[str, bytes]] = []
    return EventRouter(lambda origin, lines: kept.extend((origin, x) for x in lines)), kept


def test_events_go_to_their_identity_only_and_are_kept_when_it_has_no_sink() -> None:
    router, kept = spilling_router()
    a, b = ListSink("session:a"), ListSink("tcp:run2:1")
    router.register(a)
    router.register(b)
    router.emit_lines("session:a", [b"for a"])
    router.emit_lines("tcp:run1:1", [b"for a client of run 1"])  # gone: same number, other run
    router.emit_lines("session:c", [b"for c"])
    assert a.lines == [b"for a"]
    assert b.lines == []
    assert kept == [("tcp:run1:1", b"for a client of run 1"), ("session:c", b"for c")]


def enroute(msg_id: str) -> StatusEvent:
    return StatusEvent(
        id=None, msg_id=msg_id, ts=TS, state="ENROUTE", provider_status="p", bridge="dsc"
    )


def test_a_batch_of_events_goes_in_order_each_to_its_identity() -> None:
    """emit_all (a request's events after its commit): each origin's events in order, one
    line each, to its sink, kept when it has none, dropped for a discarded origin."""
    router, kept = spilling_router()
    a = ListSink("session:a")
    router.register(a)
    router.register(DiscardSink("api"))
    events = [
        ("session:a", enroute("1")),
        ("session:a", enroute("2")),
        ("session:gone", enroute("3")),
        ("api", enroute("5")),
        ("session:a", enroute("4")),
    ]
    router.emit_all(events)
    assert a.lines == [encode_event_line(enroute(n)) for n in ("1", "2", "4")]
    assert kept == [("session:gone", encode_event_line(enroute("3")))]


def test_the_newest_live_sink_of_an_identity_gets_its_events() -> None:
    router, kept = spilling_router()
    first, second = ListSink("session:a"), ListSink("session:a")
    router.register(first)
    router.register(second)
    router.emit_lines("session:a", [b"1"])
    second.closed = True  # its connection failed before it was unregistered
    router.emit_lines("session:a", [b"2"])
    router.unregister(first)
    router.emit_lines("session:a", [b"3"])
    router.unregister(second)
    router.unregister(second)  # twice is harmless
    assert (first.lines, second.lines) == ([b"2"], [b"1"])
    assert kept == [("session:a", b"3")]
    assert router.live("session:a") is None


def test_a_discarded_origin_s_events_go_nowhere_and_others_still_are_kept() -> None:
    router, kept = spilling_router()
    api = DiscardSink("api")
    router.register(api)
    when = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    for origin in ("api", "tcp:run1:1"):
        router.emit(origin, Failed(id=None, msg_id="7", ts=when, error="gone", code=None))
    assert [origin for origin, _ in kept] == ["tcp:run1:1"]
    router.unregister(api)
    router.emit("api", Failed(id=None, msg_id="8", ts=when, error="gone", code=None))
    assert [origin for origin, _ in kept] == ["tcp:run1:1", "api"]


class Peer:
    """The far end of an EventSink: records writes; can fail or hold a write."""

    def __init__(self) -> None:
        self.data = b""
        self.broken = False
        self.gate: anyio.Event | None = None

    async def write(self, data: bytes) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.broken:
            raise anyio.BrokenResourceError
        self.data += data


@pytest.mark.anyio
async def test_a_sink_writes_kept_batches_then_older_lines_then_live_ones() -> None:
    router, kept = spilling_router()
    peer = Peer()
    sink = EventSink("session:a", peer.write)
    router.register(sink)
    sink.emit(b"live-1\n")
    sink.put_first([b"pending-1\n", b"pending-2\n"])
    batches = [[b"journal-1\n", b"journal-2\n"], [b"journal-3\n"], []]

    async def next_batch() -> list[bytes]:
        return batches.pop(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.serve, router.emit_lines, next_batch)
        sink.emit(b"live-2\n")
        with anyio.fail_after(5):
            await sink.flush()
        tg.cancel_scope.cancel()
    assert peer.data.split() == [
        b"journal-1",
        b"journal-2",
        b"journal-3",
        b"pending-1",
        b"pending-2",
        b"live-1",
        b"live-2",
    ]
    assert kept == []


@pytest.mark.anyio
async def test_what_a_failed_connection_could_not_write_goes_to_another_of_its_identity() -> None:
    router, kept = spilling_router()
    peer = Peer()
    peer.broken = True
    sink = EventSink("session:a", peer.write)
    other = ListSink("session:a")
    router.register(other)
    router.register(sink)
    sink.emit(b"1\n")
    sink.emit(b"2\n")
    with anyio.fail_after(5):
        await sink.serve(router.emit_lines)
    assert sink.closed
    sink.emit(b"3\n")  # after the failure, before it was unregistered
    router.emit_lines("session:a", [b"4\n"])
    assert other.lines == [b"1\n", b"2\n", b"3\n", b"4\n"]  # the line being written too
    assert kept == []


@pytest.mark.anyio
async def test_a_sink_cancelled_mid_write_keeps_the_line_and_the_rest() -> None:
    router, kept = spilling_router()
    peer = Peer()
    peer.gate = anyio.Event()  # the write never completes
    sink = EventSink("tcp:run:1", peer.write)
    router.register(sink)
    sink.emit(b"1\n")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.serve, router.emit_lines)
        await anyio.wait_all_tasks_blocked()
        sink.emit(b"2\n")
        tg.cancel_scope.cancel()
    router.unregister(sink)
    assert kept == [("tcp:run:1", b"1\n"), ("tcp:run:1", b"2\n")]


@pytest.mark.anyio
async def test_flush_waits_for_the_write_in_progress() -> None:
    router, _ = spilling_router()
    peer = Peer()
    peer.gate = anyio.Event()
    sink = EventSink("tcp:run:1", peer.write)
    flushed = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.serve, router.emit_lines)
        sink.emit(b"1\n")

        async def flush() -> None:
            await sink.flush()
            flushed.set()

        tg.start_soon(flush)
        await anyio.wait_all_tasks_blocked()
        assert not flushed.is_set()  # the line is taken from the buffer but not yet written
        peer.gate.set()
        with anyio.fail_after(5):
            await flushed.wait()
        tg.cancel_scope.cancel()
    assert peer.data == b"1\n"


@pytest.mark.anyio
async def test_a_session_line_after_the_first_is_answered_with_why() -> None:
    handler, journal, _ = room_handler(capacity=10)
    peer = Peer()
    sink = EventSink("tcp:run:1", peer.write)
    chunks = [b'{"session": "client-A_0123456789"}\n{"to": "+250788100001", "text": "hi"}\n']

    async def receive() -> bytes:
        return chunks.pop(0) if chunks else b""

    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.serve, lambda origin, lines: None)
        await handler.serve_stream(receive, sink, DEMO, lines_before=3)
        await sink.flush()
        tg.cancel_scope.cancel()
    rejected, accepted = (msgspec.json.decode(line) for line in peer.data.splitlines())
    assert rejected["event"] == "rejected"
    assert rejected["line"] == 4  # line numbers count the lines read before
    assert rejected["error"] == "a session or auth line must be the connection's first line"
    assert accepted["event"] == "accepted"
    assert [m.origin for m in journal.accepted] == ["tcp:run:1"]


# ── admission by bridge (engine.admission) ──────────────────────────────────────


def admitting_preparer(routes: dict[str, tuple[str, ...]] | None = None) -> LinePreparer:
    bridges = ("dsc", "routemobile", "bsg", "smsclub")
    return LinePreparer(
        router=Router(
            routes
            or {
                "250": ("dsc", "routemobile"),
                "380": ("smsclub", "bsg"),
                "44": ("bsg", "routemobile"),
            },
            None,
            bridges,
        ),
        prices=default_price_tables(),
        default_senders=dict.fromkeys(bridges, "SEPTET"),
        max_text_chars=1600,
        max_recipients=10,
        default_region=None,
        limits={name: DRIVER_LIMITS[name]({}) for name in bridges},
    )


def prepared(preparer: LinePreparer, **line: object) -> list[Message] | LineError:
    return preparer.prepare(msgspec.json.encode(line), "tcp:1", 1_700_000_000.0)


@pytest.mark.parametrize(
    ("line", "kind", "sentence"),
    [
        (
            {"to": "+447700900123", "from": "VERYLONGSEND", "route": "bsg"},
            "sender",
            "from 'VERYLONGSEND' is 12 characters; bsg takes at most 11 alphanumeric",
        ),
        (
            {"to": "+447700900123", "from": "VERYLONGSEND", "route": "routemobile"},
            "sender",
            "from 'VERYLONGSEND' is 12 characters; routemobile takes at most 11 alphanumeric",
        ),
        (
            {"to": "+447700900123", "from": "+447700900123", "route": "bsg"},
            "sender",
            "from '+447700900123' starts with '+'; bsg takes a numeric sender as digits only",
        ),
        (
            {"to": "+447700900123", "text": "x" * 766, "route": "bsg"},
            "text",
            "text is 766 GSM-7 characters; bsg takes at most 765",
        ),
        (
            {"to": "+380501234567", "flash": True},
            "flash",
            "flash is true; smsclub sends no flash messages; bsg sends no flash messages",
        ),
        (
            {"to": "+447700900123", "validity_s": 73 * 3600, "route": "bsg"},
            "validity",
            "validity_s is 262800; bsg keeps a message at most 259200 s (72 hours)",
        ),
    ],
)
def test_a_line_no_bridge_of_its_route_takes_is_rejected_at_accept(
    line: dict[str, object], kind: str, sentence: str
) -> None:
    result = prepared(admitting_preparer(), **{"text": "Hello", "id": "c1", **line})
    assert result == LineError(sentence, "c1", kind)  # type: ignore[arg-type]


def test_flash_is_routed_to_the_bridge_of_the_route_that_sends_it() -> None:
    result = prepared(admitting_preparer(), to="+250788123456", text="Hello", flash=True)
    assert isinstance(result, list)
    (message,) = result
    assert message.bridges == ("routemobile",)
    assert message.bridge == "routemobile"
    assert message.flash


def test_a_route_keeps_only_the_bridges_that_take_the_message() -> None:
    # A text over bsg's 765 septets on the route bsg -> routemobile goes to routemobile,
    # priced there; a short one keeps both.
    preparer = admitting_preparer()
    result = prepared(preparer, to="+447700900123", text="x" * 800)
    assert isinstance(result, list)
    assert [m.bridges for m in result] == [("routemobile",)]
    assert result[0].currency == default_price_tables()["routemobile"].currency
    result = prepared(preparer, to="+447700900123", text="Hello")
    assert isinstance(result, list)
    assert [m.bridges for m in result] == [("bsg", "routemobile")]


def test_each_recipient_of_a_line_is_admitted_on_its_own_route() -> None:
    # A 12-digit sender: smsclub (11 at most) is skipped for +380, bsg takes it everywhere.
    result = prepared(
        admitting_preparer(),
        to=["+380501234567", "+447700900123", "+380501234568"],
        text="Hello",
        **{"from": "380501234567"},
    )
    assert isinstance(result, list)
    assert [m.bridges for m in result] == [("bsg",), ("bsg", "routemobile"), ("bsg",)]
    assert {m.sender for m in result} == {"380501234567"}
    # Each recipient's message is the one its number alone would have made (the line's
    # messages after the first are copies of it with their own number, route and price).
    alone = [
        prepared(admitting_preparer(), to=[m.to], text="Hello", **{"from": "380501234567"})
        for m in result
    ]
    assert [[m] for m in result] == alone


def test_submissions_of_one_batch_keep_their_own_requested_route() -> None:
    """The batch remembers routes by number prefix and requested route together."""
    preparer, memo = admitting_preparer(), BatchMemo()
    routes = []
    for route in ("routemobile", None, "bsg", None):
        fields = {"to": "+447700900123", "text": "Hello", "route": route}
        sub = preparer.decode(msgspec.json.encode({k: v for k, v in fields.items() if v}))
        assert not isinstance(sub, LineError)
        result = preparer.prepare_submission(sub, "tcp:1", 1_700_000_000.0, memo=memo)
        assert isinstance(result, list)
        routes.append(result[0].bridges)
    assert routes == [("routemobile",), ("bsg", "routemobile"), ("bsg",), ("bsg", "routemobile")]


def test_submissions_of_one_text_in_a_batch_each_make_the_message_they_make_alone() -> None:
    """An HTTP API batch of one text is a submission per recipient: the first messages of
    the later ones are copies of the first's, each with its own id, number, route, price,
    report and priority, as if it came alone; another origin makes its own."""
    preparer, memo = admitting_preparer(), BatchMemo()
    lines = [
        {"to": "+447700900123", "text": "Hello", "id": "a"},
        {"to": "+380501234567", "text": "Hello", "dlr": False, "priority": 3},
        {"to": "+250788123456", "text": "Hello", "id": "c", "priority": 1},
    ]
    subs = [preparer.decode(msgspec.json.encode(line)) for line in lines]
    made = []
    for sub, origin, now in zip(subs, ["tcp:1", "tcp:1", "tcp:2"], [1e9] * 3, strict=True):
        assert not isinstance(sub, LineError)
        result = preparer.prepare_submission(sub, origin, now, memo=memo)
        assert isinstance(result, list)
        made += result
    alone = []
    for sub, origin, now in zip(subs, ["tcp:1", "tcp:1", "tcp:2"], [1e9] * 3, strict=True):
        assert not isinstance(sub, LineError)
        result = preparer.prepare_submission(sub, origin, now)
        assert isinstance(result, list)
        alone += result
    assert made == alone
    assert [(m.client_ref, m.dlr, m.priority, m.origin) for m in made] == [
        ("a", True, 0, "tcp:1"),
        (None, False, 3, "tcp:1"),
        ("c", True, 1, "tcp:2"),
    ]
    assert len({id(m) for m in made}) == 3


def test_one_recipient_whose_route_takes_nothing_rejects_the_line() -> None:
    result = prepared(
        admitting_preparer(), to=["+250788123456", "+380501234567"], text="Hi", flash=True
    )
    assert result == LineError(
        "flash is true; smsclub sends no flash messages; bsg sends no flash messages",
        None,
        "flash",
    )


def test_without_limits_every_bridge_of_the_route_is_kept() -> None:
    preparer = LinePreparer(
        router=Router({"380": ("smsclub", "bsg")}, None, ["smsclub", "bsg"]),
        prices=default_price_tables(),
        default_senders={"smsclub": "SEPTET", "bsg": "SEPTET"},
        max_text_chars=1600,
        max_recipients=10,
        default_region=None,
    )
    result = prepared(preparer, to="+380501234567", text="Hi", flash=True)
    assert isinstance(result, list)
    assert result[0].bridges == ("smsclub", "bsg")


def test_each_recipient_of_a_line_is_priced_by_its_own_prefix() -> None:
    # One route (smsclub first) but three prices: 38050 and 38067 have their own, 38063
    # falls back to 380's; each price is looked up once per line and reused for its prefix.
    result = prepared(
        admitting_preparer(),
        to=["+380501234567", "+380631234567", "+380671234567", "+380501234568"],
        text="Hello",
    )
    assert isinstance(result, list)
    assert [m.cost for m in result] == [0.95, 0.98, 0.95, 0.95]
    assert {(m.bridge, m.currency) for m in result} == {("smsclub", "UAH")}
