"""NDJSON lines of a byte stream (stdin, TCP, Unix socket) in, one answer per line out.

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
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import structlog

from engine.ingress.events import EventSink
from engine.ingress.prepare import CONGESTED, LineError, LinePreparer
from engine.ingress.sessions import SessionProblem, describe, read_session_line
from engine.journal import Duplicate, JournalError
from engine.models import Accepted, LineRejected, Message, Submission, encode_event_line

log = structlog.get_logger("septet.ingress")


class AcceptingJournal(Protocol):
    async def accept(
        self, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]: ...


def _now_dt() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
        engine.ingress.sockets), so that line numbers in answers stay those of the stream.

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
