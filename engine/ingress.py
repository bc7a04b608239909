"""NDJSON ingress: byte streams (stdin, TCP, Unix socket) in, one answer per line out.

Each connection is read in chunks; every complete line in a chunk is validated
(`LinePreparer`), the valid ones go to the journal in one `accept` call (so a busy client
gets group commit for free), and only after that commit are the `accepted` events
written, in input order, interleaved with the `rejected` ones. Then the messages are
handed to the scheduler, which waits when its queues are full: the reader stops
reading, and the client feels backpressure through TCP. Nothing is dropped.

An SMPP submission (`accept_submission`) may not wait after its commit: its answer
follows the commit and cannot turn into a refusal. It reserves room in its bridge queue
first, in line with the waiting socket clients, for a bounded time; when that runs out
it is refused as congested, with nothing journaled.

A line longer than `max_line_bytes` is rejected as soon as it outgrows the limit; the
rest of it is skipped as it arrives, never buffered whole.

Events go back by identity (engine.sessions): the EventRouter gives each to the newest
open sink of its message's origin, or keeps it in the journal outbox for that origin;
never to a sink of another.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio
import msgspec
import structlog

from bridges.base import Limits
from engine.admission import Admitter, describe_refusals, refusal_kind
from engine.journal import Duplicate, JournalError
from engine.models import (
    Accepted,
    Event,
    LineRejected,
    Message,
    Submission,
    encode_event_line,
    submission_decoder,
)
from engine.numbers import InvalidNumber, normalise
from engine.pricing import NoPriceError, PriceTable, message_cost
from engine.routing import Router, UnknownRoute
from engine.segment import segment_text
from engine.sessions import SessionProblem, describe, read_session_line

log = structlog.get_logger("septet.ingress")

# engine.smpp.server answers this refusal with ESME_RTHROTTLED (SMPP v3.4 5.1.3).
CONGESTED = "the queues are full: send it again later"

# Why a line or submission was refused, as a value front doors map to their own codes
# (engine.smpp.server.refusal_status): never by reading the sentence.
RefusalKind = Literal[
    "invalid",  # not a valid message (JSON, fields, a session line out of place)
    "text",  # empty, too long (here, or for every bridge of its route), or not encodable
    "sender",  # a sender no bridge of the route takes (length, alphabet, '+'), or none
    "flash",  # flash, and no bridge of the route sends flash messages
    "validity",  # longer than every bridge of the route keeps a message
    "recipients",  # none, or too many
    "destination",  # an invalid number, or no route for it
    "schedule",  # schedule_at without a zone
    "price",  # no price for the destination on its bridge
    "congested",  # the queues are full: send it again later
    "journal",  # the journal could not take it: send it again later
    "duplicate",  # the client's id was accepted before (msg_ids says as what)
]


class AcceptingJournal(Protocol):
    async def accept(
        self, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]: ...


@dataclass(frozen=True, slots=True)
class LineError:
    """Why a line was rejected: the sentence for people, its `kind` for code, `client_ref`
    when the line got far enough to have one, and for a duplicate the `msg_ids` the
    earlier one was accepted as."""

    error: str
    client_ref: str | None = None
    kind: RefusalKind = "invalid"
    msg_ids: tuple[str, ...] = ()


class LinePreparer:
    """Validates one input line and turns it into one Message per recipient. Pure but for
    the clock passed in.

    With `limits` (each bridge driver's), a message goes only to the bridges of its route
    that take it, the first of them as its primary, or the line is refused with a sentence
    naming each bridge's rule (engine.admission)."""

    def __init__(
        self,
        *,
        router: Router,
        prices: dict[str, PriceTable],
        default_senders: dict[str, str | None],
        max_text_chars: int,
        max_recipients: int,
        default_region: str | None,
        limits: Mapping[str, Limits] | None = None,
    ) -> None:
        self._router = router
        self._prices = prices
        self._senders = default_senders
        self._max_text = max_text_chars
        self._max_recipients = max_recipients
        self._region = default_region
        self._admitter = Admitter(limits, default_senders) if limits else None

    def prepare(self, line: bytes, origin: str, now: float) -> list[Message] | LineError:
        try:
            sub = submission_decoder.decode(line)
        except msgspec.ValidationError as error:
            return LineError(f"invalid message: {_describe(error)}")
        except msgspec.DecodeError:
            return LineError("invalid message: the line is not a JSON object")
        return self.prepare_submission(sub, origin, now)

    def prepare_submission(
        self, sub: Submission, origin: str, now: float
    ) -> list[Message] | LineError:
        """The checks and per-recipient messages of one decoded submission (NDJSON or SMPP)."""
        ref = sub.id
        text = sub.text
        if not text:
            return LineError("text is empty", ref, "text")
        if len(text) > self._max_text:
            return LineError(
                f"text is {len(text)} characters; the limit is {self._max_text}", ref, "text"
            )
        recipients = [sub.to] if isinstance(sub.to, str) else sub.to
        if not recipients:
            return LineError("to has no recipients", ref, "recipients")
        if len(recipients) > self._max_recipients:
            return LineError(
                f"to has {len(recipients)} recipients; the limit is {self._max_recipients}",
                ref,
                "recipients",
            )
        due_at = now
        if sub.schedule_at is not None:
            if sub.schedule_at.tzinfo is None:
                return LineError(
                    "schedule_at needs a time zone, such as Z or +02:00", ref, "schedule"
                )
            due_at = max(now, sub.schedule_at.timestamp())
        expires_at = None if sub.validity_s is None else due_at + sub.validity_s
        try:
            segmentation = segment_text(text)
        except ValueError as error:
            return LineError(str(error), ref, "text")
        admitter = self._admitter
        messages: list[Message] = []
        for raw in recipients:
            try:
                to = normalise(raw, self._region)
                route = self._router.route(to, sub.route)
            except (InvalidNumber, UnknownRoute) as error:
                return LineError(str(error), ref, "destination")
            bridges = route
            if admitter is not None:
                # The bridges of the route that take the message (engine.admission).
                taken = admitter.admit(
                    route,
                    sender=sub.sender,
                    encoding=segmentation.encoding,
                    units=segmentation.units,
                    characters=len(text),
                    flash=sub.flash,
                    validity_s=sub.validity_s,
                )
                if isinstance(taken, list):
                    return LineError(describe_refusals(taken), ref, refusal_kind(taken[0]))
                bridges = taken
            bridge = bridges[0]
            try:
                cost = message_cost(self._prices[bridge], to, segmentation.segments)
            except NoPriceError as error:
                return LineError(str(error), ref, "price")
            messages.append(
                Message(
                    msg_id="",
                    reference="",
                    origin=origin,
                    client_ref=ref,
                    to=to,
                    sender=sub.sender or self._senders.get(bridge),
                    text=text,
                    encoding=segmentation.encoding,
                    segments=segmentation.segments,
                    cost=cost.amount,
                    currency=cost.currency,
                    bridges=bridges,
                    dlr=sub.dlr,
                    flash=sub.flash,
                    priority=sub.priority,
                    accepted_at=now,
                    due_at=due_at,
                    expires_at=expires_at,
                )
            )
        return messages


def _describe(error: msgspec.ValidationError) -> str:
    """msgspec says "Object contains unknown field `x`" / "Expected `str`, got `int` - at
    `$.text`"; keep its precision, drop the backticks a person doesn't need."""
    text = str(error).replace("`", "'")
    if text.startswith("Object contains unknown field"):
        return "unknown field" + text[len("Object contains unknown field") :]
    if text.startswith("Object missing required field"):
        return "missing required field" + text[len("Object missing required field") :]
    return text[0].lower() + text[1:] if text else "invalid"


def _now_dt() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ── Event sinks ────────────────────────────────────────────────────────────────


class Sink(Protocol):
    """What the EventRouter hands events to: an EventSink, or an SMPP account's sink."""

    origin: str
    closed: bool

    def emit(self, line: bytes) -> None: ...


Spill = Callable[[str, list[bytes]], None]


class EventSink:
    """Where one client connection's events go. `emit` never blocks the engine: lines are
    buffered and `serve` writes them. What the connection could not write when it went
    goes to `spill` (the EventRouter's `emit_lines`: another connection of the same
    identity, or the journal outbox), the line being written included: a reader that
    vanished mid-write may see a line again, but never loses one."""

    def __init__(self, origin: str, write: Callable[[bytes], Awaitable[None]]) -> None:
        self.origin = origin
        self._write = write
        self._buffer: list[bytes] = []
        self._wake = anyio.Event()
        # True while nothing is buffered or being written (serve is waiting for more).
        self._idle = False
        # Made by a `flush` that has to wait, set when the sink is next idle: an event
        # per write would cost a few microseconds each (anyio looks up its backend).
        self._flushed: anyio.Event | None = None
        self.closed = False
        self._spill: Spill | None = None

    def emit(self, line: bytes) -> None:
        if self.closed:
            if self._spill is not None:
                self._spill(self.origin, [line])
            return
        self._buffer.append(line)
        self._wake_writer()

    def put_first(self, lines: list[bytes]) -> None:
        """Lines older than any emitted so far (events kept while nobody listened)."""
        if not lines:
            return
        if self.closed:
            if self._spill is not None:
                self._spill(self.origin, lines)
            return
        self._buffer[:0] = lines
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._wake.set()
        self._idle = False

    def _set_idle(self) -> None:
        self._idle = True
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    async def serve(
        self, spill: Spill, kept: Callable[[], Awaitable[list[bytes]]] | None = None
    ) -> None:
        """Write the batches `kept()` gives until it gives none (events kept for this
        identity, oldest first), then buffered events as they come, until the connection
        fails or is cancelled."""
        self._spill = spill
        writing: list[bytes] = []
        try:
            if kept is not None:
                while True:
                    # Shielded: a batch taken out of the journal must reach this
                    # connection or go back, never vanish with a cancelled read.
                    with anyio.CancelScope(shield=True):
                        writing = await kept()
                    if not writing:
                        break
                    await self._write(b"".join(writing))
                    writing = []
            while True:
                while self._buffer:
                    writing, self._buffer = self._buffer, []
                    await self._write(b"".join(writing))
                    writing = []
                self._set_idle()
                await self._wake.wait()
                self._wake = anyio.Event()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            log.info("client_gone", origin=self.origin)
        finally:
            self.closed = True
            self._set_idle()
            rest, self._buffer = [*writing, *self._buffer], []
            if rest:
                spill(self.origin, rest)

    async def flush(self) -> None:
        """Wait until everything emitted so far is written (or the sink closed)."""
        while not self.closed and not self._idle:
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()


class EventRouter:
    """identity (a message's origin) -> its live sinks. An event goes to the newest live
    sink of its identity, or, when there is none, to `spill` (the journal outbox), kept
    for that identity: never to a sink of another identity."""

    def __init__(self, spill: Spill) -> None:
        self._sinks: dict[str, list[Sink]] = {}
        self._spill = spill

    def register(self, sink: Sink) -> None:
        self._sinks.setdefault(sink.origin, []).append(sink)

    def unregister(self, sink: Sink) -> None:
        sinks = self._sinks.get(sink.origin)
        if sinks is not None and sink in sinks:
            sinks.remove(sink)
            if not sinks:
                del self._sinks[sink.origin]

    def live(self, origin: str) -> Sink | None:
        """The sink that gets `origin`'s events now: its newest one still open."""
        sinks = self._sinks.get(origin)
        if sinks is None:
            return None
        for sink in reversed(sinks):
            if not sink.closed:
                return sink
        return None

    def emit(self, origin: str, event: Event) -> None:
        line = encode_event_line(event)
        sink = self.live(origin)
        if sink is None:
            self._spill(origin, [line])
        else:
            sink.emit(line)

    def emit_lines(self, origin: str, lines: list[bytes]) -> None:
        sink = self.live(origin)
        if sink is None:
            self._spill(origin, lines)
        else:
            for line in lines:
                sink.emit(line)


# ── Reading a connection ───────────────────────────────────────────────────────


class LineSplitter:
    """Splits a byte stream into lines with a hard cap on line length. Pure.

    `feed` returns complete lines and, for each line that outgrew the cap, the marker
    `None` in its place; the oversized line's bytes are discarded as they arrive.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._partial = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif self._partial:
                self._partial += data[start:end]
                line = bytes(self._partial)
                self._partial.clear()
                out.append(line if len(line) <= self._max else None)
            else:
                out.append(data[start:end] if end - start <= self._max else None)
            start = end + 1
        if start < len(data) and not self._skipping:
            self._partial += data[start:]
            if len(self._partial) > self._max:
                self._partial.clear()
                self._skipping = True
                out.append(None)
        return out

    def finish(self) -> bytes | None:
        """At end of input: the last line if it had no newline."""
        if self._skipping:
            return None
        line = bytes(self._partial)
        self._partial.clear()
        return line or None


class Scheduler(Protocol):
    async def put_many(self, messages: Sequence[Message]) -> None: ...

    def wake_feeder(self) -> None: ...


class QueueRoom(Protocol):
    """engine.scheduler.Scheduler's reservations: one slot per bridge name given."""

    def reserve_nowait(self, bridges: Sequence[str]) -> bool: ...

    async def reserve(self, bridges: Sequence[str]) -> None: ...

    def put_reserved(self, messages: Sequence[Message]) -> None: ...

    def release(self, bridges: Sequence[str]) -> None: ...


class LineHandler:
    """Validates, journals and answers the lines of every connection."""

    def __init__(
        self,
        preparer: LinePreparer,
        journal: AcceptingJournal,
        scheduler: Scheduler,
        *,
        max_line_bytes: int,
        clock: Callable[[], float] = time.time,
        on_lines: Callable[[str, int], None] | None = None,
        room: QueueRoom | None = None,
    ) -> None:
        """`on_lines(result, count)` is told how many lines (or SMPP submits) ended as
        "accepted", "rejected" or "duplicate", once per result per chunk read. `room`
        (the scheduler again, in the daemon) lets `accept_submission` reserve queue room
        before its commit; without it a submission waits for room after the commit."""
        self._preparer = preparer
        self._journal = journal
        self._scheduler = scheduler
        self._room = room
        self._max_line = max_line_bytes
        self._clock = clock
        self._on_lines = on_lines

    async def serve_stream(
        self,
        receive: Callable[[], Awaitable[bytes]],
        sink: EventSink,
        *,
        idle_timeout_s: float | None = None,
        lines_before: int = 0,
    ) -> None:
        """Read until end of input (`receive` returns b""), answering every line.

        `lines_before` is how many lines of the stream were read before (a session line,
        engine.connections), so that line numbers in answers stay those of the stream.

        With `idle_timeout_s` (socket connections, config `[ingress] idle_timeout_s`),
        reading also ends once no line has been completed for that long: an idle client
        and one dribbling a line that never ends (slowloris) are treated alike, since
        bytes that never make a line are no sign of a working client. A blank line counts,
        so it serves as a keep-alive. Time spent answering (journal, full queues) does not.
        """
        splitter = LineSplitter(self._max_line)
        line_number = lines_before
        deadline = math.inf if idle_timeout_s is None else anyio.current_time() + idle_timeout_s
        while True:
            with anyio.move_on_after(deadline - anyio.current_time()) as idle:
                data = await receive()
            if idle.cancelled_caught:
                log.info("connection_idle", origin=sink.origin, idle_timeout_s=idle_timeout_s)
                return
            if not data:
                last = splitter.finish()
                if last is not None and last.strip():
                    line_number += 1
                    await self._handle([last], line_number, sink)
                return
            lines = splitter.feed(data)
            if lines:
                await self._handle(lines, line_number + 1, sink)
                line_number += len(lines)
                if idle_timeout_s is not None:
                    deadline = anyio.current_time() + idle_timeout_s

    async def _handle(self, lines: list[bytes | None], first_number: int, sink: EventSink) -> None:
        now = self._clock()
        origin = sink.origin
        # Each entry: a LineError, or an index into `groups`.
        answers: list[tuple[int, LineError | int]] = []
        groups: list[list[Message]] = []
        number = first_number - 1
        for line in lines:
            number += 1
            if line is None:
                answers.append((number, LineError(f"line is longer than {self._max_line} bytes")))
                continue
            if not line.strip():
                continue  # a blank line is not a message; line numbers stay physical
            prepared = self._preparer.prepare(line, origin, now)
            if isinstance(prepared, LineError):
                if read_session_line(line) is not None:
                    prepared = LineError(describe(SessionProblem.NOT_FIRST))
                answers.append((number, prepared))
            else:
                answers.append((number, len(groups)))
                groups.append(prepared)
        results: list[list[Message] | Duplicate] = []
        # A journal that cannot take them (full, read-only, failing disk) answers each
        # line with why; nothing is acknowledged and the connection keeps being served.
        not_journaled: str | None = None
        if groups:
            try:
                results = await self._journal.accept(groups)
            except JournalError as error:
                not_journaled = f"not accepted, send it again later: {error}"
                log.error(
                    "journal_refused_lines", origin=origin, lines=len(groups), error=str(error)
                )
        ts = _now_dt()
        out: list[bytes] = []
        fresh: list[Message] = []
        scheduled = False
        tally = {"accepted": 0, "rejected": 0, "duplicate": 0}
        debug = log.debug  # resolved once per chunk: a no-op below --log-level debug
        for number, answer in answers:
            if isinstance(answer, LineError):
                out.append(
                    encode_event_line(
                        LineRejected(id=answer.client_ref, ts=ts, error=answer.error, line=number)
                    )
                )
                tally["rejected"] += 1
                debug("line_rejected", origin=origin, line=number, error=answer.error)
                continue
            if not_journaled is not None:
                out.append(
                    encode_event_line(
                        LineRejected(
                            id=groups[answer][0].client_ref, ts=ts, error=not_journaled, line=number
                        )
                    )
                )
                tally["rejected"] += 1
                continue
            result = results[answer]
            if not isinstance(result, Duplicate):
                for message in result:
                    out.append(
                        encode_event_line(
                            Accepted(
                                id=message.client_ref,
                                msg_id=message.msg_id,
                                ts=ts,
                                to=message.to,
                                encoding=message.encoding,
                                segments=message.segments,
                                cost=message.cost,
                                currency=message.currency,
                                bridge=message.bridge,
                            )
                        )
                    )
                    if message.due_at <= now:
                        fresh.append(message)
                    else:
                        scheduled = True
                    debug(
                        "message_accepted",
                        origin=origin,
                        msg_id=message.msg_id,
                        bridge=message.bridge,
                        segments=message.segments,
                        scheduled=message.due_at > now,
                    )
                tally["accepted"] += 1
            else:
                out.append(
                    encode_event_line(
                        LineRejected(
                            id=result.client_ref,
                            ts=ts,
                            error=(
                                f"duplicate id {result.client_ref!r}: already accepted as "
                                f"msg_id {', '.join(result.msg_ids)}"
                            ),
                            line=number,
                        )
                    )
                )
                tally["duplicate"] += 1
                debug("line_duplicate", origin=origin, line=number)
        for kind, count in tally.items():
            if count:
                self._count(kind, count)
        for line in out:
            sink.emit(line)
        if scheduled:
            self._scheduler.wake_feeder()
        if fresh:
            await self._scheduler.put_many(fresh)

    async def accept_submission(
        self,
        sub: Submission,
        origin: str,
        *,
        room_wait_s: float | None = None,
        turn: anyio.Lock | None = None,
    ) -> list[Message] | LineError:
        """Validate, journal and schedule one submission that did not come as a line (SMPP).

        Returns the journaled messages (after the commit), or why the submission was
        refused (its kind, and the sentence). Events of these messages go to `origin`.

        With `room_wait_s` (and `room`), a slot in the bridge queue of each message due now
        is reserved before the commit: at once when room is free and nobody is in line,
        else in line with the socket clients' puts, holding `turn` meanwhile so that one
        client (an SMPP bind) has one place in the line however many submits it has in
        flight. Past `room_wait_s` the answer is CONGESTED and nothing was journaled; once
        journaled, the messages fill their slots without waiting again.
        """
        now = self._clock()
        prepared = self._preparer.prepare_submission(sub, origin, now)
        if isinstance(prepared, LineError):
            self._count("rejected")
            return prepared
        room = self._room
        held: list[str] = []  # one bridge name per reserved slot not yet filled
        if room is not None and room_wait_s is not None:
            bridges = [message.bridge for message in prepared if message.due_at <= now]
            if bridges and not await _reserve(room, bridges, room_wait_s, turn):
                log.debug("submission_congested", origin=origin, bridges=bridges)
                return LineError(CONGESTED, sub.id, "congested")
            held = bridges
        try:
            try:
                (result,) = await self._journal.accept([prepared])
            except JournalError as error:
                self._count("rejected")
                log.error("journal_refused_submission", origin=origin, error=str(error))
                return LineError(f"not accepted, send it again later: {error}", sub.id, "journal")
            if isinstance(result, Duplicate):
                self._count("duplicate")
                return LineError(
                    f"duplicate id {result.client_ref!r}: already accepted as msg_id "
                    + ", ".join(result.msg_ids),
                    result.client_ref,
                    "duplicate",
                    tuple(result.msg_ids),
                )
            self._count("accepted")
            fresh = [message for message in result if message.due_at <= now]
            if len(fresh) < len(result):
                self._scheduler.wake_feeder()
            if held and room is not None:
                room.put_reserved(fresh)
                held = []
            elif fresh:
                await self._scheduler.put_many(fresh)
            return result
        finally:
            if held and room is not None:
                room.release(held)  # refused, a duplicate, or cancelled: nothing to fill

    def _count(self, result: str, count: int = 1) -> None:
        if self._on_lines is not None:
            self._on_lines(result, count)


async def _reserve(
    room: QueueRoom, bridges: Sequence[str], wait_s: float, turn: anyio.Lock | None
) -> bool:
    """Reserve one slot per bridge name within `wait_s`; False if the time ran out (then
    nothing is held: a cancelled reservation gives its slots back, or on to the next)."""
    if room.reserve_nowait(bridges):
        return True
    with anyio.move_on_after(wait_s):
        if turn is None:
            await room.reserve(bridges)
        else:
            async with turn:
                await room.reserve(bridges)
        return True
    return False
