"""The SMPP server's durable state in a small SQLite file beside the journal (one node).

What it keeps and the guarantees it gives are engine.smpp.storage's (the interface every
SMPP store implements): message_ids, outcomes and receipts as tables of this file. Waiting
parts are durable before their submit_sm_resp, so a restart resumes reassembly.

The ids come from a counter whose high-water mark is saved with every batch that uses
it, so an id is never given out twice, even after its rows are gone.

Writes are group-committed by the journal's writer (engine.journal.writer): every
operation queued while one batch runs on the store's writer thread goes into the next
batch, one transaction (a savepoint per operation, so one that fails on its own data
fails alone), one commit. A SQLite error fails the whole batch with StoreError.

The file's schema version is SQLite's `user_version`; opening an older file migrates it
(MIGRATIONS), and a file written by a newer septet is refused with a sentence. Rows are
msgpack maps, so a field added later with a default reads old rows unchanged.

With the PostgreSQL journal the state is in its database instead
(engine.smpp.store_postgres), shared by the nodes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

import anyio
import sniffio

from engine.journal.sqlite_transactions import SqliteTransactions
from engine.journal.writer import GroupCommitWriter
from engine.private_files import create_private
from engine.smpp.storage import (
    NO_GROUP,
    OUTCOME_KEEP_S,
    BindGroup,
    BuildReceipt,
    GivenId,
    Outcome,
    PendingReceipt,
    ReceiptClaims,
    SmppStore,
    StoreError,
    given_decoder,
    given_encoder,
    outcome_decoder,
    receipt_decoder,
    receipts_of,
)

# The interface's names are re-exported: callers of the SQLite store need only this module.
__all__ = [
    "NO_GROUP",
    "OUTCOME_KEEP_S",
    "SCHEMA_VERSION",
    "BindGroup",
    "BuildReceipt",
    "GivenId",
    "Outcome",
    "PendingReceipt",
    "SmppStore",
    "SqliteSmppStore",
    "StoreError",
    "open_store",
    "store_path_for",
]

T = TypeVar("T")

# MIGRATIONS[n] moves a file from schema version n to n + 1. Version 0 is a new file or
# one written before the version was kept (its tables then exist already: hence IF NOT
# EXISTS in the first step).
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS message_ids ("
        " id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, msg_id TEXT, body BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS message_ids_msg_id ON message_ids (msg_id)"
        " WHERE msg_id IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS message_ids_waiting ON message_ids (id) WHERE msg_id IS NULL",
        "CREATE TABLE IF NOT EXISTS receipts ("
        " id INTEGER PRIMARY KEY, system_id TEXT NOT NULL, body BLOB NOT NULL)",
    ),
    (
        "CREATE TABLE outcomes ("
        " msg_id TEXT PRIMARY KEY, at REAL NOT NULL, body BLOB NOT NULL) WITHOUT ROWID",
        "CREATE INDEX outcomes_at ON outcomes (at)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
SQL_INSERT_ID: Final = "INSERT INTO message_ids (id, system_id, msg_id, body) VALUES (?, ?, ?, ?)"
SQL_LINK: Final = "UPDATE message_ids SET msg_id = ?, body = ? WHERE id = ?"
SQL_INSERT_RECEIPT: Final = "INSERT OR REPLACE INTO receipts (id, system_id, body) VALUES (?, ?, ?)"
# OR IGNORE: the first final report of a message is its outcome; later ones change nothing.
SQL_KEEP_OUTCOME: Final = "INSERT OR IGNORE INTO outcomes (msg_id, at, body) VALUES (?, ?, ?)"
SQL_SAVE_NEXT_ID: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_id', ?)"
PARAMETERS_PER_QUERY: Final = 500


class _StoreWriting(SqliteTransactions):
    """The writer's side of an SmppStore (engine.journal.writer.WriterBackend): its file,
    its errors, and the id counter's high-water mark saved with each batch."""

    def __init__(self, store: SqliteSmppStore) -> None:
        self._store = store
        self._committing = 1

    def open_connection(self) -> sqlite3.Connection:
        return self._store._connect()

    def close_connection(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def is_storage_failure(self, error: BaseException) -> bool:
        # Any SQLite error fails the whole batch (an operation's own bad data is any
        # other exception: it fails alone).
        return isinstance(error, sqlite3.Error)

    def failure(self, error: BaseException) -> BaseException:
        if isinstance(error, sqlite3.Error):
            return StoreError(f"The SMPP store {self._store.path} could not be written: {error}.")
        return error

    def snapshot(self) -> int:
        return self._store._next_id

    def restore(self, snapshot: int) -> None:
        """Nothing to undo: an id handed out stays handed out, stored or not."""

    def before_commit(self, connection: sqlite3.Connection, snapshot: int) -> None:
        if snapshot != self._store._saved_next_id:
            connection.execute(SQL_SAVE_NEXT_ID, (snapshot,))
        self._committing = snapshot

    def after_commit(self, *, careful: bool) -> None:
        self._store._saved_next_id = self._committing


class SqliteSmppStore:
    """The SmppStore (engine.smpp.storage) in a SQLite file. One event loop, one writer
    thread (engine.journal.writer)."""

    # One node: it delivers every receipt itself (nothing to claim).
    claims: ReceiptClaims | None = None

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._next_id = 1
        self._saved_next_id = 1
        # Every batch takes a savepoint per operation (not the journal's optimistic first
        # run): an operation runs once per batch, as it always has.
        self._writer: GroupCommitWriter[sqlite3.Connection, int] = GroupCommitWriter(
            _StoreWriting(self),
            thread_name="septet-smpp-store",
            closed=lambda: StoreError(f"The SMPP store {self.path} is closed."),
            optimistic=False,
        )

    @property
    def commits(self) -> int:
        """Batches committed so far (tests)."""
        return self._writer.commits

    # ── life cycle ──────────────────────────────────────────────────────────────

    def _connect(self) -> sqlite3.Connection:
        """On the writer thread: open (creating or migrating) the file."""
        connection: sqlite3.Connection | None = None
        try:
            create_private(self.path)
        except OSError as error:
            raise StoreError(
                f"Cannot create the SMPP store {self.path}: {error.strerror}."
            ) from None
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            connection.execute("PRAGMA busy_timeout = 5000")
            _migrate(connection, self.path)
            saved = connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
            highest = max(
                connection.execute("SELECT max(id) FROM message_ids").fetchone()[0] or 0,
                connection.execute("SELECT max(id) FROM receipts").fetchone()[0] or 0,
            )
        except (sqlite3.Error, StoreError) as error:
            if connection is not None:
                connection.close()
            if isinstance(error, StoreError):
                raise
            raise StoreError(f"Cannot open the SMPP store {self.path}: {error}.") from None
        self._next_id = self._saved_next_id = max(int(saved[0]) if saved else 1, highest + 1)
        return connection

    async def open(self) -> None:
        """Open (creating or migrating) the file on the store's writer thread; StoreError
        says why it cannot be."""
        if sniffio.current_async_library() != "asyncio":
            raise StoreError("The SMPP store runs on the asyncio backend (with uvloop).")
        await self._writer.start()

    async def close(self) -> None:
        """What is queued is written, then the file is closed."""
        await self._writer.close()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` in the next batch: one transaction, a savepoint each, one
        commit (engine.journal.writer)."""
        return await self._writer.execute(work, write=True)

    # ── ids ─────────────────────────────────────────────────────────────────────

    async def allocate_id(self) -> int:
        """A fresh message id; durable with the next batch that stores anything."""
        value = self._next_id
        self._next_id += 1
        return value

    # ── operations ──────────────────────────────────────────────────────────────

    async def add_ids(self, rows: Sequence[GivenId], build: BuildReceipt) -> list[PendingReceipt]:
        """Store ids given out (the id counter is saved even when no row is kept). Those
        whose message already has an outcome (its report outran this commit) become
        receipts at once, in the same transaction."""

        def work(connection: sqlite3.Connection) -> list[PendingReceipt]:
            kept = [row for row in rows if row.kept]
            waiting = _with_outcomes(connection, kept)
            encode = given_encoder.encode
            connection.executemany(
                SQL_INSERT_ID,
                [(r.id, r.system_id, r.msg_id, encode(r)) for r in kept if r.id not in waiting],
            )
            return _convert(connection, kept, waiting, build)

        return await self._run(work)

    async def link(self, rows: Sequence[GivenId], build: BuildReceipt) -> list[PendingReceipt]:
        """Parts joined into one septet message (each row's msg_id set): they now wait
        for its report, or become receipts at once if it came already."""

        def work(connection: sqlite3.Connection) -> list[PendingReceipt]:
            kept = [row for row in rows if row.kept]
            waiting = _with_outcomes(connection, kept)
            encode = given_encoder.encode
            connection.executemany(SQL_LINK, [(r.msg_id, encode(r), r.id) for r in kept])
            connection.executemany(
                "DELETE FROM message_ids WHERE id = ?", [(r.id,) for r in rows if not r.kept]
            )
            return _convert(connection, kept, waiting, build)

        return await self._run(work)

    async def settle_messages(
        self, outcomes: Mapping[str, Outcome], build: BuildReceipt, *, now: float
    ) -> tuple[list[PendingReceipt], set[str]]:
        """In one transaction: the ids mapped to these septet messages leave, and the
        receipts `build` makes for them are stored. A message none of whose ids is
        stored keeps its outcome (the first one) for ids stored later. Returns the
        receipts and the msg_ids that had ids."""

        def work(connection: sqlite3.Connection) -> tuple[list[PendingReceipt], set[str]]:
            rows: list[GivenId] = []
            for chunk in _chunks(list(outcomes)):
                marks = ",".join("?" * len(chunk))
                found = connection.execute(
                    f"SELECT body FROM message_ids WHERE msg_id IN ({marks})",  # noqa: S608
                    tuple(chunk),
                ).fetchall()
                rows.extend(given_decoder.decode(body) for (body,) in found)
            matched = {row.msg_id for row in rows if row.msg_id is not None}
            encode = given_encoder.encode
            connection.executemany(
                SQL_KEEP_OUTCOME,
                [(m, now, encode(o)) for m, o in outcomes.items() if m not in matched],
            )
            receipts = _convert(
                connection, rows, {row.id: outcomes[row.msg_id or ""] for row in rows}, build
            )
            return receipts, matched

        return await self._run(work)

    async def settle_ids(
        self, rows: Sequence[GivenId], outcome: Outcome, build: BuildReceipt
    ) -> list[PendingReceipt]:
        """The same for given ids whose message never reached the journal (refused, or
        a long message whose parts did not all arrive)."""
        return await self._run(
            lambda connection: _convert(connection, rows, {r.id: outcome for r in rows}, build)
        )

    async def forget_outcomes(self, before: float) -> int:
        """Drop kept outcomes older than `before` (wall-clock seconds); returns how many."""

        def work(connection: sqlite3.Connection) -> int:
            return connection.execute("DELETE FROM outcomes WHERE at < ?", (before,)).rowcount

        return await self._run(work)

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
            return {
                table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - our own table names
                for table in ("message_ids", "outcomes", "receipts")
            }

        return await self._run(work)


def _with_outcomes(connection: sqlite3.Connection, rows: Sequence[GivenId]) -> dict[int, Outcome]:
    """id -> its message's kept outcome, for the rows whose message has one."""
    msg_ids = sorted({row.msg_id for row in rows if row.msg_id is not None})
    kept: dict[str, Outcome] = {}
    for chunk in _chunks(msg_ids):
        marks = ",".join("?" * len(chunk))
        found = connection.execute(
            f"SELECT msg_id, body FROM outcomes WHERE msg_id IN ({marks})",  # noqa: S608
            tuple(chunk),
        ).fetchall()
        kept.update((msg_id, outcome_decoder.decode(body)) for msg_id, body in found)
    return {row.id: kept[row.msg_id] for row in rows if row.msg_id in kept}


def _convert(
    connection: sqlite3.Connection,
    rows: Sequence[GivenId],
    outcomes: Mapping[int, Outcome],
    build: BuildReceipt,
) -> list[PendingReceipt]:
    """The rows with an outcome leave and their receipts (if wanted) are stored: the one
    place a row becomes a receipt, so it does so once."""
    ending, receipts = receipts_of(rows, outcomes, build)
    connection.executemany("DELETE FROM message_ids WHERE id = ?", [(r.id,) for r in ending])
    encode = given_encoder.encode
    connection.executemany(SQL_INSERT_RECEIPT, [(r.id, r.system_id, encode(r)) for r in receipts])
    return receipts


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION, one step per transaction."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"The SMPP store {path} has schema version {version}, written by a newer septet;"
            f" this one reads versions up to {SCHEMA_VERSION}."
        )
    for step in range(version, SCHEMA_VERSION):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {step + 1}")
            connection.execute("COMMIT")
        except sqlite3.Error:
            connection.execute("ROLLBACK")
            raise


def _chunks(items: Sequence[T], size: int = PARAMETERS_PER_QUERY) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def store_path_for(journal_path: str | Path) -> Path:
    """The store lives beside the journal: septet.db -> septet.smpp.db."""
    path = Path(journal_path)
    return path.with_name(f"{path.stem}.smpp{path.suffix or '.db'}")


@contextlib.asynccontextmanager
async def open_store(
    path: str | Path, *, synchronous: str = "NORMAL"
) -> AsyncIterator[SqliteSmppStore]:
    """Open the store for the duration of the block (StoreError when the file cannot be
    opened). Leaving the block, even cancelled, writes what is queued and closes the file:
    the SMPP connections that stop with the daemon still store what they must."""
    store = SqliteSmppStore(path, synchronous=synchronous)
    await store.open()
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
