"""The bridge driver contract: HTTP calls and replies as values, outcomes as a union. Pure: no I/O.

A driver turns a batch of outbound messages into one `HttpCall`, and the provider's
`HttpReply` into one `Outcome` per message, in batch order. It never touches a socket,
a clock or a random source: `engine/http_io.py` performs the call, `engine/dispatch.py`
acts on the outcomes. A well-formed provider error is an outcome value; only a reply
the driver cannot make sense of raises `UnparseableReply`.

    engine.dispatch ──batch──▶ driver.build_send ──HttpCall──▶ engine.http_io
          ▲                                                          │
          └──── list[Outcome] ◀── driver.parse_send ◀──HttpReply─────┘

Delivery reports come back either by polling (`build_status` / `parse_status`) or by
the provider calling septet's HTTP listener (`parse_callback`), and become `Receipt`s
carrying a normalised SMPP state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import msgspec

# ── HTTP as values ────────────────────────────────────────────────────────────────


class HttpCall(msgspec.Struct, frozen=True, kw_only=True):
    """One HTTP request a driver wants made. `path` is relative to the bridge's base URL."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class HttpReply(msgspec.Struct, frozen=True, kw_only=True):
    """The provider's answer. Header names are lower-case."""

    status: int
    body: bytes
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)


class InboundRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request a provider made to septet's HTTP listener (a delivery callback)."""

    method: str
    query: Mapping[str, str]
    body: bytes = b""
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)


