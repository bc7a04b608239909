"""The group-commit writer: one thread owns a store's connection and commits queued work in groups.

    async callers ──(work, future)──▶ SimpleQueue ──▶ writer thread (owns the connection)
          ▲                                              │ drains the queue: ONE transaction,
          └──── loop.call_soon_threadsafe(settle) ◀──────┘ ONE commit, then reads

Group commit: the writer takes every operation queued at that moment, runs the writes
in one transaction (each in a SAVEPOINT, so a caller's bad input fails only that
caller), commits once and settles all their futures with one wake-up of the event
loop. A storage failure (disk full, read-only, I/O error) fails every write of that
group and rolls it back; the next group tries again, so the store recovers by itself
when the cause clears.

Operations almost never fail on their own data, so by default (`optimistic`) a group
first runs without a savepoint per operation (two statements fewer each); when one does
fail, the transaction is rolled back and the group runs again, each operation in its own
savepoint. A store whose operations must run exactly once per commit attempt turns that
off and always takes the savepoints.

A store plugs in through `WriterBackend`: how its connection opens and closes, its
transaction statements, which of its errors are storage failures and the sentence a
caller gets for them, and the in-memory state it keeps with each commit (counters that
are snapshotted before a group, restored when it rolls back, saved before its COMMIT).
Used by the journal's backends (engine.journal.sqlite) and the SMPP store
(engine.smpp.store).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import msgspec
import structlog

__all__ = ["GroupCommitWriter", "WriterBackend"]

C = TypeVar("C")  # a store's connection
S = TypeVar("S")  # a snapshot of a store's in-memory state (counters)
T = TypeVar("T")

# (the caller's future, its value, or the error it gets)
Settled = list[tuple[asyncio.Future[Any], Any, BaseException | None]]
log = structlog.get_logger("septet.journal")

# How often a group is tried when it fails on a transient failure (WriterBackend.is_transient),
# and the pause before each new try, times the tries so far: the writer the server let
# through finishes in that time. Trying again at once let the retried group take the
# contended row first and meet the same deadlock again, turn after turn (seen in a test).
TRANSIENT_TRIES = 3
TRANSIENT_PAUSE_S = 0.05


class _Written(NamedTuple):
    """One try of a group's writes: the callers' results, whether some operation was undone
    alone (`careful`), and whether anything was committed."""

    results: Settled
    careful: bool
    committed: bool


class WriterBackend(Protocol[C, S]):
    """What the writer needs from a store. Every method runs on the writer thread."""

    def open_connection(self) -> C:
        """Open (create, migrate) the store; raise its own error with a sentence if not."""
        ...

    def close_connection(self, connection: C) -> None:
        """Close it; never raises."""
        ...

    def begin(self, connection: C) -> None: ...

    def savepoint(self, connection: C) -> None: ...

    def release_savepoint(self, connection: C) -> None: ...

    def roll_back_to_savepoint(self, connection: C) -> None: ...

    def commit(self, connection: C) -> None: ...

    def roll_back(self, connection: C) -> None:
        """Undo the open transaction, if any (and what the group added in memory); never
        raises."""
        ...

    def is_storage_failure(self, error: BaseException) -> bool:
        """A failure of the storage (disk, file, server), not of one caller's data: it fails
        the whole group."""
        ...

    def failure(self, error: BaseException) -> BaseException:
        """What a caller gets for `error`: the store's own error, with a sentence, for an
        error of its driver; anything else as it is."""
        ...

    def is_transient(self, error: BaseException) -> bool:
        """A failure the same group will likely not meet again (PostgreSQL chose it to break
        a deadlock with another writer of the same store): the whole group is run again,
        up to TRANSIENT_TRIES times, before its callers get the error."""
        ...

    def snapshot(self) -> S:
        """The in-memory state a group may change, to restore when it is rolled back."""
        ...

    def restore(self, snapshot: S) -> None: ...

    def before_commit(self, connection: C, snapshot: S) -> None:
        """Save, in the group's transaction, what changed since `snapshot`."""
        ...

    def after_commit(self, *, careful: bool) -> None:
        """The group committed (`careful`: some of its operations may have been undone)."""
        ...


