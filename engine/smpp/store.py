"""The SMPP server's own durable state, in a small SQLite file beside the journal.

Why a table of its own: an ESME is given one message_id per submit_sm PDU, but septet
joins the parts of a long message into ONE septet message (one msg_id). So every id an
ESME was given is a row here:

    message_ids  id (given to the ESME) -> septet msg_id, once the message is journaled
                 (NULL, with the part's octets, while a part waits for its siblings)
    outcomes     msg_id -> the FIRST final outcome septet reported for it while none of
                 its ids were stored yet (the report outran the id's commit)
    receipts     deliver_sm receipts not yet acknowledged by a deliver_sm_resp

Each id and each receipt keeps the bind group that submitted it (BindGroup), so a
receipt goes back to that group's bind after a restart as before it.

When septet's final report for msg_id M arrives, every row mapped to M becomes a
receipt in the same transaction (one receipt per id the ESME was given), and a receipt
leaves only when the ESME acknowledges it; so receipts survive restarts and reconnects.
Waiting parts are durable before their submit_sm_resp, so a restart resumes reassembly.

One receipt per id, durably: a row becomes a receipt once, in the transaction that
deletes it, so a second final report for M (a `failed` then a `dlr`, a repeated `dlr`,
before or after a restart) finds no row and makes nothing. A report that finds no row
yet is kept in `outcomes` (the first one only: later ones are ignored), and the ids of M
stored later become receipts with it in the transaction that stores them. Such
reports are rare (the report outran its id, or it is a second report, or its message
asked for no receipt), so `outcomes` stays small, and is pruned after OUTCOME_KEEP_S.

An id whose submit_sm asked for no receipt (`GivenId.receipt_asked`) has no row once
its message is journaled: nothing can be owed for it, and septet asks the provider for
no report then, so no final event need come to remove it.

The ids come from a counter whose high-water mark is saved with every batch that uses
it, so an id is never given out twice, even after its rows are gone.

Writes are group-committed by the journal's writer (engine.journal.writer): every
operation queued while one batch runs on the store's writer thread goes into the next
batch, one transaction (a savepoint per operation, so one that fails on its own data
fails alone), one commit. A SQLite error fails the whole batch with StoreError.

The file's schema version is SQLite's `user_version`; opening an older file migrates it
(MIGRATIONS), and a file written by a newer septet is refused with a sentence. Rows are
msgpack maps, so a field added later with a default reads old rows unchanged.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

import anyio
import msgspec
import sniffio

from engine.journal.sqlite_transactions import SqliteTransactions
from engine.journal.writer import GroupCommitWriter
from engine.private_files import create_private

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
# How long a report whose ids were not stored yet is kept. Such a report waits for a
# commit in progress (milliseconds), or for the parts of a long message to be joined
# again after a crash (the next start): a day is ample, and bounds the table.
OUTCOME_KEEP_S: Final = 24 * 3600.0


# The group of the bind a message id was given on: the (system_type, address_range) it
# declared (SMPP v3.4 5.2.7-5.2.8). The id's receipt goes to a receiving bind of the same
# group when one is bound (engine.smpp.account.AccountState). Rows from before it was kept
# read as the empty group.
BindGroup = tuple[str, str]
NO_GROUP: Final[BindGroup] = ("", "")


class Outcome(msgspec.Struct, frozen=True):
    """A septet message's final state as a receipt tells it (SMPP v3.4 Appendix B)."""

    state: str
    error: str
    done_at: float


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
    # Stored since issue 16 (the receipt mirrors them); rows from before read as 0.
    source_addr_npi: int = 0
    dest_addr_npi: int = 0
    schedule_at: float | None = None
    expires_at: float | None = None
    priority: int = 0
    bind_group: BindGroup = NO_GROUP

    @property
    def receipt_asked(self) -> bool:
        """SMPP v3.4 5.2.17: bits 1..0 of registered_delivery ask for an SMSC receipt."""
        return bool(self.registered_delivery & 0x03)

    @property
    def kept(self) -> bool:
        """Whether the store keeps a row for it: while a part waits, or a receipt may
        be owed."""
        return self.msg_id is None or self.receipt_asked


class PendingReceipt(msgspec.Struct, kw_only=True):
    """A delivery receipt owed to an ESME (SMPP v3.4 Appendix B)."""

    id: int
    system_id: str
    source_addr: str
    destination_addr: str
    text: str
    state: str
    message_state: int
    # The deliver_sm's own TON/NPI (section 5.2.5): the submit's, mirrored.
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    bind_group: BindGroup = NO_GROUP


# What the server makes of a row and its message's outcome: a receipt, or None when the
# ESME asked for none (registered_delivery, section 5.2.17).
BuildReceipt = Callable[[GivenId, Outcome], PendingReceipt | None]


given_encoder: Final = msgspec.msgpack.Encoder()
given_decoder: Final = msgspec.msgpack.Decoder(GivenId)
receipt_decoder: Final = msgspec.msgpack.Decoder(PendingReceipt)
outcome_decoder: Final = msgspec.msgpack.Decoder(Outcome)


class StoreError(Exception):
    """The SMPP store cannot be opened or written."""


class _StoreWriting(SqliteTransactions):
    """The writer's side of an SmppStore (engine.journal.writer.WriterBackend): its file,
    its errors, and the id counter's high-water mark saved with each batch."""

    def __init__(self, store: SmppStore) -> None:
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


class SmppStore:
    """Message ids, waiting parts, early outcomes and pending receipts. One event loop,
    one writer thread (engine.journal.writer)."""

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

    def allocate_id(self) -> int:
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
    ending = [row for row in rows if row.id in outcomes]
    receipts = [r for r in (build(row, outcomes[row.id]) for row in ending) if r is not None]
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
async def open_store(path: str | Path, *, synchronous: str = "NORMAL") -> AsyncIterator[SmppStore]:
    """Open the store for the duration of the block (StoreError when the file cannot be
    opened). Leaving the block, even cancelled, writes what is queued and closes the file:
    the SMPP connections that stop with the daemon still store what they must."""
    store = SmppStore(path, synchronous=synchronous)
    await store.open()
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
