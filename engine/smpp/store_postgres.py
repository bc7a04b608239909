"""The SMPP server's durable state in the PostgreSQL journal's database, shared by the nodes.

The same operations and guarantees as the SQLite store (engine.smpp.storage), on the
tables engine.journal.postgres_schema creates (version 2): `smpp_ids`, `smpp_outcomes`,
`smpp_receipts`, `smpp_binds`. What a cluster adds:

- ids come from the sequence `smpp_message_ids`, a block at a time, so no two nodes ever
  give out the same id (a block a node never used is skipped, never given again);
- a message's ids and its outcome meet under a transaction lock on its msg_id
  (pg_advisory_xact_lock), so a report settled on one node while another stores its
  ids cannot pass each other: whichever commits second sees the first;
- a receipt is claimed by the node that delivers it (`claimed_by`), for as long as that
  node is live (its heartbeat in `nodes` within the lease, engine.membership): claims
  take rows `FOR UPDATE SKIP LOCKED`, so two nodes never hold one receipt, and a dead
  node's claims are claimed again, and a node whose own heartbeat is older than the
  lease claims nothing (the others may be taking its claims over meanwhile, as with
  message claims). Which node may claim what is the bind group rule of
  engine.smpp.account across the cluster: a node claims the receipts of the groups it
  has a receiving bind of, and those of a group with no receiving bind on any live node
  (`smpp_binds` says which node has which);
- every commit that makes or releases a receipt notifies `septet_smpp`
  (RECEIPTS_CHANNEL), and each node's server listens on it
  (engine.smpp.cluster_receipts) and claims at once;
- the journal's `messages` are in the same database: ids whose message is final there
  since a while (its final event was made by a node that died before storing it as
  receipts) are settled from the journal's outcome (`settle_final`);
- a part of a long message waits on the node that took it (`smpp_ids.node`); a node
  resuming takes its own and those of dead nodes, and a running node takes dead nodes'
  parts every few seconds (engine.smpp.server.serve_cluster_sweeps).

Writes are group-committed on a writer thread with a connection of its own
(engine.journal.writer), as the journal's are. A failure of the server or the connection
fails the group with a StoreError sentence; the next group connects again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final

import anyio
import psycopg

from engine.journal.interface import JournalError
from engine.journal.postgres import (
    PostgresLink,
    PostgresTransactions,
    describe_dsn,
    listen,
    reason_of,
)
from engine.journal.postgres_schema import create_or_migrate
from engine.journal.writer import GroupCommitWriter
from engine.smpp.receipts import outcome_of_final
from engine.smpp.storage import (
    BindGroup,
    BuildReceipt,
    GivenId,
    Outcome,
    PendingReceipt,
    ReceiptClaims,
    StoreError,
    given_decoder,
    given_encoder,
    outcome_decoder,
    receipt_decoder,
    receipts_of,
)

__all__ = ["RECEIPTS_CHANNEL", "PostgresSmppStore", "open_postgres_store"]

Connection = psycopg.Connection[Any]

RECEIPTS_CHANNEL: Final = "septet_smpp"
# Ids fetched from the sequence per round trip.
IDS_PER_FETCH: Final = 100
# pg_advisory_xact_lock(class, key): the class of a msg_id's lock ("SMPP"), apart from the
# journal's schema lock (a lock of one bigint key).
MSG_LOCK_CLASS: Final = 0x534D5050

SQL_LIVE: Final = "SELECT node FROM nodes WHERE left_at IS NULL AND heartbeat_at >= %(since)s"
SQL_LOCK_MESSAGES: Final = (
    "SELECT pg_advisory_xact_lock(%s, hashtext(m))"
    " FROM (SELECT DISTINCT m FROM unnest(%b::text[]) AS u(m) ORDER BY m) AS s"
)
SQL_INSERT_IDS: Final = (
    "INSERT INTO smpp_ids (id, system_id, msg_id, node, body)"
    " SELECT * FROM unnest(%b::int8[], %b::text[], %b::text[], %b::text[], %b::bytea[])"
)
SQL_LINK: Final = (
    "UPDATE smpp_ids AS i SET msg_id = u.m, body = u.b"
    " FROM unnest(%b::int8[], %b::text[], %b::bytea[]) AS u(id, m, b) WHERE i.id = u.id"
)
SQL_INSERT_RECEIPTS: Final = (
    "INSERT INTO smpp_receipts (id, system_id, system_type, address_range, body)"
    " SELECT * FROM unnest(%b::int8[], %b::text[], %b::text[], %b::text[], %b::bytea[])"
    " ON CONFLICT (id) DO NOTHING"
)
# The first final report of a message is its outcome; later ones change nothing.
SQL_KEEP_OUTCOMES: Final = (
    "INSERT INTO smpp_outcomes (msg_id, at, body)"
    " SELECT * FROM unnest(%b::text[], %b::float8[], %b::bytea[]) ON CONFLICT DO NOTHING"
)
SQL_CLAIM: Final = (
    f"WITH live AS ({SQL_LIVE}),"  # noqa: S608 - our own constant
    " bound AS (SELECT system_type, address_range FROM smpp_binds WHERE system_id ="
    " %(system_id)s AND receivers > 0 AND node IN (SELECT node FROM live)),"
    " mine AS (SELECT * FROM unnest(%(types)s::text[], %(ranges)s::text[])"
    " AS g(system_type, address_range)),"
    " picked AS (SELECT r.id FROM smpp_receipts r WHERE r.system_id = %(system_id)s"
    " AND %(node)s IN (SELECT node FROM live)"
    " AND (r.claimed_by IS NULL OR (r.claimed_by <> %(node)s"
    " AND r.claimed_by NOT IN (SELECT node FROM live)))"
    " AND ((r.system_type, r.address_range) IN (SELECT system_type, address_range FROM mine)"
    " OR (r.system_type, r.address_range) NOT IN (SELECT system_type, address_range FROM bound))"
    " ORDER BY r.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE smpp_receipts AS r SET claimed_by = %(node)s FROM picked WHERE r.id = picked.id"
    " RETURNING r.body"
)
# Ids of messages final in the journal (same database) since before a time; the cast
# only of digits (the journal's msg_ids), so the join probes messages' primary key.
# A sweep looks at the ids in one window of the id order (SWEEP_WINDOW of them), the next
# window at the next sweep, so its cost is bounded however many ids wait for reports.
SQL_SWEEP_WINDOW_END: Final = (
    "SELECT max(id) FROM (SELECT id FROM smpp_ids WHERE id > %s ORDER BY id LIMIT %s) AS w"
)
SQL_FINAL_IDS: Final = (
    "SELECT DISTINCT i.msg_id, m.outcome, m.code, m.final_at FROM smpp_ids i JOIN messages m"
    " ON m.msg_id = CASE WHEN i.msg_id ~ '^[0-9]{1,18}$' THEN i.msg_id::bigint END"
    " WHERE i.id > %s AND i.id <= %s AND i.msg_id IS NOT NULL AND m.state = 3"
    " AND m.outcome <> 'SUBMITTED' AND m.final_at < %s"
)
SWEEP_WINDOW: Final = 20_000
SQL_FORGET_BINDS: Final = (
    f"DELETE FROM smpp_binds WHERE node = %(node)s OR node NOT IN ({SQL_LIVE})"  # noqa: S608
)
SQL_ADOPT_DEAD_PARTS: Final = (
    f"UPDATE smpp_ids SET node = %(node)s WHERE msg_id IS NULL AND node <> %(node)s"  # noqa: S608
    f" AND node NOT IN ({SQL_LIVE}) RETURNING body"
)
SQL_ADOPT_PARTS: Final = (
    f"UPDATE smpp_ids SET node = %(node)s WHERE msg_id IS NULL AND (node = %(node)s"  # noqa: S608
    f" OR node NOT IN ({SQL_LIVE})) RETURNING body"
)


class _StoreWriting(PostgresTransactions):
    """The writer's side of a PostgresSmppStore (engine.journal.writer.WriterBackend)."""

    def __init__(self, store: PostgresSmppStore) -> None:
        self._store = store

    def open_connection(self) -> PostgresLink:
        return self._store._open_link()

    def is_storage_failure(self, error: BaseException) -> bool:
        """Any error of the database fails the whole group (the store's statements are
        its own: none fails on a caller's data); other errors fail their caller alone."""
        return isinstance(error, psycopg.Error)

    def failure(self, error: BaseException) -> BaseException:
        if isinstance(error, psycopg.Error):
            return StoreError(
                f"The SMPP store in the journal at {self._store.where} could not be written:"
                f" {reason_of(error)}."
            )
        return error

    def snapshot(self) -> None:
        """Nothing kept in memory with a commit."""

    def restore(self, snapshot: None) -> None:
        """Nothing to undo."""

    def before_commit(self, connection: PostgresLink, snapshot: None) -> None:
        """Nothing to save: the ids' sequence is the database's."""

    def after_commit(self, *, careful: bool) -> None:
        """Nothing to do."""


