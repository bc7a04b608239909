"""The PostgreSQL journal's schema, its version and the migration that brings a database to it.

The tables are the SQLite journal's (engine.journal.sqlite_schema), translated: BYTEA for
the blobs, DOUBLE PRECISION for the times, BOOLEAN flags, the route as JSON text (the bridge
in use is `bridges::jsonb ->> bridge_index`), and the same partial indexes. What a cluster
needs on top:

- `messages.claimed_by`: the node whose claim a message in flight is (engine.cluster), and
  `nodes`, each node's row and heartbeat: a node's lease is its heartbeat, so a dead
  node's claims are known by its row (engine.membership takes them over);
- client ids unique per account across every node: a unique index on the first message
  of each group (`first_of_group`; a line with several recipients is one group sharing
  its client id), so two nodes accepting the same id at once cannot both win;
- msg_ids from a sequence (any node hands them out), and the feed's event ids from a
  counter row in `meta` that a group locks just before it commits, so ids are in commit
  order across nodes (engine.feed: a reader that saw id N never later finds one below N);
- `counters`: the messages not final and all messages, one row per writer (no row every
  node would fight over), summed when read;
- the SMPP server's state (engine.smpp.store_postgres, since version 2): the message ids
  given to ESMEs (`smpp_ids`, from the sequence `smpp_message_ids`, so no id is given twice
  in the cluster), early outcomes (`smpp_outcomes`), the receipts owed (`smpp_receipts`,
  each claimed by the node delivering it), and each node's receiving binds (`smpp_binds`),
  so any node delivers an account's receipts to its binds.

The version is in `schema_version` (one row). `create_or_migrate` runs under an advisory
lock, so nodes starting together create or migrate the schema once.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Final

import psycopg

from engine.journal.interface import JournalError

__all__ = ["SCHEMA_VERSION", "create_or_migrate", "schema_version"]

SCHEMA_VERSION: Final = 2
# pg_advisory_xact_lock key of the schema's creation and migrations ("septet" in ASCII).
SCHEMA_LOCK: Final = 0x736570746574
INSTANCE_ALPHABET: Final = string.ascii_lowercase + string.digits
# The highest event id handed out (engine.feed), kept in `meta` and locked by each commit
# that appends events.
META_EVENT_ID: Final = "last_event_id"

# The SMPP server's tables (version 2; engine.smpp.store_postgres says how they are used).
SMPP_TABLES: Final[tuple[str, ...]] = (
    "CREATE SEQUENCE smpp_message_ids",
    # An id given to an ESME: its septet message once journaled (NULL while a part of a
    # long message waits for its siblings, on `node`).
    """CREATE TABLE smpp_ids (
        id BIGINT PRIMARY KEY,
        system_id TEXT NOT NULL,
        msg_id TEXT,
        node TEXT NOT NULL DEFAULT '',
        body BYTEA NOT NULL
    )""",
    "CREATE INDEX smpp_ids_msg_id ON smpp_ids (msg_id) WHERE msg_id IS NOT NULL",
    "CREATE INDEX smpp_ids_waiting ON smpp_ids (node, id) WHERE msg_id IS NULL",
    """CREATE TABLE smpp_outcomes (
        msg_id TEXT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        body BYTEA NOT NULL
    )""",
    "CREATE INDEX smpp_outcomes_at ON smpp_outcomes (at)",
    # A receipt owed; `claimed_by` the node delivering it (while that node is live).
    """CREATE TABLE smpp_receipts (
        id BIGINT PRIMARY KEY,
        system_id TEXT NOT NULL,
        system_type TEXT NOT NULL,
        address_range TEXT NOT NULL,
        claimed_by TEXT,
        body BYTEA NOT NULL
    )""",
    "CREATE INDEX smpp_receipts_account ON smpp_receipts (system_id, id)",
    "CREATE INDEX smpp_receipts_claimed ON smpp_receipts (claimed_by) WHERE claimed_by IS NOT NULL",
    # Each node's receiving binds by account and bind group (a dead node's are ignored).
    """CREATE TABLE smpp_binds (
        node TEXT NOT NULL,
        system_id TEXT NOT NULL,
        system_type TEXT NOT NULL,
        address_range TEXT NOT NULL,
        receivers INTEGER NOT NULL,
        PRIMARY KEY (node, system_id, system_type, address_range)
    )""",
)

# Statements, in order. Each index names the query it serves where that is not plain.
SCHEMA: Final[tuple[str, ...]] = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE SEQUENCE message_ids",
    """CREATE TABLE messages (
        msg_id BIGINT PRIMARY KEY,
        state SMALLINT NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        priority SMALLINT NOT NULL,
        bridges TEXT NOT NULL,
        bridge_index SMALLINT NOT NULL,
        bridge TEXT,
        attempt INTEGER NOT NULL,
        client_ref TEXT,
        first_of_group BOOLEAN NOT NULL DEFAULT false,
        dlr BOOLEAN NOT NULL,
        provider_id TEXT,
        last_polled_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        polls INTEGER NOT NULL DEFAULT 0,
        next_poll_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        inflight_at DOUBLE PRECISION,
        submitted_at DOUBLE PRECISION,
        submit_cost DOUBLE PRECISION,
        submit_currency TEXT,
        retry_reason TEXT,
        maybe_sent DOUBLE PRECISION NOT NULL DEFAULT 0,
        final_at DOUBLE PRECISION,
        outcome TEXT,
        code TEXT,
        error TEXT,
        body BYTEA NOT NULL,
        status TEXT,
        first_event BIGINT,
        account TEXT NOT NULL DEFAULT '',
        claimed_by TEXT
    )""",
    # Waiting messages by priority lane and due time (due, next_due_at).
    "CREATE INDEX messages_due ON messages (priority, due_at, msg_id) WHERE state = 0",
    # Claims in flight by node (inflight, a node's claims, their takeover).
    "CREATE INDEX messages_inflight ON messages (claimed_by, msg_id) WHERE state = 1",
    # Awaiting a report, by bridge and next poll (awaiting_poll).
    "CREATE INDEX messages_awaiting ON messages (bridge, next_poll_at, msg_id)"
    " WHERE state = 2 AND dlr",
    # Reports are matched by provider id; only messages that asked for one get a report.
    "CREATE INDEX messages_provider_id ON messages (bridge, provider_id)"
    " WHERE provider_id IS NOT NULL AND dlr",
    # The report deadline while awaiting a report (report_overdue).
    "CREATE INDEX messages_report_due ON messages (due_at) WHERE state = 2",
    # Messages that may sit at a provider under an id never learned (unconfirmed).
    "CREATE INDEX messages_unconfirmed ON messages (bridge, msg_id)"
    " WHERE state = 2 AND provider_id IS NULL",
    # A client id's messages (the duplicate answer, messages_of by id) ...
    "CREATE INDEX messages_client_ref ON messages (account, client_ref, msg_id)"
    " WHERE client_ref IS NOT NULL",
    # ... and the rule that makes a client id unique per account across the cluster.
    "CREATE UNIQUE INDEX messages_client_ref_unique ON messages (account, client_ref)"
    " WHERE client_ref IS NOT NULL AND first_of_group",
    # An account's messages, newest first (the HTTP API's listing).
    "CREATE INDEX messages_account ON messages (account, msg_id)",
    """CREATE TABLE account_days (
        account TEXT NOT NULL,
        day INTEGER NOT NULL,
        messages BIGINT NOT NULL,
        PRIMARY KEY (account, day)
    )""",
    """CREATE TABLE orphan_receipts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        bridge TEXT NOT NULL,
        provider_id TEXT NOT NULL,
        receipt BYTEA NOT NULL,
        at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX orphan_receipts_provider_id ON orphan_receipts (bridge, provider_id)",
    """CREATE TABLE outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        origin TEXT NOT NULL,
        line BYTEA NOT NULL
    )""",
    "CREATE INDEX outbox_origin ON outbox (origin, id)",
    """CREATE TABLE events (
        id BIGINT PRIMARY KEY,
        account TEXT NOT NULL,
        msg_id BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        body BYTEA NOT NULL
    )""",
    "CREATE INDEX events_account ON events (account, id)",
    # A message's history (SQLite reads forward from the message's first event instead).
    "CREATE INDEX events_msg_id ON events (msg_id, id)",
    """CREATE TABLE deliveries (
        event_id BIGINT PRIMARY KEY,
        url TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        first_at DOUBLE PRECISION NOT NULL,
        method TEXT NOT NULL DEFAULT 'POST'
    )""",
    "CREATE INDEX deliveries_due ON deliveries (next_at, event_id)",
    """CREATE TABLE deliveries_gone (
        msg_id BIGINT NOT NULL,
        url TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (msg_id, url)
    )""",
    """CREATE TABLE nodes (
        node TEXT PRIMARY KEY,
        run TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        left_at DOUBLE PRECISION
    )""",
    """CREATE TABLE counters (
        writer TEXT PRIMARY KEY,
        pending BIGINT NOT NULL DEFAULT 0,
        total BIGINT NOT NULL DEFAULT 0
    )""",
    *SMPP_TABLES,
)

# Upgrades from each older version (MIGRATIONS[n]: from n to n + 1), run in order in one
# transaction.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {1: SMPP_TABLES}


def schema_version(connection: psycopg.Connection[Any]) -> int:
    """The database's schema version; 0 when it has no journal yet."""
    found = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if found is None or not found[0]:
        return 0
    row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def create_or_migrate(connection: psycopg.Connection[Any], where: str) -> int:
    """Bring the database to SCHEMA_VERSION: create the journal (with a new instance name)
    in an empty one, migrate an older one; JournalError, naming `where`, when a newer
    septet made it. Returns the version found before (0: created). `connection` is in
    autocommit mode; this runs in one transaction of its own."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        version = schema_version(connection)
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"Cannot open the journal at {where}: it has schema version {version}, newer"
                f" than this septet understands ({SCHEMA_VERSION})."
            )
        if version == 0:
            for statement in SCHEMA:
                connection.execute(statement)
            instance = "".join(secrets.choice(INSTANCE_ALPHABET) for _ in range(6))
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('instance', %s), (%s, '0')",
                (instance, META_EVENT_ID),
            )
            connection.execute(
                "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
            )
        elif version < SCHEMA_VERSION:
            for old in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[old]:
                    connection.execute(statement)
            connection.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return version
