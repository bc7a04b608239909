"""NDJSON lines of a byte stream (stdin, TCP, Unix socket) in, one answer per line out.

Each connection is read in chunks; the complete lines of a chunk are one batch of the
Acceptor (validated, the valid ones journaled in one commit, so a busy client
gets group commit for free), and only after that commit are the `accepted` events
written, in input order, interleaved with the `rejected` ones. Then the messages are
handed to the scheduler, which waits when its queues are full: the reader stops
reading, and the client feels backpressure through TCP. Nothing is dropped.

The accepting itself (account rules, journal, queues) is engine.ingress.accept's,
shared with the other front doors; this module reads lines and writes answers.

A line longer than `max_line_bytes` is rejected as soon as it outgrows the limit; the
rest of it is skipped as it arrives, never buffered whole.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable

import anyio
import structlog

from engine.accounts import Account
from engine.ingress.accept import Acceptor, Outcome
from engine.ingress.events import EventSink
from engine.ingress.prepare import LineError
from engine.ingress.sessions import SessionProblem, describe, is_opening_line
from engine.models import (
    LineRejected,
    accepted_event,
    encode_event_line,
    encode_event_lines,
)

log = structlog.get_logger("septet.ingress")


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


class LineHandler:
    """Reads the lines of every connection and answers them; the accepting itself is the
    Acceptor's (engine.ingress.accept), shared with the other front doors."""

    def __init__(
        self,
        acceptor: Acceptor,
        *,
        max_line_bytes: int,
        on_lines: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_lines(result, count)` is told of lines refused here, before the Acceptor
        (too long); the Acceptor tells it of the rest."""
        self._acceptor = acceptor
        self._max_line = max_line_bytes
        self._on_lines = on_lines

    async def serve_stream(
        self,
        receive: Callable[[], Awaitable[bytes]],
        sink: EventSink,
        account: Account,
        *,
        idle_timeout_s: float | None = None,
        lines_before: int = 0,
    ) -> None:
        """Read until end of input (`receive` returns b""), answering every line; the
        lines are `account`'s and their events go to `sink.origin`.

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
                    await self._handle([last], line_number, sink, account)
                return
            lines = splitter.feed(data)
            if lines:
                await self._handle(lines, line_number + 1, sink, account)
                line_number += len(lines)
                if idle_timeout_s is not None:
                    deadline = anyio.current_time() + idle_timeout_s

    async def _handle(
        self, lines: list[bytes | None], first_number: int, sink: EventSink, account: Account
    ) -> None:
        origin = sink.origin
        numbers: list[int] = []
        batch: list[bytes] = []
        too_long: list[int] = []
        number = first_number - 1
        for line in lines:
            number += 1
            if line is None:
                too_long.append(number)
            elif line.strip():  # a blank line is not a message; line numbers stay physical
                numbers.append(number)
                batch.append(line)
        if batch:
            # Answered at the commit; then the accept waits for queue room (backpressure).
            await self._acceptor.accept(
                account,
                origin,
                batch,
                on_commit=lambda outcomes: self._answer(sink, numbers, batch, outcomes, too_long),
            )
        else:
            self._answer(sink, numbers, batch, [], too_long)

    def _answer(
        self,
        sink: EventSink,
        numbers: list[int],
        batch: list[bytes],
        outcomes: list[Outcome],
        too_long: list[int],
    ) -> None:
        """Every line's answer, in input order."""
        origin = sink.origin
        ts = _now_dt()
        answers: list[tuple[int, bytes]] = []
        if too_long:
            error = f"line is longer than {self._max_line} bytes"
            answers = [(n, _rejected(LineError(error), ts, n)) for n in too_long]
            if self._on_lines is not None:
                self._on_lines("rejected", len(too_long))
        debug = log.debug  # resolved once per chunk: a no-op below --log-level debug
        for number, line, outcome in zip(numbers, batch, outcomes, strict=True):
            if isinstance(outcome, LineError):
                if outcome.kind == "invalid" and is_opening_line(line):
                    outcome = LineError(describe(SessionProblem.NOT_FIRST))
                answers.append((number, _rejected(outcome, ts, number)))
                debug("line_rejected", origin=origin, line=number, error=outcome.error)
                continue
            answers.append((number, encode_event_lines([accepted_event(m, ts) for m in outcome])))
        if too_long:
            answers.sort(key=lambda answer: answer[0])
        for _, answer in answers:
            sink.emit(answer)


def _rejected(error: LineError, ts: dt.datetime, number: int) -> bytes:
    return encode_event_line(
        LineRejected(id=error.client_ref, ts=ts, error=error.error, line=number)
    )
