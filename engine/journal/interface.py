"""The journal's contract: the Journal protocol, its changes and answers, what backends share.

docs/design.md "Nothing accepted is lost": a message is acknowledged only after the commit
that holds it. The engine sees only what is defined here; a backend (engine.journal.sqlite
today) keeps it. The state changes are a tagged union that `Journal.record` applies in
order; the names of the lifecycle states and a final outcome's name are the same for
every backend, so they are defined once, here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, TypeVar

import msgspec

from engine import feed, retention
from engine.cluster import NodeRecord
from engine.feed import AppendEvents, DeliveryOutcome, DueDelivery, FeedPage
from engine.models import (
    OUTCOME_CANCELLED,
    OUTCOME_SENT,
    STATE_OF_SMPP,
    Message,
    MessageState,
    State,
    accepted_event,
)

__all__ = [
    "ACCEPTED_S",
    "INFLIGHT_S",
    "PRIORITY_LANES",
    "SCHEDULED_S",
    "SENT_S",
    "STATE_NAMES",
    "STATUS_OF_OUTCOME",
    "SUBMITTED_S",
    "UNCONFIRMED_S",
    "AppendEvents",
    "Change",
    "Duplicate",
    "Journal",
    "JournalBackend",
    "JournalError",
    "JournalFullError",
    "JournalReader",
    "Listed",
    "MarkCharged",
    "MarkConfirmed",
    "MarkFinal",
    "MarkInflight",
    "MarkPolled",
    "MarkRetry",
    "MarkSubmitted",
    "MarkUnconfirmed",
    "MessagePage",
    "PollDue",
    "SchedulePolls",
    "StorageStats",
    "StoreEvents",
    "StoreOrphanReceipt",
    "StoredMessage",
    "accepted_append",
    "accepted_event",
    "journal_backend",
    "priority_lane",
    "status_of_outcome",
    "waiting_status",
]


# A message's phase, the coarse state the queries are keyed on; a backend stores the
# index in this tuple (0 waiting, 1 in flight, 2 awaiting a report, 3 final).
STATE_NAMES: Final[tuple[MessageState, ...]] = ("accepted", "inflight", "submitted", "final")
ACCEPTED, INFLIGHT, SUBMITTED, FINAL = 0, 1, 2, 3

# models.Priority is 0..9; `due` walks the lanes from the highest down.
PRIORITY_LANES: Final = tuple(range(9, -1, -1))

# The lifecycle's state names (engine.models.State) as a backend stores them beside the
# phase: the name engine.lifecycle gave the message.
ACCEPTED_S: Final = State.ACCEPTED.value
SCHEDULED_S: Final = State.SCHEDULED.value
INFLIGHT_S: Final = State.INFLIGHT.value
SUBMITTED_S: Final = State.SUBMITTED.value
UNCONFIRMED_S: Final = State.UNCONFIRMED.value
SENT_S: Final = State.SENT.value
# A final outcome (an SMPP state, or SUBMITTED / CANCELLED) -> its state's name.
STATUS_OF_OUTCOME: Final[dict[str, str]] = {
    **{smpp: state.value for smpp, state in STATE_OF_SMPP.items()},
    OUTCOME_SENT: State.SENT.value,
    OUTCOME_CANCELLED: State.CANCELLED.value,
}


def status_of_outcome(outcome: str) -> str:
    """The state's name of a message that ended with `outcome` (unknown ones: UNKNOWN)."""
    return STATUS_OF_OUTCOME.get(outcome, State.UNKNOWN.value)


def waiting_status(attempt: int) -> str:
    """A message back to waiting: scheduled for a retry, accepted on a new bridge."""
    return SCHEDULED_S if attempt > 0 else ACCEPTED_S


def new_route(cache: dict[tuple[str, ...], str], bridges: tuple[str, ...]) -> str:
    """The JSON stored as a message's route (its bridges), made once per route into `cache`
    (which starts afresh past 1,024 routes); callers look in `cache` first."""
    if len(cache) > 1024:
        cache.clear()
    route = cache[bridges] = msgspec.json.encode(bridges).decode()
    return route


