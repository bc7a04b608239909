"""The SMPP server's own durable state, in a small SQLite file beside the journal.

Why a table of its own: an ESME is given one message_id per submit_sm PDU, but septet
joins the parts of a long message into ONE septet message (one msg_id). So every id an
ESME was given is a row here:

    message_ids  id (given to the ESME) -> septet msg_id, once the message is journaled
                 (NULL, with the part's octets, while a part waits for its siblings)
    receipts     deliver_sm receipts not yet acknowledged by a deliver_sm_resp

When septet's final report for msg_id M arrives, every row mapped to M becomes a
receipt in the same transaction (one receipt per id the ESME was given), and a receipt
leaves only when the ESME acknowledges it; so receipts survive restarts and reconnects.
Waiting parts are durable before their submit_sm_resp, so a restart resumes reassembly.

The ids come from a counter whose high-water mark is saved with every batch that uses
it, so an id is never given out twice, even after its rows are gone.

Writes are group-committed: every operation queued while one batch runs on the worker
thread goes into the next batch, one transaction, one commit.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.abc
import msgspec

T = TypeVar("T")

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS message_ids ("
    " id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, msg_id TEXT, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS message_ids_msg_id ON message_ids (msg_id)"
    " WHERE msg_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS message_ids_waiting ON message_ids (id) WHERE msg_id IS NULL",
    "CREATE TABLE IF NOT EXISTS receipts ("
    " id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, body BLOB NOT NULL)",
)
SQL_INSERT_ID: Final = "INSERT INTO message_ids (id, system_id, msg_id, body) VALUES (?, ?, ?, ?)"
SQL_LINK: Final = "UPDATE message_ids SET msg_id = ?, body = ? WHERE id = ?"
SQL_INSERT_RECEIPT: Final = "INSERT OR REPLACE INTO receipts (id, system_id, body) VALUES (?, ?, ?)"
SQL_SAVE_NEXT_ID: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_id', ?)"
PARAMETERS_PER_QUERY: Final = 500


class GivenId(msgspec.Struct, kw_only=True):
    """One message_id an ESME was given, and what its receipt will need."""

    id: int
    system_id: str
    msg_id: str | None
    registered_delivery: int
    submitted_at: float
    source_addr: str
    destination_addr: str
    text_head: str
    # While a part waits for its siblings: what reassembly needs to resume after a restart.
    part_key: tuple[str, str, str, int, int] | None = None
    part_seq: int = 0
    part_octets: bytes = b""
    data_coding: int = 0
    source_addr_ton: int = 0
    dest_addr_ton: int = 0
    schedule_at: float | None = None
    expires_at: float | None = None
    priority: int = 0


class PendingReceipt(msgspec.Struct, kw_only=True):
    """A delivery receipt owed to an ESME (SMPP v3.4 Appendix B)."""

    id: int
    system_id: str
    source_addr: str
    destination_addr: str
    text: str
    state: str
    message_state: int


given_encoder: Final = msgspec.msgpack.Encoder()
given_decoder: Final = msgspec.msgpack.Decoder(GivenId)
receipt_decoder: Final = msgspec.msgpack.Decoder(PendingReceipt)


class StoreError(Exception):
    """The SMPP store cannot be opened or written."""


class _Operation(Generic[T]):
    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], T]) -> None:
        self.work = work
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SmppStore:
    """Message ids, waiting parts and pending receipts. One event loop, one worker thread."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._queue: list[_Operation[Any]] = []
        self._wake = anyio.Event()
        self._next_id = 1
        self._saved_next_id = 1
        self.commits = 0

    # ── life cycle ──────────────────────────────────────────────────────────────

    def _open(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            connection.execute("PRAGMA busy_timeout = 5000")
            for statement in SCHEMA:
                connection.execute(statement)
            saved = connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
            highest = max(
                connection.execute("SELECT max(id) FROM message_ids").fetchone()[0] or 0,
                connection.execute("SELECT max(id) FROM receipts").fetchone()[0] or 0,
            )
        except sqlite3.Error as error:
            raise StoreError(f"Cannot open the SMPP store {self.path}: {error}.") from None
        self._next_id = self._saved_next_id = max(int(saved[0]) if saved else 1, highest + 1)
        self._connection = connection

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the file and run batches until cancelled; then close it."""
        await anyio.to_thread.run_sync(self._open)
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                batch, self._queue = self._queue, []
                if batch:
                    await anyio.to_thread.run_sync(self._run_batch, batch)
                    for operation in batch:
                        operation.done.set()
        finally:
            with anyio.CancelScope(shield=True):
                batch, self._queue = self._queue, []
                if batch and self._connection is not None:
                    await anyio.to_thread.run_sync(self._run_batch, batch)
                    for operation in batch:
                        operation.done.set()
                if self._connection is not None:
                    connection, self._connection = self._connection, None
                    await anyio.to_thread.run_sync(connection.close)

    def _run_batch(self, batch: list[_Operation[Any]]) -> None:
        connection = self._connection
        if connection is None:
            for operation in batch:
                operation.error = StoreError(f"The SMPP store {self.path} is closed.")
            return
        next_id = self._next_id
        try:
            connection.execute("BEGIN")
            for operation in batch:
                connection.execute("SAVEPOINT operation")
                try:
                    operation.result = operation.work(connection)
                except sqlite3.Error:
                    raise
                except Exception as error:
                    connection.execute("ROLLBACK TO operation")
                    operation.error = error
                connection.execute("RELEASE operation")
            if next_id != self._saved_next_id:
                connection.execute(SQL_SAVE_NEXT_ID, (next_id,))
            connection.execute("COMMIT")
            self._saved_next_id = next_id
            self.commits += 1
        except sqlite3.Error as error:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            failure = StoreError(f"The SMPP store {self.path} could not be written: {error}.")
            for operation in batch:
                operation.error = failure

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        operation = _Operation(work)
        self._queue.append(operation)
        self._wake.set()
        await operation.done.wait()
        if operation.error is not None:
            raise operation.error
        return operation.result  # type: ignore[return-value]

    # ── ids ─────────────────────────────────────────────────────────────────────

    def allocate_id(self) -> int:
        """A fresh message id; durable with the next batch that stores anything."""
        value = self._next_id
        self._next_id += 1
        return value

    # ── operations ──────────────────────────────────────────────────────────────

    async def add_ids(self, rows: Sequence[GivenId]) -> None:
        encode = given_encoder.encode
        params = [(row.id, row.system_id, row.msg_id, encode(row)) for row in rows]
        await self._run(lambda connection: connection.executemany(SQL_INSERT_ID, params))

    async def link(self, ids: Sequence[int], msg_id: str, rows: Sequence[GivenId]) -> None:
        """Parts joined into septet message `msg_id`: they now wait for its report."""
        encode = given_encoder.encode
        params = [(msg_id, encode(row), row.id) for row in rows]
        await self._run(lambda connection: connection.executemany(SQL_LINK, params))

    async def settle_messages(
        self, msg_ids: Sequence[str], build: Callable[[GivenId], PendingReceipt | None]
    ) -> tuple[list[PendingReceipt], set[str]]:
        """In one transaction: the ids mapped to these septet messages leave, and the
        receipts `build` makes for them are stored. Returns those receipts and the
        msg_ids that had rows."""

        def work(connection: sqlite3.Connection) -> tuple[list[PendingReceipt], set[str]]:
            rows: list[GivenId] = []
            for chunk in _chunks(msg_ids):
                marks = ",".join("?" * len(chunk))
                found = connection.execute(
                    f"SELECT body FROM message_ids WHERE msg_id IN ({marks})",  # noqa: S608
                    tuple(chunk),
                ).fetchall()
                rows.extend(given_decoder.decode(body) for (body,) in found)
            return self._convert(connection, rows, build), {r.msg_id for r in rows if r.msg_id}

        return await self._run(work)

    async def settle_ids(
        self, rows: Sequence[GivenId], build: Callable[[GivenId], PendingReceipt | None]
    ) -> list[PendingReceipt]:
        """The same for given ids whose message never reached the journal (refused, or
        a long message whose parts did not all arrive)."""
        return await self._run(lambda connection: self._convert(connection, list(rows), build))

    def _convert(
        self,
        connection: sqlite3.Connection,
        rows: list[GivenId],
        build: Callable[[GivenId], PendingReceipt | None],
    ) -> list[PendingReceipt]:
        receipts = [receipt for receipt in map(build, rows) if receipt is not None]
        connection.executemany("DELETE FROM message_ids WHERE id = ?", [(r.id,) for r in rows])
        encode = given_encoder.encode
        connection.executemany(
            SQL_INSERT_RECEIPT, [(r.id, r.system_id, encode(r)) for r in receipts]
        )
        return receipts

    async def delete_receipts(self, ids: Sequence[int]) -> None:
        params = [(value,) for value in ids]
        await self._run(
            lambda connection: connection.executemany("DELETE FROM receipts WHERE id = ?", params)
        )

    async def waiting_parts(self) -> list[GivenId]:
        def work(connection: sqlite3.Connection) -> list[GivenId]:
            found = connection.execute(
                "SELECT body FROM message_ids WHERE msg_id IS NULL ORDER BY id"
            ).fetchall()
            return [given_decoder.decode(body) for (body,) in found]

        return await self._run(work)

    async def pending_receipts(self) -> list[PendingReceipt]:
        def work(connection: sqlite3.Connection) -> list[PendingReceipt]:
            found = connection.execute("SELECT body FROM receipts ORDER BY id").fetchall()
            return [receipt_decoder.decode(body) for (body,) in found]

        return await self._run(work)

    async def counts(self) -> dict[str, int]:
        def work(connection: sqlite3.Connection) -> dict[str, int]:
            ids = connection.execute("SELECT count(*) FROM message_ids").fetchone()[0]
            receipts = connection.execute("SELECT count(*) FROM receipts").fetchone()[0]
            return {"message_ids": int(ids), "receipts": int(receipts)}

        return await self._run(work)


def _chunks(items: Sequence[T], size: int = PARAMETERS_PER_QUERY) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def store_path_for(journal_path: str | Path) -> Path:
    """The store lives beside the journal: septet.db -> septet.smpp.db."""
    path = Path(journal_path)
    return path.with_name(f"{path.stem}.smpp{path.suffix or '.db'}")


@contextlib.asynccontextmanager
async def open_store(path: str | Path, *, synchronous: str = "NORMAL") -> AsyncIterator[SmppStore]:
    """Open the store for the duration of the block, its batches served in the background."""
    store = SmppStore(path, synchronous=synchronous)
    async with anyio.create_task_group() as tg:
        await tg.start(store.serve)
        try:
            yield store
        finally:
            tg.cancel_scope.cancel()
