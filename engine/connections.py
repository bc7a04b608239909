"""Serves the NDJSON clients (stdin, TCP, Unix socket) and the outbox of events they left.

Each connection gets an origin, registers an EventSink for it with the EventRouter, and
has its lines answered by the LineHandler (engine.ingress). Events for a client that has
gone are spilled into the Outbox and batched into the journal by `serve_outbox`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import structlog

from engine.config import IngressSettings, split_host_port
from engine.ingress import EventRouter, EventSink, LineHandler
from engine.journal import JournalError, StoreEvents
from engine.models import LineRejected, encode_event_line, utc_from_timestamp

log = structlog.get_logger("septet.connections")

# The kernel receive buffer of each ingress socket connection (see serve_connection): what
# a client that outruns the daemon can park before its writes block, about 4,000 lines.
RECEIVE_BUFFER_BYTES = 256 * 1024
# The first wait before storing outbox events again after a journal write failed.
OUTBOX_RETRY_S = 1.0


class Outbox:
    """Events for clients that have gone: batched into the journal, never dropped."""

    def __init__(self) -> None:
        self.pending: dict[str, list[bytes]] = {}
        self.wake = anyio.Event()

    def spill(self, origin: str, lines: list[bytes]) -> None:
        self.pending.setdefault(origin, []).extend(lines)
        self.wake.set()

    def take(self) -> list[StoreEvents]:
        changes = [
            StoreEvents(origin=origin, events=lines) for origin, lines in self.pending.items()
        ]
        self.pending = {}
        return changes

    def restore(self, changes: Sequence[StoreEvents]) -> None:
        """Put back what `take` gave when the journal could not store it, in order."""
        for change in changes:
            self.pending[change.origin] = [*change.events, *self.pending.get(change.origin, [])]
        self.wake.set()


async def serve_outbox(outbox: Outbox, journal: Any) -> None:
    """Store events for clients that have gone; a journal that cannot be written (disk
    full) is waited out, the events held in the meantime."""
    delay = OUTBOX_RETRY_S
    while True:
        await outbox.wake.wait()
        outbox.wake = anyio.Event()
        changes = outbox.take()
        if not changes:
            continue
        try:
            await journal.record(changes)
        except JournalError as error:
            log.error("journal_write_failed", during="outbox", retry_in_s=delay, error=str(error))
            outbox.restore(changes)
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)
        else:
            delay = OUTBOX_RETRY_S


class ClientServer:
    """The socket clients: a connection limit per listener, one origin per connection."""

    def __init__(
        self,
        settings: IngressSettings,
        handler: LineHandler,
        events: EventRouter,
        outbox: Outbox,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._events = events
        self._outbox = outbox
        self._counter = iter(range(1, 1 << 62))
        self._open = {"tcp": 0, "unix": 0}

    async def serve_connection(self, stream: anyio.abc.ByteStream, kind: str) -> None:
        # A connection limit per listener: thousands of idle or slow clients must
        # not exhaust file descriptors or memory.
        limit = self._settings.max_connections
        if self._open[kind] >= limit:
            refusal = LineRejected(
                id=None,
                ts=utc_from_timestamp(time.time()),
                error=f"too many connections (the limit is {limit} per listener); try again later",
                line=0,
            )
            with anyio.move_on_after(1), contextlib.suppress(Exception):
                await stream.send(encode_event_line(refusal))
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            log.warning("connection_refused", listener=kind, reason="limit")
            return
        self._open[kind] += 1
        # anyio (4.16) leaves an accepted TCP connection reading until a receive()
        # has had to wait; a client writing faster than we read would be buffered
        # without bound (uvloop). Paused here, reading resumes inside receive() only.
        transport = getattr(stream, "_transport", None)
        if transport is not None:
            transport.pause_reading()
        # And the kernel's share: Linux autotunes a socket's receive buffer up to
        # tcp_rmem's maximum (32 MiB here), so a client could park that much per
        # connection before it felt any backpressure. A fixed buffer bounds it.
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)  # noqa: S610 - anyio, not Django
        if raw is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        try:
            await self.serve_client(stream, kind)
        finally:
            self._open[kind] -= 1

    async def serve_client(self, stream: anyio.abc.ByteStream, kind: str) -> None:
        origin = f"{kind}:{next(self._counter)}"
        sink = EventSink(origin, stream.send)
        self._events.register(sink)

        async def receive() -> bytes:
            try:
                return await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return b""

        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.serve, self._outbox.spill)
            try:
                await self._handler.serve_stream(
                    receive, sink, idle_timeout_s=self._settings.idle_timeout_s
                )
                # End of input means the client has gone: on TCP a half-close and
                # a close look alike, and writing to a closed peer would lose events
                # silently. Later events of its messages go to the journal outbox
                # (`septet send --events`); a client that wants them keeps writing open.
                await sink.flush()
            finally:
                self._events.unregister(sink)
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await stream.aclose()


async def serve_clients(
    settings: IngressSettings,
    handler: LineHandler,
    events: EventRouter,
    outbox: Outbox,
    *,
    input_done: anyio.Event,
    use_stdin: bool = False,
    stdin: Callable[[], Awaitable[bytes]] | None = None,
    stdout: Callable[[bytes], Awaitable[None]] | None = None,
    task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the configured sockets (and read stdin) until cancelled.

    `task_status.started(tcp_port)` once listening (None without a TCP listener);
    `input_done` is set when stdin ends, or at once without stdin.
    """
    tcp_listener = None
    if settings.tcp:
        host, port = split_host_port(settings.tcp, "ingress.tcp")
        tcp_listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    unix_listener = None
    if settings.unix:
        path = anyio.Path(settings.unix)
        if await path.is_socket():
            await path.unlink()  # a stale socket from a previous run
        old_umask = os.umask(0o177)  # the socket is created 0600: only its owner may send
        try:
            unix_listener = await anyio.create_unix_listener(str(path))
        finally:
            os.umask(old_umask)
    tcp_port = (
        tcp_listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
        if tcp_listener
        else None
    )
    clients = ClientServer(settings, handler, events, outbox)
    async with anyio.create_task_group() as tg:
        if tcp_listener is not None:
            tg.start_soon(tcp_listener.serve, lambda s: clients.serve_connection(s, "tcp"))
        if unix_listener is not None:
            tg.start_soon(unix_listener.serve, lambda s: clients.serve_connection(s, "unix"))
        if use_stdin:
            tg.start_soon(serve_stdio, handler, events, outbox, input_done, stdin, stdout)
        else:
            input_done.set()
        task_status.started(tcp_port)
        await anyio.sleep_forever()


async def serve_stdio(
    handler: LineHandler,
    events: EventRouter,
    outbox: Outbox,
    input_done: anyio.Event,
    stdin: Callable[[], Awaitable[bytes]] | None,
    stdout: Callable[[bytes], Awaitable[None]] | None,
) -> None:
    if stdin is None:
        stdin_file = anyio.wrap_file(sys.stdin.buffer)

        async def read() -> bytes:
            return await stdin_file.read1(65536)

        stdin = read
    if stdout is None:
        stdout_file = anyio.wrap_file(sys.stdout.buffer)

        async def write(data: bytes) -> None:
            await stdout_file.write(data)
            await stdout_file.flush()

        stdout = write
    sink = EventSink("stdin", stdout)
    events.register(sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.serve, outbox.spill)
        try:
            await handler.serve_stream(stdin, sink)
        finally:
            input_done.set()
        # stdout stays the event sink for this run's later events (submitted, dlr).
        await anyio.sleep_forever()
