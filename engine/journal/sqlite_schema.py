"""The SQLite journal's schema: its tables and indexes, and the migrations from every older version.

The version is SQLite's `user_version`. A new file gets SCHEMA in one transaction; an
older one runs MIGRATIONS[old] for each version up to SCHEMA_VERSION, all in one
transaction; a file written by a newer septet is refused with a sentence
(`create_or_migrate`). The queries that rely on the partial indexes named here are in
engine.journal.sqlite.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
from pathlib import Path
from typing import Final

from engine import feed
from engine.journal.interface import (
    ACCEPTED_S,
    INFLIGHT_S,
    SCHEDULED_S,
    STATUS_OF_OUTCOME,
    SUBMITTED_S,
    UNCONFIRMED_S,
    JournalError,
)
from engine.models import State

SCHEMA_VERSION: Final = 10

INSTANCE_ALPHABET: Final = string.ascii_lowercase + string.digits
SQL_SAVE_COUNTERS: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
# The highest event id handed out, kept in meta by the retention sweep (engine.feed).
META_EVENT_ID: Final = "last_event_id"

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
    # 9 -> 10: a feed row may be a pack of one account's events of one commit (engine.feed);
    # the rows before hold one event each.
    9: feed.SCHEMA_PACKED,
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
{";".join(feed.SCHEMA_PACKED)};
"""


def create_or_migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION: create it (with a new instance name) when new,
    migrate it when older; JournalError when a newer septet wrote it."""
    execute = connection.execute
    version = execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"Cannot open the journal {path}: it has schema version {version}, newer"
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
