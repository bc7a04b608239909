"""Where a message's events go: the newest live sink of its origin, or kept for it.

Events go back by identity (engine.ingress.sessions): the EventRouter gives each to the
newest open sink of its message's origin, or spills it to the outbox kept for that origin
(engine.ingress.outbox); never to a sink of another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import structlog

from engine.models import Event, encode_event_line

log = structlog.get_logger("septet.ingress")


# ── Event sinks ────────────────────────────────────────────────────────────────


class Sink(Protocol):
    """What the EventRouter hands events to: an EventSink, or an SMPP account's sink."""

    origin: str
    closed: bool

    def emit(self, line: bytes) -> None: ...

    def emit_many(self, lines: list[bytes]) -> None:
        """`emit` for each line, in order."""
        ...


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
        # asyncio's Event, set and cleared again, rather than a new anyio Event after every
        # wake-up: the sink wakes two or three times a message when messages come one at a
        # time, and an anyio Event costs about 13k instructions to make against 3k
        # (callgrind). The daemon runs on asyncio (engine.commands.run).
        self._wake = asyncio.Event()
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

    def emit_many(self, lines: list[bytes]) -> None:
        if self.closed:
            if self._spill is not None:
                self._spill(self.origin, lines)
            return
        self._buffer += lines
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
                self._wake.clear()
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


class DiscardSink:
    """The sink of a front door whose clients hold no connection for events (the HTTP
    API, sendsms): they read the event feed or get webhooks, both from the journal. The
    EventRouter does not even encode the events of its origin."""

    closed = False

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def emit(self, line: bytes) -> None:
        del line

    def emit_many(self, lines: list[bytes]) -> None:
        del lines


class EventRouter:
    """identity (a message's origin) -> its live sinks. An event goes to the newest live
    sink of its identity, or, when there is none, to `spill` (the journal outbox), kept
    for that identity: never to a sink of another identity."""

    def __init__(self, spill: Spill) -> None:
        self._sinks: dict[str, list[Sink]] = {}
        self._spill = spill
        # Origins whose events go nowhere (a DiscardSink's).
        self._discarded: set[str] = set()

    def register(self, sink: Sink) -> None:
        self._sinks.setdefault(sink.origin, []).append(sink)
        if isinstance(sink, DiscardSink):
            self._discarded.add(sink.origin)

    def unregister(self, sink: Sink) -> None:
        if isinstance(sink, DiscardSink):
            self._discarded.discard(sink.origin)
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

    def live_origins(self) -> list[str]:
        """The identities with an open sink here (a connected client, an SMPP account)."""
        return [origin for origin in self._sinks if self.live(origin) is not None]

    def emit(self, origin: str, event: Event) -> None:
        if origin in self._discarded:
            return
        line = encode_event_line(event)
        sink = self.live(origin)
        if sink is None:
            self._spill(origin, [line])
        else:
            sink.emit(line)

    def emit_all(self, events: Sequence[tuple[str, Event]]) -> None:
        """`emit` for each (origin, event), in order: each run of one origin's events
        handed to its sink at once (a request's events are mostly one client's)."""
        start = 0
        while start < len(events):
            origin = events[start][0]
            end = start + 1
            while end < len(events) and events[end][0] == origin:
                end += 1
            if origin not in self._discarded:
                lines = [encode_event_line(event) for _, event in events[start:end]]
                self.emit_lines(origin, lines)
            start = end

    def emit_lines(self, origin: str, lines: list[bytes]) -> None:
        sink = self.live(origin)
        if sink is None:
            self._spill(origin, lines)
        else:
            sink.emit_many(lines)
