"""The Journal on SQLite (WAL): one file, one writer thread, the queries on its partial indexes.

The engine sees the `Journal` protocol (engine.journal.interface); this backend keeps it
in one SQLite file whose connection the group-commit writer (engine.journal.writer) owns.
The schema and its migrations are in engine.journal.sqlite_schema.

Size cap (`max_size_bytes`, config `journal.max_size_mb`): SQLite's max_page_count makes
the cap hard. Before it is reached, `accept` refuses new messages with `JournalFullError`
while the file cannot also hold what the messages already in it still need (their state
changes, reports and outbox events, `ROOM_PER_PENDING_BYTES` each): what was accepted
can still be sent and reported, and only new input is turned away.

Durability: WAL with synchronous=NORMAL survives a crash of the process (kill -9): a
commit is in the WAL file before `accept` returns. It may lose the last commits on a
power loss or kernel crash; synchronous=FULL (fsync per commit) covers that too.

Storage: columns for what is queried or changes (state, due_at, priority, bridge,
provider_id, client_ref, the poll schedule, final outcome), the rest of the Message as a
msgpack blob written once at accept. Reading a message decodes the blob and lays the
changing columns over it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import anyio
import msgspec
import sniffio

from engine import feed, retention
from engine.cluster import NodeRecord
from engine.feed import AppendEvents, DeliveryOutcome, DueDelivery, FeedPage, PlainEvents
from engine.journal.interface import (
    ACCEPTED_S,
    INFLIGHT_S,
    PRIORITY_LANES,
    SCHEDULED_S,
    SENT_S,
    STATE_NAMES,
    SUBMITTED_S,
    UNCONFIRMED_S,
    Change,
    Decide,
    Duplicate,
    JournalError,
    JournalFullError,
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
    accepted_event,
    new_route,
    priority_lane,
    status_of_outcome,
    waiting_status,
)
from engine.journal.sqlite_schema import META_EVENT_ID, SQL_SAVE_COUNTERS, create_or_migrate
from engine.journal.sqlite_transactions import SqliteTransactions
from engine.journal.writer import GroupCommitWriter
from engine.models import OUTCOME_SENT, Message
from engine.private_files import create_private

__all__ = [
    "SqliteJournal",
    "count_kept_events",
    "count_states",
    "open_sqlite_journal",
]

SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
# SQLite's default limit on host parameters is 32766 (since 3.32); stay far below it.
PARAMETERS_PER_QUERY: Final = 500
# Room kept free under a size cap for each message not yet final: the columns and index
# entries its later states fill in, and two or three outbox event lines for a client that
# has gone. Generous on purpose: running out there fails work already promised.
ROOM_PER_PENDING_BYTES: Final = 1024
# And for everything else (orphan receipts, counters, SQLite's own bookkeeping).
ROOM_FIXED_PAGES: Final = 64

message_encoder: Final = msgspec.msgpack.Encoder()
message_decoder: Final = msgspec.msgpack.Decoder(Message)

T = TypeVar("T")

# The bridge in use, bridges[bridge_index], as SQL over a bound bridge index: stored in
# the `bridge` column by every change that moves a message to another bridge.
SQL_BRIDGE_AT: Final = "json_extract(bridges, '$[' || ? || ']')"


class _ChargedFinal(NamedTuple):
    """A MarkCharged and the MarkFinal that follows it for the same message (a report that
    states the provider's charge: engine.lifecycle.on_report), written as one UPDATE. Both
    change a message only while it is not final, so together they change it or nothing,
    as the two did one after the other."""

    charged: MarkCharged
    final: MarkFinal


def _pair_charges_with_finals(changes: Sequence[Change]) -> list[Change | _ChargedFinal]:
    """`changes`, each MarkCharged directly followed by its message's MarkFinal paired."""
    paired: list[Change | _ChargedFinal] = []
    index = 0
    while index < len(changes):
        change = changes[index]
        following = changes[index + 1] if index + 1 < len(changes) else None
        if (
            type(change) is MarkCharged
            and type(following) is MarkFinal
            and following.msg_id == change.msg_id
        ):
            paired.append(_ChargedFinal(change, following))
            index += 2
            continue
        paired.append(change)
        index += 1
    return paired


class MultiRow(NamedTuple):
    """A statement over many rows at once: `head` VALUES `row`, `row`, ... `tail`; `one`,
    when given, is the statement for a single row (the same parameters)."""

    head: str
    row: str
    tail: str = ""
    one: str | None = None


# Every query below interpolates only these constants and "?" placeholders, never data:
# that is why the f-strings carry `noqa: S608`.
# The columns a Message is rebuilt from, in this order (see `_message_from_row`).
MESSAGE_COLUMNS: Final = (
    "msg_id, state, due_at, attempt, bridge_index, provider_id, inflight_at, maybe_sent, body"
)

# Python's sqlite3 binds int, float, str and bytearray directly; any other value (None,
# bool, bytes) goes through its adapter lookup, which costs about as much as a row's own
# insert. So hot statements take a bytearray body and 0/1 flags, and a value that is
# often None (client_ref, a provider's cost) has a statement of its own that writes NULL.
SQL_INSERT_MESSAGE: Final = MultiRow(
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, dlr, status, first_event, account, body, client_ref)",
    "(?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
SQL_INSERT_MESSAGE_WITHOUT_CLIENT_REF: Final = MultiRow(
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, dlr, status, first_event, account, body)",
    "(?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
SQL_FIND_CLIENT_REF: Final = (
    "SELECT msg_id FROM messages WHERE account = ? AND client_ref = ? ORDER BY msg_id"
)
SQL_COUNT_ACCOUNT_DAY: Final = (
    "INSERT INTO account_days (account, day, messages) VALUES (?, ?, ?)"
    " ON CONFLICT (account, day) DO UPDATE SET messages = messages + excluded.messages"
)
SQL_ACCOUNT_DAY: Final = "SELECT messages FROM account_days WHERE account = ? AND day = ?"
# Changes never touch a final message: final is final (a late, stale change is dropped).
SQL_CLAIM: Final = (
    f"UPDATE messages SET state = 1, status = '{INFLIGHT_S}', inflight_at = ?"  # noqa: S608
    " WHERE msg_id = ? AND state = 0 AND bridge_index = ? AND attempt = ?"
)
# SQL_CLAIM over many messages at one attempt, their ids a JSON array: one statement, so
# SQLite sets it up once (a cursor on the table and each index it touches), not per row.
SQL_CLAIM_MANY: Final = (
    f"UPDATE messages SET state = 1, status = '{INFLIGHT_S}', inflight_at = ?"  # noqa: S608
    " WHERE msg_id IN (SELECT value FROM json_each(?)) AND state = 0 AND bridge_index = ?"
    " AND attempt = ?"
)
SQL_MARK_INFLIGHT: Final = (
    f"UPDATE messages SET state = 1, bridge_index = ?, bridge = {SQL_BRIDGE_AT}, attempt = ?,"  # noqa: S608
    f" status = '{INFLIGHT_S}', inflight_at = ? WHERE msg_id = ? AND state < 3"
)


def _mark_submitted_sql(*, final: bool, priced: bool) -> MultiRow:
    """MarkSubmitted's UPDATE over many messages at once (`_run_rows`), one row of values
    each: provider_id, [cost, currency,] at, [report_by,] msg_id. One statement per chunk
    of rows rather than one per message: SQLite sets a statement up and ends it (a cursor
    on the table and each index it touches) once per chunk. A request's messages are
    distinct, so no message meets two rows of one statement.

    A single row is a plain UPDATE by msg_id with the same parameters (`one`): UPDATE ...
    FROM (VALUES ...) materializes its values and, as it may change many rows, opens a
    statement journal, which for one row cost more than the statement itself (callgrind,
    /tmp/dlrcpu9/ubc.py: 122k instructions an update against 69k, commits included)."""
    names = ["provider_id"]
    if priced:
        names += ["cost", "currency"]
    names.append("at")
    if not final:
        names.append("report_by")
    names.append("msg_id")
    many = {name: f"v.column{index}" for index, name in enumerate(names, 1)}
    one = {name: f"?{index}" for index, name in enumerate(names, 1)}
    return MultiRow(
        f"UPDATE messages SET {_submitted_change(many, final=final, priced=priced)} FROM (",  # noqa: S608
        f"({', '.join('?' * len(names))})",
        f") AS v WHERE messages.msg_id = {many['msg_id']} AND messages.state < 3",
        f"UPDATE messages SET {_submitted_change(one, final=final, priced=priced)}"  # noqa: S608
        f" WHERE msg_id = {one['msg_id']} AND state < 3",
    )


def _submitted_change(column: dict[str, str], *, final: bool, priced: bool) -> str:
    """The SET list of MarkSubmitted's UPDATE, each value taken from `column[name]`."""
    cost = (
        f"submit_cost = {column['cost']}, submit_currency = {column['currency']}"
        if priced
        else "submit_cost = NULL, submit_currency = NULL"
    )
    if final:
        return (
            f"state = 3, provider_id = {column['provider_id']}, {cost},"
            f" submitted_at = {column['at']}, outcome = '{OUTCOME_SENT}', status = '{SENT_S}',"
            f" code = NULL, error = NULL, final_at = {column['at']}"
        )
    return (
        f"state = 2, provider_id = {column['provider_id']}, {cost},"
        f" submitted_at = {column['at']}, status = '{SUBMITTED_S}',"
        f" due_at = {column['report_by']}"
    )


# (final, priced) -> statement
SQL_MARK_SUBMITTED: Final = {
    (final, priced): _mark_submitted_sql(final=final, priced=priced)
    for final in (False, True)
    for priced in (False, True)
}
SQL_MARK_RETRY: Final = (
    f"UPDATE messages SET state = 0, due_at = ?, attempt = ?, bridge_index = ?,"  # noqa: S608
    f" bridge = {SQL_BRIDGE_AT}, retry_reason = ?, maybe_sent = ?, status = ?"
    " WHERE msg_id = ? AND state < 3"
)
SQL_MARK_UNCONFIRMED: Final = (
    "UPDATE messages SET state = 2, submitted_at = ?, maybe_sent = ?, due_at = ?, error = ?,"  # noqa: S608
    f" status = '{UNCONFIRMED_S}' WHERE msg_id = ? AND state < 3"
)
SQL_MARK_CONFIRMED: Final = (
    "UPDATE messages SET provider_id = coalesce(?, provider_id), due_at = ?,"  # noqa: S608
    f" status = '{SUBMITTED_S}' WHERE msg_id = ? AND state = 2"
)
SQL_MARK_CHARGED: Final = (
    "UPDATE messages SET submit_cost = ?, submit_currency = ? WHERE msg_id = ? AND state < 3"
)
SQL_REPORT_OVERDUE: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_report_due"  # noqa: S608
    " WHERE state = 2 AND due_at <= ? ORDER BY due_at LIMIT ?"
)
SQL_UNCONFIRMED: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_unconfirmed"  # noqa: S608
    " WHERE state = 2 AND provider_id IS NULL AND bridge = ? ORDER BY msg_id"
)
SQL_MARK_FINAL: Final = (
    "UPDATE messages SET state = 3, outcome = ?, status = ?, code = ?, error = ?, final_at = ?"
    " WHERE msg_id = ? AND state < 3"
)
# A MarkCharged and the MarkFinal after it, for one message (`_ChargedFinal`), as one UPDATE.
SQL_MARK_CHARGED_FINAL: Final = (
    "UPDATE messages SET submit_cost = ?, submit_currency = ?, state = 3, outcome = ?,"
    " status = ?, code = ?, error = ?, final_at = ? WHERE msg_id = ? AND state < 3"
)
# A cancel (engine.lifecycle.on_cancel) wins only over a message still waiting that no
# request has carried: a compare-and-set against the claim (SQL_CLAIM), which the writer
# runs one at a time, so a message is either claimed or cancelled, never both.
SQL_CANCEL: Final = (
    "UPDATE messages SET state = 3, outcome = ?, status = ?, code = ?, error = ?, final_at = ?"
    " WHERE msg_id = ? AND state = 0 AND attempt = 0 AND maybe_sent = 0"
)
SQL_MARK_POLLED: Final = (
    "UPDATE messages SET last_polled_at = ?, polls = polls + 1, next_poll_at = ?"
    " WHERE msg_id = ? AND state = 2"
)
SQL_SCHEDULE_POLLS: Final = (
    "UPDATE messages SET next_poll_at = ? WHERE msg_id = ? AND state = 2 AND next_poll_at = 0"
)
SQL_AWAITING_POLL: Final = (
    f"SELECT {MESSAGE_COLUMNS}, polls, next_poll_at FROM messages"  # noqa: S608
    " INDEXED BY messages_awaiting"
    " WHERE state = 2 AND dlr = 1 AND bridge = ? AND next_poll_at <= ?"
    " ORDER BY next_poll_at, msg_id LIMIT ?"
)
SQL_STORE_ORPHAN: Final = (
    "INSERT INTO orphan_receipts (bridge, provider_id, receipt, at) VALUES (?, ?, ?, ?)"
)
SQL_STORE_EVENT: Final = "INSERT INTO outbox (origin, line) VALUES (?, ?)"
SQL_DUE: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_due"  # noqa: S608
    " WHERE state = 0 AND priority = ? AND due_at <= ? ORDER BY due_at, msg_id"
)
SQL_DUE_AFTER: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_due"  # noqa: S608
    " WHERE state = 0 AND priority = ? AND due_at <= ? AND (due_at, msg_id) > (?, ?)"
    " ORDER BY due_at, msg_id"
)
SQL_DUE_WINDOW: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_due"  # noqa: S608
    " WHERE state = 0 AND priority = ? AND due_at > ? AND due_at <= ?"
    " ORDER BY due_at, msg_id"
)
SQL_NEXT_DUE: Final = (
    "SELECT min(due_at) FROM messages INDEXED BY messages_due"
    " WHERE state = 0 AND priority = ? AND due_at > ?"
)


