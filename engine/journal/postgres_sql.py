"""The PostgreSQL journal's statements: each query once, on the partial indexes it names.

Groups are one statement over arrays (`unnest`, bench/pg_clients.py: a quarter of the
client CPU of a statement per row); parameters are binary (`%b`). Statements interpolate
only the constants below, never data (hence the `noqa: S608`).

Two rules from bench/pg_clients.py's runs (docs/design.md, "Cluster mode"):
- a statement that reaches rows by msg_id tests the state in a form no partial index's
  predicate matches (`state < 1`, `state < 3`), so the planner takes the primary key
  whatever its statistics say (with statistics from a table where nothing waited, a claim
  written `state = 0` walked the whole waiting index per message);
- arrays are joined as `FROM unnest(...) AS c JOIN messages ON msg_id = c.id`: one primary
  key probe per element.
"""

from __future__ import annotations

from typing import Final

from engine.journal.interface import INFLIGHT_S, SENT_S, SUBMITTED_S, UNCONFIRMED_S
from engine.models import OUTCOME_SENT

# The columns a Message is rebuilt from, in this order (postgres._message_from_row).
MESSAGE_COLUMNS: Final = (
    "msg_id, state, due_at, attempt, bridge_index, provider_id, inflight_at, maybe_sent, body"
)
M_COLUMNS: Final = ", ".join(f"m.{column.strip()}" for column in MESSAGE_COLUMNS.split(","))

# msg_id, due_at, priority, bridges, bridge_index, bridge, attempt, client_ref,
# first_of_group, dlr, status, account, body. A group whose first message's client id is
# taken (by another node, in the same instant) inserts nothing of that first message: the
# caller sees which firsts came back.
SQL_INSERT_MESSAGES: Final = (
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, client_ref, first_of_group, dlr, status, account, body)"
    " SELECT i, 0, d, p, r, bi, b, a, c, f, l, s, ac, bo FROM unnest(%b::bigint[],"
    " %b::float8[], %b::int2[], %b::text[], %b::int2[], %b::text[], %b::int4[], %b::text[],"
    " %b::bool[], %b::bool[], %b::text[], %b::text[], %b::bytea[])"
    " AS r(i, d, p, r, bi, b, a, c, f, l, s, ac, bo)"
    " ON CONFLICT (account, client_ref) WHERE client_ref IS NOT NULL AND first_of_group"
    " DO NOTHING RETURNING msg_id"
)
SQL_FIND_CLIENT_REFS: Final = (
    "SELECT m.account, m.client_ref, array_agg(m.msg_id ORDER BY m.msg_id)"
    " FROM unnest(%b::text[], %b::text[]) AS c(account, client_ref)"
    " JOIN messages AS m ON m.account = c.account AND m.client_ref = c.client_ref"
    " GROUP BY m.account, m.client_ref"
)
SQL_COUNT_ACCOUNT_DAYS: Final = (
    "INSERT INTO account_days (account, day, messages)"
    " SELECT * FROM unnest(%b::text[], %b::int4[], %b::int8[])"
    " ON CONFLICT (account, day) DO UPDATE SET messages = account_days.messages"
    " + excluded.messages"
)
SQL_ACCOUNT_DAY: Final = "SELECT messages FROM account_days WHERE account = %s AND day = %s"
SQL_NEXT_EVENT_IDS: Final = (
    "UPDATE meta SET value = (value::bigint + %b)::text WHERE key = %b RETURNING value::bigint"
)

