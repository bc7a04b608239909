"""The operator's commands on a journal (list, show, retry, cancel, stats, purge, cluster
status): API and CLI.

`Admin` runs each command on a journal (`Journal`) and its read-only reader
(`JournalReader`): inside the daemon through its admin API (engine.admin_api), or, when no
daemon runs, in the CLI's own process on the file. Answers are Structs (JSON on the
wire); a refusal is an `RefusedError` value with its sentence for people.

Retry (docs/operations.md "Admin commands"): a message that ended `rejected`,
`undeliverable`, `expired` or `unknown` is sent again as a new message (a new msg_id, the
same recipient, text, sender, route and validity span), whose client id is the old one's
with `/retry-of-<msg_id>` (or `retry-of-<msg_id>` when it had none): so it is linked to the
old one in listings and events, and a second retry of the same message is refused as a
duplicate naming the first retry. `unknown` may have reached the phone: retrying it may
deliver twice, and the answer says so. Other states are refused.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from engine import retention
from engine.cancel import Canceller, CancelVerdict, cancel_refusal, cancel_stored
from engine.cluster import NodeRecord, liveness
from engine.journal import Duplicate, Journal, JournalError, JournalReader, StoredMessage
from engine.models import State

# Final states a retry sends again; `unknown` may have been delivered (module docstring).
RETRYABLE: Final = frozenset(
    {State.REJECTED.value, State.UNDELIVERABLE.value, State.EXPIRED.value, State.UNKNOWN.value}
)
MAX_LIST: Final = 1000


class Refusal(enum.Enum):
    NOT_FOUND = "not_found"
    NOT_RETRYABLE = "not_retryable"
    ALREADY_RETRIED = "already_retried"
    NOT_CANCELLABLE = "not_cancellable"
    JOURNAL = "journal"  # the journal could not do it now (full, read-only, ...)
    BAD_INPUT = "bad_input"


class RefusedError(Exception):
    """A command that was not carried out: why (a value) and the sentence for people."""

    def __init__(self, refusal: Refusal, sentence: str) -> None:
        super().__init__(sentence)
        self.refusal = refusal
        self.sentence = sentence


class MessageSummary(msgspec.Struct, frozen=True, kw_only=True):
    msg_id: str
    status: str
    account: str
    client_ref: str | None
    to: str
    bridge: str
    accepted_at: float
    final_at: float | None
    error: str | None


class MessageDetail(msgspec.Struct, frozen=True, kw_only=True):
    summary: MessageSummary
    sender: str | None
    text: str
    segments: int
    cost: float
    currency: str
    provider_id: str | None
    attempt: int
    code: str | None
    events: list[msgspec.Raw]


class MessageList(msgspec.Struct, frozen=True):
    messages: list[MessageSummary]


class Retried(msgspec.Struct, frozen=True, kw_only=True):
    msg_id: str
    new_msg_id: str
    warning: str | None = None


class Cancelled(msgspec.Struct, frozen=True, kw_only=True):
    msg_id: str
    already: bool


class JournalStats(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    file_bytes: int
    wal_bytes: int
    free_bytes: int
    auto_vacuum: str
    schema_version: int
    messages: int
    by_status: dict[str, int]
    oldest_msg_id: str | None
    oldest_accepted_at: float | None


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    liveness: str  # engine.cluster.Liveness
    started_at: float
    heartbeat_age_s: float
    claims: int


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """`septet cluster status`: every node's row (with the claims it holds), and the
    messages not final by phase (accepted, inflight, submitted)."""

    lease_s: float
    nodes: list[NodeStatus]
    backlog: dict[str, int]


class Purged(msgspec.Struct, frozen=True, kw_only=True):
    older_than_s: float
    deleted: dict[str, int]
    vacuumed: bool = False


def cluster_status_of(
    records: Sequence[NodeRecord], counts: Mapping[str, int], lease_s: float, now: float
) -> ClusterStatus:
    """`septet cluster status`'s answer from the nodes' rows and the messages by phase."""
    nodes = [
        NodeStatus(
            node=record.node,
            liveness=liveness(record, now, lease_s).value,
            started_at=record.started_at,
            heartbeat_age_s=round(max(0.0, now - record.heartbeat_at), 1),
            claims=record.claims,
        )
        for record in sorted(records, key=lambda record: record.node)
    ]
    backlog = {state: count for state, count in counts.items() if state != "final"}
    return ClusterStatus(lease_s=lease_s, nodes=nodes, backlog=backlog)


def summary_of(stored: StoredMessage) -> MessageSummary:
    message = stored.message
    return MessageSummary(
        msg_id=message.msg_id,
        status=stored.status,
        account=message.account,
        client_ref=message.client_ref,
        to=message.to,
        bridge=message.bridge,
        accepted_at=message.accepted_at,
        final_at=stored.final_at,
        error=stored.error,
    )


def retry_link(stored: StoredMessage) -> str:
    """The client id of a message's retry (module docstring)."""
    old = stored.message
    link = f"retry-of-{old.msg_id}"
    return link if old.client_ref is None else f"{old.client_ref}/{link}"


def parse_msg_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise RefusedError(Refusal.BAD_INPUT, f"{text!r} is not a message id (digits).")
    return int(text)


