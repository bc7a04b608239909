"""The Journal on PostgreSQL: several septet processes (nodes) on one database (cluster mode).

The engine sees the `Journal` protocol (engine.journal.interface); this backend keeps it in
a PostgreSQL database whose connection the group-commit writer (engine.journal.writer)
owns, as the SQLite backend does with its file: every operation of one event-loop turn in
one transaction, one commit. psycopg 3, a sync connection on the writer thread, was chosen
by bench/pg_clients.py (docs/design.md, "Cluster mode"). Groups of messages are written as
one statement over arrays (`unnest`), parameters sent binary (`%b`).

What holds across nodes, and how:
- a claim is a compare-and-set on rows locked `FOR UPDATE SKIP LOCKED`: of two nodes
  claiming one message, one wins, the other skips it (never waits, never deadlocks), and
  the row is stamped with the winner's node (`claimed_by`);
- client ids are unique per account by a unique index on each group's first message:
  `accept` inserts with ON CONFLICT DO NOTHING, and a group whose first message lost the
  race to another node is answered as the duplicate it is;
- msg_ids come from a sequence; event ids from a counter row every appending commit locks
  last, just before COMMIT, so they are in commit order across nodes (engine.feed);
- the counts of messages (not final, all) are kept per writer in `counters` and summed.

A failure of the server or the connection fails the group with a JournalError that says
so in a sentence; the next group connects again (connect_timeout, TCP keepalives and
tcp_user_timeout bound each try, statement_timeout and lock_timeout each statement), so a
database that went away gives callers a sentence within seconds, never a hang.

The schema and its migrations are in engine.journal.postgres_schema.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from typing import Any, Final, NamedTuple, TypeVar

import anyio
import msgspec
import psycopg
import structlog
from psycopg import conninfo, errors

from engine import feed, retention
from engine.cluster import NodeRecord
from engine.feed import AppendEvents, DeliveryOutcome, DueDelivery, FeedPage
from engine.journal.interface import (
    ACCEPTED_S,
    PRIORITY_LANES,
    SCHEDULED_S,
    STATE_NAMES,
    Change,
    Decide,
    Duplicate,
    JournalError,
    Listed,
    MarkCharged,
    MarkConfirmed,
    MarkFinal,
    MarkInflight,
    MarkPolled,
    MarkRetry,
    MarkSubmitted,
    MarkUnconfirmed,
    PollDue,
    R,
    SchedulePolls,
    StoreEvents,
    StoreOrphanReceipt,
    accepted_append,
    find_then_record,
    new_route,
    priority_lane,
    status_of_outcome,
    waiting_status,
)
from engine.journal.postgres_schema import META_EVENT_ID, create_or_migrate
from engine.journal.postgres_sql import (
    CHANGE_SQL,
    MESSAGE_COLUMNS,
    SQL_ACCOUNT_DAY,
    SQL_AWAITING_POLL,
    SQL_CANCEL,
    SQL_CLAIM,
    SQL_COUNT_ACCOUNT_DAYS,
    SQL_DUE_AFTER_IDS,
    SQL_DUE_IDS,
    SQL_DUE_WINDOW_IDS,
    SQL_FIND_CLIENT_REFS,
    SQL_INSERT_MESSAGES,
    SQL_NEXT_DUE,
    SQL_NEXT_EVENT_IDS,
    SQL_NEXT_MSG_ID,
    SQL_NEXT_OUTBOX_ID,
    SQL_PRUNE_DAYS,
    SQL_PRUNE_MESSAGES,
    SQL_PRUNE_ORPHANS,
    SQL_PRUNE_OUTBOX,
    SQL_PRUNE_WINDOW_END,
    SQL_REPORT_OVERDUE,
    SQL_TAKE_CLAIMS,
    SQL_UNCONFIRMED,
    SQL_WAITING_BY_IDS,
)
from engine.journal.writer import GroupCommitWriter
from engine.models import Message

__all__ = [
    "PostgresJournal",
    "PostgresTransactions",
    "describe_dsn",
    "listen",
    "open_postgres_journal",
]

# Bounds on a dead server or network: connecting, an unanswered TCP peer, one statement,
# waiting for another node's row lock (claims skip locked rows and never wait).
CONNECT_TIMEOUT_S: Final = 5
TCP_USER_TIMEOUT_MS: Final = 10_000
# The channel every node LISTENs on for outbox lines kept by any node (serve_notifications),
# and the pause before listening again after the connection was lost.
OUTBOX_CHANNEL: Final = "septet_outbox"
NOTIFY_RETRY_S: Final = 1.0
STATEMENT_TIMEOUT: Final = "30s"
LOCK_TIMEOUT: Final = "10s"

log = structlog.get_logger("septet.journal")

message_encoder: Final = msgspec.msgpack.Encoder()
message_decoder: Final = msgspec.msgpack.Decoder(Message)

T = TypeVar("T")
Connection = psycopg.Connection[Any]


def describe_dsn(dsn: str) -> str:
    """The database a DSN names, for sentences: host:port/dbname, never its password.
    Raises JournalError when `dsn` is not a libpq connection string or URL."""
    try:
        fields = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise JournalError(
            f"The journal's dsn is not a PostgreSQL connection string ({reason}); write it as"
            " 'postgresql://user@host:5432/dbname' or 'host=... dbname=...'."
        ) from None
    host = str(fields.get("host") or fields.get("hostaddr") or "localhost")
    return f"{host}:{fields.get('port') or 5432}/{fields.get('dbname') or fields.get('user') or ''}"


# What a failed call on the database raises, for callers that do not import the client.
DatabaseError = psycopg.Error


def reason_of(error: BaseException) -> str:
    """libpq's message, first line, without its trailing full stop."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__).rstrip(".")


def _message_from_row(row: Sequence[Any]) -> Message:
    message = message_decoder.decode(row[8])
    message.state = STATE_NAMES[row[1]]
    message.due_at = row[2]
    message.attempt = row[3]
    message.bridge_index = row[4]
    message.provider_id = row[5]
    message.inflight_at = row[6]
    message.maybe_sent_at = float(row[7] or 0.0)
    return message