def count_states(
    connection: sqlite3.Connection, pending: int | None = None, total: int | None = None
) -> dict[str, int]:
    """Messages by phase: the waiting and in-flight ones counted on their indexes, the rest
    from the counters kept with each commit (`pending`, `total`; read from `meta`, as the
    last commit left them, when not given: a read-only connection's way)."""
    if pending is None or total is None:
        meta = dict(
            connection.execute("SELECT key, value FROM meta WHERE key IN ('pending', 'total')")
        )
        pending, total = int(meta.get("pending", 0)), int(meta.get("total", 0))
    accepted = connection.execute(
        "SELECT count(*) FROM messages INDEXED BY messages_due WHERE state = 0"
    ).fetchone()[0]
    inflight = connection.execute(
        "SELECT count(*) FROM messages INDEXED BY messages_inflight WHERE state = 1"
    ).fetchone()[0]
    return {
        "accepted": accepted,
        "inflight": inflight,
        "submitted": pending - accepted - inflight,
        "final": total - pending,
    }


def count_kept_events(connection: sqlite3.Connection) -> int:
    """Outbox lines kept for NDJSON clients that went away."""
    return int(connection.execute("SELECT count(*) FROM outbox").fetchone()[0])


def _final_params(final: MarkFinal) -> tuple[Any, ...]:
    """A final state's parameters, in the order SQL_MARK_FINAL, SQL_CANCEL and (after the
    charge) SQL_MARK_CHARGED_FINAL take them: outcome, status, code, error, at, msg_id."""
    return (
        final.outcome,
        status_of_outcome(final.outcome),
        final.code,
        final.error,
        final.at,
        final.msg_id,
    )


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


