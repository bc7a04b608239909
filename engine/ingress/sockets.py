"""Serves the NDJSON clients (stdin, TCP, Unix socket) and the outbox of events they left.

A connection's first line may present a session (`{"session": "<token>"}`,
engine.ingress.sessions); its identity is then the session's, else a name unique to the
connection and this run. It registers an EventSink under that identity with the
EventRouter, and its lines are answered by the LineHandler (engine.ingress.ndjson). A session's
connection is first written the events kept for it (the journal outbox, oldest first,
then those not yet stored; each leaves the outbox as it is written), then the `session`
event, then live ones. Events for an identity with no connection are spilled into the
Outbox and batched into the journal by `serve_outbox`; a connection without a session
has an identity no later connection has, so its kept events are the operator's to read.

The first line may also name the connection's account (`{"auth": {...}}`, with or
without a session beside it); without one the connection is the listeners' account
(`Accounts.default`, `[ingress] account`), or is refused when `[ingress] require_auth`
is on. stdin is always the default account's.

A session or auth line that is refused (or a missing auth line that is required) is
answered with one `rejected` line and the connection is closed before anything else of
it is read: nothing is accepted under an identity or account its client did not mean.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc
import structlog

from engine.accounts import Account, Accounts
from engine.config import IngressSettings, bind_errors, split_host_port
from engine.ingress.events import EventRouter, EventSink
from engine.ingress.ndjson import LineHandler
from engine.ingress.outbox import KeptEvents, Outbox, OutboxJournal
from engine.ingress.sessions import (
    FirstLine,
    SessionProblem,
    connection_origin,
    describe,
    encode_session_opened,
    read_first_line,
)
from engine.models import LineRejected, encode_event_line, utc_from_timestamp

log = structlog.get_logger("septet.connections")

# The kernel receive buffer of each ingress socket connection (see serve_connection): what
# a client that outruns the daemon can park before its writes block, about 4,000 lines.
RECEIVE_BUFFER_BYTES = 256 * 1024

# How long, and how much, a refused connection is read and dropped before it is closed
# (close_gently): enough for what a client sends with its first line, bounded for a hostile one.
LINGER_S = 2.0
LINGER_BYTES = 1 << 20

Receive = Callable[[], Awaitable[bytes]]
Write = Callable[[bytes], Awaitable[None]]


# ── the first line ─────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Opening:
    """What a connection's first line says, and the stream to read on from."""

    first: FirstLine | SessionProblem | None
    # Gives the bytes read past the session line (all bytes read, without one) first.
    receive: Receive
    lines_read: int


async def read_opening(receive: Receive, max_line_bytes: int) -> Opening:
    """Read until the first line is complete (or too long to be a session line, or input
    ends) and tell whether it presents a session or an account. Linear in the bytes read, however
    they are dribbled: only each new chunk is searched for the newline."""
    buffer = bytearray()
    end = -1
    while len(buffer) <= max_line_bytes:
        data = await receive()
        if not data:
            end = len(buffer)
            break
        found = data.find(b"\n")
        if found >= 0:
            end = len(buffer) + found
        buffer += data
        if found >= 0:
            break
    first = read_first_line(bytes(buffer[:end])) if 0 <= end <= max_line_bytes else None
    rest = bytes(buffer) if first is None else bytes(buffer[end + 1 :])

    async def receive_rest() -> bytes:
        nonlocal rest
        if rest:
            data, rest = rest, b""
            return data
        return await receive()

    return Opening(first, receive_rest, 0 if first is None else 1)


def writer_of(stream: anyio.abc.ByteStream) -> Write:
    """How a client's events are written to `stream`: for a TCP stream on asyncio, straight
    to its transport while that holds nothing unsent, else `stream.send`, which waits for
    the transport to drain (a slow reader's backpressure). What anyio's send adds to the
    write (a cancellation check before it, a shielded checkpoint after it) costs about 40k
    instructions, and a client sending one message at a time gets two or three writes a
    message (callgrind). A closed or broken connection goes through `send`, which says so."""
    transport = getattr(stream, "_transport", None)  # as serve_connection's pause_reading
    if transport is None:
        return stream.send

    async def write(data: bytes) -> None:
        if not transport.get_write_buffer_size() and not transport.is_closing():
            transport.write(data)
        else:
            await stream.send(data)

    return write