def _unique_runs(rows: Sequence[tuple[Any, ...]], key: int = 0) -> Iterable[list[tuple[Any, ...]]]:
    """`rows` cut where a msg_id repeats: one UPDATE ... FROM unnest() changes a row once,
    so a message changed twice in a run is changed by two statements, in order (as the
    SQLite backend's executemany does)."""
    run: list[tuple[Any, ...]] = []
    seen: set[Any] = set()
    for row in rows:
        if row[key] in seen:
            yield run
            run, seen = [], set()
        run.append(row)
        seen.add(row[key])
    if run:
        yield run


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column: the arrays an unnest() statement takes."""
    return [list(column) for column in zip(*rows, strict=True)]


def _ids(msg_ids: Iterable[str]) -> list[int]:
    """The msg_ids a journal could have given out (digits); a change naming another
    message is ignored, as a change naming an unknown one is."""
    return [int(msg_id) for msg_id in msg_ids if msg_id.isdigit()]


def _change_rows(
    kind: type, run: Sequence[Any], node: str | None
) -> list[tuple[str, list[tuple[Any, ...]], list[Any]]]:
    """A run of one kind of change as (statement in CHANGE_SQL, its rows, the parameters
    before the arrays)."""
    if kind is MarkInflight:
        rows = [(m, c.bridge_index, c.attempt, c.at) for c in run for m in _ids(c.msg_ids)]
        return [("inflight", rows, [node])]
    if kind is MarkSubmitted:
        # Those still awaiting a report first, then those final at submit (as SQLite does).
        return [
            (
                "submitted_final" if final else "submitted",
                [
                    (m, c.provider_id, c.cost, c.currency, c.at, c.at if final else c.report_by)
                    for c in run
                    if c.final is final
                    for m in _ids([c.msg_id])
                ],
                [],
            )
            for final in (False, True)
        ]
    if kind not in ROWS_OF_CHANGE:
        raise TypeError(f"not a journal change: {kind.__name__}")
    statement, rows_of = ROWS_OF_CHANGE[kind]
    return [(statement, [row for change in run for row in rows_of(change)], [])]


# The other kinds: (statement in CHANGE_SQL, a change -> its rows).
ROWS_OF_CHANGE: Final[dict[type, tuple[str, Callable[[Any], list[tuple[Any, ...]]]]]] = {
    MarkRetry: (
        "retry",
        lambda c: [
            (
                m,
                c.due_at,
                c.attempt,
                c.bridge_index,
                c.reason,
                c.maybe_sent_at,
                waiting_status(c.attempt),
            )
            for m in _ids(c.msg_ids)
        ],
    ),
    MarkUnconfirmed: (
        "unconfirmed",
        lambda c: [(m, c.at, c.maybe_sent_at, c.report_by, c.error) for m in _ids([c.msg_id])],
    ),
    MarkConfirmed: (
        "confirmed",
        lambda c: [(m, c.provider_id, c.report_by) for m in _ids([c.msg_id])],
    ),
    MarkCharged: ("charged", lambda c: [(m, c.cost, c.currency) for m in _ids([c.msg_id])]),
    MarkFinal: (
        "final",
        lambda c: [
            (m, c.outcome, status_of_outcome(c.outcome), c.code, c.error, c.at)
            for m in _ids([c.msg_id])
        ],
    ),
    MarkPolled: ("polled", lambda c: [(m, c.at, c.next_at) for m in _ids(c.msg_ids)]),
    SchedulePolls: ("schedule_polls", lambda c: [(m, c.at) for m in _ids(c.msg_ids)]),
}


def connection_info(dsn: str, application_name: str) -> str:
    """`dsn` with the options of every connection septet makes (the writer's, the
    heartbeat's, a LISTEN's): the bounds above, and TCP keepalives that find a dead peer
    in about 11 s."""
    return conninfo.make_conninfo(
        dsn,
        connect_timeout=CONNECT_TIMEOUT_S,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        application_name=application_name,
    )


class PostgresLink:
    """The writer thread's connection, made again after the server or network dropped it."""

    def __init__(self, dsn: str, where: str) -> None:
        self.dsn = dsn
        self.where = where
        self.connection: Connection | None = None

    def ready(self) -> Connection:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            if connection is not None:
                with contextlib.suppress(psycopg.Error):
                    connection.close()
            self.connection = None
            connection = self.connection = self.connect()
        return connection

    def connect(self) -> Connection:
        connection = psycopg.connect(connection_info(self.dsn, "septet"), autocommit=True)
        connection.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        connection.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        return connection

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(psycopg.Error):
                self.connection.close()
            self.connection = None


class Snapshot(NamedTuple):
    """What a group changes in memory, restored when it rolls back."""

    pending: int
    total: int
    appends: int
    changes: int
    claims: int


class Claim(NamedTuple):
    """A claim an optimistic group writes at its end, with the others (PostgresJournal._claim):
    `claimed` is the caller's answer, filled in then."""

    messages: Sequence[Message]
    bridge_index: int
    at: float
    claimed: list[Message]


class PostgresTransactions:
    """The group-commit writer's transaction statements on a PostgresLink (one savepoint
    name: operations never nest), as engine.journal.sqlite_transactions is for SQLite.
    Shared by the journal and the SMPP store (engine.smpp.store_postgres)."""

    def close_connection(self, connection: PostgresLink) -> None:
        connection.close()

    def begin(self, connection: PostgresLink) -> None:
        connection.ready().execute("BEGIN")

    def savepoint(self, connection: PostgresLink) -> None:
        connection.ready().execute("SAVEPOINT operation")

    def release_savepoint(self, connection: PostgresLink) -> None:
        connection.ready().execute("RELEASE SAVEPOINT operation")

    def roll_back_to_savepoint(self, connection: PostgresLink) -> None:
        connection.ready().execute("ROLLBACK TO SAVEPOINT operation")

    def commit(self, connection: PostgresLink) -> None:
        connection.ready().execute("COMMIT")

    def roll_back(self, connection: PostgresLink) -> None:
        link = connection.connection
        if link is not None and not link.closed and not link.broken:
            with contextlib.suppress(psycopg.Error):
                link.execute("ROLLBACK")

    def is_transient(self, error: BaseException) -> bool:
        """A deadlock with another node (40P01) or a serialization failure (40001): the
        server rolled this group back to let the other through; it is tried again."""
        return isinstance(error, errors.DeadlockDetected | errors.SerializationFailure)


class _PostgresWriting(PostgresTransactions):
    """The writer's side of a PostgresJournal (engine.journal.writer.WriterBackend)."""

    def __init__(self, journal: PostgresJournal) -> None:
        self._journal = journal

    def open_connection(self) -> PostgresLink:
        return self._journal._open_link()

    def begin(self, connection: PostgresLink) -> None:
        super().begin(connection)
        # Optimistic until the writer takes a savepoint per operation (a careful try).
        self._journal._deferring = True

    def savepoint(self, connection: PostgresLink) -> None:
        self._journal._deferring = False
        super().savepoint(connection)

    def roll_back(self, connection: PostgresLink) -> None:
        self._journal._deliveries_added = []
        self._journal._deferring = False
        self._journal._deferred_changes.clear()
        self._journal._deferred_claims.clear()
        super().roll_back(connection)

    def is_storage_failure(self, error: BaseException) -> bool:
        """The server or the connection failed (class 08, 53, 57, 58, a timeout, a
        deadlock): not the caller's data."""
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)

    def failure(self, error: BaseException) -> BaseException:
        if isinstance(error, psycopg.Error):
            return JournalError(
                f"The journal at {self._journal.where} could not be written: {reason_of(error)}."
            )
        return error

    def snapshot(self) -> Snapshot:
        journal = self._journal
        return Snapshot(
            journal._pending_delta,
            journal._total_delta,
            len(journal._appends),
            len(journal._deferred_changes),
            len(journal._deferred_claims),
        )

    def restore(self, snapshot: Snapshot) -> None:
        journal = self._journal
        journal._pending_delta, journal._total_delta = snapshot.pending, snapshot.total
        del journal._appends[snapshot.appends :]
        del journal._deferred_changes[snapshot.changes :]
        del journal._deferred_claims[snapshot.claims :]

    def before_commit(self, connection: PostgresLink, snapshot: Snapshot) -> None:
        self._journal._before_commit(connection.ready())

    def after_commit(self, *, careful: bool) -> None:
        journal = self._journal
        journal._pending_delta = journal._total_delta = 0
        journal._appends.clear()
        journal._deferring = False
        journal._deferred_changes.clear()
        journal._deferred_claims.clear()
        if journal._deliveries_added:
            added = [] if careful else journal._deliveries_added
            journal._deliveries_added = []
            if journal.on_deliveries is not None:
                journal._writer.call_on_loop(journal.on_deliveries, added)