class NoCanceller:
    """Cancel's engine side when no daemon runs: the journal's compare-and-set, nothing
    queued to take the message out of, no connection to tell."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def cancel(self, changes: Any) -> bool:
        return await self._journal.cancel(changes)

    def cancelled(self, message: Any, step: Any) -> None:
        del message, step


class Admin:
    """The commands on one journal (module docstring). `woken` is called after a retry is
    journaled (the daemon's scheduler feeder); `clock` gives Unix seconds."""

    def __init__(
        self,
        journal: Journal,
        reader: JournalReader,
        canceller: Canceller,
        *,
        woken: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._reader = reader
        self._canceller = canceller
        self._woken = woken
        self._clock = clock

    async def _stored(self, msg_id: str) -> StoredMessage:
        stored = await self._reader.message(parse_msg_id(msg_id))
        if stored is None:
            raise RefusedError(Refusal.NOT_FOUND, f"No message {msg_id} in the journal.")
        return stored

    async def list(self, status: str | None, limit: int, below: int | None) -> MessageList:
        if status is not None and status not in {state.value for state in State}:
            names = ", ".join(state.value for state in State)
            raise RefusedError(Refusal.BAD_INPUT, f"{status!r} is no state; one of {names}.")
        limit = max(1, min(limit, MAX_LIST))
        found = await self._reader.latest(status=status, below=below, limit=limit)
        return MessageList([summary_of(stored) for stored in found])

    async def show(self, msg_id: str) -> MessageDetail:
        stored = await self._stored(msg_id)
        message = stored.message
        return MessageDetail(
            summary=summary_of(stored),
            sender=message.sender,
            text=message.text,
            segments=message.segments,
            cost=message.cost,
            currency=message.currency,
            provider_id=message.provider_id,
            attempt=message.attempt,
            code=stored.code,
            events=[msgspec.Raw(line) for line in await self._reader.history(message.msg_id)],
        )

    async def cancel(self, msg_id: str) -> Cancelled:
        stored = await self._stored(msg_id)
        try:
            verdict = await cancel_stored(stored, self._canceller, self._clock())
        except JournalError as error:
            raise RefusedError(Refusal.JOURNAL, f"Not cancelled: {error}") from None
        if verdict in (CancelVerdict.CANCELLED, CancelVerdict.ALREADY_CANCELLED):
            return Cancelled(msg_id=msg_id, already=verdict is CancelVerdict.ALREADY_CANCELLED)
        sentence = cancel_refusal(msg_id, stored.status, verdict)
        raise RefusedError(Refusal.NOT_CANCELLABLE, sentence[0].upper() + sentence[1:] + ".")

    async def retry(self, msg_id: str) -> Retried:
        stored = await self._stored(msg_id)
        if stored.status not in RETRYABLE:
            raise RefusedError(
                Refusal.NOT_RETRYABLE,
                f"Message {msg_id} is {stored.status or 'of no known state'}: only a message"
                " that ended rejected, undeliverable, expired or unknown can be retried.",
            )
        old = stored.message
        now = self._clock()
        copy = msgspec.structs.replace(
            old,
            msg_id="",
            reference="",
            client_ref=retry_link(stored),
            bridge_index=0,
            attempt=0,
            state="accepted",
            provider_id=None,
            inflight_at=None,
            maybe_sent_at=0.0,
            accepted_at=now,
            due_at=now,
            expires_at=None if old.expires_at is None else now + old.expires_at - old.accepted_at,
        )
        try:
            [result] = await self._journal.accept([[copy]])
        except JournalError as error:
            raise RefusedError(Refusal.JOURNAL, f"Not retried: {error}") from None
        if isinstance(result, Duplicate):
            raise RefusedError(
                Refusal.ALREADY_RETRIED,
                f"Message {msg_id} was retried already, as message {', '.join(result.msg_ids)}.",
            )
        self._woken()
        warning = None
        if stored.status == State.UNKNOWN.value:
            warning = f"message {msg_id} ended unknown: it may have reached the phone already."
        return Retried(msg_id=msg_id, new_msg_id=result[0].msg_id, warning=warning)

    async def cluster_status(self, lease_s: float) -> ClusterStatus:
        try:
            records = await self._journal.nodes()
            counts = await self._journal.counts()
        except JournalError as error:
            raise RefusedError(Refusal.JOURNAL, str(error)) from None
        return cluster_status_of(records, counts, lease_s, self._clock())

    async def stats(self) -> JournalStats:
        found = await self._reader.stats()
        oldest = found.oldest_msg_id
        stored = None if oldest is None else await self._reader.message(oldest)
        return JournalStats(
            path=found.location,
            file_bytes=found.file_bytes,
            wal_bytes=found.wal_bytes,
            free_bytes=found.free_bytes,
            auto_vacuum=found.auto_vacuum,
            schema_version=found.schema_version,
            messages=sum(found.by_status.values()),
            by_status=found.by_status,
            oldest_msg_id=None if stored is None else stored.message.msg_id,
            oldest_accepted_at=None if stored is None else stored.message.accepted_at,
        )

    async def purge(self, older_than_s: float) -> Purged:
        if older_than_s < 0:
            raise RefusedError(Refusal.BAD_INPUT, "--older-than must not be negative.")
        try:
            deleted = await retention.purge(self._journal, older_than_s, clock=self._clock)
        except JournalError as error:
            raise RefusedError(Refusal.JOURNAL, f"Not purged: {error}") from None
        return Purged(older_than_s=older_than_s, deleted=deleted)


def counts_line(deleted: Mapping[str, int]) -> str:
    return ", ".join(f"{table} {rows}" for table, rows in deleted.items()) or "nothing"