class ClientServer:
    """The NDJSON clients: a connection limit per listener, one identity per client."""

    def __init__(
        self,
        settings: IngressSettings,
        handler: LineHandler,
        events: EventRouter,
        outbox: Outbox,
        journal: OutboxJournal,
        accounts: Accounts,
        *,
        run: str | None = None,
    ) -> None:
        """`run` tells this daemon's connections from an earlier run's (random if None)."""
        self._accounts = accounts
        self._settings = settings
        self._handler = handler
        self._events = events
        self._outbox = outbox
        self._journal = journal
        self.run = run if run is not None else secrets.token_hex(8)
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
        name = connection_origin(kind, self.run, next(self._counter))
        idle_timeout_s = self._settings.idle_timeout_s

        async def receive() -> bytes:
            try:
                return await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return b""

        try:
            async with anyio.create_task_group() as tg:
                started = await self._start(
                    receive, writer_of(stream), name, tg, idle_timeout_s, socket=True
                )
                if started is None:
                    await close_gently(stream)
                    return
                sink, opening, account = started
                try:
                    await self._handler.serve_stream(
                        opening.receive,
                        sink,
                        account,
                        idle_timeout_s=idle_timeout_s,
                        lines_before=opening.lines_read,
                    )
                    # End of input means the client has gone: on TCP a half-close and
                    # a close look alike, and writing to a closed peer would lose events
                    # silently. Later events of its messages are kept in the journal
                    # outbox for its identity; a client that wants them keeps writing
                    # open, or comes back with its session.
                    await sink.flush()
                finally:
                    self._events.unregister(sink)
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def serve_stdio(self, stdin: Receive, stdout: Write, input_done: anyio.Event) -> None:
        """Lines from stdin, events to stdout; stdout stays this run's sink after stdin ends
        (for the later events of its messages: submitted, dlr)."""
        try:
            async with anyio.create_task_group() as tg:
                started = await self._start(
                    stdin, stdout, f"stdin:{self.run}", tg, None, socket=False
                )
                if started is None:
                    return
                sink, opening, account = started
                await self._handler.serve_stream(
                    opening.receive, sink, account, lines_before=opening.lines_read
                )
                input_done.set()
                await anyio.sleep_forever()
        finally:
            input_done.set()

    async def _start(
        self,
        receive: Receive,
        write: Write,
        name: str,
        tg: anyio.abc.TaskGroup,
        idle_timeout_s: float | None,
        *,
        socket: bool,
    ) -> tuple[EventSink, Opening, Account] | None:
        """Read the first line, register the client's sink under its identity and start
        writing to it (kept events first); None when the client is to be closed."""
        opening: Opening | None = None
        with anyio.move_on_after(math.inf if idle_timeout_s is None else idle_timeout_s):
            opening = await read_opening(receive, self._settings.max_line_bytes)
        if opening is None:
            log.info("connection_idle", origin=name, idle_timeout_s=idle_timeout_s)
            return None
        first = opening.first
        account = self._account_of(first, socket=socket)
        if isinstance(account, SessionProblem):
            refusal = LineRejected(
                id=None, ts=utc_from_timestamp(time.time()), error=describe(account), line=1
            )
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await write(encode_event_line(refusal))
            log.info("session_refused", origin=name, problem=account.value)
            return None
        session = first.session if isinstance(first, FirstLine) else None
        identity = name if session is None else session.origin(self._session_scope(account))
        sink = EventSink(identity, write)
        # Registered before the outbox is read: from here on no event of this identity
        # goes to the outbox, so the outbox and the journal hold all that is kept for it.
        self._events.register(sink)
        kept = None
        if session is not None:
            # Written after the kept events (KeptEvents puts the outbox's before it).
            sink.emit(encode_session_opened(identity, utc_from_timestamp(time.time())))
            kept = KeptEvents(identity, sink, self._outbox, self._journal).next_batch
            log.info("session_opened", origin=identity, connection=name)
        tg.start_soon(sink.serve, self._events.emit_lines, kept)
        return sink, opening, account

    def _session_scope(self, account: Account) -> str | None:
        """Which account a session belongs to (engine.ingress.sessions.session_origin):
        None for the default account, whose sessions predate accounts."""
        return None if account.name == self._accounts.default.name else account.name

    def _account_of(
        self, first: FirstLine | SessionProblem | None, *, socket: bool
    ) -> Account | SessionProblem:
        """The connection's account, or why it is refused."""
        if isinstance(first, SessionProblem):
            return first
        auth = first.auth if first is not None else None
        if auth is None:
            if socket and self._settings.require_auth:
                return SessionProblem.AUTH_REQUIRED
            return self._accounts.default
        account = self._accounts.by_name_and_key(auth.account, auth.api_key)
        if account is None:
            log.warning("auth_refused", account=auth.account)
            return SessionProblem.AUTH_REFUSED
        return account


