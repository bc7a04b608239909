"""The durable journal: every accepted message and every state change, in SQLite (WAL).

docs/design.md "Nothing accepted is lost": a message is acknowledged only after the commit
that holds it. `open_journal` gives a `SqliteJournal`; the rest of the engine sees the
`Journal` protocol, so a distributed store can replace SQLite later.

    async callers ──(work, future)──▶ SimpleQueue ──▶ writer thread (owns the connection)
          ▲                                              │ drains the queue: ONE transaction,
          └──── loop.call_soon_threadsafe(settle) ◀──────┘ ONE commit, then reads

Group commit: the writer takes every operation queued at that moment, runs the writes
in one transaction (each in a SAVEPOINT, so a caller's bad input fails only that
caller), commits once and settles all their futures with one wake-up of the event
loop. A storage failure (disk full, read-only, I/O error) fails every write of that
group with `JournalError` and rolls it back; the next group tries again, so the
journal recovers by itself when the cause clears.

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

This file is past the usual 600 lines on purpose: the schema, the writer thread and the
queries share one connection's invariants (counters kept with each commit, state codes,
partial indexes the queries name), and splitting them would spread one contract thin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import anyio
import msgspec
import sniffio

from engine import feed, retention
from engine.feed import AppendEvents, DeliveryOutcome, DueDelivery, FeedPage
from engine.models import (
    OUTCOME_CANCELLED,
    OUTCOME_SENT,
    STATE_OF_SMPP,
    Accepted,
    Message,
    MessageState,
    State,
    utc_from_timestamp,
)
from engine.private_files import create_private

__all__ = [
    "AppendEvents",
    "Change",
    "Duplicate",
    "Journal",
    "JournalError",
    "JournalFullError",
    "Listed",
    "MarkCharged",
    "MarkConfirmed",
    "MarkFinal",
    "MarkInflight",
    "MarkPolled",
    "MarkRetry",
    "MarkSubmitted",
    "MarkUnconfirmed",
    "PollDue",
    "SchedulePolls",
    "SqliteJournal",
    "StoreEvents",
    "StoreOrphanReceipt",
    "open_journal",
]


# State codes in the `state` column; the index in this tuple is the code.
STATE_NAMES: Final[tuple[MessageState, ...]] = ("accepted", "inflight", "submitted", "final")
ACCEPTED, INFLIGHT, SUBMITTED, FINAL = 0, 1, 2, 3

# models.Priority is 0..9; due() walks the lanes from the highest down.
PRIORITY_LANES: Final = tuple(range(9, -1, -1))

SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
INSTANCE_ALPHABET: Final = string.ascii_lowercase + string.digits
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


class JournalError(Exception):
    """The journal cannot be opened or written; the message is a sentence for a person."""


class JournalFullError(JournalError):
    """New messages are refused: the journal is at its configured size cap."""


class Duplicate(msgspec.Struct):
    """An input group whose client_ref is already journaled: these are its messages."""

    client_ref: str
    msg_ids: list[str]


# ── State changes (a tagged union; `record` applies them in order) ──────────────


class MarkInflight(msgspec.Struct, frozen=True, tag=True):
    """A provider call is about to be made: after a crash, its outcome may be unknown."""

    msg_ids: list[str]
    bridge_index: int
    attempt: int
    at: float


class MarkSubmitted(msgspec.Struct, frozen=True, tag=True):
    """The provider took the message. `final`: and that is its end (no report asked for),
    recorded as outcome SUBMITTED in the same row update. `report_by`: when it ends as
    UNKNOWN if no final report has come (engine.lifecycle; kept in `due_at`)."""

    msg_id: str
    provider_id: str | None
    cost: float | None
    currency: str | None
    at: float
    final: bool = False
    report_by: float = 0.0


class MarkUnconfirmed(msgspec.Struct, frozen=True, tag=True):
    """It may have reached the provider (outcome unknown): not final, its report is awaited
    until `report_by`. `maybe_sent_at` is the earliest attempt that may have reached it."""

    msg_id: str
    at: float
    maybe_sent_at: float
    report_by: float
    error: str


class MarkConfirmed(msgspec.Struct, frozen=True, tag=True):
    """A report showed the provider holds the message: learn its id where it was unknown."""

    msg_id: str
    provider_id: str | None
    report_by: float


class MarkCharged(msgspec.Struct, frozen=True, tag=True):
    """The provider stated its charge for the message after the submit (Route Mobile, in its
    report): kept where a charge stated at submit is (`submit_cost`, `submit_currency`).
    Recorded before the report's MarkFinal, so like every change it never touches a
    message that is final already."""

    msg_id: str
    cost: float
    currency: str | None


class MarkRetry(msgspec.Struct, frozen=True, tag=True):
    """Back to accepted, due again at `due_at` (a backoff, or a failover to another bridge).
    `maybe_sent_at`: when the earliest attempt on this bridge that may have reached the
    provider was made (0: none may have)."""

    msg_ids: list[str]
    due_at: float
    attempt: int
    bridge_index: int
    reason: str
    maybe_sent_at: float = 0.0


class MarkFinal(msgspec.Struct, frozen=True, tag=True):
    """`outcome` is an SMPP state (DELIVRD, UNDELIV, EXPIRED, REJECTD, UNKNOWN...) or FAILED.
    The first final state wins: a repeated report does not overwrite it."""

    msg_id: str
    outcome: str
    code: str | None
    error: str | None
    at: float


class MarkPolled(msgspec.Struct, frozen=True, tag=True):
    """The provider was asked about these messages at `at` (counted in `polls`); the next
    poll is not before `next_at` (engine.dlr's backoff)."""

    msg_ids: list[str]
    at: float
    next_at: float


class SchedulePolls(msgspec.Struct, frozen=True, tag=True):
    """The first poll of these messages, newly awaiting their report, is not before `at`."""

    msg_ids: list[str]
    at: float


class PollDue(NamedTuple):
    """A message the poller may ask about: how often it was asked already, and when it
    fell due (0.0: never scheduled, it has just begun to await its report)."""

    message: Message
    polls: int
    next_poll_at: float


class Listed(NamedTuple):
    """A message of an account's listing (`messages_of`) and its lifecycle state's name
    (engine.models.State: accepted, scheduled, ..., delivered, cancelled)."""

    message: Message
    status: str


class StoreOrphanReceipt(msgspec.Struct, frozen=True, tag=True):
    """A delivery report that arrived before its submit was journaled."""

    bridge: str
    provider_id: str
    receipt: bytes
    at: float


class StoreEvents(msgspec.Struct, frozen=True, tag=True):
    """NDJSON event lines for a client connection that has gone away (the outbox)."""

    origin: str
    events: list[bytes]


Change = (
    MarkInflight
    | MarkSubmitted
    | MarkUnconfirmed
    | MarkConfirmed
    | MarkCharged
    | MarkRetry
    | MarkFinal
    | MarkPolled
    | SchedulePolls
    | StoreOrphanReceipt
    | StoreEvents
    | AppendEvents
)


class Journal(Protocol):
    """What the engine needs from durable storage. Every method is safe to call concurrently."""

    instance: str
    commits: int

    async def accept(self, groups: Sequence[Sequence[Message]]) -> list[list[Message] | Duplicate]:
        """Assign msg_id/reference and make each group durable; a group is all-or-nothing."""
        ...

    async def claim(
        self,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
        *,
        record: Sequence[Change] = (),
    ) -> list[Message]:
        """accepted -> inflight, compare-and-set; returns the messages this call won.
        `record`'s changes are committed first, in the same transaction."""
        ...

    async def record(self, changes: Sequence[Change]) -> None: ...

    async def due(
        self,
        now: float,
        limit: int,
        *,
        exclude: Collection[str] = (),
        after: Message | None = None,
        since: float | None = None,
    ) -> list[Message]: ...

    async def next_due_at(self, *, after: float | None = None) -> float | None: ...

    async def inflight(self) -> list[Message]: ...

    async def find_by_provider_id(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> dict[str, Message]: ...

    async def find_by_reference(self, references: Sequence[str]) -> dict[str, Message]: ...

    async def take_orphan_receipts(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> list[bytes]: ...

    async def orphan_receipt_ids(self) -> list[tuple[str, str, float]]: ...

    async def awaiting_poll(self, bridge: str, now: float, limit: int) -> list[PollDue]: ...

    async def report_overdue(self, now: float, limit: int) -> list[Message]: ...

    async def unconfirmed(self, bridge: str) -> list[Message]: ...

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]: ...

    async def accepted_today(self, account: str, day: int) -> int: ...

    async def pending_count(self) -> int: ...

    async def counts(self) -> dict[str, int]: ...

    async def kept_events_count(self) -> int: ...

    async def get(self, msg_ids: Sequence[str]) -> dict[str, Message]: ...

    async def integrity_check(self) -> str: ...

    async def feed(self, account: str, after: int, limit: int) -> FeedPage: ...

    async def history(self, msg_id: str) -> list[bytes] | None: ...

    async def messages_of(
        self,
        account: str,
        *,
        client_ref: str | None = None,
        status: str | None = None,
        since: float | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[Listed]: ...


# ── Schema ─────────────────────────────────────────────────────────────────────

SCHEMA_VERSION: Final = 9

# The bridge in use, bridges[bridge_index], as SQL over a bound bridge index: stored in
# the `bridge` column by every change that moves a message to another bridge.
SQL_BRIDGE_AT: Final = "json_extract(bridges, '$[' || ? || ']')"

# Submitted messages that asked for a report, by bridge, by when they may next be polled
# (0: not yet scheduled, engine.dlr's poller schedules them first).
SQL_CREATE_AWAITING_INDEX: Final = (
    "CREATE INDEX messages_awaiting ON messages (bridge, next_poll_at) WHERE state = 2 AND dlr = 1"
)
# The awaiting index up to schema 4 (by last poll), which the 2 -> 3 migration builds.
SQL_CREATE_AWAITING_INDEX_BEFORE_5: Final = (
    "CREATE INDEX messages_awaiting ON messages (bridge, last_polled_at)"
    " WHERE state = 2 AND dlr = 1"
)
# Reports are matched by provider id, and only messages that asked for one get a report
# (the batcher never mixes dlr=0 and dlr=1 messages in one request, and docs/providers.md:
# Route Mobile reports only with dlr=1, DSC only to the dlrurl sent with dlr=1 batches,
# BSG and SMS Club are polled for dlr=1 messages only). Indexing the others too would
# cost an index entry per message for nothing: a stray report for one of them is kept
# as an orphan receipt and dropped later (engine.dlr).
SQL_CREATE_PROVIDER_ID_INDEX: Final = (
    "CREATE INDEX messages_provider_id ON messages (bridge, provider_id)"
    " WHERE provider_id IS NOT NULL AND dlr = 1"
)

# Messages awaiting a report, by the time they end as UNKNOWN without one (`due_at` holds
# that deadline while state = 2: engine.lifecycle.report_deadline).
SQL_CREATE_REPORT_DUE_INDEX: Final = (
    "CREATE INDEX messages_report_due ON messages (due_at) WHERE state = 2"
)
# Messages that may sit at a provider whose id for them was never learned: a report that
# matches no provider id is matched to one of these by recipient (engine.dlr).
SQL_CREATE_UNCONFIRMED_INDEX: Final = (
    "CREATE INDEX messages_unconfirmed ON messages (bridge) WHERE state = 2 AND provider_id IS NULL"
)
# Client ids are unique per account: the duplicate check looks an id up in its account.
SQL_CREATE_CLIENT_REF_INDEX: Final = (
    "CREATE INDEX messages_client_ref ON messages (account, client_ref)"
    " WHERE client_ref IS NOT NULL"
)
# An account's messages, newest first (the HTTP API's listing).
SQL_CREATE_ACCOUNT_INDEX: Final = "CREATE INDEX messages_account ON messages (account, msg_id)"
# Messages accepted per account and UTC day (days since 1970-01-01): the daily quota's
# count, kept in the commit that accepts them so a restart does not reset it.
SQL_CREATE_ACCOUNT_DAYS: Final = (
    "CREATE TABLE account_days (account TEXT NOT NULL, day INTEGER NOT NULL,"
    " messages INTEGER NOT NULL, PRIMARY KEY (account, day)) WITHOUT ROWID"
)
# Used by the 3 -> 4 migration: the report timeout given to messages already waiting.
MIGRATION_REPORT_TIMEOUT_S: Final = 72 * 3600.0
# Used by the 4 -> 5 migration: a message polled before the upgrade waits this long after
# that poll for its next one, the strictest provider's floor (BSG: one poll a minute).
MIGRATION_POLL_WAIT_S: Final = 60.0

# The lifecycle's state names (engine.models.State) as the `status` column stores them. The
# integer `state` is the phase the partial indexes are keyed on (0 waiting, 1 in flight,
# 2 awaiting a report, 3 final); `status` is the name engine.lifecycle gave the message.
ACCEPTED_S: Final = State.ACCEPTED.value
SCHEDULED_S: Final = State.SCHEDULED.value
INFLIGHT_S: Final = State.INFLIGHT.value
SUBMITTED_S: Final = State.SUBMITTED.value
UNCONFIRMED_S: Final = State.UNCONFIRMED.value
SENT_S: Final = State.SENT.value
# A final outcome (the `outcome` column: an SMPP state, or SUBMITTED / CANCELLED) -> name.
STATUS_OF_OUTCOME: Final[dict[str, str]] = {
    **{smpp: state.value for smpp, state in STATE_OF_SMPP.items()},
    OUTCOME_SENT: State.SENT.value,
    OUTCOME_CANCELLED: State.CANCELLED.value,
}


def _status_of_outcome(outcome: str) -> str:
    return STATUS_OF_OUTCOME.get(outcome, State.UNKNOWN.value)


def _waiting_status(attempt: int) -> str:
    """A message back to waiting: scheduled for a retry, accepted on a new bridge."""
    return SCHEDULED_S if attempt > 0 else ACCEPTED_S


def _migration_status_sql() -> str:
    """The 5 -> 6 migration's names for rows written before the column existed."""
    finals = " ".join(
        f"WHEN '{outcome}' THEN '{status}'" for outcome, status in STATUS_OF_OUTCOME.items()
    )
    return (
        "UPDATE messages SET status = CASE state"  # noqa: S608 - constants only
        f" WHEN 0 THEN CASE WHEN attempt > 0 THEN '{SCHEDULED_S}' ELSE '{ACCEPTED_S}' END"
        f" WHEN 1 THEN '{INFLIGHT_S}'"
        " WHEN 2 THEN CASE WHEN provider_id IS NULL AND maybe_sent > 0"
        f" THEN '{UNCONFIRMED_S}' ELSE '{SUBMITTED_S}' END"
        f" ELSE CASE outcome {finals} ELSE '{State.UNKNOWN.value}' END END"
    )


# Upgrades from each older schema version, run in order inside one transaction.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: remember that an earlier attempt on the current bridge may have reached the
    # provider, so the message never fails over to a second provider (a double send).
    1: ("ALTER TABLE messages ADD COLUMN maybe_sent INTEGER NOT NULL DEFAULT 0",),
    # 2 -> 3: `bridge` was a VIRTUAL generated column: SQLite evaluated its json_extract
    # on every UPDATE of a row (twice per message sent), and the provider-id index held
    # messages that never get a report. `bridge` becomes a plain column, filled here for
    # the rows that a query still reads it from (not final, or final with a report that
    # may still arrive late); a final dlr=0 message's row keeps NULL.
    2: (
        "DROP INDEX messages_awaiting",
        "DROP INDEX messages_provider_id",
        "ALTER TABLE messages DROP COLUMN bridge",
        "ALTER TABLE messages ADD COLUMN bridge TEXT",
        "UPDATE messages SET bridge = json_extract(bridges, '$[' || bridge_index || ']')"
        " WHERE state < 3 OR (dlr = 1 AND provider_id IS NOT NULL)",
        SQL_CREATE_AWAITING_INDEX_BEFORE_5,
        SQL_CREATE_PROVIDER_ID_INDEX,
    ),
    # 3 -> 4: nothing stays `submitted` forever. Messages awaiting a report get a deadline
    # in `due_at` (from their submit); `maybe_sent` holds a time, not a flag (old 1s read
    # as "long ago", so no duplicate window is assumed open).
    3: (
        "UPDATE messages SET due_at = coalesce(submitted_at, inflight_at, due_at)"  # noqa: S608
        f" + {MIGRATION_REPORT_TIMEOUT_S} WHERE state = 2",
        SQL_CREATE_REPORT_DUE_INDEX,
        SQL_CREATE_UNCONFIRMED_INDEX,
    ),
    # 4 -> 5: polls back off per message (engine.dlr), so each message keeps how often it
    # was polled and when it may be polled next; the awaiting index orders by the latter.
    # A message polled before the upgrade counts that poll and waits MIGRATION_POLL_WAIT_S
    # after it; one never polled is scheduled by the poller as a new one.
    4: (
        "ALTER TABLE messages ADD COLUMN polls INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN next_poll_at REAL NOT NULL DEFAULT 0",
        "UPDATE messages SET polls = 1,"  # noqa: S608
        f" next_poll_at = last_polled_at + {MIGRATION_POLL_WAIT_S} WHERE last_polled_at > 0",
        "DROP INDEX messages_awaiting",
        SQL_CREATE_AWAITING_INDEX,
    ),
    # 5 -> 6: each message's lifecycle state by name (engine.lifecycle), beside the phase.
    5: (
        "ALTER TABLE messages ADD COLUMN status TEXT",
        _migration_status_sql(),
    ),
    # 6 -> 7: the durable event feed and the webhook deliveries owed (engine.feed); each
    # message keeps the id of its first event, where reading its history starts. Messages
    # from before have no events in the feed.
    6: (
        *feed.SCHEMA,
        "ALTER TABLE messages ADD COLUMN first_event INTEGER",
    ),
    # 7 -> 8: messages belong to an account (engine.accounts); client ids are unique per
    # account; each account's messages per UTC day are counted (its daily quota). Rows
    # written before keep account '' (none), and their ids stay unique among themselves.
    7: (
        "ALTER TABLE messages ADD COLUMN account TEXT NOT NULL DEFAULT ''",
        "DROP INDEX messages_client_ref",
        SQL_CREATE_CLIENT_REF_INDEX,
        SQL_CREATE_ACCOUNT_INDEX,
        SQL_CREATE_ACCOUNT_DAYS,
    ),
    # 8 -> 9: a webhook delivery may be Kannel's dlr-url GET (engine.feed, kannel_dlr).
    8: feed.SCHEMA_METHOD,
}

SCHEMA: Final = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE messages (
    msg_id INTEGER PRIMARY KEY,
    state INTEGER NOT NULL,
    due_at REAL NOT NULL,
    priority INTEGER NOT NULL,
    bridges TEXT NOT NULL,
    bridge_index INTEGER NOT NULL,
    bridge TEXT,
    attempt INTEGER NOT NULL,
    client_ref TEXT,
    dlr INTEGER NOT NULL,
    provider_id TEXT,
    last_polled_at REAL NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    next_poll_at REAL NOT NULL DEFAULT 0,
    inflight_at REAL,
    submitted_at REAL,
    submit_cost REAL,
    submit_currency TEXT,
    retry_reason TEXT,
    maybe_sent REAL NOT NULL DEFAULT 0,
    final_at REAL,
    outcome TEXT,
    code TEXT,
    error TEXT,
    body BLOB NOT NULL,
    status TEXT,
    first_event INTEGER,
    account TEXT NOT NULL DEFAULT ''
);
CREATE INDEX messages_due ON messages (priority, due_at) WHERE state = 0;
CREATE INDEX messages_inflight ON messages (bridge_index) WHERE state = 1;
{SQL_CREATE_AWAITING_INDEX};
{SQL_CREATE_PROVIDER_ID_INDEX};
{SQL_CREATE_REPORT_DUE_INDEX};
{SQL_CREATE_UNCONFIRMED_INDEX};
{SQL_CREATE_CLIENT_REF_INDEX};
{SQL_CREATE_ACCOUNT_INDEX};
{SQL_CREATE_ACCOUNT_DAYS};
CREATE TABLE orphan_receipts (
    id INTEGER PRIMARY KEY,
    bridge TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    receipt BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX orphan_receipts_provider_id ON orphan_receipts (bridge, provider_id);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, line BLOB NOT NULL);
CREATE INDEX outbox_origin ON outbox (origin, id);
{";".join(feed.SCHEMA)};
{";".join(feed.SCHEMA_METHOD)};
"""

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
SQL_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, dlr, status, first_event, account, body, client_ref)"
    " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_INSERT_MESSAGE_WITHOUT_CLIENT_REF: Final = (
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, dlr, status, first_event, account, body)"
    " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
SQL_MARK_INFLIGHT: Final = (
    f"UPDATE messages SET state = 1, bridge_index = ?, bridge = {SQL_BRIDGE_AT}, attempt = ?,"  # noqa: S608
    f" status = '{INFLIGHT_S}', inflight_at = ? WHERE msg_id = ? AND state < 3"
)


def _mark_submitted_sql(*, final: bool, priced: bool) -> str:
    """MarkSubmitted's UPDATE. Parameters: provider_id, [cost, currency,] at, at or
    report_by, msg_id."""
    cost = (
        "submit_cost = ?, submit_currency = ?"
        if priced
        else "submit_cost = NULL, submit_currency = NULL"
    )
    if final:
        return (
            f"UPDATE messages SET state = 3, provider_id = ?, {cost}, submitted_at = ?,"  # noqa: S608
            f" outcome = '{OUTCOME_SENT}', status = '{SENT_S}', code = NULL, error = NULL,"
            " final_at = ?"
            " WHERE msg_id = ? AND state < 3"
        )
    return (
        f"UPDATE messages SET state = 2, provider_id = ?, {cost}, submitted_at = ?,"  # noqa: S608
        f" status = '{SUBMITTED_S}', due_at = ? WHERE msg_id = ? AND state < 3"
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
SQL_SAVE_COUNTERS: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
# The highest event id handed out, kept in meta by the retention sweep (engine.feed).
META_EVENT_ID: Final = "last_event_id"


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


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _chunks(items: Sequence[T], size: int = PARAMETERS_PER_QUERY) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


def _accepted_append(message: Message) -> AppendEvents:
    """The feed's `accepted` event of a message being journaled (its msg_id assigned)."""
    return AppendEvents(
        account=feed.account_of(message),
        msg_id=message.msg_id,
        callback_url=message.callback_url,
        events=[
            Accepted(
                id=message.client_ref,
                msg_id=message.msg_id,
                ts=utc_from_timestamp(message.accepted_at),
                to=message.to,
                encoding=message.encoding,
                segments=message.segments,
                cost=message.cost,
                currency=message.currency,
                bridge=message.bridge,
            )
        ],
    )


def _lane(priority: int) -> int:
    return 0 if priority < 0 else 9 if priority > 9 else priority


def _is_storage_failure(error: BaseException) -> bool:
    """Failures of the file or disk, not of one caller's data: they fail the whole group."""
    return isinstance(error, sqlite3.OperationalError | sqlite3.InternalError) or (
        type(error) is sqlite3.DatabaseError
    )


class _Operation(msgspec.Struct):
    work: Callable[[sqlite3.Connection], Any]
    write: bool
    future: asyncio.Future[Any]


class _Stop(msgspec.Struct):
    """Queued by close(): the writer finishes what came before, closes, then settles it."""

    future: asyncio.Future[None]


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Runs on the event loop: hands each caller its result (a cancelled caller is gone)."""
    for future, value, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class SqliteJournal:
    """The Journal on one SQLite file; all SQLite work runs on one writer thread."""

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
        an event owed to a webhook or a Kannel dlr-url is kept whatever its account."""
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
        # Successful commits so far (tests and metrics); on_commit(seconds, operations) is
        # called on the writer thread after each one.
        self.commits = 0
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[list[_Operation] | _Stop] = queue.SimpleQueue()
        # Operations submitted during the current event-loop iteration, handed to the
        # writer thread together at its end: one cross-thread wake-up per iteration, not
        # one per operation (each wake-up costs a futex and a GIL hand-over).
        self._outgoing: list[_Operation] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True
        # Owned by the writer thread once it runs.
        self._connection: sqlite3.Connection | None = None
        self._next_msg_id = 1
        # The next event id (engine.feed): handed out in commit order, never reused.
        self._next_event_id = 1
        # Webhook deliveries added by the group being written; after its commit,
        # `on_deliveries` (the webhook worker's hand-off) is called on the event loop with
        # them, or with none when they may not all have committed (read them back then).
        self._deliveries_added: list[DueDelivery] = []
        self.on_deliveries: Callable[[list[DueDelivery]], None] | None = None
        self._pending = 0
        self._total = 0
        self._bridges_json: dict[tuple[str, ...], str] = {}

    # ── life cycle ──────────────────────────────────────────────────────────────

    async def start(self) -> None:
        if sniffio.current_async_library() != "asyncio":
            raise JournalError("The SQLite journal runs on the asyncio backend (with uvloop).")
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve_writer, args=(opened,), name="septet-journal", daemon=True
        )
        self._thread.start()
        await opened
        self._closed = False

    async def close(self) -> None:
        if self._closed or self._loop is None:
            return
        self._closed = True
        closed: asyncio.Future[None] = self._loop.create_future()
        self._hand_over()
        self._queue.put(_Stop(closed))
        await closed

    # ── the writer thread ───────────────────────────────────────────────────────

    def _serve_writer(self, opened: asyncio.Future[None]) -> None:
        try:
            self._connection = self._open_connection()
        except JournalError as error:
            self._hand_back([(opened, None, error)])
            return
        self._hand_back([(opened, None, None)])
        take = self._queue.get
        take_waiting = self._queue.get_nowait
        while True:
            batch = [take()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(take_waiting())
            operations = [
                operation for item in batch if isinstance(item, list) for operation in item
            ]
            settled = self._run_group(self._connection, operations)
            stops = [item for item in batch if isinstance(item, _Stop)]
            if stops:
                self._close_connection(self._connection)
                settled.extend((stop.future, None, None) for stop in stops)
                self._hand_back(settled)
                return
            self._hand_back(settled)

    def _hand_back(
        self, settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ) -> None:
        if not settled or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(_settle, settled)

    def _run_group(
        self, connection: sqlite3.Connection, operations: list[_Operation]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        writes = [operation for operation in operations if operation.write]
        if writes:
            self._run_writes(connection, writes, settled)
        for operation in operations:
            if operation.write:
                continue
            try:
                settled.append((operation.future, operation.work(connection), None))
            except sqlite3.Error as error:
                settled.append((operation.future, None, self._error(error)))
            except Exception as error:
                settled.append((operation.future, None, error))
        return settled

    def _run_writes(
        self,
        connection: sqlite3.Connection,
        writes: list[_Operation],
        settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    ) -> None:
        """Commit every write operation of the group in one transaction.

        Operations almost never fail on their own data, so the group first runs without a
        savepoint per operation (two statements fewer each). When one does fail (a bad
        message in an accept), the transaction is rolled back and the group runs again,
        each operation in its own savepoint, so only the faulty one fails.
        """
        counters = (self._next_msg_id, self._pending, self._total)
        started = time.perf_counter()
        careful = False
        try:
            try:
                results = self._write_group(connection, writes, careful=False)
            except Exception as error:
                self._roll_back(connection, counters)
                if _is_storage_failure(error):
                    raise
                if len(writes) == 1:
                    # The one operation failed on its own data and was undone: no commit.
                    settled.append((writes[0].future, None, error))
                    return
                careful = True
                results = self._write_group(connection, writes, careful=True)
        except Exception as error:
            self._roll_back(connection, counters)
            failure = self._error(error) if isinstance(error, sqlite3.Error) else error
            settled.extend((operation.future, None, failure) for operation in writes)
            return
        self.commits += 1
        settled.extend(results)
        if self._deliveries_added:
            # After a careful run some operations' deliveries were undone: hand none over,
            # the worker reads what committed.
            added = [] if careful else self._deliveries_added
            self._deliveries_added = []
            if self.on_deliveries is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    self._loop.call_soon_threadsafe(self.on_deliveries, added)
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started, len(writes))

    def _roll_back(self, connection: sqlite3.Connection, counters: tuple[int, int, int]) -> None:
        self._deliveries_added = []
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        self._next_msg_id, self._pending, self._total = counters

    def _write_group(
        self, connection: sqlite3.Connection, writes: list[_Operation], *, careful: bool
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """One transaction over `writes`; with `careful`, an operation that fails on its
        own data is undone alone (a savepoint each) and the rest still commit."""
        counters = (self._next_msg_id, self._pending, self._total)
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        execute = connection.execute
        execute("BEGIN")
        for operation in writes:
            if not careful:
                results.append((operation.future, operation.work(connection), None))
                continue
            execute("SAVEPOINT operation")
            before = (self._next_msg_id, self._pending, self._total)
            try:
                value = operation.work(connection)
            except Exception as error:
                if _is_storage_failure(error):
                    raise
                # The caller's own data was wrong: undo its part only.
                execute("ROLLBACK TO operation")
                execute("RELEASE operation")
                self._next_msg_id, self._pending, self._total = before
                results.append((operation.future, None, error))
                continue
            execute("RELEASE operation")
            results.append((operation.future, value, None))
        if (self._next_msg_id, self._pending, self._total) != counters:
            connection.executemany(
                SQL_SAVE_COUNTERS,
                (
                    ("next_msg_id", self._next_msg_id),
                    ("pending", self._pending),
                    ("total", self._total),
                ),
            )
        execute("COMMIT")
        return results

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
        version = execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"Cannot open the journal {self.path}: it has schema version {version}, newer"
                f" than this septet understands ({SCHEMA_VERSION})."
            )
        if version == 0:
            instance = "".join(secrets.choice(INSTANCE_ALPHABET) for _ in range(6))
            execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        execute(statement)
                connection.executemany(
                    SQL_SAVE_COUNTERS,
                    (("instance", instance), ("next_msg_id", 1), ("pending", 0), ("total", 0)),
                )
                execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise
        elif version < SCHEMA_VERSION:
            execute("BEGIN IMMEDIATE")
            try:
                for old in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[old]:
                        execute(statement)
                execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise

    def _load_state(self, connection: sqlite3.Connection) -> None:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        self.instance = str(meta["instance"])
        highest = connection.execute("SELECT max(msg_id) FROM messages").fetchone()[0] or 0
        self._next_msg_id = max(int(meta["next_msg_id"]), highest + 1)
        self._pending = int(meta["pending"])
        self._total = int(meta["total"])
        self._next_event_id = feed.last_event_id(connection, int(meta.get(META_EVENT_ID, 0))) + 1

    def _close_connection(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("PRAGMA optimize")
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    # ── submitting work ─────────────────────────────────────────────────────────

    async def _execute(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `work(connection)` on the writer thread; writes share a group commit."""
        if self._closed or self._loop is None:
            raise JournalError(f"The journal {self.path} is closed.")
        future: asyncio.Future[T] = self._loop.create_future()
        outgoing = self._outgoing
        outgoing.append(_Operation(work, write, future))
        if len(outgoing) == 1:
            self._loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        """Pass this iteration's operations to the writer thread as one item."""
        if self._outgoing:
            operations, self._outgoing = self._outgoing, []
            self._queue.put(operations)

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
        rows: list[tuple[Any, ...]] = []
        rows_without_client_ref: list[tuple[Any, ...]] = []
        # (account, client_ref) -> msg_ids of groups earlier in this call (not yet inserted).
        earlier: dict[tuple[str, str], list[str]] = {}
        # (account, UTC day) -> messages inserted (the daily quota's count).
        days: dict[tuple[str, int], int] = {}
        find_client_ref = connection.execute
        next_msg_id = self._next_msg_id
        first_event_id = self._next_event_id
        # One `accepted` feed event per message, in the order of the messages.
        appends: list[AppendEvents] = []
        instance = self.instance
        bridges_json = self._bridges_json
        encode = message_encoder.encode
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
                ids: list[str] = []
                group_rows = rows if client_ref is not None else rows_without_client_ref
                for message in group:
                    msg_id = str(next_msg_id)
                    message.msg_id = msg_id
                    message.reference = f"{instance}-{msg_id}"
                    if not message.bridges:
                        raise ValueError(f"message {msg_id} to {message.to} has no bridge")
                    route = bridges_json.get(message.bridges)
                    if route is None:
                        if len(bridges_json) > 1024:
                            bridges_json.clear()
                        route = msgspec.json.encode(message.bridges).decode()
                        bridges_json[message.bridges] = route
                    row = (
                        next_msg_id,
                        message.due_at,
                        _lane(message.priority),
                        route,
                        message.bridge_index,
                        message.bridges[message.bridge_index],
                        message.attempt,
                        1 if message.dlr else 0,
                        SCHEDULED_S if message.due_at > message.accepted_at else ACCEPTED_S,
                        first_event_id + len(appends),
                        account,
                        bytearray(encode(message)),
                    )
                    appends.append(_accepted_append(message))
                    group_rows.append(row if client_ref is None else (*row, client_ref))
                    ids.append(msg_id)
                    next_msg_id += 1
                if client_ref is not None:
                    earlier[account, client_ref] = ids
                day = (account, int(first.accepted_at // 86400))
                days[day] = days.get(day, 0) + len(group)
                results.append(list(group))
            if rows:
                connection.executemany(SQL_INSERT_MESSAGE, rows)
            if rows_without_client_ref:
                connection.executemany(
                    SQL_INSERT_MESSAGE_WITHOUT_CLIENT_REF, rows_without_client_ref
                )
            if appends:
                self._next_event_id, owed = feed.append_events(
                    connection, appends, first_event_id, self._clock(), self._feed_accounts
                )
                self._deliveries_added += owed
            if days:
                connection.executemany(
                    SQL_COUNT_ACCOUNT_DAY, [(a, d, n) for (a, d), n in days.items()]
                )
        except Exception:
            for group in groups:
                for message in group:
                    message.msg_id = message.reference = ""
            raise
        inserted = len(rows) + len(rows_without_client_ref)
        self._pending += inserted
        self._total += inserted
        self._next_msg_id = next_msg_id
        return results

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
        # Fast path: one executemany; when every message was won, no per-row answer is needed.
        # Otherwise (a stale copy, a message claimed twice) undo it and ask row by row.
        parameters = [(at, m.msg_id, bridge_index, m.attempt) for m in messages]
        if len(messages) == 1:
            # One row needs no savepoint: its rowcount is the answer.
            won = connection.execute(SQL_CLAIM, parameters[0]).rowcount == 1
            claimed = list(messages) if won else []
            for message in claimed:
                message.state = "inflight"
                message.bridge_index = bridge_index
                message.inflight_at = at
            return claimed
        connection.execute("SAVEPOINT claim")
        if connection.executemany(SQL_CLAIM, parameters).rowcount == len(messages):
            claimed = list(messages)
        else:
            connection.execute("ROLLBACK TO claim")
            claimed = []
            cursor = connection.cursor()
            for message, row in zip(messages, parameters, strict=True):
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
        # The feed's events go in after the state changes that made them, all together (the
        # same transaction either way), so that the runs of state changes stay long.
        appends = [change for change in changes if type(change) is AppendEvents]
        if appends:
            changes = [change for change in changes if type(change) is not AppendEvents]
            self._record_changes(connection, changes)
            self._next_event_id, owed = feed.append_events(
                connection, appends, self._next_event_id, self._clock(), self._feed_accounts
            )
            self._deliveries_added += owed
            return
        self._record_changes(connection, changes)

    def _record_changes(self, connection: sqlite3.Connection, changes: Sequence[Change]) -> None:
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
            if kind is MarkInflight:
                executemany(
                    SQL_MARK_INFLIGHT,
                    [
                        (
                            change.bridge_index,
                            change.bridge_index,
                            change.attempt,
                            change.at,
                            msg_id,
                        )
                        for change in run
                        for msg_id in change.msg_ids
                    ],
                )
            elif kind is MarkSubmitted:
                self._mark_submitted(connection, run)
            elif kind is MarkRetry:
                executemany(
                    SQL_MARK_RETRY,
                    [
                        (
                            change.due_at,
                            change.attempt,
                            change.bridge_index,
                            change.bridge_index,
                            change.reason,
                            change.maybe_sent_at,
                            _waiting_status(change.attempt),
                            msg_id,
                        )
                        for change in run
                        for msg_id in change.msg_ids
                    ],
                )
            elif kind is MarkFinal:
                cursor = executemany(
                    SQL_MARK_FINAL,
                    [
                        (c.outcome, _status_of_outcome(c.outcome), c.code, c.error, c.at, c.msg_id)
                        for c in run
                    ],
                )
                self._pending -= max(cursor.rowcount, 0)
            elif kind is MarkUnconfirmed:
                executemany(
                    SQL_MARK_UNCONFIRMED,
                    [(c.at, c.maybe_sent_at, c.report_by, c.error, c.msg_id) for c in run],
                )
            elif kind is MarkConfirmed:
                executemany(
                    SQL_MARK_CONFIRMED, [(c.provider_id, c.report_by, c.msg_id) for c in run]
                )
            elif kind is MarkCharged:
                executemany(SQL_MARK_CHARGED, [(c.cost, c.currency, c.msg_id) for c in run])
            elif kind is MarkPolled:
                executemany(
                    SQL_MARK_POLLED,
                    [
                        (change.at, change.next_at, msg_id)
                        for change in run
                        for msg_id in change.msg_ids
                    ],
                )
            elif kind is SchedulePolls:
                executemany(
                    SQL_SCHEDULE_POLLS,
                    [(change.at, msg_id) for change in run for msg_id in change.msg_ids],
                )
            elif kind is StoreOrphanReceipt:
                executemany(
                    SQL_STORE_ORPHAN,
                    [(c.bridge, c.provider_id, c.receipt, c.at) for c in run],
                )
            elif kind is StoreEvents:
                executemany(
                    SQL_STORE_EVENT,
                    [(change.origin, line) for change in run for line in change.events],
                )
            else:
                raise TypeError(f"not a journal change: {kind.__name__}")

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
                row += (change.at, change.msg_id)
            else:
                row += (change.report_by, change.msg_id)
            rows.setdefault((change.final, priced), []).append(row)
        for final, priced in sorted(rows):
            cursor = connection.executemany(SQL_MARK_SUBMITTED[final, priced], rows[final, priced])
            if final:
                self._pending -= max(cursor.rowcount, 0)

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
                    (
                        final.outcome,
                        _status_of_outcome(final.outcome),
                        final.code,
                        final.error,
                        final.at,
                        final.msg_id,
                    ),
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

    async def next_delivery_at(self) -> float | None:
        return await self._execute(feed.next_delivery_at, write=False)

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
        after_lane = _lane(after.priority) if after is not None else 10
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
async def open_journal(
    path: str | os.PathLike[str],
    *,
    synchronous: str = "NORMAL",
    on_commit: Callable[[float, int], None] | None = None,
    max_size_bytes: int | None = None,
    cache_mb: int = 32,
    clock: Callable[[], float] = time.time,
    feed_accounts: Collection[str] | None = None,
) -> AsyncIterator[SqliteJournal]:
    """Open (or create) the journal at `path` for the duration of the block.

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