# The claim: a compare-and-set on rows this transaction locks, skipping those another
# node's transaction holds (it is claiming them: they are not ours to send).
# Several callers' claims in one statement: each row has its own bridge and time.
SQL_CLAIM: Final = (
    f"UPDATE messages AS m SET state = 1, status = '{INFLIGHT_S}', inflight_at = won.at,"  # noqa: S608
    " claimed_by = %b FROM (SELECT w.msg_id, c.at FROM unnest(%b::bigint[], %b::int4[],"
    " %b::int2[], %b::float8[]) AS c(id, attempt, bi, at) JOIN messages AS w ON w.msg_id = c.id"
    " WHERE w.state < 1 AND w.bridge_index = c.bi AND w.attempt = c.attempt"
    " FOR UPDATE OF w SKIP LOCKED) AS won WHERE m.msg_id = won.msg_id RETURNING m.msg_id"
)
# A cancel wins only over a message still waiting that no request has carried.
SQL_CANCEL: Final = (
    "UPDATE messages SET state = 3, outcome = %s, status = %s, code = %s, error = %s,"
    " final_at = %s WHERE msg_id = %s AND state < 1 AND attempt = 0 AND maybe_sent = 0"
)


def _change(assignments: str, columns: str, types: str, where: str = "m.state < 3") -> str:
    """An UPDATE of messages from arrays: `columns` name unnest()'s output (c.id first)."""
    return (
        f"UPDATE messages AS m SET {assignments} FROM unnest({types}) AS c({columns})"  # noqa: S608
        f" WHERE m.msg_id = c.id AND {where}"
    )


# Each change kind's statement; every change leaves a final message as it is.
CHANGE_SQL: Final = {
    "inflight": _change(
        f"state = 1, bridge_index = c.bi, bridge = (m.bridges::jsonb ->> c.bi::int),"
        f" attempt = c.attempt, status = '{INFLIGHT_S}', inflight_at = c.at, claimed_by = %b",
        "id, bi, attempt, at",
        "%b::bigint[], %b::int2[], %b::int4[], %b::float8[]",
    ),
    "submitted": _change(
        "state = 2, provider_id = c.pid, submit_cost = c.cost, submit_currency = c.cur,"
        f" submitted_at = c.at, status = '{SUBMITTED_S}', due_at = c.by, claimed_by = NULL",
        "id, pid, cost, cur, at, by",
        "%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::float8[], %b::float8[]",
    ),
    "submitted_final": _change(
        "state = 3, provider_id = c.pid, submit_cost = c.cost, submit_currency = c.cur,"
        f" submitted_at = c.at, outcome = '{OUTCOME_SENT}', status = '{SENT_S}',"
        " code = NULL, error = NULL, final_at = c.by, claimed_by = NULL",
        "id, pid, cost, cur, at, by",
        "%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::float8[], %b::float8[]",
    ),
    "retry": _change(
        "state = 0, due_at = c.due, attempt = c.attempt, bridge_index = c.bi,"
        " bridge = (m.bridges::jsonb ->> c.bi::int), retry_reason = c.reason,"
        " maybe_sent = c.maybe, status = c.status, claimed_by = NULL",
        "id, due, attempt, bi, reason, maybe, status",
        "%b::bigint[], %b::float8[], %b::int4[], %b::int2[], %b::text[], %b::float8[], %b::text[]",
    ),
    "unconfirmed": _change(
        "state = 2, submitted_at = c.at, maybe_sent = c.maybe, due_at = c.by, error = c.error,"
        f" status = '{UNCONFIRMED_S}', claimed_by = NULL",
        "id, at, maybe, by, error",
        "%b::bigint[], %b::float8[], %b::float8[], %b::float8[], %b::text[]",
    ),
    "confirmed": _change(
        f"provider_id = coalesce(c.pid, m.provider_id), due_at = c.by, status = '{SUBMITTED_S}'",
        "id, pid, by",
        "%b::bigint[], %b::text[], %b::float8[]",
        where="m.state = 2",
    ),
    "charged": _change(
        "submit_cost = c.cost, submit_currency = c.cur",
        "id, cost, cur",
        "%b::bigint[], %b::float8[], %b::text[]",
    ),
    "final": _change(
        "state = 3, outcome = c.outcome, status = c.status, code = c.code, error = c.error,"
        " final_at = c.at, claimed_by = NULL",
        "id, outcome, status, code, error, at",
        "%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[]",
    ),
    "polled": _change(
        "last_polled_at = c.at, polls = m.polls + 1, next_poll_at = c.next",
        "id, at, next",
        "%b::bigint[], %b::float8[], %b::float8[]",
        where="m.state = 2",
    ),
    "schedule_polls": _change(
        "next_poll_at = c.at",
        "id, at",
        "%b::bigint[], %b::float8[]",
        where="m.state = 2 AND m.next_poll_at = 0",
    ),
}