# Rows per multi-row statement (`_run_rows`): a few fixed sizes, so a handful of prepared
# statements serve every count, and 64 rows of any statement here stay under SQLite's
# oldest limit of 999 parameters.
ROWS_PER_STATEMENT: Final = (64, 16, 4, 1)


@functools.cache
def _multi_row_sql(statement: MultiRow, rows: int) -> str:
    if rows == 1 and statement.one is not None:
        return statement.one
    return f"{statement.head} VALUES {','.join([statement.row] * rows)}{statement.tail}"


def _run_rows(
    connection: sqlite3.Connection, statement: MultiRow, rows: Sequence[tuple[Any, ...]]
) -> int:
    """Run `statement` over `rows` with as few executions as ROWS_PER_STATEMENT allows, and
    return the rows it changed. SQLite sets each execution up (a cursor on the table and
    on every index it touches, freed at its end): executemany pays that for every row."""
    if len(rows) == 1:
        # One message (the HTTP API's requests): its one-row statement, the row as it is.
        sql = statement.one if statement.one is not None else _multi_row_sql(statement, 1)
        return int(connection.execute(sql, rows[0]).rowcount)
    done = changed = 0
    for size in ROWS_PER_STATEMENT:
        sql = _multi_row_sql(statement, size)
        while len(rows) - done >= size:
            chunk = rows[done : done + size]
            changed += connection.execute(sql, [value for row in chunk for value in row]).rowcount
            done += size
    return changed


def _chunks(items: Sequence[T], size: int = PARAMETERS_PER_QUERY) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _claim_rows(
    messages: Sequence[Message], bridge_index: int, at: float
) -> list[tuple[float, str, int, int]]:
    """SQL_CLAIM's parameters for each message."""
    return [(at, m.msg_id, bridge_index, m.attempt) for m in messages]


class _AcceptedEvents:
    """An accept's `accepted` events for the feed, in the order of its messages (their ids
    assigned). A group is one account's (feed.keeps: only callback URLs can differ).
    Consecutive groups of one account without a callback URL share one PlainEvents (the
    HTTP API's requests are a group per message); a group whose account keeps no feed only
    takes its events' ids, never built."""

    def __init__(self, keep: frozenset[str] | None) -> None:
        self.keep = keep
        self.changes: list[AppendEvents | PlainEvents | int] = []
        self._run: PlainEvents | None = None  # the last of `changes`, while it may grow

    def add(self, group: Sequence[Message]) -> None:
        first = group[0]
        if first.callback_url is not None or (
            len(group) > 1 and [m for m in group if m.callback_url is not None]
        ):
            self._run = None
            self.changes.extend(accepted_append(message) for message in group)
            return
        account = feed.account_of(first)
        run = self._run
        if run is None or run.account != account:
            if self.keep is not None and account not in self.keep:
                self._run = None
                self.changes.append(len(group))
                return
            self._run = run = PlainEvents(account, [], [])
            self.changes.append(run)
        for message in group:
            run.msg_ids.append(message.msg_id)
            run.events.append(accepted_event(message))


def _message_from_row(row: tuple[Any, ...]) -> Message:
    message = message_decoder.decode(row[8])
    message.state = STATE_NAMES[row[1]]
    message.due_at = row[2]
    message.attempt = row[3]
    message.bridge_index = row[4]
    message.provider_id = row[5]
    message.inflight_at = row[6]
    message.maybe_sent_at = float(row[7] or 0.0)
    return message


# The in-memory state kept with each commit: next msg_id, messages not final, all messages.
Counters = tuple[int, int, int]
# Their keys in `meta`, in that order.
COUNTER_KEYS: Final = ("next_msg_id", "pending", "total")
# What the feed's events held for a commit are: accepted events (`_AcceptedEvents`), a
# step's events, or a count of events not kept (ids only).
HeldEvents = list[AppendEvents | PlainEvents | int]


