"""The data that crosses septet's boundaries: input lines, stored messages, output events.

Pure: no I/O. Every struct here is a msgspec Struct; decoders and encoders are built once
at import (msgspec's own advice) and shared by ingress, the journal and the CLI.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgspec

Encoding = Literal["GSM-7", "UCS-2"]

# ── Input ──────────────────────────────────────────────────────────────────────

ClientRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Sender = Annotated[str, msgspec.Meta(min_length=1, max_length=18)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=9)]
ValiditySeconds = Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)]
CallbackUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
# Kannel's dlr-mask bits (engine.kannel_dlr): 1 delivered, 2 not delivered, 4 queued at
# the provider, 8 taken by the provider, 16 refused by the provider.
DlrMask = Annotated[int, msgspec.Meta(ge=1, le=31)]


class Submission(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One NDJSON input line (docs/design.md "Input line"). Only `to` and `text` are required."""

    to: str | list[str]
    text: str
    id: ClientRef | None = None
    sender: Sender | None = msgspec.field(default=None, name="from")
    route: str | None = None
    dlr: bool = True
    flash: bool = False
    schedule_at: dt.datetime | None = None
    validity_s: ValiditySeconds | None = None
    priority: Priority = 0
    # Where each of the message's events is POSTed (docs/webhooks.md); the account's
    # default URL when absent.
    callback_url: CallbackUrl | None = None
    # Kannel's dlr-url (docs/http-api.md): fetched with a GET, its escapes substituted, for
    # each report `dlr_mask` asks for; instead of the account's default webhook.
    dlr_url: CallbackUrl | None = None
    dlr_mask: DlrMask | None = None


submission_decoder = msgspec.json.Decoder(Submission)

# ── Stored message ─────────────────────────────────────────────────────────────

MessageState = Literal["accepted", "inflight", "submitted", "final"]


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message to one recipient, as the journal stores it.

    `msg_id` is a decimal string (SMPP clients expect digits), unique in the journal.
    `reference` is what providers with idempotency by reference see (BSG); it is unique
    across journals too, since it carries the journal's instance token.
    `bridges` is the route: the primary bridge, then failovers; `bridge_index` is the
    one in use. `due_at` is when the message may next be sent (schedule or retry time),
    `expires_at` when it stops being worth sending. Times are Unix seconds.
    `account` is the name of the account that sent it (engine.accounts); "" for a
    message journaled before accounts existed.
    """

    msg_id: str
    reference: str
    origin: str
    account: str = ""
    client_ref: str | None
    to: str
    sender: str | None
    text: str
    encoding: Encoding
    segments: int
    cost: float
    currency: str
    bridges: tuple[str, ...]
    bridge_index: int = 0
    dlr: bool = True
    flash: bool = False
    priority: int = 0
    accepted_at: float
    due_at: float
    expires_at: float | None = None
    attempt: int = 0
    state: MessageState = "accepted"
    provider_id: str | None = None
    inflight_at: float | None = None
    # When the earliest attempt on the current bridge that may have reached the provider
    # was made (a lost reply, an unclear answer, a crash mid-request); 0 when none may
    # have. Such a message may be resent only where that provider deduplicates (within
    # its window, which runs from this time), and never to another bridge.
    maybe_sent_at: float = 0.0
    # Where its events are POSTed (engine.webhooks): the line's, or its account's default,
    # fixed at accept.
    callback_url: str | None = None
    # Kannel's dlr-url template and mask (Submission.dlr_url), fixed at accept.
    dlr_url: str | None = None
    dlr_mask: int = 0

    @property
    def bridge(self) -> str:
        return self.bridges[self.bridge_index]

    @property
    def maybe_sent(self) -> bool:
        return self.maybe_sent_at > 0


# ── The lifecycle's states ─────────────────────────────────────────────────────
# Their names, shared by engine.lifecycle (which decides every move between them, and has
# the table) and the journal (which stores each message's name in its `status` column).


class State(enum.StrEnum):
    ACCEPTED = "accepted"  # waiting, due now
    SCHEDULED = "scheduled"  # waiting, due later (schedule_at, or a retry's backoff)
    INFLIGHT = "inflight"  # claimed: a request carrying it is being made
    SUBMITTED = "submitted"  # the provider took it; its report is awaited
    UNCONFIRMED = "unconfirmed"  # it may have reached the provider; awaiting its word
    # Final:
    SENT = "sent"  # the provider took it and no report was asked for
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DELETED = "deleted"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"


# The SMPP final state (v3.4 Appendix B) of each final state that has one, both ways.
SMPP_STATE: Final[dict[State, str]] = {
    State.DELIVERED: "DELIVRD",
    State.UNDELIVERABLE: "UNDELIV",
    State.EXPIRED: "EXPIRED",
    State.REJECTED: "REJECTD",
    State.DELETED: "DELETED",
    State.UNKNOWN: "UNKNOWN",
}
STATE_OF_SMPP: Final[dict[str, State]] = {smpp: state for state, smpp in SMPP_STATE.items()}
# What the journal's `outcome` column holds for the final states without an SMPP state.
OUTCOME_SENT: Final = "SUBMITTED"
OUTCOME_CANCELLED: Final = "CANCELLED"


# ── Output events ──────────────────────────────────────────────────────────────


class Accepted(msgspec.Struct, tag="accepted", tag_field="event", kw_only=True):
    id: str | None
    msg_id: str
    ts: dt.datetime
    to: str
    encoding: Encoding
    segments: int
    cost: float
    currency: str
    bridge: str


class LineRejected(msgspec.Struct, tag="rejected", tag_field="event", kw_only=True):
    id: str | None
    msg_id: None = None
    ts: dt.datetime
    error: str
    line: int


class SubmittedEvent(msgspec.Struct, tag="submitted", tag_field="event", kw_only=True):
    """The provider took the message. `cost` and `currency` are septet's estimate on this
    bridge (engine.pricing); `provider_cost` and `provider_currency` what the provider said
    it charged in its reply (dsc, BSG), null where it said nothing (Route Mobile states its
    charge only in the report, kept in the journal; SMS Club never does)."""

    id: str | None
    msg_id: str
    ts: dt.datetime
    provider_id: str | None
    bridge: str
    cost: float
    currency: str
    provider_cost: float | None = None
    provider_currency: str | None = None


class Failed(msgspec.Struct, tag="failed", tag_field="event", kw_only=True):
    id: str | None
    msg_id: str
    ts: dt.datetime
    error: str
    code: str | None
    final: bool = True
    bridge: str | None = None
    # The SMPP final state it ends in (REJECTD, EXPIRED, UNDELIV), for receipts.
    state: str | None = None


class DeliveryReport(msgspec.Struct, tag="dlr", tag_field="event", kw_only=True):
    id: str | None
    msg_id: str
    ts: dt.datetime
    state: str
    provider_status: str
    bridge: str


class StatusEvent(msgspec.Struct, tag="status", tag_field="event", kw_only=True):
    """A provider status that is not the message's end (ENROUTE, ACCEPTD, BSG's "unknown"
    before its report): information only. Never an SMPP receipt, never counted as
    delivered or failed; the message's `dlr` event comes later."""

    id: str | None
    msg_id: str
    ts: dt.datetime
    state: str
    provider_status: str
    bridge: str
    final: bool = False