class PostgresJournal:
    """The Journal on a PostgreSQL database; this process's work runs on one writer thread."""

    # Other nodes write the same database (Journal.shared).
    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        on_commit: Callable[[float, int], None] | None = None,
        clock: Callable[[], float] = time.time,
        feed_accounts: Collection[str] | None = None,
        writer_name: str | None = None,
    ) -> None:
        """`dsn`: a libpq connection string or URL. `writer_name` keys this process's row
        of `counters` (default: one drawn per start). The rest as SqliteJournal's."""
        self.dsn = dsn
        self.where = describe_dsn(dsn)
        self._clock = clock
        self._feed_accounts = None if feed_accounts is None else frozenset(feed_accounts)
        self._writer_name = writer_name or f"run-{msgspec.json.encode(time.time_ns()).decode()}"
        self.instance = ""
        # The heartbeat's own connection (`heartbeat`), used one beat at a time.
        self._beat_link = PostgresLink(dsn, self.where)
        self._beat_limiter = anyio.CapacityLimiter(1)
        self._writer: GroupCommitWriter[PostgresLink, Snapshot] = GroupCommitWriter(
            _PostgresWriting(self),
            thread_name="septet-journal-pg",
            closed=lambda: JournalError(f"The journal at {self.where} is closed."),
            on_commit=on_commit,
        )
        # Owned by the writer thread: what the group being written changes.
        self._pending_delta = 0
        self._total_delta = 0
        self._appends: list[AppendEvents | int] = []
        # An optimistic group's claims and recorded changes, written together at its end
        # (_write_deferred): a statement per kind for the whole group, not one per caller.
        self._deferring = False
        self._deferred_changes: list[Change] = []
        self._deferred_claims: list[Claim] = []
        self._deliveries_added: list[DueDelivery] = []
        self.on_deliveries: Callable[[list[DueDelivery]], None] | None = None
        # Journal.on_kept_events: called by serve_notifications when a node kept outbox
        # lines (LISTEN/NOTIFY); engine.ingress.outbox also polls, in case one is missed.
        self.on_kept_events: Callable[[], None] | None = None
        self._bridges_json: dict[tuple[str, ...], str] = {}
        # This process's node (engine.membership) once it has joined: claims are stamped
        # with it and `inflight` is its claims only.
        self._node: str | None = None

    @property
    def commits(self) -> int:
        return self._writer.commits

    async def start(self) -> None:
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.close()
        await anyio.to_thread.run_sync(self._beat_link.close, limiter=self._beat_limiter)

    # ── on the writer thread ────────────────────────────────────────────────────

    def _open_link(self) -> PostgresLink:
        link = PostgresLink(self.dsn, self.where)
        try:
            connection = link.ready()
            create_or_migrate(connection, self.where)
            row = connection.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        except psycopg.Error as error:
            link.close()
            raise JournalError(
                f"Cannot open the journal at {self.where}: {reason_of(error)}."
            ) from None
        except JournalError:
            link.close()
            raise
        self.instance = str(row[0]) if row is not None else ""
        return link

    def _before_commit(self, connection: Connection) -> None:
        """The group's last statements: its deferred changes and claims, its feed events,
        with ids taken under the counter row's lock (held to COMMIT: ids in commit order),
        and this writer's counts."""
        self._write_deferred(connection)
        if self._appends:
            count = sum(
                change if isinstance(change, int) else len(change.events)
                for change in self._appends
            )
            row = connection.execute(SQL_NEXT_EVENT_IDS, (count, META_EVENT_ID)).fetchone()
            first = int(row[0]) - count + 1 if row is not None else 1
            planned = feed.plan_events(self._appends, first, self._clock(), self._feed_accounts)
            self._insert_events(connection, planned)
            self._deliveries_added += planned.owed
        if self._pending_delta or self._total_delta:
            connection.execute(
                "INSERT INTO counters (writer, pending, total) VALUES (%s, %s, %s)"
                " ON CONFLICT (writer) DO UPDATE SET pending = counters.pending"
                " + excluded.pending, total = counters.total + excluded.total",
                (self._writer_name, self._pending_delta, self._total_delta),
            )

    @staticmethod
    def _insert_events(connection: Connection, planned: feed.EventRows) -> None:
        if planned.events:
            connection.execute(
                "INSERT INTO events (id, account, msg_id, at, body) SELECT * FROM"
                " unnest(%b::bigint[], %b::text[], %b::bigint[], %b::float8[], %b::bytea[])",
                [
                    [bytes(v) if isinstance(v, bytearray) else v for v in column]
                    for column in _columns(planned.events)
                ],
            )
        for rows, method in ((planned.posts, "POST"), (planned.gets, "GET")):
            if rows:
                connection.execute(
                    "INSERT INTO deliveries (event_id, url, next_at, first_at, method)"
                    " SELECT e, u, n, f, %b FROM unnest(%b::bigint[], %b::text[],"
                    " %b::float8[], %b::float8[]) AS d(e, u, n, f)",
                    [method, *_columns(rows)],
                )

    async def _execute(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """Run `work(connection)` on the writer thread; writes share a group commit."""
        return await self._writer.execute(lambda link: work(link.ready()), write=write)

    # ── writes ──────────────────────────────────────────────────────────────────

    async def accept(self, groups: Sequence[Sequence[Message]]) -> list[list[Message] | Duplicate]:
        return await self._execute(lambda connection: self._accept(connection, groups), write=True)

    def _accept(
        self, connection: Connection, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]:
        try:
            return self._accept_groups(connection, groups)
        except Exception:
            for group in groups:
                for message in group:
                    message.msg_id = message.reference = ""
            raise

    def _existing_refs(
        self, connection: Connection, groups: Sequence[Sequence[Message]]
    ) -> dict[tuple[str, str], list[str]]:
        """(account, client_ref) -> the msg_ids already journaled under it."""
        keys = {(g[0].account, g[0].client_ref) for g in groups if g and g[0].client_ref}
        if not keys:
            return {}
        accounts, refs = zip(*keys, strict=True)
        rows = connection.execute(SQL_FIND_CLIENT_REFS, (list(accounts), list(refs))).fetchall()
        return {(row[0], row[1]): [str(msg_id) for msg_id in row[2]] for row in rows}

    def _accept_groups(
        self, connection: Connection, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]:
        existing = self._existing_refs(connection, groups)
        wanted = sum(len(group) for group in groups)
        ids = [
            row[0]
            for row in connection.execute(
                "SELECT nextval('message_ids') FROM generate_series(1, %s)", (wanted,)
            )
        ]
        next_ids = iter(ids)
        results: list[list[Message] | Duplicate] = []
        rows: list[tuple[Any, ...]] = []
        # The group of each first message that claims a client id: its msg_id -> index.
        firsts: dict[int, int] = {}
        for group in groups:
            if not group:
                results.append([])
                continue
            key = (group[0].account, group[0].client_ref or "")
            if group[0].client_ref is not None and key in existing:
                results.append(Duplicate(key[1], existing[key]))
                continue
            for position, message in enumerate(group):
                msg_id = next(next_ids)
                rows.append(self._message_row(message, msg_id, first=position == 0))
                if position == 0 and message.client_ref is not None:
                    firsts[msg_id] = len(results)
            if group[0].client_ref is not None:
                existing[key] = [message.msg_id for message in group]
            results.append(list(group))
        if rows:
            self._insert(connection, rows, firsts, results)
        return results

    def _message_row(self, message: Message, msg_id: int, *, first: bool) -> tuple[Any, ...]:
        message.msg_id = str(msg_id)
        message.reference = f"{self.instance}-{msg_id}"
        if not message.bridges:
            raise ValueError(f"message {msg_id} to {message.to} has no bridge")
        cache = self._bridges_json
        route = cache.get(message.bridges) or new_route(cache, message.bridges)
        return (
            msg_id,
            message.due_at,
            priority_lane(message.priority),
            route,
            message.bridge_index,
            message.bridges[message.bridge_index],
            message.attempt,
            message.client_ref,
            first,
            message.dlr,
            SCHEDULED_S if message.due_at > message.accepted_at else ACCEPTED_S,
            message.account,
            message_encoder.encode(message),
        )

    def _insert(
        self,
        connection: Connection,
        rows: list[tuple[Any, ...]],
        firsts: dict[int, int],
        results: list[list[Message] | Duplicate],
    ) -> None:
        """Insert the rows; a group whose client id another node took meanwhile becomes the
        duplicate it is (its other rows are taken out again, in this transaction)."""
        # Rows in (account, client id) order: two nodes inserting the same ids wait for each
        # other in one order, never in a cycle (a deadlock would fail both groups).
        rows.sort(key=lambda row: (row[11], row[7] or ""))
        inserted = {row[0] for row in connection.execute(SQL_INSERT_MESSAGES, _columns(rows))}
        lost = {index for msg_id, index in firsts.items() if msg_id not in inserted}
        for index in sorted(lost):
            group = results[index]
            assert isinstance(group, list)
            taken = [int(message.msg_id) for message in group]
            connection.execute("DELETE FROM messages WHERE msg_id = ANY(%b::bigint[])", (taken,))
            inserted.difference_update(taken)
            first = group[0]
            found = self._existing_refs(connection, [group])
            results[index] = Duplicate(
                first.client_ref or "", found.get((first.account, first.client_ref or ""), [])
            )
            for message in group:
                message.msg_id = message.reference = ""
        days: dict[tuple[str, int], int] = {}
        keep = self._feed_accounts
        for result in results:
            if isinstance(result, list) and result:
                # A group whose events nobody keeps (feed.keeps) has none built or stored.
                if keep is None or any(
                    feed.keeps(keep, feed.account_of(message), message.callback_url)
                    for message in result
                ):
                    self._appends.extend(accepted_append(message) for message in result)
                day = (result[0].account, int(result[0].accepted_at // 86400))
                days[day] = days.get(day, 0) + len(result)
        if days:
            connection.execute(
                SQL_COUNT_ACCOUNT_DAYS, _columns([(a, d, n) for (a, d), n in days.items()])
            )
        self._pending_delta += len(inserted)
        self._total_delta += len(inserted)

    async def claim(
        self,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
        *,
        record: Sequence[Change] = (),
    ) -> list[Message]:
        """accepted -> inflight for each message still accepted on `bridge_index` at the same
        attempt and not being claimed by another node right now; `record` is committed
        first, in the same transaction."""

        return await self._execute(
            lambda connection: self._claim(connection, messages, bridge_index, at, record),
            write=True,
        )

    def _claim(
        self,
        connection: Connection,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
        record: Sequence[Change],
    ) -> list[Message]:
        """In an optimistic group the claim waits for the group's end, where every caller's
        claims are one statement (_write_deferred); in a careful one it is made at once."""
        if record:
            self._record(connection, record)
        if not messages:
            return []
        claim = Claim(messages, bridge_index, at, [])
        if self._deferring:
            self._deferred_claims.append(claim)
        else:
            self._write_claims(connection, [claim])
        return claim.claimed

    def _write_claims(self, connection: Connection, claims: Sequence[Claim]) -> None:
        """Each claim's compare-and-set, in one statement per run of distinct msg_ids (a
        message two callers claim goes to the first, as one statement each would)."""
        rows = [
            (int(m.msg_id) if m.msg_id.isdigit() else 0, m.attempt, c.bridge_index, c.at, n)
            for n, c in enumerate(claims)
            for m in c.messages
        ]
        won: set[tuple[int, int]] = set()
        for part in _unique_runs(rows):
            columns = _columns([row[:4] for row in part])
            by_id = {row[0]: row[4] for row in part}
            for (msg_id,) in connection.execute(SQL_CLAIM, [self._node, *columns]):
                won.add((msg_id, by_id[msg_id]))
        for n, claim in enumerate(claims):
            for message in claim.messages:
                if message.msg_id.isdigit() and (int(message.msg_id), n) in won:
                    message.state = "inflight"
                    message.bridge_index = claim.bridge_index
                    message.inflight_at = claim.at
                    claim.claimed.append(message)

    def _write_deferred(self, connection: Connection) -> None:
        """An optimistic group's recorded changes, in the order recorded, then its claims."""
        if self._deferred_changes:
            changes, self._deferred_changes = self._deferred_changes, []
            self._record_now(connection, changes)
        if self._deferred_claims:
            claims, self._deferred_claims = self._deferred_claims, []
            self._write_claims(connection, claims)

    async def record(self, changes: Sequence[Change]) -> None:
        if changes:
            await self._execute(lambda connection: self._record(connection, changes), write=True)

    def _record(self, connection: Connection, changes: Sequence[Change]) -> None:
        """In an optimistic group, the changes wait for the group's end, with every other
        caller's (_write_deferred); in a careful one they are written at once."""
        if not self._deferring:
            self._record_now(connection, changes)
            return
        # The feed's events keep their place among the group's other events (accepted).
        self._appends.extend(change for change in changes if type(change) is AppendEvents)
        self._deferred_changes.extend(c for c in changes if type(c) is not AppendEvents)

    def _record_now(self, connection: Connection, changes: Sequence[Change]) -> None:
        """Consecutive changes of one kind become one statement (per run of distinct
        msg_ids); order is kept. Feed events join the group's at its commit: they are taken
        out first (in their order), so that a lifecycle's steps ([MarkSubmitted,
        AppendEvents] a message) still make one statement per kind, not one per message."""
        appends = [change for change in changes if type(change) is AppendEvents]
        if appends:
            self._appends.extend(appends)
            changes = [change for change in changes if type(change) is not AppendEvents]
        index = 0
        while index < len(changes):
            kind = type(changes[index])
            end = index + 1
            while end < len(changes) and type(changes[end]) is kind:
                end += 1
            run: Sequence[Any] = changes[index:end]
            index = end
            if kind is StoreOrphanReceipt:
                rows = [(c.bridge, c.provider_id, c.receipt, c.at) for c in run]
                connection.execute(
                    "INSERT INTO orphan_receipts (bridge, provider_id, receipt, at) SELECT *"
                    " FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::float8[])",
                    _columns(rows),
                )
            elif kind is StoreEvents:
                lines = [(change.origin, line) for change in run for line in change.events]
                if lines:
                    connection.execute(
                        "INSERT INTO outbox (origin, line) SELECT * FROM"
                        " unnest(%b::text[], %b::bytea[])",
                        _columns(lines),
                    )
                    # Delivered at COMMIT to every node listening (serve_notifications): the
                    # one the client is connected to takes the lines at once.
                    connection.execute("SELECT pg_notify(%s, '')", (OUTBOX_CHANNEL,))
            else:
                self._record_state_changes(connection, kind, run)

    def _record_state_changes(self, connection: Connection, kind: type, run: Sequence[Any]) -> None:
        for statement, rows, prefix in _change_rows(kind, run, self._node):
            for part in _unique_runs(rows) if rows else ():
                # By msg_id: nodes changing the same messages lock them in one order.
                part.sort(key=lambda row: int(row[0]))
                cursor = connection.execute(CHANGE_SQL[statement], [*prefix, *_columns(part)])
                if statement in {"final", "submitted_final"}:
                    self._pending_delta -= max(cursor.rowcount, 0)

    async def cancel(self, changes: Sequence[Change]) -> bool:
        """Carry out a cancel step: its MarkFinal as a compare-and-set on a message still
        waiting and never carried, and its other changes only when that won."""
        finals = [change for change in changes if isinstance(change, MarkFinal)]
        if len(finals) != 1:
            raise ValueError("a cancel step has exactly one MarkFinal")
        final = finals[0]
        rest = [change for change in changes if change is not final]

        def work(connection: Connection) -> bool:
            cursor = connection.execute(
                SQL_CANCEL,
                (
                    final.outcome,
                    status_of_outcome(final.outcome),
                    final.code,
                    final.error,
                    final.at,
                    int(final.msg_id) if final.msg_id.isdigit() else 0,
                ),
            )
            won = cursor.rowcount == 1
            if won:
                self._pending_delta -= 1
                if rest:
                    self._record(connection, rest)
            return won

        return await self._execute(work, write=True)

    async def take_orphan_receipts(self, bridge: str, provider_ids: Sequence[str]) -> list[bytes]:
        """Receipts stored for these provider ids, oldest first; they leave the journal."""
        if not provider_ids:
            return []

        def work(connection: Connection) -> list[bytes]:
            rows = connection.execute(
                "DELETE FROM orphan_receipts WHERE bridge = %b AND provider_id = ANY(%b::text[])"
                " RETURNING id, receipt",
                (bridge, list(provider_ids)),
            ).fetchall()
            return [bytes(receipt) for _, receipt in sorted(rows)]

        return await self._execute(work, write=True)

    async def orphan_receipt_ids(self) -> list[tuple[str, str, float]]:
        """(bridge, provider id, stored at) of every orphan receipt, oldest first."""
        return await self._execute(
            lambda connection: [
                (str(row[0]), str(row[1]), float(row[2]))
                for row in connection.execute(
                    "SELECT bridge, provider_id, min(at) FROM orphan_receipts"
                    " GROUP BY bridge, provider_id ORDER BY min(at), min(id)"
                )
            ],
            write=False,
        )

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]:
        """Outbox lines in the order stored (for `origin`, or any if None); they leave it."""
        where = "" if origin is None else "WHERE origin = %(origin)s"
        sql = (
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"  # noqa: S608
            f" {where} ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING id, line"
        )

        def work(connection: Connection) -> list[bytes]:
            rows = connection.execute(sql, {"origin": origin, "limit": limit}).fetchall()
            return [bytes(line) for _, line in sorted(rows)]

        return await self._execute(work, write=True)

    async def kept_origins(self, origins: Collection[str]) -> list[str]:
        """Which of `origins` have outbox lines (events another node kept for a client
        connected here: engine.ingress.outbox)."""
        wanted = sorted(origins)
        if not wanted:
            return []
        return await self._execute(
            lambda connection: [
                str(row[0])
                for row in connection.execute(
                    "SELECT DISTINCT origin FROM outbox WHERE origin = ANY(%b::text[])", (wanted,)
                )
            ],
            write=False,
        )

    async def prune(self, turn: retention.PruneTurn) -> retention.Pruned:
        """One retention turn (engine.retention): delete what it bounds, in one short
        transaction (PostgreSQL's autovacuum reuses the space)."""
        return await self._execute(lambda connection: self._prune(connection, turn), write=True)

    def _prune(self, connection: Connection, turn: retention.PruneTurn) -> retention.Pruned:
        below = retention.NO_END if turn.below is None else turn.below
        window = connection.execute(SQL_PRUNE_WINDOW_END, (turn.after, below, turn.limit))
        found = window.fetchone()
        last, looked = (found[0], int(found[1])) if found is not None else (0, 0)
        messages = 0
        if looked:
            messages = connection.execute(SQL_PRUNE_MESSAGES, (turn.after, last, turn.cut)).rowcount
        outbox = connection.execute(SQL_PRUNE_OUTBOX, (turn.outbox_below, turn.limit)).rowcount
        orphans = connection.execute(SQL_PRUNE_ORPHANS, (turn.limit, turn.cut)).rowcount
        yesterday = int(turn.cut // retention.SECONDS_PER_DAY) - 1
        days = connection.execute(SQL_PRUNE_DAYS, (yesterday,)).rowcount
        self._total_delta -= max(messages, 0)
        return retention.Pruned(
            deleted={
                "messages": max(messages, 0),
                "outbox": max(outbox, 0),
                "orphan_receipts": max(orphans, 0),
                "account_days": max(days, 0),
            },
            last_msg_id=int(last) if looked == turn.limit else None,
            next_msg_id=int(_scalar(connection, SQL_NEXT_MSG_ID)),
            next_outbox_id=int(_scalar(connection, SQL_NEXT_OUTBOX_ID)),
        )

    # ── the event feed and webhook deliveries (engine.feed) ─────────────────────

    async def feed(self, account: str, after: int, limit: int) -> FeedPage:
        """The account's events after the cursor `after`, oldest first (docs/events.md)."""
        limit = max(1, min(limit, feed.MAX_FEED_LIMIT))

        def read(connection: Connection) -> FeedPage:
            rows = connection.execute(
                "SELECT id, body FROM events WHERE account = %s AND id > %s ORDER BY id LIMIT %s",
                (account, max(after, 0), limit),
            ).fetchall()
            if not rows:
                return FeedPage([], max(after, 0))
            return FeedPage([bytes(row[1]) for row in rows], int(rows[-1][0]))

        return await self._execute(read, write=False)

    async def history(self, msg_id: str) -> list[bytes] | None:
        """A message's events in order; None when the journal has no message `msg_id`."""
        if not msg_id.isdigit():
            return None

        def read(connection: Connection) -> list[bytes] | None:
            known = connection.execute(
                "SELECT 1 FROM messages WHERE msg_id = %s", (int(msg_id),)
            ).fetchone()
            if known is None:
                return None
            return [
                bytes(row[0])
                for row in connection.execute(
                    "SELECT body FROM events WHERE msg_id = %s ORDER BY id", (int(msg_id),)
                )
            ]

        return await self._execute(read, write=False)

    async def sweep_events(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest feed events stored before `before`, except
        those a webhook still owes; returns how many went."""

        def work(connection: Connection) -> int:
            deleted = connection.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < %s"
                " AND id NOT IN (SELECT event_id FROM deliveries) ORDER BY id LIMIT %s)",
                (before, limit),
            ).rowcount
            connection.execute("DELETE FROM deliveries_gone WHERE at < %s", (before,))
            return max(deleted, 0)

        return await self._execute(work, write=True)

    async def due_deliveries(
        self, now: float, limit: int, exclude: frozenset[int] = frozenset()
    ) -> list[DueDelivery]:
        """Webhook deliveries due by `now`, earliest first, not in `exclude`."""

        def read(connection: Connection) -> list[DueDelivery]:
            rows = connection.execute(
                "SELECT d.event_id, d.url, d.attempts, d.first_at, e.account, e.msg_id, e.body,"
                " g.msg_id IS NOT NULL, d.method FROM deliveries d"
                " LEFT JOIN events e ON e.id = d.event_id"
                " LEFT JOIN deliveries_gone g ON g.msg_id = e.msg_id AND g.url = d.url"
                " WHERE d.next_at <= %s ORDER BY d.next_at, d.event_id LIMIT %s",
                (now, limit + len(exclude)),
            ).fetchall()
            found = [
                DueDelivery(
                    event_id=row[0],
                    url=row[1],
                    attempts=row[2],
                    first_at=row[3],
                    account=row[4] or feed.DEFAULT_ACCOUNT,
                    msg_id=str(row[5]) if row[5] is not None else "",
                    body=bytes(row[6]) if row[6] is not None else None,
                    gone=bool(row[7]),
                    method=str(row[8]),
                )
                for row in rows
                if row[0] not in exclude
            ]
            return found[:limit]

        return await self._execute(read, write=False)

    async def settle_deliveries(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Write what became of a batch of deliveries (one transaction)."""
        if not outcomes:
            return
        now = self._clock()

        def work(connection: Connection) -> None:
            gone = [outcome.event_id for outcome in outcomes if outcome.gone]
            if gone:
                connection.execute(
                    "INSERT INTO deliveries_gone (msg_id, url, at) SELECT e.msg_id, d.url, %s"
                    " FROM deliveries d JOIN events e ON e.id = d.event_id"
                    " WHERE d.event_id = ANY(%s::bigint[]) ON CONFLICT DO NOTHING",
                    (now, gone),
                )
            retries = [
                (outcome.event_id, outcome.attempts, outcome.next_at)
                for outcome in outcomes
                if outcome.next_at is not None
            ]
            if retries:
                connection.execute(
                    "UPDATE deliveries AS d SET attempts = c.attempts, next_at = c.next_at"
                    " FROM unnest(%b::bigint[], %b::int4[], %b::float8[])"
                    " AS c(id, attempts, next_at) WHERE d.event_id = c.id",
                    _columns(retries),
                )
            done = [outcome.event_id for outcome in outcomes if outcome.next_at is None]
            if done:
                connection.execute(
                    "DELETE FROM deliveries WHERE event_id = ANY(%b::bigint[])", (done,)
                )

        await self._execute(work, write=True)

    async def next_delivery_at(self, after: float | None = None) -> float | None:
        sql = "SELECT min(next_at) FROM deliveries"
        parameters: tuple[float, ...] = ()
        if after is not None:
            sql, parameters = f"{sql} WHERE next_at > %s", (after,)
        return await self._execute(
            lambda connection: _scalar(connection, sql, parameters), write=False
        )

    async def deliveries_owed(self) -> int:
        return int(
            await self._execute(
                lambda connection: _scalar(connection, "SELECT count(*) FROM deliveries") or 0,
                write=False,
            )
        )

    # ── reads ───────────────────────────────────────────────────────────────────

    async def due(
        self,
        now: float,
        limit: int,
        *,
        exclude: Collection[str] = (),
        after: Message | None = None,
        since: float | None = None,
    ) -> list[Message]:
        """Accepted messages due by `now`: highest priority first, then earliest due, then
        msg_id (as SqliteJournal.due)."""
        if limit <= 0:
            return []
        return await self._execute(
            lambda connection: self._due(connection, now, limit, exclude, after, since),
            write=False,
        )

    def _due(
        self,
        connection: Connection,
        now: float,
        limit: int,
        exclude: Collection[str],
        after: Message | None,
        since: float | None,
    ) -> list[Message]:
        """The ids first, lane by lane, then the messages: the ones the caller holds
        (often the earliest due, thousands under a backlog) cost an index entry each, never
        a row and its body sent over."""
        wanted: list[int] = []
        after_lane = priority_lane(after.priority) if after is not None else 10
        for lane in PRIORITY_LANES:
            if lane > after_lane:
                continue
            # Enough ids that the excluded ones cannot leave this lane's answer short.
            page = limit - len(wanted) + len(exclude)
            if after is not None and lane == after_lane:
                parameters: tuple[Any, ...] = (lane, now, after.due_at, int(after.msg_id), page)
                sql = SQL_DUE_AFTER_IDS
            elif since is not None:
                parameters, sql = (lane, since, now, page), SQL_DUE_WINDOW_IDS
            else:
                parameters, sql = (lane, now, page), SQL_DUE_IDS
            for (msg_id,) in connection.execute(sql, parameters):
                if exclude and str(msg_id) in exclude:
                    continue
                wanted.append(msg_id)
                if len(wanted) >= limit:
                    break
            if len(wanted) >= limit:
                break
        if not wanted:
            return []
        by_id = {
            row[0]: _message_from_row(row)
            for row in connection.execute(SQL_WAITING_BY_IDS, (wanted,))
        }
        return [by_id[msg_id] for msg_id in wanted if msg_id in by_id]

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        """The earliest due_at among accepted messages (strictly later than `after`)."""
        floor = float("-inf") if after is None else after

        def read(connection: Connection) -> float | None:
            values = [_scalar(connection, SQL_NEXT_DUE, (lane, floor)) for lane in PRIORITY_LANES]
            present = [float(value) for value in values if value is not None]
            return min(present) if present else None

        return await self._execute(read, write=False)

    async def inflight(self) -> list[Message]:
        """Messages in flight: after `join`, this node's claims only."""
        if self._node is None:
            sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE state = 1 ORDER BY msg_id"  # noqa: S608
            return await self._select(sql, ())
        return await self._select(
            f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
            " WHERE state = 1 AND claimed_by = %s ORDER BY msg_id",
            (self._node,),
        )

    async def find_by_provider_id(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> dict[str, Message]:
        """provider_id -> submitted or final message sent on `bridge` that asked for a report."""
        if not provider_ids:
            return {}
        found = await self._select(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE bridge = %s"  # noqa: S608
            " AND provider_id = ANY(%s::text[]) AND dlr AND state >= 2",
            (bridge, list(provider_ids)),
        )
        return {m.provider_id: m for m in found if m.provider_id is not None}

    async def find_and_record(
        self, bridge: str, provider_ids: Sequence[str], decide: Decide[R]
    ) -> R:
        """Two turns: an optimistic group defers its writes to its end (_write_deferred), so
        a lookup inside one would not see what earlier operations of the group changed."""
        return await find_then_record(self, bridge, provider_ids, decide)

    async def find_by_reference(self, references: Sequence[str]) -> dict[str, Message]:
        """reference -> message, for references this journal gave out."""
        prefix = f"{self.instance}-"
        msg_ids = {
            reference: reference[len(prefix) :]
            for reference in references
            if reference.startswith(prefix) and reference[len(prefix) :].isdigit()
        }
        if not msg_ids:
            return {}
        by_id = await self.get(list(msg_ids.values()))
        return {
            reference: by_id[msg_id] for reference, msg_id in msg_ids.items() if msg_id in by_id
        }

    async def awaiting_poll(self, bridge: str, now: float, limit: int) -> list[PollDue]:
        """Submitted messages on `bridge` that asked for a report and may be polled at `now`."""

        def read(connection: Connection) -> list[PollDue]:
            rows = connection.execute(SQL_AWAITING_POLL, (bridge, now, limit)).fetchall()
            return [PollDue(_message_from_row(row), row[9], row[10]) for row in rows]

        return await self._execute(read, write=False)

    async def report_overdue(self, now: float, limit: int) -> list[Message]:
        """Messages awaiting a report whose deadline has passed, earliest first."""
        return await self._select(SQL_REPORT_OVERDUE, (now, limit))

    async def unconfirmed(self, bridge: str) -> list[Message]:
        """Messages on `bridge` that may sit at the provider under an id never learned."""
        return await self._select(SQL_UNCONFIRMED, (bridge,))

    async def accepted_today(self, account: str, day: int) -> int:
        """Messages of `account` accepted on UTC `day` (days since 1970-01-01), cluster-wide."""
        value = await self._execute(
            lambda connection: _scalar(connection, SQL_ACCOUNT_DAY, (account, day)), write=False
        )
        return 0 if value is None else int(value)

    async def pending_count(self) -> int:
        """Messages not final yet, on every node (the writers' counters, summed)."""
        return (await self._totals())[0]

    async def _totals(self) -> tuple[int, int]:
        def read(connection: Connection) -> tuple[int, int]:
            row = connection.execute(
                "SELECT coalesce(sum(pending), 0), coalesce(sum(total), 0) FROM counters"
            ).fetchone()
            return (int(row[0]), int(row[1])) if row is not None else (0, 0)

        return await self._execute(read, write=False)

    async def counts(self) -> dict[str, int]:
        """Messages by phase: waiting and in flight counted on their indexes, the rest
        from the counters."""

        def read(connection: Connection) -> dict[str, int]:
            accepted = int(_scalar(connection, "SELECT count(*) FROM messages WHERE state = 0"))
            inflight = int(_scalar(connection, "SELECT count(*) FROM messages WHERE state = 1"))
            row = connection.execute(
                "SELECT coalesce(sum(pending), 0), coalesce(sum(total), 0) FROM counters"
            ).fetchone()
            pending, total = (int(row[0]), int(row[1])) if row is not None else (0, 0)
            return {
                "accepted": accepted,
                "inflight": inflight,
                "submitted": pending - accepted - inflight,
                "final": total - pending,
            }

        return await self._execute(read, write=False)

    async def kept_events_count(self) -> int:
        """Outbox lines kept for clients that went away and have not fetched them yet."""
        return int(
            await self._execute(
                lambda connection: _scalar(connection, "SELECT count(*) FROM outbox"),
                write=False,
            )
        )

    async def get(self, msg_ids: Sequence[str]) -> dict[str, Message]:
        numbers = [int(msg_id) for msg_id in msg_ids if msg_id.isdigit()]
        if not numbers:
            return {}
        found = await self._select(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE msg_id = ANY(%s::bigint[])",  # noqa: S608
            (numbers,),
        )
        return {message.msg_id: message for message in found}

    async def integrity_check(self) -> str:
        """'ok' when the database answers and holds the journal's schema version; what is
        wrong otherwise (PostgreSQL checks its own pages: amcheck is an operator's tool)."""

        def check(connection: Connection) -> str:
            version = _scalar(connection, "SELECT max(version) FROM schema_version")
            return "ok" if version is not None else "the schema_version table is empty"

        return await self._execute(check, write=False)

    async def messages_of(
        self,
        account: str,
        *,
        client_ref: str | None = None,
        status: str | None = None,
        since: float | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[Listed]:
        """The account's own messages, newest first (as SqliteJournal.messages_of)."""
        where = ["account = %s"]
        parameters: list[Any] = [account]
        if client_ref is not None:
            where.append("client_ref = %s")
            parameters.append(client_ref)
        if status is not None:
            where.append("status = %s")
            parameters.append(status)
        if before is not None:
            where.append("msg_id < %s")
            parameters.append(int(before) if before.isdigit() else 0)
        sql = (
            f"SELECT {MESSAGE_COLUMNS}, status FROM messages"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY msg_id DESC LIMIT %s"
        )

        def select(connection: Connection) -> list[Listed]:
            found: list[Listed] = []
            for row in connection.execute(sql, (*parameters, max(0, limit))):
                message = _message_from_row(row)
                if since is not None and message.accepted_at < since:
                    break
                found.append(Listed(message, row[9] or ""))
            return found

        return await self._execute(select, write=False)

    async def _select(self, sql: str, parameters: Sequence[Any]) -> list[Message]:
        return await self._execute(
            lambda connection: [
                _message_from_row(row) for row in connection.execute(sql, parameters)
            ],
            write=False,
        )

    # ── notifications ───────────────────────────────────────────────────────────

    async def serve_notifications(self) -> None:
        """Forever: `on_kept_events` whenever a node kept outbox lines (`listen`)."""
        await listen(self.dsn, self.where, OUTBOX_CHANNEL, self._kept_events)

    def _kept_events(self) -> None:
        if self.on_kept_events is not None:
            self.on_kept_events()

    # ── cluster membership (engine.membership, engine.cluster) ──────────────────

    async def node_record(self, node: str) -> NodeRecord | None:
        records = await self._node_records(node)
        return records[0] if records else None

    async def _node_records(self, node: str | None) -> list[NodeRecord]:
        return await self._execute(lambda connection: node_records(connection, node), write=False)

    async def join(self, node: str, run: str, now: float) -> None:
        """This process is `node` (run `run`) from now on: its row, and its stamp on claims."""
        await self._execute(
            lambda connection: connection.execute(
                "INSERT INTO nodes (node, run, started_at, heartbeat_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (node) DO UPDATE SET run = excluded.run, started_at ="
                " excluded.started_at, heartbeat_at = excluded.heartbeat_at, left_at = NULL",
                (node, run, now, now),
            ),
            write=True,
        )
        self._node = node

    async def heartbeat(self, node: str, run: str, now: float) -> bool:
        """False when the row is gone or another run holds the name.

        On a connection of its own (autocommit, on a worker thread), not in the writer's
        line: a node whose writer has a backlog of big groups is busy, not dead, and its
        heartbeat must not wait behind them for longer than its lease."""

        def beat() -> bool:
            try:
                return bool(
                    self._beat_link.ready()
                    .execute(
                        "UPDATE nodes SET heartbeat_at = %s WHERE node = %s AND run = %s",
                        (now, node, run),
                    )
                    .rowcount
                    == 1
                )
            except psycopg.Error as error:
                self._beat_link.close()
                raise JournalError(
                    f"The journal at {self.where} could not be written: {reason_of(error)}."
                ) from None

        return await anyio.to_thread.run_sync(beat, limiter=self._beat_limiter)

    async def leave(self, node: str, run: str, now: float) -> None:
        await self._execute(
            lambda connection: connection.execute(
                "UPDATE nodes SET left_at = %s WHERE node = %s AND run = %s", (now, node, run)
            ),
            write=True,
        )

    async def nodes(self) -> list[NodeRecord]:
        """Every node's row, with the claims it holds."""
        return await self._node_records(None)

    async def take_claims(self, dead: str, limit: int) -> list[Message]:
        """Up to `limit` of `dead`'s claims, restamped to this node in one commit."""
        return await self._execute(
            lambda connection: [
                _message_from_row(row)
                for row in connection.execute(SQL_TAKE_CLAIMS, (self._node, dead, limit))
            ],
            write=True,
        )

    async def forget_node(self, node: str, heartbeat_at: float) -> bool:
        """Delete `node`'s row if it holds no claim and its heartbeat is still `heartbeat_at`."""
        return await self._execute(
            lambda connection: (
                connection.execute(
                    "DELETE FROM nodes WHERE node = %s AND heartbeat_at = %s AND NOT EXISTS"
                    " (SELECT 1 FROM messages WHERE state = 1 AND claimed_by = %s)",
                    (node, heartbeat_at, node),
                ).rowcount
                == 1
            ),
            write=True,
        )


async def listen(dsn: str, where: str, channel: str, on_notify: Callable[[], None]) -> None:
    """Forever: `on_notify()` whenever a node notifies `channel`, on a LISTEN connection
    of its own (on the event loop: it only waits). A lost connection is made again after
    NOTIFY_RETRY_S; whoever is woken also polls to cover the gap, and a wake-up follows
    each new LISTEN for what came meanwhile."""
    while True:
        try:
            connection = await psycopg.AsyncConnection.connect(
                connection_info(dsn, "septet-listen"), autocommit=True
            )
            async with connection:
                await connection.execute(f"LISTEN {channel}")
                on_notify()
                async for _ in connection.notifies():
                    on_notify()
        except psycopg.Error as error:
            log.warning("notifications_lost", where=where, channel=channel, error=reason_of(error))
        await anyio.sleep(NOTIFY_RETRY_S)


def node_records(connection: Connection, node: str | None = None) -> list[NodeRecord]:
    """The nodes' rows (or `node`'s), each with the claims it holds (`septet cluster status`
    reads them on a connection of its own)."""
    rows = connection.execute(
        "SELECT n.node, n.run, n.started_at, n.heartbeat_at, n.left_at,"
        " (SELECT count(*) FROM messages m WHERE m.state = 1 AND m.claimed_by = n.node)"
        " FROM nodes n WHERE %(node)s::text IS NULL OR n.node = %(node)s ORDER BY n.node",
        {"node": node},
    ).fetchall()
    return [
        NodeRecord(
            node=row[0],
            run=row[1],
            started_at=row[2],
            heartbeat_at=row[3],
            left_at=row[4],
            claims=int(row[5]),
        )
        for row in rows
    ]


def _scalar(connection: Connection, sql: str, parameters: Sequence[Any] = ()) -> Any:
    row = connection.execute(sql, parameters).fetchone()
    return None if row is None else row[0]


@contextlib.asynccontextmanager
async def open_postgres_journal(
    dsn: str,
    *,
    on_commit: Callable[[float, int], None] | None = None,
    clock: Callable[[], float] = time.time,
    feed_accounts: Collection[str] | None = None,
) -> AsyncIterator[PostgresJournal]:
    """Open (creating or migrating the schema) the journal in the database `dsn` names,
    for the duration of the block. JournalError, with a sentence naming the database and
    the cause, when it cannot. Leaving the block finishes every queued operation."""
    journal = PostgresJournal(dsn, on_commit=on_commit, clock=clock, feed_accounts=feed_accounts)
    await journal.start()
    try:
        yield journal
    finally:
        with anyio.CancelScope(shield=True):
            await journal.close()