class PostgresSmppStore:
    """The SmppStore (engine.smpp.storage) in the PostgreSQL journal's database, and its
    ReceiptClaims for this node (`node`, live while its heartbeat is within `lease_s`)."""

    def __init__(
        self, dsn: str, node: str, *, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.dsn = dsn
        try:
            self.where = describe_dsn(dsn)
        except JournalError as error:
            raise StoreError(str(error)) from None
        self.node = node
        self.claims: ReceiptClaims | None = self
        self._lease_s = lease_s
        self._clock = clock
        self._ids: list[int] = []
        # Where the last settle_final's window ended (the writer thread's).
        self._swept_to = 0
        self._fetching = anyio.Lock()
        self._writer: GroupCommitWriter[PostgresLink, None] = GroupCommitWriter(
            _StoreWriting(self),
            thread_name="septet-smpp-store-pg",
            closed=lambda: StoreError(f"The SMPP store in the journal at {self.where} is closed."),
        )

    @property
    def commits(self) -> int:
        return self._writer.commits

    def _open_link(self) -> PostgresLink:
        """On the writer thread: connect, and bring the schema to this septet's."""
        link = PostgresLink(self.dsn, self.where)
        try:
            create_or_migrate(link.ready(), self.where)
        except psycopg.Error as error:
            link.close()
            raise StoreError(
                f"Cannot open the SMPP store in the journal at {self.where}: {reason_of(error)}."
            ) from None
        except JournalError as error:
            link.close()
            raise StoreError(str(error)) from None
        return link

    async def open(self) -> None:
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.close()

    async def _run(self, work: Callable[[Connection], Any], *, write: bool = True) -> Any:
        return await self._writer.execute(lambda link: work(link.ready()), write=write)

    def _since(self) -> dict[str, float]:
        return {"since": self._clock() - self._lease_s}

    # ── ids ─────────────────────────────────────────────────────────────────────

    async def allocate_id(self) -> int:
        """A fresh id from the cluster's sequence (a block of IDS_PER_FETCH at a time)."""
        async with self._fetching:
            if not self._ids:
                fetched: list[int] = await self._run(
                    lambda connection: [
                        int(row[0])
                        for row in connection.execute(
                            "SELECT nextval('smpp_message_ids') FROM generate_series(1, %s)",
                            (IDS_PER_FETCH,),
                        )
                    ],
                    write=False,
                )
                self._ids = sorted(fetched, reverse=True)
            return self._ids.pop()

    # ── operations ──────────────────────────────────────────────────────────────

    async def add_ids(self, rows: Sequence[GivenId], build: BuildReceipt) -> list[PendingReceipt]:
        def work(connection: Connection) -> list[PendingReceipt]:
            kept = [row for row in rows if row.kept]
            waiting = self._with_outcomes(connection, kept)
            new = [r for r in kept if r.id not in waiting]
            if new:
                encode = given_encoder.encode
                columns = [
                    [r.id for r in new],
                    [r.system_id for r in new],
                    [r.msg_id for r in new],
                    [self.node] * len(new),
                    [encode(r) for r in new],
                ]
                connection.execute(SQL_INSERT_IDS, columns)
            return self._convert(connection, kept, waiting, build)

        result: list[PendingReceipt] = await self._run(work)
        return result

    async def link(self, rows: Sequence[GivenId], build: BuildReceipt) -> list[PendingReceipt]:
        def work(connection: Connection) -> list[PendingReceipt]:
            kept = [row for row in rows if row.kept]
            waiting = self._with_outcomes(connection, kept)
            if kept:
                encode = given_encoder.encode
                connection.execute(
                    SQL_LINK,
                    [[r.id for r in kept], [r.msg_id for r in kept], [encode(r) for r in kept]],
                )
            gone = [r.id for r in rows if not r.kept]
            if gone:
                connection.execute("DELETE FROM smpp_ids WHERE id = ANY(%b::int8[])", (gone,))
            return self._convert(connection, kept, waiting, build)

        result: list[PendingReceipt] = await self._run(work)
        return result

    async def settle_messages(
        self, outcomes: Mapping[str, Outcome], build: BuildReceipt, *, now: float
    ) -> tuple[list[PendingReceipt], set[str]]:
        def work(connection: Connection) -> tuple[list[PendingReceipt], set[str]]:
            return _settle(connection, outcomes, build, keep_at=now)

        result: tuple[list[PendingReceipt], set[str]] = await self._run(work)
        return result

    async def settle_final(
        self, before: float, build: BuildReceipt, window: int = SWEEP_WINDOW
    ) -> list[PendingReceipt]:
        """Ids whose message the journal holds as final since before `before` (its final
        event never became receipts: the node that made it died first) end with the
        journal's outcome (engine.smpp.receipts.outcome_of_final). Each call looks at
        the next `window` ids, from the first again after the last."""

        def work(connection: Connection) -> list[PendingReceipt]:
            start = self._swept_to
            row = connection.execute(SQL_SWEEP_WINDOW_END, (start, window)).fetchone()
            end = row[0] if row is not None else None
            self._swept_to = 0 if end is None else int(end)
            if end is None:
                return []
            found = connection.execute(SQL_FINAL_IDS, (start, end, before)).fetchall()
            outcomes = {
                str(msg_id): outcome
                for msg_id, final, code, at in found
                if (outcome := outcome_of_final(final, code, at)) is not None
            }
            receipts, _ = _settle(connection, outcomes, build, keep_at=None)
            return receipts

        result: list[PendingReceipt] = await self._run(work)
        return result

    async def settle_ids(
        self, rows: Sequence[GivenId], outcome: Outcome, build: BuildReceipt
    ) -> list[PendingReceipt]:
        def work(connection: Connection) -> list[PendingReceipt]:
            return self._convert(connection, rows, {r.id: outcome for r in rows}, build)

        result: list[PendingReceipt] = await self._run(work)
        return result

    async def forget_outcomes(self, before: float) -> int:
        def work(connection: Connection) -> int:
            return connection.execute("DELETE FROM smpp_outcomes WHERE at < %s", (before,)).rowcount

        forgotten: int = await self._run(work)
        return forgotten

    async def delete_receipts(self, ids: Sequence[int]) -> None:
        wanted = list(ids)
        await self._run(
            lambda connection: connection.execute(
                "DELETE FROM smpp_receipts WHERE id = ANY(%b::int8[])", (wanted,)
            )
        )

    async def waiting_parts(self) -> list[GivenId]:
        """This node's waiting parts, and those of nodes that are no longer live (now
        this node's)."""

        def work(connection: Connection) -> list[GivenId]:
            found = connection.execute(
                SQL_ADOPT_PARTS, {"node": self.node, **self._since()}
            ).fetchall()
            return sorted((given_decoder.decode(body) for (body,) in found), key=lambda r: r.id)

        result: list[GivenId] = await self._run(work)
        return result

    async def pending_receipts(self) -> list[PendingReceipt]:
        def work(connection: Connection) -> list[PendingReceipt]:
            found = connection.execute("SELECT body FROM smpp_receipts ORDER BY id").fetchall()
            return [receipt_decoder.decode(body) for (body,) in found]

        result: list[PendingReceipt] = await self._run(work, write=False)
        return result

    async def counts(self) -> dict[str, int]:
        def work(connection: Connection) -> dict[str, int]:
            row = connection.execute(
                "SELECT (SELECT count(*) FROM smpp_ids), (SELECT count(*) FROM smpp_outcomes),"
                " (SELECT count(*) FROM smpp_receipts)"
            ).fetchone()
            assert row is not None
            return {"message_ids": int(row[0]), "outcomes": int(row[1]), "receipts": int(row[2])}

        result: dict[str, int] = await self._run(work, write=False)
        return result

    # ── receipt claims (engine.smpp.storage.ReceiptClaims) ──────────────────────

    async def claim(
        self, system_id: str, groups: Sequence[BindGroup], limit: int
    ) -> list[PendingReceipt]:
        parameters = {
            "system_id": system_id,
            "types": [group[0] for group in groups],
            "ranges": [group[1] for group in groups],
            "node": self.node,
            "limit": limit,
            **self._since(),
        }

        def work(connection: Connection) -> list[PendingReceipt]:
            found = connection.execute(SQL_CLAIM, parameters).fetchall()
            receipts = [receipt_decoder.decode(body) for (body,) in found]
            return sorted(receipts, key=lambda receipt: receipt.id)

        result: list[PendingReceipt] = await self._run(work)
        return result

    async def release(self, ids: Sequence[int]) -> None:
        wanted = list(ids)

        def work(connection: Connection) -> None:
            released = connection.execute(
                "UPDATE smpp_receipts SET claimed_by = NULL"
                " WHERE id = ANY(%b::int8[]) AND claimed_by = %b",
                (wanted, self.node),
            ).rowcount
            if released:
                _notify(connection)

        await self._run(work)

    async def release_all(self) -> int:
        def work(connection: Connection) -> int:
            released = connection.execute(
                "UPDATE smpp_receipts SET claimed_by = NULL WHERE claimed_by = %b", (self.node,)
            ).rowcount
            # This node's binds, and those dead nodes left (never read again).
            connection.execute(SQL_FORGET_BINDS, {"node": self.node, **self._since()})
            _notify(connection)
            return int(released)

        released: int = await self._run(work)
        return released

    async def set_receivers(self, system_id: str, group: BindGroup, receivers: int) -> None:
        key = (self.node, system_id, group[0], group[1])

        def work(connection: Connection) -> None:
            if receivers > 0:
                connection.execute(
                    "INSERT INTO smpp_binds (node, system_id, system_type, address_range,"
                    " receivers) VALUES (%b, %b, %b, %b, %b) ON CONFLICT (node, system_id,"
                    " system_type, address_range) DO UPDATE SET receivers = excluded.receivers",
                    (*key, receivers),
                )
                return
            connection.execute(
                "DELETE FROM smpp_binds WHERE node = %b AND system_id = %b AND system_type = %b"
                " AND address_range = %b",
                key,
            )
            _notify(connection)  # the group's receipts may now go to another bind

        await self._run(work)

    async def serve_notifications(self, wake: Callable[[], None]) -> None:
        await listen(self.dsn, self.where, RECEIPTS_CHANNEL, wake)

    async def adopt_parts(self) -> list[GivenId]:
        def work(connection: Connection) -> list[GivenId]:
            found = connection.execute(
                SQL_ADOPT_DEAD_PARTS, {"node": self.node, **self._since()}
            ).fetchall()
            return sorted((given_decoder.decode(body) for (body,) in found), key=lambda r: r.id)

        result: list[GivenId] = await self._run(work)
        return result

    # ── in a transaction, on the writer thread ──────────────────────────────────

    def _with_outcomes(self, connection: Connection, rows: Sequence[GivenId]) -> dict[int, Outcome]:
        """id -> its message's kept outcome, for the rows whose message has one (under the
        messages' locks, held to the commit)."""
        msg_ids = sorted({row.msg_id for row in rows if row.msg_id is not None})
        if not msg_ids:
            return {}
        _lock_messages(connection, msg_ids)
        found = connection.execute(
            "SELECT msg_id, body FROM smpp_outcomes WHERE msg_id = ANY(%b::text[])", (msg_ids,)
        ).fetchall()
        kept = {str(msg_id): outcome_decoder.decode(body) for msg_id, body in found}
        return {row.id: kept[row.msg_id] for row in rows if row.msg_id in kept}

    def _convert(
        self,
        connection: Connection,
        rows: Sequence[GivenId],
        outcomes: Mapping[int, Outcome],
        build: BuildReceipt,
    ) -> list[PendingReceipt]:
        """The rows with an outcome leave and their receipts (if wanted) are stored."""
        ending, receipts = receipts_of(rows, outcomes, build)
        if ending:
            connection.execute(
                "DELETE FROM smpp_ids WHERE id = ANY(%b::int8[])", ([r.id for r in ending],)
            )
        _store_receipts(connection, receipts)
        return receipts


def _settle(
    connection: Connection,
    outcomes: Mapping[str, Outcome],
    build: BuildReceipt,
    *,
    keep_at: float | None,
) -> tuple[list[PendingReceipt], set[str]]:
    """The ids of these messages leave and their receipts are stored; with `keep_at`,
    the outcome of a message none of whose ids is stored is kept (at that time)."""
    msg_ids = sorted(outcomes)
    _lock_messages(connection, msg_ids)
    found = connection.execute(
        "DELETE FROM smpp_ids WHERE msg_id = ANY(%b::text[]) RETURNING body", (msg_ids,)
    ).fetchall()
    rows = sorted((given_decoder.decode(body) for (body,) in found), key=lambda r: r.id)
    matched = {row.msg_id for row in rows if row.msg_id is not None}
    unmatched = [m for m in msg_ids if m not in matched]
    if unmatched and keep_at is not None:
        encode = given_encoder.encode
        connection.execute(
            SQL_KEEP_OUTCOMES,
            [unmatched, [keep_at] * len(unmatched), [encode(outcomes[m]) for m in unmatched]],
        )
    ending = {row.id: outcomes[row.msg_id or ""] for row in rows}
    _, receipts = receipts_of(rows, ending, build)
    _store_receipts(connection, receipts)
    return receipts, matched


def _lock_messages(connection: Connection, msg_ids: Sequence[str]) -> None:
    if msg_ids:
        connection.execute(SQL_LOCK_MESSAGES, (MSG_LOCK_CLASS, list(msg_ids)))


def _store_receipts(connection: Connection, receipts: Sequence[PendingReceipt]) -> None:
    """Store receipts and wake the nodes (at COMMIT) so one with a suitable bind claims them."""
    if not receipts:
        return
    encode = given_encoder.encode
    connection.execute(
        SQL_INSERT_RECEIPTS,
        [
            [r.id for r in receipts],
            [r.system_id for r in receipts],
            [r.bind_group[0] for r in receipts],
            [r.bind_group[1] for r in receipts],
            [encode(r) for r in receipts],
        ],
    )
    _notify(connection)


def _notify(connection: Connection) -> None:
    connection.execute("SELECT pg_notify(%s, '')", (RECEIPTS_CHANNEL,))


@contextlib.asynccontextmanager
async def open_postgres_store(
    dsn: str, node: str, *, lease_s: float, clock: Callable[[], float] = time.time
) -> AsyncIterator[PostgresSmppStore]:
    """Open the store in the journal's database for the duration of the block (StoreError
    with a sentence when it cannot be); leaving it writes what is queued."""
    store = PostgresSmppStore(dsn, node, lease_s=lease_s, clock=clock)
    await store.open()
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