class RetryEvent(msgspec.Struct, tag="retry", tag_field="event", kw_only=True):
    """The engine will send the message again on the same bridge at `at`."""

    id: str | None
    msg_id: str
    ts: dt.datetime
    at: dt.datetime
    attempt: int
    reason: str
    bridge: str


class FailoverEvent(msgspec.Struct, tag="failover", tag_field="event", kw_only=True):
    """The message moved to the next bridge of its route; `cost` is the new estimate."""

    id: str | None
    msg_id: str
    ts: dt.datetime
    from_bridge: str
    bridge: str
    reason: str
    cost: float
    currency: str


class CancelledEvent(msgspec.Struct, tag="cancelled", tag_field="event", kw_only=True):
    """A message its owner cancelled before any request carried it: final."""

    id: str | None
    msg_id: str
    ts: dt.datetime


Event = (
    Accepted
    | LineRejected
    | SubmittedEvent
    | Failed
    | DeliveryReport
    | StatusEvent
    | RetryEvent
    | FailoverEvent
    | CancelledEvent
)

event_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(Event)


# Keeps its last answer: a request's or a line's messages share one clock reading, so their
# events share one datetime (immutable) instead of making one each. (lru_cache is thread
# safe: the journal's writer thread converts times too.)
@functools.lru_cache(maxsize=1)
def utc_from_timestamp(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def accepted_event(message: Message, ts: dt.datetime | None = None) -> Accepted:
    """The `accepted` event of a message being journaled (its msg_id assigned), at `ts`
    (a request's one event time) or at its acceptance."""
    return Accepted(
        id=message.client_ref,
        msg_id=message.msg_id,
        ts=utc_from_timestamp(message.accepted_at) if ts is None else ts,
        to=message.to,
        encoding=message.encoding,
        segments=message.segments,
        cost=message.cost,
        currency=message.currency,
        bridge=message.bridge,
    )


def encode_event_line(event: Event) -> bytes:
    """One NDJSON line, newline included."""
    return event_encoder.encode(event) + b"\n"


def encode_event_lines(events: Sequence[Event]) -> bytes:
    """NDJSON lines, one per event, each with its newline: `encode_event_line`'s, joined."""
    return event_encoder.encode_lines(events)