class _Operation(msgspec.Struct):
    work: Callable[[Any], Any]
    write: bool
    future: asyncio.Future[Any]


class _Stop(msgspec.Struct):
    """Queued by close(): the writer finishes what came before, closes, then settles it."""

    future: asyncio.Future[None]


def _settle(settled: Settled) -> None:
    """Runs on the event loop: hands each caller its result (a cancelled caller is gone)."""
    for future, value, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class GroupCommitWriter(Generic[C, S]):
    """Runs `work(connection)` for async callers on one thread, writes in group commits."""

    def __init__(
        self,
        backend: WriterBackend[C, S],
        *,
        thread_name: str,
        closed: Callable[[], BaseException],
        on_commit: Callable[[float, int], None] | None = None,
        optimistic: bool = True,
    ) -> None:
        """`closed` makes the error of an operation submitted while the writer is closed;
        `on_commit(seconds, operations)` is called on the writer thread after each commit."""
        self._backend = backend
        self._thread_name = thread_name
        self._closed_error = closed
        self._on_commit = on_commit
        self._optimistic = optimistic
        # Successful commits so far (tests and metrics).
        self.commits = 0
        self._queue: queue.SimpleQueue[list[_Operation] | _Stop] = queue.SimpleQueue()
        # Operations submitted during the current event-loop iteration, handed to the
        # writer thread together at its end: one cross-thread wake-up per iteration, not
        # one per operation (each wake-up costs a futex and a GIL hand-over).
        self._outgoing: list[_Operation] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True

    # ── life cycle (on the event loop) ──────────────────────────────────────────

    async def start(self) -> None:
        """Start the thread and open the connection on it; the backend's error if it cannot."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(opened,), name=self._thread_name, daemon=True
        )
        self._thread.start()
        await opened
        self._closed = False

    async def close(self) -> None:
        """Finish every queued operation, close the connection, end the thread."""
        if self._closed or self._loop is None:
            return
        self._closed = True
        closed: asyncio.Future[None] = self._loop.create_future()
        self._hand_over()
        self._queue.put(_Stop(closed))
        await closed

    @property
    def is_closed(self) -> bool:
        return self._closed

    def execute(self, work: Callable[[C], T], *, write: bool) -> Awaitable[T]:
        """Run `work(connection)` on the writer thread; writes share a group commit."""
        if self._closed or self._loop is None:
            raise self._closed_error()
        future: asyncio.Future[T] = self._loop.create_future()
        outgoing = self._outgoing
        outgoing.append(_Operation(work, write, future))
        if len(outgoing) == 1:
            self._loop.call_soon(self._hand_over)
        return future

    def _hand_over(self) -> None:
        """Pass this iteration's operations to the writer thread as one item."""
        if self._outgoing:
            operations, self._outgoing = self._outgoing, []
            self._queue.put(operations)

    def call_on_loop(self, callback: Callable[..., object], *args: Any) -> None:
        """From the writer thread: run `callback(*args)` on the event loop (if it still runs)."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(callback, *args)

    # ── the writer thread ───────────────────────────────────────────────────────

    def _serve(self, opened: asyncio.Future[None]) -> None:
        try:
            connection = self._backend.open_connection()
        except Exception as error:
            self._hand_back([(opened, None, error)])
            return
        self._hand_back([(opened, None, None)])
        take = self._queue.get
        take_waiting = self._queue.get_nowait
        waiting = self._queue.qsize
        while True:
            batch = [take()]
            # This thread is the queue's only taker: what it counts is there to take (no
            # queue.Empty raised and caught at every group).
            for _ in range(waiting()):
                batch.append(take_waiting())
            operations = [
                operation for item in batch if isinstance(item, list) for operation in item
            ]
            settled = self._run_group(connection, operations)
            stops = [item for item in batch if isinstance(item, _Stop)]
            if stops:
                self._backend.close_connection(connection)
                settled.extend((stop.future, None, None) for stop in stops)
                self._hand_back(settled)
                return
            self._hand_back(settled)

    def _hand_back(self, settled: Settled) -> None:
        if settled:
            self.call_on_loop(_settle, settled)

    def _run_group(self, connection: C, operations: list[_Operation]) -> Settled:
        settled: Settled = []
        writes = [operation for operation in operations if operation.write]
        if writes:
            self._run_writes(connection, writes, settled)
        for operation in operations:
            if operation.write:
                continue
            try:
                settled.append((operation.future, operation.work(connection), None))
            except Exception as error:
                settled.append((operation.future, None, self._backend.failure(error)))
        return settled

    def _run_writes(self, connection: C, writes: list[_Operation], settled: Settled) -> None:
        """Commit every write operation of the group in one transaction (module docstring:
        optimistic first, then a savepoint each when one failed on its own data); a group
        that met a transient failure (a deadlock with another writer) is tried again."""
        backend = self._backend
        snapshot = backend.snapshot()
        started = time.perf_counter()
        for tries in range(1, TRANSIENT_TRIES + 1):
            try:
                written = self._try_writes(connection, writes, snapshot)
                break
            except Exception as error:
                self._roll_back(connection, snapshot)
                if tries < TRANSIENT_TRIES and backend.is_transient(error):
                    log.warning("journal_group_retried", tries=tries, error=str(error))
                    time.sleep(TRANSIENT_PAUSE_S * tries)  # on the writer thread, rarely
                    continue
                failure = backend.failure(error)
                settled.extend((operation.future, None, failure) for operation in writes)
                return
        settled.extend(written.results)
        if not written.committed:
            return
        self.commits += 1
        backend.after_commit(careful=written.careful)
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started, len(writes))

    def _try_writes(self, connection: C, writes: list[_Operation], snapshot: S) -> _Written:
        """One try of the group; raises what fails it whole (the caller rolls back)."""
        careful = not self._optimistic
        try:
            results = self._write_group(connection, writes, snapshot, careful=careful)
            return _Written(results, careful, True)
        except Exception as error:
            self._roll_back(connection, snapshot)
            if careful or self._backend.is_storage_failure(error):
                raise
            if len(writes) == 1:
                # The one operation failed on its own data and was undone: no commit.
                return _Written([(writes[0].future, None, error)], True, False)
        return _Written(self._write_group(connection, writes, snapshot, careful=True), True, True)

    def _roll_back(self, connection: C, snapshot: S) -> None:
        self._backend.roll_back(connection)
        self._backend.restore(snapshot)

    def _write_group(
        self, connection: C, writes: list[_Operation], snapshot: S, *, careful: bool
    ) -> Settled:
        """One transaction over `writes`, from the in-memory state `snapshot`; with
        `careful`, an operation that fails on its own data is undone alone (a savepoint
        each) and the rest still commit."""
        backend = self._backend
        results: Settled = []
        backend.begin(connection)
        for operation in writes:
            if not careful:
                results.append((operation.future, operation.work(connection), None))
                continue
            backend.savepoint(connection)
            before = backend.snapshot()
            try:
                value = operation.work(connection)
            except Exception as error:
                if backend.is_storage_failure(error):
                    raise
                # The caller's own data was wrong: undo its part only.
                backend.roll_back_to_savepoint(connection)
                backend.release_savepoint(connection)
                backend.restore(before)
                results.append((operation.future, None, error))
                continue
            backend.release_savepoint(connection)
            results.append((operation.future, value, None))
        backend.before_commit(connection, snapshot)
        backend.commit(connection)
        return results