class _Held:
    """What the operations of the group being written leave for its commit to write at once,
    just before COMMIT (`SqliteJournal._write_held`): the accepted messages' rows, their
    accounts' day counts and the feed's events, each kind in as few statements as its rows
    allow. Their ids were handed out as each operation ran, in order. No operation of the
    same group reads them from the file: no caller knows an accepted message's id before
    its commit, the duplicate check asks `client_refs` too, and nothing reads the events
    table inside a write."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []  # SQL_INSERT_MESSAGE's
        self.rows_without_client_ref: list[tuple[Any, ...]] = []
        # (account, client_ref) -> the msg_ids of a group held here (the duplicate check).
        self.client_refs: dict[tuple[str, str], list[str]] = {}
        # (account, UTC day) -> messages accepted (the daily quota's count).
        self.days: dict[tuple[str, int], int] = {}
        self.events: HeldEvents = []
        self.events_from = 1  # the id of the first held event


class _JournalWriting(SqliteTransactions):
    """The writer's side of a SqliteJournal (engine.journal.writer.WriterBackend): its
    connection, its errors, and the counters and webhook deliveries of each commit."""

    def __init__(self, journal: SqliteJournal) -> None:
        self._journal = journal

    def open_connection(self) -> sqlite3.Connection:
        return self._journal._open_connection()

    def close_connection(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("PRAGMA optimize")
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def failure(self, error: BaseException) -> BaseException:
        return self._journal._error(error) if isinstance(error, sqlite3.Error) else error

    def begin(self, connection: sqlite3.Connection) -> None:
        self._journal._holding = True
        super().begin(connection)

    def savepoint(self, connection: sqlite3.Connection) -> None:
        # The writer takes a savepoint per operation only in a careful run (one operation
        # failed on its own data): each then writes its own rows, in its savepoint, so a
        # bad one fails that operation alone.
        self._journal._holding = False
        super().savepoint(connection)

    def roll_back(self, connection: sqlite3.Connection) -> None:
        journal = self._journal
        journal._deliveries_added = []
        journal._held = _Held()
        super().roll_back(connection)

    def snapshot(self) -> Counters:
        journal = self._journal
        return (journal._next_msg_id, journal._pending, journal._total)

    def restore(self, snapshot: Counters) -> None:
        journal = self._journal
        journal._next_msg_id, journal._pending, journal._total = snapshot

    def before_commit(self, connection: sqlite3.Connection, snapshot: Counters) -> None:
        """What the group's operations held for this commit, then the counters that changed
        since `snapshot` (a final report changes `pending` alone: one row written, not three)."""
        journal = self._journal
        journal._write_held(connection)
        counters = (journal._next_msg_id, journal._pending, journal._total)
        if counters != snapshot:
            connection.executemany(
                SQL_SAVE_COUNTERS,
                [
                    (key, value)
                    for key, value, before in zip(COUNTER_KEYS, counters, snapshot, strict=True)
                    if value != before
                ],
            )

    def after_commit(self, *, careful: bool) -> None:
        journal = self._journal
        if journal._deliveries_added:
            # After a careful run some operations' deliveries were undone: hand none over,
            # the worker reads what committed.
            added = [] if careful else journal._deliveries_added
            journal._deliveries_added = []
            if journal.on_deliveries is not None:
                journal._writer.call_on_loop(journal.on_deliveries, added)


# The changes whose rows one statement takes as they are, by kind: (statement, the rows of
# a run of that kind). MarkSubmitted, MarkFinal and a charged final are SqliteJournal's own.
_CHANGE_ROWS: Final[dict[type, tuple[str, Callable[[Sequence[Any]], list[tuple[Any, ...]]]]]] = {
    MarkInflight: (
        SQL_MARK_INFLIGHT,
        lambda run: [
            (c.bridge_index, c.bridge_index, c.attempt, c.at, msg_id)
            for c in run
            for msg_id in c.msg_ids
        ],
    ),
    MarkRetry: (
        SQL_MARK_RETRY,
        lambda run: [
            (
                c.due_at,
                c.attempt,
                c.bridge_index,
                c.bridge_index,
                c.reason,
                c.maybe_sent_at,
                waiting_status(c.attempt),
                msg_id,
            )
            for c in run
            for msg_id in c.msg_ids
        ],
    ),
    MarkUnconfirmed: (
        SQL_MARK_UNCONFIRMED,
        lambda run: [(c.at, c.maybe_sent_at, c.report_by, c.error, c.msg_id) for c in run],
    ),
    MarkConfirmed: (
        SQL_MARK_CONFIRMED,
        lambda run: [(c.provider_id, c.report_by, c.msg_id) for c in run],
    ),
    MarkCharged: (
        SQL_MARK_CHARGED,
        lambda run: [(c.cost, c.currency, c.msg_id) for c in run],
    ),
    MarkPolled: (
        SQL_MARK_POLLED,
        lambda run: [(c.at, c.next_at, msg_id) for c in run for msg_id in c.msg_ids],
    ),
    SchedulePolls: (
        SQL_SCHEDULE_POLLS,
        lambda run: [(c.at, msg_id) for c in run for msg_id in c.msg_ids],
    ),
    StoreOrphanReceipt: (
        SQL_STORE_ORPHAN,
        lambda run: [(c.bridge, c.provider_id, c.receipt, c.at) for c in run],
    ),
    StoreEvents: (
        SQL_STORE_EVENT,
        lambda run: [(c.origin, line) for c in run for line in c.events],
    ),
}


class SqliteJournal:
    """The Journal on one SQLite file; all SQLite work runs on one writer thread."""

    # One process per file (engine.journal_lock): the only node.
    shared = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        on_commit: Callable[[float, int], None] | None = None,
        max_size_bytes: int | None = None,
        cache_mb: int = 32,
        clock: Callable[[], float] = time.time,
        feed_accounts: Collection[str] | None = None,
    ) -> None:
        """`clock` stamps the feed's events (engine.feed: the retention sweep's times).
        `feed_accounts`: the accounts whose events the feed keeps (None: every account's);
        an event owed to a webhook or a Kannel dlr-url is kept whatever its account.
        `on_commit(seconds, operations)` is called on the writer thread after each commit."""
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise JournalError(
                f"synchronous must be one of {', '.join(sorted(SYNCHRONOUS_MODES))},"
                f" not {synchronous!r}."
            )
        self.path = Path(path)
        self.synchronous = mode
        self.max_size_bytes = max_size_bytes
        self.cache_mb = cache_mb
        self._clock = clock
        self._feed_accounts = None if feed_accounts is None else frozenset(feed_accounts)
        # Set on opening from the file's page size when there is a cap.
        self._max_pages: int | None = None
        self._page_size = 4096
        self.instance = ""
        self._writer: GroupCommitWriter[sqlite3.Connection, Counters] = GroupCommitWriter(
            _JournalWriting(self),
            thread_name="septet-journal",
            closed=lambda: JournalError(f"The journal {self.path} is closed."),
            on_commit=on_commit,
        )
        # Owned by the writer thread once it runs.
        self._next_msg_id = 1
        # The next event id (engine.feed): handed out in commit order, never reused.
        self._next_event_id = 1
        # The rows the operations of the group being written hold for its commit: the HTTP
        # API's one-message requests are an accept each, yet their messages go in with a
        # few multi-row INSERTs, and one account's events of many operations (accepts,
        # each dispatcher's submits) make one pack. Not while `_holding` is off (a careful
        # run: `_JournalWriting.savepoint`): each operation writes its own then.
        self._held = _Held()
        self._holding = True
        # Webhook deliveries added by the group being written; after its commit,
        # `on_deliveries` (the webhook worker's hand-off) is called on the event loop with
        # them, or with none when they may not all have committed (read them back then).
        self._deliveries_added: list[DueDelivery] = []
        self.on_deliveries: Callable[[list[DueDelivery]], None] | None = None
        # Never called: no other process keeps lines in this file (Journal.on_kept_events).
        self.on_kept_events: Callable[[], None] | None = None
        self._pending = 0
        self._total = 0
        self._bridges_json: dict[tuple[str, ...], str] = {}
        # This process's node (engine.membership), once it has joined.
        self._node: NodeRecord | None = None

    @property
    def commits(self) -> int:
        """Successful commits so far (tests and metrics)."""
        return self._writer.commits

    # ── life cycle ──────────────────────────────────────────────────────────────

    async def start(self) -> None:
        if sniffio.current_async_library() != "asyncio":
            raise JournalError("The SQLite journal runs on the asyncio backend (with uvloop).")
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.close()

    # ── on the writer thread ────────────────────────────────────────────────────

    def _error(self, error: sqlite3.Error) -> JournalError:
        reason = str(error).rstrip(".")
        if self._max_pages is not None and getattr(error, "sqlite_errorcode", None) == (
            sqlite3.SQLITE_FULL
        ):
            return JournalFullError(
                f"The journal {self.path} could not be written: it is full (journal.max_size_mb"
                f" = {self._cap_mib():g}): {reason}."
            )
        return JournalError(f"The journal {self.path} could not be written: {reason}.")

    def _cap_mib(self) -> float:
        return round((self.max_size_bytes or 0) / (1 << 20), 3)

    def _check_room(self, connection: sqlite3.Connection) -> None:
        """Under a size cap, refuse what was just inserted unless the file can still hold
        every pending message's remaining needs (see the module docstring)."""
        if self._max_pages is None:
            return
        used = (
            connection.execute("PRAGMA page_count").fetchone()[0]
            - connection.execute("PRAGMA freelist_count").fetchone()[0]
        )
        reserved = -(-self._pending * ROOM_PER_PENDING_BYTES // self._page_size) + ROOM_FIXED_PAGES
        if used + reserved > self._max_pages:
            used_mib = used * self._page_size / (1 << 20)
            raise JournalFullError(
                f"The journal {self.path} is full: it holds {used_mib:.1f} MiB of the"
                f" {self._cap_mib():g} MiB allowed (journal.max_size_mb) and keeps the rest for"
                f" the {self._pending} messages not yet final; raise the limit or free space"
                " and restart."
            )

    # ── opening ─────────────────────────────────────────────────────────────────

    def _open_connection(self) -> sqlite3.Connection:
        directory = self.path.parent
        if not directory.is_dir():
            raise JournalError(
                f"Cannot open the journal {self.path}: the directory {directory} does not exist."
            )
        try:
            create_private(self.path)
        except OSError as error:
            reason = sqlite3.OperationalError(error.strerror or "cannot create the file")
            raise JournalError(self._why_unopenable(reason)) from None
        try:
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=True, cached_statements=64
            )
        except sqlite3.Error as error:
            raise JournalError(self._why_unopenable(error)) from None
        try:
            self._configure(connection)
            self._load_state(connection)
        except sqlite3.Error as error:
            connection.close()
            raise JournalError(self._why_unopenable(error)) from None
        except JournalError:
            connection.close()
            raise
        return connection

    def _why_unopenable(self, error: sqlite3.Error) -> str:
        """A sentence naming the file and the cause, probed from the file system."""
        directory = self.path.parent
        probe = directory / f".{self.path.name}.probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError as probe_error:
            return (
                f"Cannot open the journal {self.path}: the directory {directory} is not"
                f" writable ({probe_error.strerror}); SQLite needs to create the journal and"
                " its -wal and -shm files there."
            )
        os.close(fd)
        probe.unlink()
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            return f"Cannot open the journal {self.path}: the file is not readable and writable."
        reason = str(error).rstrip(".")
        return f"Cannot open the journal {self.path}: {reason}."

    def _configure(self, connection: sqlite3.Connection) -> None:
        execute = connection.execute
        execute("PRAGMA busy_timeout = 5000")
        if execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new file, before its header is written: pages that retention frees can be
            # given back to the file system (engine.retention). A file made before keeps
            # auto_vacuum off until a VACUUM (`septet journal purge --vacuum`).
            execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(
                f"Cannot open the journal {self.path}: SQLite refused WAL mode (got {mode})."
            )
        execute(f"PRAGMA synchronous = {self.synchronous}")
        execute("PRAGMA temp_store = MEMORY")
        # A negative cache_size is KiB: the page cache, and so RSS, stays bounded.
        execute(f"PRAGMA cache_size = {-1024 * self.cache_mb}")
        execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL to 64 MiB after checkpoints
        if self.max_size_bytes is not None:
            self._page_size = int(execute("PRAGMA page_size").fetchone()[0])
            pages = max(1, self.max_size_bytes // self._page_size)
            # SQLite keeps the cap at no less than the file's current size.
            self._max_pages = int(execute(f"PRAGMA max_page_count = {pages}").fetchone()[0])
        create_or_migrate(connection, self.path)

    def _load_state(self, connection: sqlite3.Connection) -> None:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        self.instance = str(meta["instance"])
        highest = connection.execute("SELECT max(msg_id) FROM messages").fetchone()[0] or 0
        self._next_msg_id = max(int(meta["next_msg_id"]), highest + 1)
        self._pending = int(meta["pending"])
        self._total = int(meta["total"])
        self._next_event_id = feed.last_event_id(connection, int(meta.get(META_EVENT_ID, 0))) + 1

    # ── submitting work ─────────────────────────────────────────────────────────

    async def _execute(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `work(connection)` on the writer thread; writes share a group commit."""
        return await self._writer.execute(work, write=write)

    # ── writes ──────────────────────────────────────────────────────────────────

    async def accept(self, groups: Sequence[Sequence[Message]]) -> list[list[Message] | Duplicate]:
        if self.max_size_bytes is None:
            return await self._execute(
                lambda connection: self._accept(connection, groups), write=True
            )
        return await self._execute(
            lambda connection: self._accept_within_cap(connection, groups), write=True
        )

    def _accept_within_cap(
        self, connection: sqlite3.Connection, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]:
        """`_accept`, then `_check_room`: a JournalFullError undoes this accept alone (the group
        commit runs it again in its own savepoint), and duplicates are still answered."""
        pending = self._pending
        results = self._accept(connection, groups)
        if self._pending > pending:
            # The check counts the file's pages: what is held goes in first.
            self._write_held(connection)
            try:
                self._check_room(connection)
            except JournalFullError:
                for group in groups:
                    for message in group:
                        message.msg_id = message.reference = ""
                raise
        return results

    def _accept(
        self, connection: sqlite3.Connection, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]:
        results: list[list[Message] | Duplicate] = []
        # Held for the commit (`_held`), or this call's own in a careful run.
        held = self._held if self._holding else _Held()
        rows = held.rows
        rows_without_client_ref = held.rows_without_client_ref
        # (account, client_ref) -> msg_ids of groups not yet inserted.
        earlier = held.client_refs
        days = held.days
        find_client_ref = connection.execute
        next_msg_id = self._next_msg_id
        first_event_id = self._next_event_id
        accepted = _AcceptedEvents(self._feed_accounts)
        event_id = first_event_id
        try:
            for group in groups:
                if not group:
                    results.append([])
                    continue
                first = group[0]
                client_ref = first.client_ref
                account = first.account
                if client_ref is not None:
                    existing = earlier.get((account, client_ref))
                    if existing is None:
                        found = find_client_ref(SQL_FIND_CLIENT_REF, (account, client_ref))
                        existing = [str(row[0]) for row in found.fetchall()] or None
                    if existing is not None:
                        results.append(Duplicate(client_ref, existing))
                        continue
                group_rows = rows if client_ref is not None else rows_without_client_ref
                ids = self._message_rows(group, group_rows, next_msg_id, event_id)
                next_msg_id += len(group)
                event_id += len(group)
                accepted.add(group)
                if client_ref is not None:
                    earlier[account, client_ref] = ids
                day = (account, int(first.accepted_at // 86400))
                days[day] = days.get(day, 0) + len(group)
                results.append(list(group))
            if accepted.changes:
                self._add_events(connection, accepted.changes, event_id - first_event_id)
            if not self._holding:
                self._write_held_rows(connection, held)
        except Exception:
            for group in groups:
                for message in group:
                    message.msg_id = message.reference = ""
            raise
        inserted = next_msg_id - self._next_msg_id
        self._pending += inserted
        self._total += inserted
        self._next_msg_id = next_msg_id
        return results

    def _message_rows(
        self, group: Sequence[Message], rows: list[tuple[Any, ...]], msg_id: int, event_id: int
    ) -> list[str]:
        """Number `group`'s messages from `msg_id` (their accepted events from `event_id`)
        and append their rows to `rows` (with the client ref when it has one); their ids."""
        instance = self.instance
        bridges_json = self._bridges_json
        encode = message_encoder.encode
        client_ref, account = group[0].client_ref, group[0].account
        ids: list[str] = []
        for message in group:
            text_id = str(msg_id)
            message.msg_id = text_id
            message.reference = f"{instance}-{text_id}"
            if not message.bridges:
                raise ValueError(f"message {text_id} to {message.to} has no bridge")
            route = bridges_json.get(message.bridges) or new_route(bridges_json, message.bridges)
            row = (
                msg_id,
                message.due_at,
                priority_lane(message.priority),
                route,
                message.bridge_index,
                message.bridges[message.bridge_index],
                message.attempt,
                1 if message.dlr else 0,
                SCHEDULED_S if message.due_at > message.accepted_at else ACCEPTED_S,
                event_id,
                account,
                bytearray(encode(message)),
            )
            rows.append(row if client_ref is None else (*row, client_ref))
            ids.append(text_id)
            msg_id += 1
            event_id += 1
        return ids

    async def claim(
        self,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
        *,
        record: Sequence[Change] = (),
    ) -> list[Message]:
        """accepted -> inflight for each message still accepted on `bridge_index` at the same
        attempt (compare-and-set: a stale copy of a message that moved on is not sent).

        `record` rides along: a dispatcher commits the outcomes of its last request with
        the claim for its next one, one journal round trip per request instead of two.
        Both land in one transaction, the changes first, or neither does.
        """

        def work(connection: sqlite3.Connection) -> list[Message]:
            if record:
                self._record(connection, record)
            return self._claim(connection, messages, bridge_index, at)

        return await self._execute(work, write=True)

    def _claim(
        self,
        connection: sqlite3.Connection,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
    ) -> list[Message]:
        # Fast path: one statement (SQL_CLAIM_MANY, for messages at one attempt, as a
        # request's are); when every message was won, no per-row answer is needed.
        # Otherwise (a stale copy, a message claimed twice) undo it and ask row by row.
        if len(messages) == 1:
            # One row needs no savepoint: its rowcount is the answer.
            first = messages[0]
            row = (at, first.msg_id, bridge_index, first.attempt)
            won = connection.execute(SQL_CLAIM, row).rowcount == 1
            claimed = list(messages) if won else []
            for message in claimed:
                message.state = "inflight"
                message.bridge_index = bridge_index
                message.inflight_at = at
            return claimed
        connection.execute("SAVEPOINT claim")
        attempt = messages[0].attempt
        msg_ids = [m.msg_id for m in messages]
        one_attempt = [m for m in messages if m.attempt != attempt] == []
        if one_attempt and all(map(str.isdigit, msg_ids)):
            ids = "[" + ",".join(msg_ids) + "]"
            changed = connection.execute(SQL_CLAIM_MANY, (at, ids, bridge_index, attempt)).rowcount
        else:
            rows = _claim_rows(messages, bridge_index, at)
            changed = connection.executemany(SQL_CLAIM, rows).rowcount
        if changed == len(messages):
            claimed = list(messages)
        else:
            connection.execute("ROLLBACK TO claim")
            claimed = []
            cursor = connection.cursor()
            rows = _claim_rows(messages, bridge_index, at)
            for message, row in zip(messages, rows, strict=True):
                if cursor.execute(SQL_CLAIM, row).rowcount == 1:
                    claimed.append(message)
        connection.execute("RELEASE claim")
        for message in claimed:
            message.state = "inflight"
            message.bridge_index = bridge_index
            message.inflight_at = at
        return claimed

    async def record(self, changes: Sequence[Change]) -> None:
        if changes:
            await self._execute(lambda connection: self._record(connection, changes), write=True)

    def _record(self, connection: sqlite3.Connection, changes: Sequence[Change]) -> None:
        # The feed's events are held for the commit (`_held`); the state changes are written
        # now, in runs of one kind.
        appends = [change for change in changes if type(change) is AppendEvents]
        if appends:
            changes = [change for change in changes if type(change) is not AppendEvents]
        if any(type(change) is MarkCharged for change in changes):
            self._record_changes(connection, _pair_charges_with_finals(changes))
        else:
            self._record_changes(connection, changes)
        if appends:
            self._add_events(connection, appends, sum([len(change.events) for change in appends]))

    def _add_events(
        self,
        connection: sqlite3.Connection,
        changes: Sequence[AppendEvents | PlainEvents | int],
        count: int,
    ) -> None:
        """Hand out the next `count` event ids to `changes` (in order) and hold them for the
        commit (`_held`), or write them now in a careful run."""
        if not self._holding:
            self._next_event_id, owed = feed.append_events(
                connection, changes, self._next_event_id, self._clock(), self._feed_accounts
            )
            self._deliveries_added += owed
            return
        held = self._held
        if not held.events:
            held.events_from = self._next_event_id
        held.events.extend(changes)
        self._next_event_id += count

    def _write_held(self, connection: sqlite3.Connection) -> None:
        """Write what the group's operations held for the commit (`_Held`)."""
        held = self._held
        if not (held.rows or held.rows_without_client_ref or held.events):
            return
        self._held = _Held()
        self._write_held_rows(connection, held)
        if held.events:
            _, owed = feed.append_events(
                connection, held.events, held.events_from, self._clock(), self._feed_accounts
            )
            self._deliveries_added += owed

    @staticmethod
    def _write_held_rows(connection: sqlite3.Connection, held: _Held) -> None:
        """The accepted messages' rows and their accounts' day counts."""
        if held.rows:
            _run_rows(connection, SQL_INSERT_MESSAGE, held.rows)
        if held.rows_without_client_ref:
            _run_rows(
                connection, SQL_INSERT_MESSAGE_WITHOUT_CLIENT_REF, held.rows_without_client_ref
            )
        if held.days:
            connection.executemany(
                SQL_COUNT_ACCOUNT_DAY, [(a, d, n) for (a, d), n in held.days.items()]
            )

    def _record_changes(
        self, connection: sqlite3.Connection, changes: Sequence[Change | _ChargedFinal]
    ) -> None:
        # Consecutive changes of one kind become one executemany; order is kept.
        executemany = connection.executemany
        index = 0
        while index < len(changes):
            kind = type(changes[index])
            end = index + 1
            while end < len(changes) and type(changes[end]) is kind:
                end += 1
            run: Sequence[Any] = changes[index:end]
            index = end
            plain = _CHANGE_ROWS.get(kind)
            if plain is not None:
                sql, rows_of = plain
                executemany(sql, rows_of(run))
            elif kind is MarkSubmitted:
                self._mark_submitted(connection, run)
            elif kind is MarkFinal:
                cursor = executemany(SQL_MARK_FINAL, [_final_params(c) for c in run])
                self._pending -= max(cursor.rowcount, 0)
            elif kind is _ChargedFinal:
                self._mark_charged_final(connection, run)
            else:
                raise TypeError(f"not a journal change: {kind.__name__}")

    def _mark_charged_final(
        self, connection: sqlite3.Connection, pairs: Sequence[_ChargedFinal]
    ) -> None:
        cursor = connection.executemany(
            SQL_MARK_CHARGED_FINAL,
            [(charged.cost, charged.currency, *_final_params(final)) for charged, final in pairs],
        )
        self._pending -= max(cursor.rowcount, 0)

    def _mark_submitted(
        self, connection: sqlite3.Connection, changes: Sequence[MarkSubmitted]
    ) -> None:
        """Submits still waiting for a report first, then those final at submit (as before
        this split), each with or without a provider's price (see SQL_INSERT_MESSAGE)."""
        rows: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
        for change in changes:
            priced = change.cost is not None or change.currency is not None
            if priced:
                row: tuple[Any, ...] = (change.provider_id, change.cost, change.currency, change.at)
            else:
                row = (change.provider_id, change.at)
            if change.final:
                row += (change.msg_id,)
            else:
                row += (change.report_by, change.msg_id)
            rows.setdefault((change.final, priced), []).append(row)
        for final, priced in sorted(rows):
            changed = _run_rows(connection, SQL_MARK_SUBMITTED[final, priced], rows[final, priced])
            if final:
                self._pending -= changed

    async def cancel(self, changes: Sequence[Change]) -> bool:
        """Carry out a cancel step (engine.lifecycle.on_cancel): its MarkFinal as a
        compare-and-set on a message still waiting and never carried (SQL_CANCEL), and its
        other changes only when that won. False: too late (claimed, sent, or final)."""
        finals = [change for change in changes if isinstance(change, MarkFinal)]
        if len(finals) != 1:
            raise ValueError("a cancel step has exactly one MarkFinal")
        final = finals[0]
        rest = [change for change in changes if change is not final]

        def work(connection: sqlite3.Connection) -> bool:
            won = (
                connection.execute(
                    SQL_CANCEL,
                    _final_params(final),
                ).rowcount
                == 1
            )
            if won:
                self._pending -= 1
                if rest:
                    self._record(connection, rest)
            return won

        return await self._execute(work, write=True)

    async def take_orphan_receipts(self, bridge: str, provider_ids: Sequence[str]) -> list[bytes]:
        """Receipts stored for these provider ids, oldest first; they leave the journal."""
        if not provider_ids:
            return []
        return await self._execute(
            lambda connection: self._take_orphans(connection, bridge, provider_ids), write=True
        )

    async def orphan_receipt_ids(self) -> list[tuple[str, str, float]]:
        """(bridge, provider id, stored at) of every orphan receipt, oldest first: what a
        restarted daemon still waits to match (engine.dlr)."""
        return await self._execute(
            lambda connection: connection.execute(
                "SELECT bridge, provider_id, min(at) FROM orphan_receipts"
                " GROUP BY bridge, provider_id ORDER BY min(at), min(id)"
            ).fetchall(),
            write=False,
        )

    def _take_orphans(
        self, connection: sqlite3.Connection, bridge: str, provider_ids: Sequence[str]
    ) -> list[bytes]:
        found: list[tuple[int, bytes]] = []
        for chunk in _chunks(provider_ids):
            found += connection.execute(
                "SELECT id, receipt FROM orphan_receipts"  # noqa: S608
                f" WHERE bridge = ? AND provider_id IN ({_placeholders(len(chunk))})",
                (bridge, *chunk),
            ).fetchall()
        found.sort()
        connection.executemany(
            "DELETE FROM orphan_receipts WHERE id = ?", [(row_id,) for row_id, _ in found]
        )
        return [receipt for _, receipt in found]

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]:
        """Outbox lines in the order stored (for `origin`, or any if None); they leave it."""
        return await self._execute(
            lambda connection: self._take_events(connection, origin, limit), write=True
        )

    def _take_events(
        self, connection: sqlite3.Connection, origin: str | None, limit: int
    ) -> list[bytes]:
        if origin is None:
            rows = connection.execute(
                "SELECT id, line FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = connection.execute(
                "SELECT id, line FROM outbox WHERE origin = ? ORDER BY id LIMIT ?", (origin, limit)
            ).fetchall()
        connection.executemany("DELETE FROM outbox WHERE id = ?", [(row[0],) for row in rows])
        return [row[1] for row in rows]

    async def serve_notifications(self) -> None:
        """No other process keeps lines in this file: nothing to listen for."""
        return

    async def kept_origins(self, origins: Collection[str]) -> list[str]:
        """Which of `origins` have outbox lines (engine.ingress.outbox: events another
        node kept for a client connected here)."""
        wanted = sorted(origins)

        def select(connection: sqlite3.Connection) -> list[str]:
            found: list[str] = []
            for chunk in _chunks(wanted):
                found.extend(
                    row[0]
                    for row in connection.execute(
                        "SELECT DISTINCT origin FROM outbox"  # noqa: S608 - placeholders only
                        f" WHERE origin IN ({_placeholders(len(chunk))})",
                        chunk,
                    )
                )
            return found

        return await self._execute(select, write=False) if wanted else []

    # ── the event feed and webhook deliveries (engine.feed) ─────────────────────

    async def feed(self, account: str, after: int, limit: int) -> FeedPage:
        """The account's events after the cursor `after` (0: from the oldest kept), oldest
        first, at most `limit` (1..1000): their JSON bodies and the cursor to read on from.
        Non-destructive and resumable: the contract is in docs/events.md."""
        return await self._execute(
            lambda connection: feed.read_feed(connection, account, after, limit), write=False
        )

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
        """The account's own messages, newest first: only those with `client_ref` (its
        `id`), in state `status` (a State name), accepted at or after `since` (Unix
        seconds), below msg_id `before` (the last one of the previous page), at most
        `limit`. Another account's message is never among them."""
        where = ["account = ?"]
        parameters: list[Any] = [account]
        if client_ref is not None:
            where.append("client_ref = ?")
            parameters.append(client_ref)
        if status is not None:
            where.append("status = ?")
            parameters.append(status)
        if before is not None:
            where.append("msg_id < ?")
            parameters.append(int(before) if before.isdigit() else 0)
        # By client id: its own index; else the account's messages by id, newest first.
        index = "messages_client_ref" if client_ref is not None else "messages_account"
        sql = (
            f"SELECT {MESSAGE_COLUMNS}, status FROM messages INDEXED BY {index}"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY msg_id DESC LIMIT ?"
        )

        def select(connection: sqlite3.Connection) -> list[Listed]:
            # msg_ids grow with acceptance, so the scan stops at the first one too old.
            found: list[Listed] = []
            for row in connection.execute(sql, (*parameters, max(0, limit))):
                message = _message_from_row(row)
                if since is not None and message.accepted_at < since:
                    break
                found.append(Listed(message, row[9] or ""))
            return found

        return await self._execute(select, write=False)

    async def history(self, msg_id: str) -> list[bytes] | None:
        """A message's events in order, as the feed holds them (JSON bodies); None when the
        journal has no message `msg_id`."""
        return await self._execute(lambda connection: feed.history(connection, msg_id), write=False)

    async def sweep_events(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest feed events stored before `before`, except
        those a webhook still owes; returns how many went."""

        def work(connection: sqlite3.Connection) -> int:
            # Ids never go back, even when this empties the table (engine.feed).
            connection.execute(SQL_SAVE_COUNTERS, (META_EVENT_ID, self._next_event_id - 1))
            return feed.sweep(connection, before, limit)

        return await self._execute(work, write=True)

    async def prune(self, turn: retention.PruneTurn) -> retention.Pruned:
        """One retention turn (engine.retention): delete what it bounds, in one short
        transaction, and give free pages back to the file system when many are free."""

        def work(connection: sqlite3.Connection) -> retention.Pruned:
            pruned = retention.prune_turn(connection, turn, self._next_msg_id)
            self._total -= pruned.deleted["messages"]
            if any(pruned.deleted.values()):
                retention.release_free_pages(connection)
            return pruned

        return await self._execute(work, write=True)

    async def due_deliveries(
        self, now: float, limit: int, exclude: frozenset[int] = frozenset()
    ) -> list[DueDelivery]:
        """Webhook deliveries due by `now`, earliest first, not in `exclude`."""
        return await self._execute(
            lambda connection: feed.due_deliveries(connection, now, limit, exclude),
            write=False,
        )

    async def settle_deliveries(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Write what became of a batch of deliveries (one transaction)."""
        if outcomes:
            now = self._clock()
            await self._execute(
                lambda connection: feed.settle_deliveries(connection, outcomes, now), write=True
            )

    async def next_delivery_at(self, after: float | None = None) -> float | None:
        return await self._execute(lambda c: feed.next_delivery_at(c, after), write=False)

    async def deliveries_owed(self) -> int:
        return await self._execute(feed.deliveries_owed, write=False)

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
        msg_id. `exclude` (a set, for speed) skips ids the caller already holds; `after` (the
        last message of the previous page) continues from there instead of the start;
        `since` reads only those due later than it (a window, not every queued row)."""
        if limit <= 0:
            return []
        return await self._execute(
            lambda connection: self._due(connection, now, limit, exclude, after, since),
            write=False,
        )

    def _due(
        self,
        connection: sqlite3.Connection,
        now: float,
        limit: int,
        exclude: Collection[str],
        after: Message | None,
        since: float | None = None,
    ) -> list[Message]:
        found: list[Message] = []
        after_lane = priority_lane(after.priority) if after is not None else 10
        for lane in PRIORITY_LANES:
            if lane > after_lane:
                continue
            if after is not None and lane == after_lane:
                cursor = connection.execute(
                    SQL_DUE_AFTER, (lane, now, after.due_at, int(after.msg_id))
                )
            elif since is not None:
                cursor = connection.execute(SQL_DUE_WINDOW, (lane, since, now))
            else:
                cursor = connection.execute(SQL_DUE, (lane, now))
            try:
                for row in cursor:
                    if exclude and str(row[0]) in exclude:
                        continue
                    found.append(_message_from_row(row))
                    if len(found) >= limit:
                        return found
            finally:
                cursor.close()
        return found

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        """The earliest due_at among accepted messages (strictly later than `after`)."""
        floor = float("-inf") if after is None else after
        return await self._execute(
            lambda connection: self._next_due(connection, floor), write=False
        )

    def _next_due(self, connection: sqlite3.Connection, floor: float) -> float | None:
        earliest: float | None = None
        for lane in PRIORITY_LANES:
            value = connection.execute(SQL_NEXT_DUE, (lane, floor)).fetchone()[0]
            if value is not None and (earliest is None or value < earliest):
                earliest = value
        return earliest

    async def inflight(self) -> list[Message]:
        """Messages left inflight (after a crash, their provider call's fate is unknown)."""
        return await self._execute(
            lambda connection: self._select(
                connection,
                f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_inflight"  # noqa: S608
                " WHERE state = 1 ORDER BY msg_id",
                (),
            ),
            write=False,
        )

    async def find_by_provider_id(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> dict[str, Message]:
        """provider_id -> submitted or final message sent on `bridge` that asked for a report
        (only those are indexed by provider id; see SQL_CREATE_PROVIDER_ID_INDEX)."""
        if not provider_ids:
            return {}
        return await self._execute(
            lambda connection: self._find_by_provider_id(connection, bridge, provider_ids),
            write=False,
        )

    async def find_and_record(
        self, bridge: str, provider_ids: Sequence[str], decide: Decide[R]
    ) -> R:
        """One writer turn: the lookup runs in the write's transaction, so it also sees what
        earlier operations of its group changed."""

        def work(connection: sqlite3.Connection) -> R:
            found = self._find_by_provider_id(connection, bridge, provider_ids)
            changes, result = decide(found)
            if changes:
                self._record(connection, changes)
            return result

        return await self._execute(work, write=True)

    def _find_by_provider_id(
        self, connection: sqlite3.Connection, bridge: str, provider_ids: Sequence[str]
    ) -> dict[str, Message]:
        found: dict[str, Message] = {}
        for chunk in _chunks(provider_ids):
            for message in self._select(
                connection,
                f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_provider_id"  # noqa: S608
                f" WHERE bridge = ? AND provider_id IN ({_placeholders(len(chunk))})"
                " AND dlr = 1 AND state >= 2",
                (bridge, *chunk),
            ):
                if message.provider_id is not None:
                    found[message.provider_id] = message
        return found

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
        """Submitted messages on `bridge` that asked for a report and may be polled at `now`:
        those not yet scheduled first (next_poll_at 0), then by when they fell due."""

        def select(connection: sqlite3.Connection) -> list[PollDue]:
            rows = connection.execute(SQL_AWAITING_POLL, (bridge, now, limit)).fetchall()
            return [PollDue(_message_from_row(row), row[9], row[10]) for row in rows]

        return await self._execute(select, write=False)

    async def report_overdue(self, now: float, limit: int) -> list[Message]:
        """Messages awaiting a report whose deadline has passed, earliest first."""
        return await self._execute(
            lambda connection: self._select(connection, SQL_REPORT_OVERDUE, (now, limit)),
            write=False,
        )

    async def unconfirmed(self, bridge: str) -> list[Message]:
        """Messages on `bridge` that may sit at the provider under an id never learned."""
        return await self._execute(
            lambda connection: self._select(connection, SQL_UNCONFIRMED, (bridge,)),
            write=False,
        )

    async def accepted_today(self, account: str, day: int) -> int:
        """Messages of `account` accepted on UTC `day` (days since 1970-01-01)."""

        def select(connection: sqlite3.Connection) -> int:
            row = connection.execute(SQL_ACCOUNT_DAY, (account, day)).fetchone()
            return 0 if row is None else int(row[0])

        return await self._execute(select, write=False)

    async def pending_count(self) -> int:
        """Messages not final yet (a counter kept with every commit: no scan)."""
        return await self._execute(lambda connection: self._pending, write=False)

    async def counts(self) -> dict[str, int]:
        """Messages by state. Walks the accepted index: cheap enough for a metrics scrape."""
        return await self._execute(self._counts, write=False)

    async def kept_events_count(self) -> int:
        """Outbox lines kept for clients that went away and have not fetched them yet
        (a count of the outbox table: engine.observe asks at most every 15 s)."""
        return await self._execute(count_kept_events, write=False)

    def _counts(self, connection: sqlite3.Connection) -> dict[str, int]:
        return count_states(connection, self._pending, self._total)

    async def get(self, msg_ids: Sequence[str]) -> dict[str, Message]:
        if not msg_ids:
            return {}
        return await self._execute(lambda connection: self._get(connection, msg_ids), write=False)

    def _get(self, connection: sqlite3.Connection, msg_ids: Sequence[str]) -> dict[str, Message]:
        found: dict[str, Message] = {}
        for chunk in _chunks(msg_ids):
            for message in self._select(
                connection,
                f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
                f" WHERE msg_id IN ({_placeholders(len(chunk))})",
                tuple(chunk),
            ):
                found[message.msg_id] = message
        return found

    # ── cluster membership: one node, the process holding the file's lock ─────────
    # The lock (engine.journal_lock) admits one process per file, so every claim is this
    # node's, no earlier run's row is live, and nothing is ever taken over.

    async def node_record(self, node: str) -> NodeRecord | None:
        return None

    async def join(self, node: str, run: str, now: float) -> None:
        self._node = NodeRecord(node=node, run=run, started_at=now, heartbeat_at=now)

    async def heartbeat(self, node: str, run: str, now: float) -> bool:
        if self._node is None or (self._node.node, self._node.run) != (node, run):
            return False
        self._node = msgspec.structs.replace(self._node, heartbeat_at=now)
        return True

    async def leave(self, node: str, run: str, now: float) -> None:
        if self._node is not None and (self._node.node, self._node.run) == (node, run):
            self._node = msgspec.structs.replace(self._node, left_at=now)

    async def nodes(self) -> list[NodeRecord]:
        if self._node is None:
            return []
        claims = (await self.counts())["inflight"]
        return [msgspec.structs.replace(self._node, claims=claims)]

    async def take_claims(self, dead: str, limit: int) -> list[Message]:
        return []

    async def forget_node(self, node: str, heartbeat_at: float) -> bool:
        return False

    async def integrity_check(self) -> str:
        """SQLite's own check of the whole file: 'ok', or what is wrong, one problem a line."""
        return await self._execute(
            lambda connection: "\n".join(
                str(row[0]) for row in connection.execute("PRAGMA integrity_check")
            ),
            write=False,
        )

    @staticmethod
    def _select(
        connection: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]
    ) -> list[Message]:
        return [_message_from_row(row) for row in connection.execute(sql, parameters)]


@contextlib.asynccontextmanager
async def open_sqlite_journal(
    path: str | os.PathLike[str],
    *,
    synchronous: str = "NORMAL",
    on_commit: Callable[[float, int], None] | None = None,
    max_size_bytes: int | None = None,
    cache_mb: int = 32,
    clock: Callable[[], float] = time.time,
    feed_accounts: Collection[str] | None = None,
) -> AsyncIterator[SqliteJournal]:
    """Open (or create) the SQLite journal at `path` for the duration of the block (the
    engine opens it through engine.journal.open_journal, by `[journal] backend`).

    Raises JournalError, with a sentence naming the file and the cause, when the file
    cannot be opened or created. `max_size_bytes` caps the file (module docstring);
    `cache_mb` is SQLite's page cache.
    Leaving the block finishes every queued operation and closes the file, even when the
    block is cancelled.
    """
    journal = SqliteJournal(
        path,
        synchronous=synchronous,
        on_commit=on_commit,
        max_size_bytes=max_size_bytes,
        cache_mb=cache_mb,
        clock=clock,
        feed_accounts=feed_accounts,
    )
    await journal.start()
    try:
        yield journal
    finally:
        with anyio.CancelScope(shield=True):
            await journal.close()