def priority_lane(priority: int) -> int:
    """The lane (0..9) a message's priority queues it in."""
    return 0 if priority < 0 else 9 if priority > 9 else priority


def accepted_append(message: Message) -> AppendEvents:
    """The feed's `accepted` event of a message being journaled (its msg_id assigned)."""
    return AppendEvents(
        account=feed.account_of(message),
        msg_id=message.msg_id,
        callback_url=message.callback_url,
        events=[accepted_event(message)],
    )


class JournalError(Exception):
    """The journal cannot be opened or written; the message is a sentence for a person."""


class JournalFullError(JournalError):
    """New messages are refused: the journal is at its configured size cap."""


class JournalBackend(enum.Enum):
    """Where the journal is kept (`[journal] backend`): one module of this package each."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


def journal_backend(name: str) -> JournalBackend:
    """The backend `[journal] backend` names; JournalError with a sentence for any other."""
    try:
        return JournalBackend(name)
    except ValueError:
        known = ", ".join(repr(backend.value) for backend in JournalBackend)
        raise JournalError(
            f"journal.backend {name!r} is not a journal backend of this septet; it has {known}."
        ) from None


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


R = TypeVar("R")
# Journal.find_and_record's `decide`: the messages found by provider id -> the changes to
# record and what the caller wants back.
Decide = Callable[[dict[str, Message]], tuple[Sequence[Change], R]]


async def find_then_record(
    journal: Journal, bridge: str, provider_ids: Sequence[str], decide: Decide[R]
) -> R:
    """Journal.find_and_record in two turns (a read, then a write): for a backend whose
    writes cannot read what an earlier operation of their group changed."""
    found = await journal.find_by_provider_id(bridge, provider_ids) if provider_ids else {}
    changes, result = decide(found)
    if changes:
        await journal.record(changes)
    return result


class Journal(Protocol):
    """What the engine needs from durable storage: every operation it calls on a journal,
    by whom. Every method is safe to call concurrently; a storage failure is JournalError
    (JournalFullError: new messages are refused, what was accepted still goes on)."""

    # The journal's own name, the prefix of the references it gives out (`find_by_reference`).
    instance: str
    # Called on the event loop after a commit with the webhook deliveries it added (none:
    # read them back, `due_deliveries`); the daemon wakes the webhook worker with it.
    on_deliveries: Callable[[list[DueDelivery]], None] | None
    # Whether other processes (nodes) write this journal too (docs/cluster.md): a client's
    # events may then be made on another node and reach it through the outbox.
    shared: bool
    # Called (on the event loop) when another node kept outbox lines, where the backend can
    # tell (PostgreSQL's NOTIFY): engine.ingress.outbox.serve_kept_for_live wakes at once.
    on_kept_events: Callable[[], None] | None

    @property
    def commits(self) -> int:
        """Successful commits so far (tests and metrics)."""
        ...

    # ── accepting and sending (engine.ingress.accept, engine.dispatch, engine.lifecycle) ──

    async def accept(self, groups: Sequence[Sequence[Message]]) -> list[list[Message] | Duplicate]:
        """Assign msg_id/reference and make each group durable; a group is all-or-nothing.
        A group whose client_ref its account used already is answered Duplicate."""
        ...

    async def accepted_today(self, account: str, day: int) -> int:
        """Messages of `account` accepted on UTC `day` (days since 1970-01-01)."""
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

    async def record(self, changes: Sequence[Change]) -> None:
        """Apply the changes in order, in one transaction; a final message never changes."""
        ...

    async def cancel(self, changes: Sequence[Change]) -> bool:
        """A cancel step (engine.lifecycle.on_cancel): its one MarkFinal as a compare-and-set
        on a message still waiting and never carried, its other changes only when that won.
        False: too late."""
        ...

    # ── the scheduler's feeder (engine.scheduler) ──

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
        msg_id; `after` continues a page, `since` reads only those due later than it."""
        ...

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        """The earliest due_at among accepted messages (strictly later than `after`)."""
        ...

    # ── recovery (engine.recovery) ──

    async def inflight(self) -> list[Message]:
        """Messages left inflight (after a crash, their provider call's fate is unknown)."""
        ...

    async def report_overdue(self, now: float, limit: int) -> list[Message]:
        """Messages awaiting a report whose deadline has passed, earliest first."""
        ...

    # ── reports (engine.dlr) ──

    async def find_by_provider_id(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> dict[str, Message]:
        """provider_id -> submitted or final message sent on `bridge` that asked for a report."""
        ...

    async def find_and_record(
        self, bridge: str, provider_ids: Sequence[str], decide: Decide[R]
    ) -> R:
        """`find_by_provider_id`, then `record` what `decide` makes of the messages found,
        in one turn of the journal where it can (`decide` is pure: it may be called again
        when the turn is retried); returns what `decide` returned beside its changes."""
        ...

    async def find_by_reference(self, references: Sequence[str]) -> dict[str, Message]:
        """reference -> message, for references this journal gave out."""
        ...

    async def unconfirmed(self, bridge: str) -> list[Message]:
        """Messages on `bridge` that may sit at the provider under an id never learned."""
        ...

    async def awaiting_poll(self, bridge: str, now: float, limit: int) -> list[PollDue]:
        """Submitted messages on `bridge` that asked for a report and may be polled at `now`."""
        ...

    async def take_orphan_receipts(self, bridge: str, provider_ids: Sequence[str]) -> list[bytes]:
        """Receipts stored for these provider ids, oldest first; they leave the journal."""
        ...

    async def orphan_receipt_ids(self) -> list[tuple[str, str, float]]:
        """(bridge, provider id, stored at) of every orphan receipt, oldest first."""
        ...

    # ── the outbox of NDJSON and SMPP clients that went away (engine.ingress.outbox) ──

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]:
        """Outbox lines in the order stored (for `origin`, or any if None); they leave it."""
        ...

    async def kept_origins(self, origins: Collection[str]) -> list[str]:
        """Which of `origins` have events in the outbox (engine.ingress.outbox)."""
        ...

    async def serve_notifications(self) -> None:
        """Forever, where the backend can tell: call `on_kept_events` when another node kept
        outbox lines. Returns at once where it cannot (no other node: SQLite)."""
        ...

    # ── the event feed, webhooks and retention (engine.feed, engine.webhooks, engine.retention) ──

    async def feed(self, account: str, after: int, limit: int) -> FeedPage:
        """The account's events after the cursor `after`, oldest first (docs/events.md)."""
        ...

    async def history(self, msg_id: str) -> list[bytes] | None:
        """A message's events in order; None when the journal has no message `msg_id`."""
        ...

    async def sweep_events(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest feed events stored before `before`, except
        those a webhook still owes; returns how many went."""
        ...

    async def prune(self, turn: retention.PruneTurn) -> retention.Pruned:
        """One retention turn: delete what it bounds, in one short transaction."""
        ...

    async def due_deliveries(
        self, now: float, limit: int, exclude: frozenset[int] = frozenset()
    ) -> list[DueDelivery]:
        """Webhook deliveries due by `now`, earliest first, not in `exclude`."""
        ...

    async def settle_deliveries(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Write what became of a batch of deliveries (one transaction)."""
        ...

    async def next_delivery_at(self, after: float | None = None) -> float | None:
        """When the next webhook delivery falls due (None: none is owed), or the next
        after `after` (one due by then is being sent or read already)."""
        ...

    async def deliveries_owed(self) -> int:
        """Webhook deliveries not yet settled."""
        ...

    # ── counts and reads (engine.observe, the daemon's readiness, admin, tests) ──

    async def pending_count(self) -> int:
        """Messages not final yet."""
        ...

    async def counts(self) -> dict[str, int]:
        """Messages by phase (STATE_NAMES)."""
        ...

    async def kept_events_count(self) -> int:
        """Outbox lines kept for clients that went away."""
        ...

    async def get(self, msg_ids: Sequence[str]) -> dict[str, Message]:
        """msg_id -> message, for those the journal has."""
        ...

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
        """The account's own messages, newest first, filtered."""
        ...

    async def integrity_check(self) -> str:
        """The store's own check: 'ok', or what is wrong, one problem a line."""
        ...

    # ── cluster membership (engine.membership, engine.cluster) ──
    # Each node's row and heartbeat, claims stamped with the node that joined, a dead
    # node's claims taken over. After `join`, `claim` stamps this node and `inflight` is
    # this node's claims only.

    async def node_record(self, node: str) -> NodeRecord | None:
        """`node`'s row, if it has one."""
        ...

    async def join(self, node: str, run: str, now: float) -> None:
        """This process becomes `node` (its run `run`): its claims are stamped with it."""
        ...

    async def heartbeat(self, node: str, run: str, now: float) -> bool:
        """False when the row is gone or another run holds the name."""
        ...

    async def leave(self, node: str, run: str, now: float) -> None:
        """The node stops (its row says so)."""
        ...

    async def nodes(self) -> list[NodeRecord]:
        """Every node's row, with the claims it holds."""
        ...

    async def take_claims(self, dead: str, limit: int) -> list[Message]:
        """Up to `limit` of `dead`'s claims, restamped to this node in one commit (a claim
        is taken by one node only, however many try at once)."""
        ...

    async def forget_node(self, node: str, heartbeat_at: float) -> bool:
        """Delete `node`'s row if it holds no claim and its heartbeat is still
        `heartbeat_at` (a node that came back is kept)."""
        ...


# ── Reading for applications and operators, apart from the writer ───────────────


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as the journal holds it now. `status` is the lifecycle state's name
    (engine.models.State); times are Unix seconds."""

    message: Message
    status: str
    submitted_at: float | None
    final_at: float | None
    code: str | None
    error: str | None
    provider_cost: float | None
    provider_currency: str | None


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Messages newest first, and the cursor below the last row looked at (None: no more)."""

    messages: list[StoredMessage]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class StorageStats:
    """What `septet journal stats` shows of the store: where it is, its size on disk (the
    file, its write-ahead log, the space free inside), how it gives space back, its schema
    version, the messages by lifecycle state, and the oldest msg_id kept."""

    location: str
    file_bytes: int
    wal_bytes: int
    free_bytes: int
    auto_vacuum: str
    schema_version: int
    by_status: dict[str, int]
    oldest_msg_id: int | None


class JournalReader(Protocol):
    """Read-only queries for the HTTP API, the admin commands and the backlog gauge, on a
    connection of their own: they never wait behind the writer's commits nor make it wait,
    and they see the last committed state."""

    async def message(self, msg_id: int) -> StoredMessage | None:
        """One message by msg_id."""
        ...

    async def page(
        self,
        account: str,
        *,
        below: int | None = None,
        client_ref: str | None = None,
        status: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> MessagePage:
        """`account`'s messages below msg_id `below`, newest first, filtered."""
        ...

    async def latest(
        self, *, status: str | None, below: int | None, limit: int
    ) -> list[StoredMessage]:
        """Every account's messages below msg_id `below`, newest first (the operator's list)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Messages by phase as of the last commit (the backlog gauge)."""
        ...

    async def kept_events_count(self) -> int:
        """Outbox lines kept for clients that went away."""
        ...

    async def feed(self, account: str, after: int, limit: int) -> tuple[list[bytes], int]:
        """`account`'s events after cursor `after`, and the cursor to read on from."""
        ...

    async def history(self, msg_id: str) -> list[bytes]:
        """A message's events, oldest first (none for an unknown message)."""
        ...

    async def stats(self) -> StorageStats:
        """The store's size and contents by state (`septet journal stats`)."""
        ...