SQL_DUE: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
    " WHERE state = 0 AND priority = %s AND due_at <= %s ORDER BY due_at, msg_id LIMIT %s"
)
SQL_DUE_AFTER: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
    " WHERE state = 0 AND priority = %s AND due_at <= %s AND (due_at, msg_id) > (%s, %s)"
    " ORDER BY due_at, msg_id LIMIT %s"
)
SQL_DUE_WINDOW: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
    " WHERE state = 0 AND priority = %s AND due_at > %s AND due_at <= %s"
    " ORDER BY due_at, msg_id LIMIT %s"
)
# The same reads of ids only (the waiting index answers them alone): `due` picks the ids
# it wants, leaving out those the caller holds, before it reads any message's body.
SQL_DUE_IDS: Final = SQL_DUE.replace(MESSAGE_COLUMNS, "msg_id", 1)
SQL_DUE_AFTER_IDS: Final = SQL_DUE_AFTER.replace(MESSAGE_COLUMNS, "msg_id", 1)
SQL_DUE_WINDOW_IDS: Final = SQL_DUE_WINDOW.replace(MESSAGE_COLUMNS, "msg_id", 1)
# Those messages, still waiting (one another node claimed meanwhile is not due any more).
SQL_WAITING_BY_IDS: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
    " WHERE msg_id = ANY(%s::bigint[]) AND state < 1"
)
SQL_NEXT_DUE: Final = (
    "SELECT min(due_at) FROM messages WHERE state = 0 AND priority = %s AND due_at > %s"
)
SQL_REPORT_OVERDUE: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
    " WHERE state = 2 AND due_at <= %s ORDER BY due_at LIMIT %s"
)
SQL_UNCONFIRMED: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
    " WHERE state = 2 AND provider_id IS NULL AND bridge = %s ORDER BY msg_id"
)
SQL_AWAITING_POLL: Final = (
    f"SELECT {MESSAGE_COLUMNS}, polls, next_poll_at FROM messages"  # noqa: S608
    " WHERE state = 2 AND dlr AND bridge = %s AND next_poll_at <= %s"
    " ORDER BY next_poll_at, msg_id LIMIT %s"
)
# A dead node's claims, restamped to this node (a claim is taken by one node only).
SQL_TAKE_CLAIMS: Final = (
    f"UPDATE messages AS m SET claimed_by = %s FROM (SELECT msg_id FROM messages"  # noqa: S608
    " WHERE state = 1 AND claimed_by = %s ORDER BY msg_id LIMIT %s FOR UPDATE SKIP LOCKED)"
    f" AS t WHERE m.msg_id = t.msg_id RETURNING {M_COLUMNS}"
)

# Retention (engine.retention.prune_turn's statements, for PostgreSQL).
SQL_PRUNE_WINDOW_END: Final = (
    "SELECT max(msg_id), count(*) FROM (SELECT msg_id FROM messages"
    " WHERE msg_id > %s AND msg_id < %s ORDER BY msg_id LIMIT %s) AS window_rows"
)
SQL_PRUNE_MESSAGES: Final = (
    "DELETE FROM messages WHERE msg_id > %s AND msg_id <= %s AND state = 3 AND final_at < %s"
)
SQL_PRUNE_OUTBOX: Final = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id < %s ORDER BY id LIMIT %s)"
)
SQL_PRUNE_ORPHANS: Final = (
    "DELETE FROM orphan_receipts WHERE id IN"
    " (SELECT id FROM orphan_receipts ORDER BY id LIMIT %s) AND at < %s"
)
SQL_PRUNE_DAYS: Final = "DELETE FROM account_days WHERE day < %s"
SQL_NEXT_OUTBOX_ID: Final = "SELECT coalesce(max(id), 0) + 1 FROM outbox"
SQL_NEXT_MSG_ID: Final = (
    "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM message_ids"
)
