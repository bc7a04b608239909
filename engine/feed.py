"""The durable event feed: every event of a message as a journal row, and the reads of them.

Each event a lifecycle step announces (accepted, submitted, status, retry, failover,
failed, dlr, cancelled; never `rejected`, which has no message) becomes one row of the
journal's `events` table, written by the journal's writer thread in the transaction of the
state change that made it (engine.lifecycle puts an `AppendEvents` beside the step's own
changes; engine.journal's accept writes the `accepted` rows with the messages). So a
kill -9 keeps both or neither: no state change without its event, no event without it.

    events      id INTEGER PRIMARY KEY   the event id (webhook dedupe) and the feed cursor
                account, msg_id, at      whose, which message, when stored (Unix seconds)
                body                     the event as JSON, with `event_id` first
                n                        how many events the row holds (1, or a pack's)
    deliveries  event_id, url, attempts, next_at, first_at: a webhook POST still owed
                (engine.webhooks), written with the event row when the message has a URL

A pack (SQLite, schema 10): a run of at least PACK_MIN events of one account that one
commit writes, none of them owed to a webhook or a dlr-url, is one row: its id is the run's
last event id, `msg_id` 0 (several messages), `n` the run's length, and `body` a JSON
array of the events' ids, then the events' NDJSON lines without their ids (JSON has no
newline of its own; one encode for the run). A read puts each id back in its event, so
what is read is what a row of its own holds. An account's rows never interleave (a run
ends at any event of the account stored alone), so reading the rows by id reads the
events by id; a read that stops inside a pack resumes there, skipping the events at or
below its cursor (`read_feed`). An event owed to a webhook is always a row of
its own: a delivery names it by id (`deliveries.event_id`). A campaign's 100 messages were
100 rows (and index entries) per event kind, now one.

Ids are handed out by the writer in commit order, so a reader that has seen id N never
later finds a new row below N: `feed(account, after=N)` resumes exactly. The retention
sweep deletes the oldest rows (ids are in time order); the next id is kept in `meta` so
ids never go back after a sweep empties the table.

The functions here run on the journal's writer thread with its connection: no I/O of
their own, no locking (engine.journal owns the connection and the transaction). Only
`serve_retention`, the sweep's loop, runs on the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, NamedTuple, Protocol

import anyio
import msgspec
import structlog

from engine import kannel_dlr
from engine.kannel_dlr import KannelTarget
from engine.models import Event, Message, event_encoder

__all__ = [
    "DEFAULT_ACCOUNT",
    "AppendEvents",
    "DeliveryOutcome",
    "DueDelivery",
    "FeedPage",
    "PlainEvents",
    "account_of",
    "append_events",
    "history",
    "plan_events",
    "read_feed",
]

# The feed's account of a message that has none (journaled before accounts existed).
DEFAULT_ACCOUNT: Final = "default"
# The most events one feed read returns.
MAX_FEED_LIMIT: Final = 1000
# A pack holds from PACK_MIN to PACK_MAX events (module docstring); shorter runs are a
# row each, longer ones several packs. A pack of three already saves two rows and their
# index entries (callgrind: ~10 kIr an event on the writer thread), and the small commits
# of a lightly loaded daemon hold runs of three or so.
PACK_MIN: Final = 3
PACK_MAX: Final = 500
# A pack's `msg_id`: it holds several messages' events (msg_ids start at 1).
PACKED_MSG_ID: Final = 0
# The retention sweep deletes at most this many rows (events, or packs of them) a
# transaction, then yields the writer to the send path; it looks again after
# SWEEP_INTERVAL_S when it found fewer.
SWEEP_BATCH: Final = 2000
SWEEP_INTERVAL_S: Final = 60.0

log = structlog.get_logger("septet.feed")


def account_of(message: Message) -> str:
    """The account a message belongs to: the one place the feed and the webhooks take it
    from (a message journaled before accounts existed has none: the default account's)."""
    return message.account or DEFAULT_ACCOUNT


class AppendEvents(msgspec.Struct, frozen=True, tag=True):
    """A journal change: one message's events for the feed, and for its webhook when it has
    a `callback_url`. It rides with the step's state changes, in their transaction."""

    account: str
    msg_id: str
    callback_url: str | None
    events: list[Event]
    # A message sent with Kannel's dlr-url: its reports are GETs (engine.kannel_dlr).
    kannel: KannelTarget | None = None


class FeedPage(msgspec.Struct, frozen=True):
    """One read of the feed: event bodies (JSON, `event_id` first) in id order, and the
    cursor to pass as `after` next time (the last id read, or `after` itself when none)."""

    events: list[bytes]
    next_cursor: int


SCHEMA: Final = (
    "CREATE TABLE events (id INTEGER PRIMARY KEY, account TEXT NOT NULL,"
    " msg_id INTEGER NOT NULL, at REAL NOT NULL, body BLOB NOT NULL)",
    # The feed's one index: an account's events by id (its query and nothing else).
    "CREATE INDEX events_account ON events (account, id)",
    "CREATE TABLE deliveries (event_id INTEGER PRIMARY KEY, url TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, first_at REAL NOT NULL)",
    "CREATE INDEX deliveries_due ON deliveries (next_at)",
    # URLs that answered 410 Gone for a message: no more of its events go there.
    "CREATE TABLE deliveries_gone (msg_id INTEGER NOT NULL, url TEXT NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (msg_id, url)) WITHOUT ROWID",
)
# Schema 9: a delivery is a signed webhook POST of the event, or Kannel's dlr-url GET (the
# URL its escapes made, engine.kannel_dlr; nothing sent but the URL).
SCHEMA_METHOD: Final = ("ALTER TABLE deliveries ADD COLUMN method TEXT NOT NULL DEFAULT 'POST'",)
# Schema 10 (SQLite): a row may be a pack of several events (module docstring).
SCHEMA_PACKED: Final = ("ALTER TABLE events ADD COLUMN n INTEGER NOT NULL DEFAULT 1",)

SQL_INSERT_EVENT: Final = (
    "INSERT INTO events (id, account, msg_id, at, body) VALUES (?, ?, ?, ?, ?)"
)
SQL_INSERT_PACK: Final = (
    "INSERT INTO events (id, account, msg_id, at, body, n)"  # noqa: S608 - a constant
    f" VALUES (?, ?, {PACKED_MSG_ID}, ?, ?, ?)"
)
SQL_INSERT_DELIVERY: Final = (
    "INSERT INTO deliveries (event_id, url, attempts, next_at, first_at) VALUES (?, ?, 0, ?, ?)"
)
SQL_INSERT_GET_DELIVERY: Final = (
    "INSERT INTO deliveries (event_id, url, attempts, next_at, first_at, method)"
    " VALUES (?, ?, 0, ?, ?, 'GET')"
)
SQL_FEED: Final = (
    "SELECT id, n, body FROM events INDEXED BY events_account"
    " WHERE account = ? AND id > ? ORDER BY id LIMIT ?"
)
# A message's events lie at or after its `accepted` row (messages.first_event): in rows of
# its own, or in packs whose bodies name it.
SQL_HISTORY: Final = (
    "SELECT n, body FROM events WHERE id >= ?"
    " AND (msg_id = ? OR (n > 1 AND instr(body, ?) > 0)) ORDER BY id"
)
SQL_FIRST_EVENT: Final = "SELECT first_event FROM messages WHERE msg_id = ?"
SQL_LAST_EVENT_ID: Final = "SELECT max(id) FROM events"
# The oldest `limit` rows by id, of which those stored before the cut are deleted: bounded
# work per sweep, whatever the table holds. Each deleted row answers how many events it held.
SQL_SWEEP_EVENTS: Final = (
    "DELETE FROM events WHERE id IN (SELECT id FROM"
    " (SELECT id, at FROM events ORDER BY id LIMIT ?) WHERE at < ?"
    " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = id)) RETURNING n"
)
SQL_SWEEP_GONE: Final = "DELETE FROM deliveries_gone WHERE at < ?"

_EVENT_ID_PREFIX: Final = b'{"event_id":%d,%s'
# A pack's ids (module docstring).
_ids_encoder: Final = msgspec.json.Encoder()
_ids_decoder: Final = msgspec.json.Decoder(list[int])


def event_body(event_id: int, event: Event) -> bytearray:
    """The stored (and POSTed) JSON of an event: the NDJSON line's object with `event_id`
    first. A bytearray: sqlite3 binds it without an adapter lookup."""
    encoded = event_encoder.encode(event)
    return bytearray(_EVENT_ID_PREFIX % (event_id, encoded[1:]))


def keeps(keep: frozenset[str] | None, account: str, callback_url: str | None) -> bool:
    """Whether a message's events are stored: its account keeps a feed (`keep` None: every
    account does), or a webhook is owed for them. (A Kannel dlr-url is checked per event,
    in `append_events`.)"""
    return keep is None or callback_url is not None or account in keep


class EventRows(NamedTuple):
    """The rows `append_events` writes, planned without a connection (every backend's)."""

    next_id: int  # the next free event id
    events: list[tuple[int, str, int, float, bytearray]]  # id, account, msg_id, at, body
    posts: list[tuple[int, str, float, float]]  # event id, url, next_at, first_at
    gets: list[tuple[int, str, float, float]]  # the same, Kannel dlr-url GETs
    owed: list[DueDelivery]  # the deliveries added, for the webhook worker


def plan_events(
    changes: Sequence[AppendEvents | int],
    next_id: int,
    now: float,
    keep: frozenset[str] | None = None,
) -> EventRows:
    """The changes' event rows (and owed deliveries) with ids from `next_id` on. An int
    among the changes is that many events known not to be stored (`keeps`), never built:
    their ids are handed out and nothing more.

    With `keep`, an event of an account not in it is stored only when a delivery is owed
    for it (a callback_url or a Kannel dlr-url); it still takes its id, so ids stay in
    commit order and are never reused. Nobody could read the others: the feed is read over
    the HTTP API, with the account's key (docs/events.md)."""
    rows: list[tuple[int, str, int, float, bytearray]] = []
    deliveries: list[tuple[int, str, float, float]] = []
    gets: list[tuple[int, str, float, float]] = []
    owed: list[DueDelivery] = []
    for change in changes:
        if isinstance(change, int):
            next_id += change
            continue
        msg_id = int(change.msg_id)
        account = change.account
        url = change.callback_url
        kannel = change.kannel
        if url is None and kannel is None and keep is not None and account not in keep:
            next_id += len(change.events)
            continue
        for event in change.events:
            body = event_body(next_id, event)
            target: tuple[str, str] | None = None
            if url is not None:
                deliveries.append((next_id, url, now, now))
                target = (url, "POST")
            elif kannel is not None and (get := kannel_dlr.url_for(kannel, event)) is not None:
                gets.append((next_id, get, now, now))
                target = (get, "GET")
            if target is not None:
                owed.append(
                    DueDelivery(
                        next_id,
                        target[0],
                        0,
                        now,
                        account,
                        change.msg_id,
                        bytes(body),
                        False,
                        target[1],
                    )
                )
            if target is None and keep is not None and account not in keep:
                next_id += 1  # a Kannel report type the mask does not ask for
                continue
            rows.append((next_id, account, msg_id, now, body))
            next_id += 1
    return EventRows(next_id, rows, deliveries, gets, owed)


def append_events(
    connection: sqlite3.Connection,
    changes: Sequence[AppendEvents | PlainEvents | int],
    next_id: int,
    now: float,
    keep: frozenset[str] | None = None,
) -> tuple[int, list[DueDelivery]]:
    """Insert the changes' events (and owed deliveries) with ids from `next_id` on, runs
    of one account's events as packs (`plan_packed`); returns the next free id and the
    deliveries added (which the webhook worker is handed once they are committed, without
    reading them back). One prepared INSERT per row (executemany), one per delivery."""
    planned = plan_packed(changes, next_id, now, keep)
    if planned.alone:
        connection.executemany(SQL_INSERT_EVENT, planned.alone)
    if planned.packs:
        connection.executemany(SQL_INSERT_PACK, planned.packs)
    if planned.posts:
        connection.executemany(SQL_INSERT_DELIVERY, planned.posts)
    if planned.gets:
        connection.executemany(SQL_INSERT_GET_DELIVERY, planned.gets)
    return planned.next_id, planned.owed


EventRow = tuple[int, str, int, float, bytearray]  # id, account, msg_id, at, body
PackRow = tuple[int, str, float, bytearray, int]  # last id, account, at, body, n


class PlainEvents(NamedTuple):
    """Events of one account's messages, one each, none owed to a webhook or a dlr-url: a
    group's `accepted` events as the SQLite journal's accept plans them (no AppendEvents
    made and taken apart per message)."""

    account: str
    msg_ids: list[str]
    events: list[Event]


class _Run(NamedTuple):
    """An account's events not yet planned: ids, messages, events (parallel lists)."""

    ids: list[int]
    msg_ids: list[str]
    events: list[Event]


class PackedRows(NamedTuple):
    """`plan_events`' rows with runs packed (SQLite's, module docstring)."""

    next_id: int
    alone: list[EventRow]
    packs: list[PackRow]
    posts: list[tuple[int, str, float, float]]
    gets: list[tuple[int, str, float, float]]
    owed: list[DueDelivery]


def plan_packed(
    changes: Sequence[AppendEvents | PlainEvents | int],
    next_id: int,
    now: float,
    keep: frozenset[str] | None = None,
) -> PackedRows:
    """`plan_events`, each account's run of events between its events owed to a delivery
    (which stay rows of their own, planned by `plan_events`) packed when it holds PACK_MIN
    events or more, cut at PACK_MAX."""
    planned = PackedRows(next_id, [], [], [], [], [])
    runs: dict[str, _Run] = {}
    for change in changes:
        if isinstance(change, int):
            next_id += change
            continue
        account = change.account
        if type(change) is AppendEvents and (
            change.callback_url is not None or change.kannel is not None
        ):
            run = runs.pop(account, None)
            if run is not None:
                _close_run(account, run, now, planned)
            next_id = _plan_alone(change, next_id, now, keep, planned)
            continue
        count = len(change.events)
        if keep is not None and account not in keep:
            next_id += count
            continue
        run = runs.get(account)
        if run is None:
            runs[account] = run = _Run([], [], [])
        run.ids.extend(range(next_id, next_id + count))
        run.events.extend(change.events)
        if isinstance(change, PlainEvents):
            run.msg_ids.extend(change.msg_ids)
        else:
            run.msg_ids.extend([change.msg_id] * count)
        next_id += count
        if len(run.ids) >= PACK_MAX:
            _close_run(account, runs.pop(account), now, planned)
    for account, run in runs.items():
        _close_run(account, run, now, planned)
    return planned._replace(next_id=next_id)


def _plan_alone(
    change: AppendEvents, next_id: int, now: float, keep: frozenset[str] | None, planned: PackedRows
) -> int:
    """Plan a change owed to a delivery (`plan_events`: a row per event); the next free id."""
    alone = plan_events([change], next_id, now, keep)
    planned.alone.extend(alone.events)
    planned.posts.extend(alone.posts)
    planned.gets.extend(alone.gets)
    planned.owed.extend(alone.owed)
    return alone.next_id


def _close_run(account: str, run: _Run, now: float, planned: PackedRows) -> None:
    """Plan a run's rows: packs of up to PACK_MAX, or a row per event when it is short."""
    ids = run.ids
    if len(ids) < PACK_MIN:
        planned.alone.extend(
            (event_id, account, int(msg_id), now, event_body(event_id, event))
            for event_id, msg_id, event in zip(ids, run.msg_ids, run.events, strict=True)
        )
        return
    for start in range(0, len(ids), PACK_MAX):
        part = ids[start : start + PACK_MAX]
        lines = event_encoder.encode_lines(run.events[start : start + PACK_MAX])
        body = bytearray(_ids_encoder.encode(part))
        body += b"\n"
        body += memoryview(lines)[:-1]  # the last line's newline
        planned.packs.append((part[-1], account, now, body, len(part)))


def unpacked(body: bytes) -> list[tuple[int, bytes]]:
    """A pack's events: (id, the event's NDJSON line without its id) each, in order."""
    head, _, lines = body.partition(b"\n")
    return list(zip(_ids_decoder.decode(head), lines.split(b"\n"), strict=True))


def with_id(event_id: int, line: bytes) -> bytes:
    """An event's body from its NDJSON line (`event_body`'s bytes)."""
    return _EVENT_ID_PREFIX % (event_id, line[1:])


def last_event_id(connection: sqlite3.Connection, kept: int) -> int:
    """The highest id ever handed out: the table's, or `kept` (meta) after a sweep."""
    highest = connection.execute(SQL_LAST_EVENT_ID).fetchone()[0] or 0
    return max(int(highest), kept)


def read_feed(connection: sqlite3.Connection, account: str, after: int, limit: int) -> FeedPage:
    """An account's events after the cursor `after`, oldest first, at most `limit`
    (1..MAX_FEED_LIMIT). Non-destructive: the same cursor reads the same events again.
    Each row holds at least one event after `after` (a pack's id is its last), so `limit`
    rows hold enough."""
    limit = max(1, min(limit, MAX_FEED_LIMIT))
    after = max(after, 0)
    events: list[bytes] = []
    cursor = after
    for row_id, held, body in connection.execute(SQL_FEED, (account, after, limit)):
        if held == 1:
            events.append(bytes(body))
            cursor = row_id
            if len(events) == limit:
                break
            continue
        for event_id, line in unpacked(bytes(body)):
            if event_id > after:
                events.append(with_id(event_id, line))
                cursor = event_id
                if len(events) == limit:
                    return FeedPage(events, cursor)
    return FeedPage(events, cursor)


def history(connection: sqlite3.Connection, msg_id: str) -> list[bytes] | None:
    """A message's events in order (those the retention sweep has not deleted), or None
    when the journal has no such message. Reads forward from the message's `accepted`
    row: no index of its own (the feed's writes stay one index wide); of a pack, the
    events that name the message."""
    if not msg_id.isdigit():
        return None
    row = connection.execute(SQL_FIRST_EVENT, (int(msg_id),)).fetchone()
    if row is None:
        return None
    first = row[0] or 0
    names = b'"msg_id":"%s"' % msg_id.encode()
    found: list[bytes] = []
    for held, body in connection.execute(SQL_HISTORY, (first, int(msg_id), names)):
        if held == 1:
            found.append(bytes(body))
            continue
        found.extend(
            with_id(event_id, line) for event_id, line in unpacked(bytes(body)) if names in line
        )
    return found


def sweep(connection: sqlite3.Connection, before: float, limit: int) -> int:
    """Delete up to `limit` of the oldest rows stored before `before` (and 410 marks as
    old); returns how many events went (a pack's all). Deliveries whose event went are
    given up by the webhook worker when it finds the body missing."""
    deleted = sum(int(row[0]) for row in connection.execute(SQL_SWEEP_EVENTS, (limit, before)))
    connection.execute(SQL_SWEEP_GONE, (before,))
    return deleted


# ── Webhook deliveries (engine.webhooks reads and settles them in batches) ─────────


class DueDelivery(msgspec.Struct, frozen=True):
    """A webhook POST owed now: the event's body (None when the retention sweep has taken
    it), whose it is, how often it was tried, when it was first owed, and whether its URL
    answered 410 Gone for this message already."""

    event_id: int
    url: str
    attempts: int
    first_at: float
    account: str
    msg_id: str
    body: bytes | None
    gone: bool
    method: str = "POST"  # "GET": Kannel's dlr-url, `url` complete, no body sent


class DeliveryOutcome(msgspec.Struct, frozen=True):
    """What became of one claimed delivery: `next_at` None deletes it (delivered, given
    up); else it is tried again then, `attempts` tries made. `gone`: its URL answered 410,
    so no more of the message's events go there."""

    event_id: int
    attempts: int
    next_at: float | None = None
    gone: bool = False


SQL_DUE_DELIVERIES: Final = (
    "SELECT d.event_id, d.url, d.attempts, d.first_at, e.account, e.msg_id, e.body,"
    " g.msg_id IS NOT NULL, d.method FROM deliveries d INDEXED BY deliveries_due"
    " LEFT JOIN events e ON e.id = d.event_id"
    " LEFT JOIN deliveries_gone g ON g.msg_id = e.msg_id AND g.url = d.url"
    " WHERE d.next_at <= ? ORDER BY d.next_at, d.event_id LIMIT ?"
)
SQL_NEXT_DELIVERY: Final = "SELECT min(next_at) FROM deliveries"
SQL_NEXT_DELIVERY_AFTER: Final = "SELECT min(next_at) FROM deliveries WHERE next_at > ?"
SQL_COUNT_DELIVERIES: Final = "SELECT count(*) FROM deliveries"
SQL_DELETE_DELIVERY: Final = "DELETE FROM deliveries WHERE event_id = ?"
SQL_RETRY_DELIVERY: Final = "UPDATE deliveries SET attempts = ?, next_at = ? WHERE event_id = ?"
SQL_MARK_GONE: Final = (
    "INSERT OR IGNORE INTO deliveries_gone (msg_id, url, at)"
    " SELECT e.msg_id, d.url, ? FROM deliveries d JOIN events e ON e.id = d.event_id"
    " WHERE d.event_id = ?"
)


def due_deliveries(
    connection: sqlite3.Connection, now: float, limit: int, exclude: frozenset[int]
) -> list[DueDelivery]:
    """Deliveries due by `now`, earliest first, skipping the ids in `exclude` (in flight)."""
    rows = connection.execute(SQL_DUE_DELIVERIES, (now, limit + len(exclude))).fetchall()
    found = [
        DueDelivery(
            event_id=row[0],
            url=row[1],
            attempts=row[2],
            first_at=row[3],
            account=row[4] or DEFAULT_ACCOUNT,
            msg_id=str(row[5]) if row[5] is not None else "",
            body=bytes(row[6]) if row[6] is not None else None,
            gone=bool(row[7]),
            method=str(row[8]),
        )
        for row in rows
        if row[0] not in exclude
    ]
    return found[:limit]


def settle_deliveries(
    connection: sqlite3.Connection, outcomes: Sequence[DeliveryOutcome], now: float
) -> None:
    """Write a batch of outcomes: 410 marks first (they need the rows), then the retries,
    then the deletions."""
    gone = [(now, outcome.event_id) for outcome in outcomes if outcome.gone]
    if gone:
        connection.executemany(SQL_MARK_GONE, gone)
    retries = [
        (outcome.attempts, outcome.next_at, outcome.event_id)
        for outcome in outcomes
        if outcome.next_at is not None
    ]
    if retries:
        connection.executemany(SQL_RETRY_DELIVERY, retries)
    done = [(outcome.event_id,) for outcome in outcomes if outcome.next_at is None]
    if done:
        connection.executemany(SQL_DELETE_DELIVERY, done)


def next_delivery_at(connection: sqlite3.Connection, after: float | None = None) -> float | None:
    if after is None:
        value = connection.execute(SQL_NEXT_DELIVERY).fetchone()[0]
    else:
        value = connection.execute(SQL_NEXT_DELIVERY_AFTER, (after,)).fetchone()[0]
    return None if value is None else float(value)


def deliveries_owed(connection: sqlite3.Connection) -> int:
    return int(connection.execute(SQL_COUNT_DELIVERIES).fetchone()[0])


# ── The retention sweep (on the event loop) ─────────────────────────────────────────


class SweptJournal(Protocol):
    async def sweep_events(self, before: float, limit: int) -> int: ...


async def serve_turns(turn: Callable[[], Awaitable[bool]], interval_s: float) -> None:
    """Forever: run `turn` (one short transaction of a sweep) again at once while it has
    more to do, and `interval_s` later once it returns True (it reached the end)."""
    while True:
        if await turn():
            await anyio.sleep(interval_s)


async def serve_retention(
    journal: SweptJournal,
    keep_s: float,
    *,
    clock: Callable[[], float] = time.time,
    batch: int = SWEEP_BATCH,
    interval_s: float = SWEEP_INTERVAL_S,
) -> None:
    """Forever: delete the feed's events older than `keep_s`, `batch` at a time (each its
    own short transaction, so the send path's commits go between them)."""

    async def turn() -> bool:
        deleted = await journal.sweep_events(clock() - keep_s, batch)
        if deleted:
            log.info("events_swept", events=deleted)
        return deleted < batch

    await serve_turns(turn, interval_s)