# ── What goes out ────────────────────────────────────────────────────────────────


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message to one recipient, as a driver sees it.

    `to` is E.164 with a leading `+`; drivers reformat it as their provider wants.
    `reference` is stable across retries of the same message (septet derives it from
    the message id), so a provider with idempotency by reference (BSG) can recognise
    a resend. `attempt` starts at 1. `maybe_sent` says an earlier attempt may have
    reached the provider (a lost reply, a crash mid-request); a driver may read a reply
    differently then (SMS Club's 453 means that attempt went through). A resend after
    a refusal of a whole request is not `maybe_sent`: nothing of that request was sent.
    """

    msg_id: str
    to: str
    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    reference: str
    sender: str | None = None
    flash: bool = False
    dlr: bool = True
    validity_s: int | None = None
    attempt: int = 1
    maybe_sent: bool = False


class BridgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach one provider account. `credentials` keys are per driver (see each module)."""

    base_url: str
    credentials: Mapping[str, str] = msgspec.field(default_factory=dict)
    callback_url: str | None = None
    default_sender: str | None = None
    options: Mapping[str, str] = msgspec.field(default_factory=dict)
    # The currency of the bridge's price table (engine.pricing): what a provider's charges
    # are counted in where the provider names no currency (Route Mobile's reports).
    price_currency: str | None = None


# ── What comes back ──────────────────────────────────────────────────────────────


class Submitted(msgspec.Struct, frozen=True, tag="submitted"):
    """The provider took the message. `provider_id` is None when it did but gave no id
    (SMS Club's 453 after a retry, BSG's "reference exists"): the id is then looked up
    by reference or the message waits for a report it may never get."""

    provider_id: str | None
    cost: float | None = None
    currency: str | None = None


# What a provider's refusal of one message blamed, where its code says: the recipient's
# number (invalid, barred, do-not-disturb), the sender, the content (text, template,
# spam), or something else. Metrics count failures by it (engine.metrics.REASONS), so a
# bad number is told apart from a message the account may not send.
RejectionCause = Literal["number", "sender", "content", "other"]


class Rejected(msgspec.Struct, frozen=True, tag="rejected"):
    """Final: the provider refused this message and resending it would not help."""

    code: str
    reason: str
    cause: RejectionCause = "other"


class RetryLater(msgspec.Struct, frozen=True, tag="retry"):
    """The provider did not take the message and says a resend may succeed."""

    code: str
    reason: str
    delay_s: float | None = None


class Throttled(msgspec.Struct, frozen=True, tag="throttled"):
    """The provider refused because of rate; slow the whole bridge, then resend."""

    code: str
    reason: str
    delay_s: float | None = None


class Unknown(msgspec.Struct, frozen=True, tag="unknown"):
    """The provider may or may not have the message; resending could double-send."""

    code: str
    reason: str


AccountFault = Literal["credentials", "blocked", "credit"]


class AccountRefused(msgspec.Struct, frozen=True, tag="account"):
    """The provider refused the *account*, not the message: wrong credentials, a blocked
    account, no credit left. Nothing was sent; the bridge is at fault, so the engine
    opens its circuit and moves the message to another bridge where it can."""

    code: str
    reason: str
    fault: AccountFault = "credentials"


Outcome = Submitted | Rejected | RetryLater | Throttled | Unknown | AccountRefused


SmppState = Literal[
    "DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN", "ENROUTE", "ACCEPTD"
]
FINAL_STATES: frozenset[str] = frozenset(
    {"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"}
)


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery report normalised to an SMPP state (SMPP v3.4 appendix B).

    `provider_id` matches `Submitted.provider_id`; where a provider reports by reference
    only, `reference` is set instead. `final` is False for intermediate states
    (ENROUTE, ACCEPTD, and BSG's "unknown"). `cost` and `currency`: the provider's charge
    for the whole message (every part), set only by a provider that states it in its report
    and not at submit (Route Mobile's `iCharge`), so a charge is never counted twice.
    """

    provider_id: str | None
    state: SmppState
    provider_status: str
    final: bool
    reference: str | None = None
    error_code: str | None = None
    recipient: str | None = None
    cost: float | None = None
    currency: str | None = None


class StatusQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A message to poll for: its provider id, or its reference where the id is unknown."""

    provider_id: str | None
    reference: str


class CallbackRejected(Exception):  # noqa: N818 - names what happened, like h11's errors
    """A callback whose credentials did not match; the listener answers 401."""


class UnparseableReply(Exception):  # noqa: N818 - names what happened
    """A reply the driver cannot interpret at all (not a documented shape)."""


# ── The protocol every driver implements ─────────────────────────────────────────

Idempotency = Literal["none", "reference", "duplicate-window"]
DeliveryPath = Literal["callback", "poll", "none"]


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What the dispatcher must know to batch, retry and collect reports for a provider.

    - `max_recipients`: messages per send request.
    - `distinct_texts`: one request may carry a different text per recipient (BSG
      individual mode); otherwise a batch shares text, sender and options.
    - `delivery`: how reports come back.
    - `idempotency`: what makes a resend after a lost reply safe: a reference the
      provider deduplicates on, a duplicate window, or nothing (the outcome is unknown).
    - `max_status_ids`: ids per status poll (a message without an id, polled by
      reference where the provider allows it, is asked about on its own).
    - `min_poll_interval_s`: the provider's floor between two polls of one message
      (BSG counts more than about one a minute as abuse); 0 where it states none.
    - `validity_per_request`: the send request carries one validity for all its
      messages (BSG's `validity`, SMS Club's `lifetime`), so a batch must share one.
    """

    max_recipients: int
    distinct_texts: bool
    delivery: DeliveryPath
    idempotency: Idempotency
    max_status_ids: int = 0
    min_poll_interval_s: float = 0.0
    validity_per_request: bool = False


# The characters an alphanumeric sender may use unless a provider says otherwise: the ASCII
# characters of the GSM 7-bit default alphabet (3GPP TS 23.038 6.2.1), which is what an
# alphanumeric TP-Originating-Address is coded in (3GPP TS 23.040 9.1.2.5). Not the
# extension table (^ { } \ [ ] ~ |) nor ` (absent from GSM).
GSM_SENDER_CHARACTERS: frozenset[str] = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !\"#$%&'()*+,-./:;<=>?@_"
)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider takes in one message. The engine checks them when it accepts a line
    (engine.admission): a message that breaks them is refused then, with a sentence naming
    the rule and the bridge, never sent to be refused by the provider (or worse, altered).

    - `sender_required`: the request needs a sender (the line's `from` or `default_sender`).
    - `alphanumeric_sender_max`: characters of a sender that is not all digits, drawn from
      `sender_characters`.
    - `numeric_sender_max`: digits of an all-digit sender; `numeric_sender_plus` whether it
      may start with `+` (which does not count). Where it may not, `+447…` is refused.
    - `gsm7_max`: septets of a GSM-7 text (an extension character counts 2); `ucs2_max`:
      UTF-16 code units of a UCS-2 text. None: the provider states no limit of its own.
    - `flash`: the provider sends flash (display-only, class 0) messages.
    - `max_validity_s`: the longest validity the provider takes; None where it states none
      (or has no validity field).

    Recipients per request are `Capabilities.max_recipients`: batching, not admission (a
    line's recipients become one message each).
    """

    sender_required: bool
    alphanumeric_sender_max: int
    numeric_sender_max: int
    numeric_sender_plus: bool
    sender_characters: frozenset[str] = GSM_SENDER_CHARACTERS
    gsm7_max: int | None = None
    ucs2_max: int | None = None
    flash: bool = False
    max_validity_s: int | None = None


class BridgeDriver(Protocol):
    """One provider's sans-IO driver, bound to its settings at construction."""

    name: str
    capabilities: Capabilities
    limits: Limits

    def build_send(self, batch: Sequence[OutboundMessage]) -> HttpCall:
        """One request for the whole batch (len ≤ max_recipients)."""
        ...

    def parse_send(self, batch: Sequence[OutboundMessage], reply: HttpReply) -> list[Outcome]:
        """One outcome per message of `batch`, in order."""
        ...

    def build_status(self, queries: Sequence[StatusQuery]) -> HttpCall | None:
        """A poll for these messages, or None where the provider has no polling."""
        ...

    def parse_status(self, queries: Sequence[StatusQuery], reply: HttpReply) -> list[Receipt]:
        """Receipts for the messages the reply speaks of (possibly fewer than asked)."""
        ...

    def parse_callback(self, request: InboundRequest) -> list[Receipt]:
        """Receipts from a provider's callback; raises CallbackRejected on bad credentials."""
        ...


def ascii_digits(value: str | int) -> str:
    """A phone number as bare ASCII digits: no `+`, spaces, dashes or other digits ('٣')."""
    text = value if isinstance(value, str) else str(value)
    # Fast path for what the engine sends (E.164, `+` and digits); str.isdigit alone would
    # also take non-ASCII digits, hence isascii.
    bare = text[1:] if text[:1] == "+" else text
    if bare.isascii() and bare.isdigit():
        return bare
    return "".join(character for character in text if "0" <= character <= "9")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The delay of a `Retry-After: <seconds>` header (RFC 9110 §10.2.3); None without one.

    The HTTP-date form needs the current time, which a sans-IO driver does not have.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def match_reply_entries(wanted: Sequence[str], echoed: Sequence[str]) -> list[int | None]:
    """For each wanted recipient, the index of its reply entry, or None where it got none.

    Providers that answer one entry per recipient (dsc, routemobile) list them in request
    order, possibly cut short (Route Mobile stops when credit runs out: docs/providers.md).
    Order is trusted while every echoed recipient ("" when not echoed) matches; otherwise
    entries are matched by recipient digits, the first unused entry for each repeat of a
    number. If that leaves gaps while the counts agree, order wins after all: the
    provider echoed numbers in a form we do not recognise.
    """
    in_order = len(echoed) <= len(wanted) and all(
        cell in ("", number) for number, cell in zip(wanted, echoed, strict=False)
    )
    if in_order:
        return [index if index < len(echoed) else None for index in range(len(wanted))]
    unused: dict[str, list[int]] = {}
    for index, cell in enumerate(echoed):
        unused.setdefault(cell, []).append(index)
    matched: list[int | None] = []
    for number in wanted:
        queue = unused.get(number)
        matched.append(queue.pop(0) if queue else None)
    if None in matched and len(wanted) == len(echoed):
        return list(range(len(wanted)))
    return matched


def reply_text(reply: HttpReply, limit: int = 200) -> str:
    """A short, printable excerpt of a reply body for error sentences."""
    text = reply.body[:limit].decode("utf-8", "replace")
    return text.replace("\n", " ").strip()