async def serve_clients(
    settings: IngressSettings,
    handler: LineHandler,
    events: EventRouter,
    outbox: Outbox,
    journal: OutboxJournal,
    accounts: Accounts,
    *,
    input_done: anyio.Event,
    use_stdin: bool = False,
    stdin: Receive | None = None,
    stdout: Write | None = None,
    task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the configured sockets (and read stdin) until cancelled.

    `task_status.started(tcp_port)` once listening (None without a TCP listener);
    `input_done` is set when stdin ends, or at once without stdin.
    """
    tcp_listener = None
    if settings.tcp:
        host, port = split_host_port(settings.tcp, "ingress.tcp")
        with bind_errors("ingress.tcp", settings.tcp):
            tcp_listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    unix_listener = None
    if settings.unix:
        path = anyio.Path(settings.unix)
        try:
            with bind_errors("ingress.unix", settings.unix):
                unix_listener = await _listen_unix(path)
        except BaseException:
            if tcp_listener is not None:
                await tcp_listener.aclose()
            raise
    tcp_port = (
        tcp_listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
        if tcp_listener
        else None
    )
    clients = ClientServer(settings, handler, events, outbox, journal, accounts)
    log.info("clients_run", run=clients.run)
    try:
        async with anyio.create_task_group() as tg:
            if tcp_listener is not None:
                tg.start_soon(tcp_listener.serve, lambda s: clients.serve_connection(s, "tcp"))
            if unix_listener is not None:
                tg.start_soon(unix_listener.serve, lambda s: clients.serve_connection(s, "unix"))
            if use_stdin:
                tg.start_soon(
                    clients.serve_stdio,
                    stdin or _read_stdin(),
                    stdout or _write_stdout(),
                    input_done,
                )
            else:
                input_done.set()
            task_status.started(tcp_port)
            await anyio.sleep_forever()
    finally:
        if unix_listener is not None:
            # The socket file goes with the listener: a client finds no stale path.
            with contextlib.suppress(OSError):
                os.unlink(str(path))


async def _listen_unix(path: anyio.Path) -> anyio.abc.SocketListener:
    """A Unix socket listener at `path`, created 0600. A socket file left by a run that
    ended is replaced; one a running daemon still answers on is "address in use"."""
    if await path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))  # a local socket answers or refuses at once
        except OSError:
            await path.unlink()  # a stale socket from a previous run
        else:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        finally:
            probe.close()
    old_umask = os.umask(0o177)  # the socket is created 0600: only its owner may send
    try:
        return await anyio.create_unix_listener(str(path))
    finally:
        os.umask(old_umask)


async def close_gently(stream: anyio.abc.ByteStream) -> None:
    """Half-close a refused connection, then read and drop what its client had already sent,
    for at most LINGER_S and LINGER_BYTES, before the caller closes it.

    Closing a socket with unread bytes in its receive buffer makes the kernel answer with a
    reset, and a reset can destroy the refusal line before the client has read it (a client
    that sent its first line and a message at once saw "connection reset" instead of why).
    Apache's lingering close, RFC 9112 section 9.6.
    """
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send_eof()
    read = 0
    with anyio.move_on_after(LINGER_S):
        while read < LINGER_BYTES:
            try:
                read += len(await stream.receive(65536))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return


def _read_stdin() -> Receive:
    stdin_file = anyio.wrap_file(sys.stdin.buffer)

    async def read() -> bytes:
        return await stdin_file.read1(65536)

    return read


def _write_stdout() -> Write:
    stdout_file = anyio.wrap_file(sys.stdout.buffer)

    async def write(data: bytes) -> None:
        await stdout_file.write(data)
        await stdout_file.flush()

    return write
