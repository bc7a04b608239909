"""Golden tests for engine.lifecycle: one row per line of its table, h11-style.

Each row feeds one input to one message in one state, with a fixed clock and a fixed
jitter, and pins the whole `Step`: next state, journal changes, events, metric counts,
circuit verdict and typed reason. Rows whose answer depends on the bridge's idempotency
run once per idempotency. Around the table: the table's own completeness, the pairs it
forbids, `request_verdict`, and `describe` for every reason.

Past 600 lines because it is a table: a row per rule reads better than helpers that
rebuild the rules.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import pytest

from bridges.base import (
    AccountRefused,
    Idempotency,
    Outcome,
    Receipt,
    Rejected,
    RetryLater,
    SmppState,
    Submitted,
    Throttled,
    Unknown,
)
from engine import lifecycle
from engine.feed import AppendEvents
from engine.journal import (
    Change,
    MarkCharged,
    MarkConfirmed,
    MarkFinal,
    MarkRetry,
    MarkSubmitted,
    MarkUnconfirmed,
)
from engine.lifecycle import (
    TRANSITIONS,
    AccountFaultReason,
    AttemptsUsed,
    CancelledByOwner,
    Charge,
    CircuitOpen,
    Count,
    CrashedInFlight,
    IllegalTransition,
    InputKind,
    MaybeSentEarlier,
    NoProviderId,
    NoSafeResend,
    ProviderCode,
    Reason,
    ReportTimeout,
    State,
    Step,
    TransportFailure,
    ValidityEnded,
    describe,
)
from engine.models import (
    CancelledEvent,
    DeliveryReport,
    Event,
    Failed,
    FailoverEvent,
    Message,
    RetryEvent,
    StatusEvent,
    SubmittedEvent,
    utc_from_timestamp,
)
from engine.retry import RetryPolicy

NOW: Final = 1_000_000.0
TS: Final = utc_from_timestamp(NOW)
REPORT_TIMEOUT_S: Final = 3600.0
# Backoff 0.5 s × 2^(k-1), 8 attempts (throttles 16), a 120 s duplicate window with a
# 10 s margin; with jitter() = 0.5 the spread is exactly 1, so delays are the bare backoff.
POLICY: Final = RetryPolicy()
# attempts_per_bridge while a failover bridge is left: 2 (throttles 4).
FAILOVER_POLICY: Final = RetryPolicy(max_attempts=2)
PRICES: Final = {"smsclub": (0.02, "USD"), "bsg": (0.05, "EUR")}
EVERY: Final[tuple[Idempotency, ...]] = ("none", "reference", "duplicate-window")
BRIDGE: Final = "smsclub"
ORIGIN: Final = "client-1"


def fixed_jitter() -> float:
    return 0.5


def price(message: Message, bridge: str) -> tuple[float, str]:
    cost, currency = PRICES[bridge]
    return cost * message.segments, currency


def context(idempotency: Idempotency, now: float = NOW) -> lifecycle.Context:
    """As dispatch builds it: only a provider that deduplicates by reference can be asked
    about a message it may hold."""
    return lifecycle.Context(
        bridge=BRIDGE,
        now=now,
        idempotency=idempotency,
        policy=POLICY,
        failover_policy=FAILOVER_POLICY,
        jitter=fixed_jitter,
        price=price,
        report_timeout_s=REPORT_TIMEOUT_S,
        can_ask_by_reference=idempotency == "reference",
    )


# ── Messages in each state ─────────────────────────────────────────────────────────

BASE: Final = Message(
    msg_id="42",
    reference="s3ptet-42",
    origin=ORIGIN,
    client_ref="ref-1",
    to="+380501234567",
    sender="ACME",
    text="Hello",
    encoding="GSM-7",
    segments=1,
    cost=0.02,
    currency="USD",
    bridges=("smsclub", "bsg"),
    accepted_at=NOW - 100,
    due_at=NOW - 100,
)
ONE_BRIDGE: Final = ("smsclub",)


def accepted(**changes: Any) -> Message:
    return msgspec.structs.replace(BASE, **{"due_at": NOW, **changes})


def scheduled(**changes: Any) -> Message:
    return msgspec.structs.replace(BASE, **{"due_at": NOW + 60, **changes})


def inflight(**changes: Any) -> Message:
    # The request went out at NOW: where a lost reply is noticed at NOW too, "when the
    # attempt was made" and "now" agree (test_maybe_sent_at_is_when_the_attempt_was_made
    # covers the gap between them).
    return msgspec.structs.replace(BASE, **{"state": "inflight", "inflight_at": NOW, **changes})


def submitted(**changes: Any) -> Message:
    defaults = {"state": "submitted", "inflight_at": NOW - 600, "provider_id": "P-1"}
    return msgspec.structs.replace(BASE, **{**defaults, **changes})


def unconfirmed(**changes: Any) -> Message:
    defaults = {"state": "submitted", "inflight_at": NOW - 600, "maybe_sent_at": NOW - 600}
    return msgspec.structs.replace(BASE, **{**defaults, **changes})


def final(**changes: Any) -> Message:
    defaults = {"state": "final", "inflight_at": NOW - 600, "provider_id": "P-1"}
    return msgspec.structs.replace(BASE, **{**defaults, **changes})


# ── Inputs ─────────────────────────────────────────────────────────────────────────

Act = Callable[[Message, lifecycle.Context], Step | None]


def reply(outcome: Outcome) -> Act:
    return lambda message, ctx: lifecycle.on_reply(message, outcome, ctx)


NOT_SENT: Final = TransportFailure(
    kind="connect_failed", text="connection refused", maybe_sent=False
)
LOST_REPLY: Final = TransportFailure(kind="reply_lost", text="read timeout", maybe_sent=True)


def transport(failure: TransportFailure) -> Act:
    # As dispatch passes it: the window runs from the earliest attempt that may have
    # reached the provider.
    return lambda message, ctx: lifecycle.on_transport_failure(
        message,
        failure,
        ctx,
        first_attempt_at=message.maybe_sent_at or message.inflight_at or ctx.now,
    )


def recovery(message: Message, ctx: lifecycle.Context) -> Step:
    return lifecycle.on_recovery(message, ctx)


def expiry(message: Message, ctx: lifecycle.Context) -> Step:
    return lifecycle.on_expiry(message, ctx)


def circuit_open(message: Message, ctx: lifecycle.Context) -> Step:
    return lifecycle.on_circuit_open(message, ctx)


def window_passed(message: Message, ctx: lifecycle.Context) -> Step:
    return lifecycle.on_window_passed(message, ctx)


def cancel(message: Message, ctx: lifecycle.Context) -> Step | None:
    return lifecycle.on_cancel(message, ctx.now)


def report(receipt: Receipt) -> Act:
    return lambda message, ctx: lifecycle.on_report(
        message, receipt, BRIDGE, ctx.now, ctx.report_timeout_s
    )


def report_deadline(message: Message, ctx: lifecycle.Context) -> Step | None:
    return lifecycle.on_report_deadline(message, ctx.now, ctx.report_timeout_s)


def receipt(
    state: SmppState,
    *,
    provider_id: str | None = "P-1",
    code: str | None = None,
    cost: float | None = None,
    currency: str | None = None,
) -> Receipt:
    final_state = state not in ("ENROUTE", "ACCEPTD")
    return Receipt(
        provider_id=provider_id,
        state=state,
        provider_status=state.lower(),
        final=final_state,
        error_code=code,
        cost=cost,
        currency=currency,
    )


# ── Expected steps ─────────────────────────────────────────────────────────────────


def submitted_event(
    provider_id: str | None,
    *,
    provider_cost: float | None = None,
    provider_currency: str | None = None,
    cost: float = 0.02,
    currency: str = "USD",
) -> tuple[str, Event]:
    """`cost`/`currency`: septet's estimate (BASE's, on its first bridge); `provider_*`:
    what the provider's reply said it charged."""
    return ORIGIN, SubmittedEvent(
        id="ref-1",
        msg_id="42",
        ts=TS,
        provider_id=provider_id,
        bridge=BRIDGE,
        cost=cost,
        currency=currency,
        provider_cost=provider_cost,
        provider_currency=provider_currency,
    )


def dlr_event(state: str, provider_status: str) -> tuple[str, Event]:
    return ORIGIN, DeliveryReport(
        id="ref-1", msg_id="42", ts=TS, state=state, provider_status=provider_status, bridge=BRIDGE
    )


def status_event(state: str, provider_status: str) -> tuple[str, Event]:
    return ORIGIN, StatusEvent(
        id="ref-1", msg_id="42", ts=TS, state=state, provider_status=provider_status, bridge=BRIDGE
    )


def submitted_step(
    provider_id: str | None,
    *,
    report_by: float = NOW + REPORT_TIMEOUT_S,
    cost: float | None = None,
    currency: str | None = None,
    event: tuple[str, Event] | None = None,
) -> Step:
    """`cost`/`currency`: the provider's charge as its reply stated it, journaled as given;
    on the event and counted only when it named an amount (and, to be counted, its
    currency)."""
    charged = cost is not None
    return Step(
        state=State.SUBMITTED,
        changes=[
            MarkSubmitted(
                msg_id="42",
                provider_id=provider_id,
                cost=cost,
                currency=currency,
                at=NOW,
                report_by=report_by,
            )
        ],
        events=[
            event
            or submitted_event(
                provider_id,
                provider_cost=cost,
                provider_currency=currency if charged else None,
            )
        ],
        counts=[Count("submitted")],
        circuit="success",
        charge=Charge(cost, currency) if cost is not None and currency is not None else None,
    )


def sent_step(provider_id: str | None) -> Step:
    return Step(
        state=State.SENT,
        changes=[
            MarkSubmitted(
                msg_id="42",
                provider_id=provider_id,
                cost=None,
                currency=None,
                at=NOW,
                final=True,
                report_by=0.0,
            )
        ],
        events=[submitted_event(provider_id)],
        counts=[Count("submitted")],
        circuit="success",
    )


def unknown_without_id_step() -> Step:
    sentence = describe(NoProviderId())
    return Step(
        state=State.UNKNOWN,
        reason=NoProviderId(),
        changes=[
            MarkSubmitted(
                msg_id="42",
                provider_id=None,
                cost=None,
                currency=None,
                at=NOW,
                report_by=NOW + REPORT_TIMEOUT_S,
            ),
            MarkFinal(msg_id="42", outcome="UNKNOWN", code=None, error=sentence, at=NOW),
        ],
        events=[submitted_event(None), dlr_event("UNKNOWN", sentence)],
        counts=[Count("submitted")],
        circuit="success",
    )


def failed_step(
    state: State,
    smpp: str,
    reason: Reason,
    *,
    code: str | None,
    kind: str,
    circuit: lifecycle.CircuitVerdict | None,
) -> Step:
    return Step(
        state=state,
        reason=reason,
        changes=[MarkFinal(msg_id="42", outcome=smpp, code=code, error=describe(reason), at=NOW)],
        events=[
            (
                ORIGIN,
                Failed(
                    id="ref-1",
                    msg_id="42",
                    ts=TS,
                    error=f"{BRIDGE}: {describe(reason)}",
                    code=code,
                    bridge=BRIDGE,
                    state=smpp,
                ),
            )
        ],
        counts=[Count("failed", kind)],
        circuit=circuit,
    )


def retry_step(
    due_at: float,
    attempt: int,
    reason: Reason,
    *,
    kind: str,
    circuit: lifecycle.CircuitVerdict | None,
    maybe_sent_at: float = 0.0,
) -> Step:
    """`attempt` is the attempt that just failed; the retry event announces the next."""
    return Step(
        state=State.SCHEDULED,
        reason=reason,
        changes=[
            MarkRetry(
                msg_ids=["42"],
                due_at=due_at,
                attempt=attempt,
                bridge_index=0,
                reason=describe(reason),
                maybe_sent_at=maybe_sent_at,
            )
        ],
        events=[
            (
                ORIGIN,
                RetryEvent(
                    id="ref-1",
                    msg_id="42",
                    ts=TS,
                    at=utc_from_timestamp(due_at),
                    attempt=attempt + 1,
                    reason=describe(reason),
                    bridge=BRIDGE,
                ),
            )
        ],
        counts=[Count("retry", kind)],
        circuit=circuit,
    )


def failover_step(reason: Reason, *, kind: str, circuit: lifecycle.CircuitVerdict | None) -> Step:
    """To bsg, due now, attempts counted afresh, priced by ctx.price on bsg."""
    return Step(
        state=State.ACCEPTED,
        reason=reason,
        changes=[
            MarkRetry(
                msg_ids=["42"], due_at=NOW, attempt=0, bridge_index=1, reason=describe(reason)
            )
        ],
        events=[
            (
                ORIGIN,
                FailoverEvent(
                    id="ref-1",
                    msg_id="42",
                    ts=TS,
                    from_bridge=BRIDGE,
                    bridge="bsg",
                    reason=describe(reason),
                    cost=0.05,
                    currency="EUR",
                ),
            )
        ],
        counts=[Count("failover", kind)],
        circuit=circuit,
    )


def unconfirmed_step(
    reason: Reason,
    *,
    maybe_sent_at: float,
    report_by: float = NOW + REPORT_TIMEOUT_S,
    counts: Sequence[Count] = (),
    circuit: lifecycle.CircuitVerdict | None = None,
) -> Step:
    """Not final: a `status` event (final false, UNKNOWN), never a `failed` or `dlr` one."""
    return Step(
        state=State.UNCONFIRMED,
        reason=reason,
        changes=[
            MarkUnconfirmed(
                msg_id="42",
                at=NOW,
                maybe_sent_at=maybe_sent_at,
                report_by=report_by,
                error=describe(reason),
            )
        ],
        events=[status_event("UNKNOWN", describe(reason))],
        counts=list(counts),
        circuit=circuit,
    )


def final_unknown_step(
    reason: Reason,
    *,
    code: str | None,
    counts: Sequence[Count] = (),
    circuit: lifecycle.CircuitVerdict | None = None,
) -> Step:
    """What unconfirmed is for a message that asked for no report: nothing more can be
    learned, so it ends UNKNOWN at once, as a final `failed` (no report was asked for)."""
    return Step(
        state=State.UNKNOWN,
        reason=reason,
        changes=[
            MarkFinal(msg_id="42", outcome="UNKNOWN", code=code, error=describe(reason), at=NOW)
        ],
        events=[
            (
                ORIGIN,
                Failed(
                    id="ref-1",
                    msg_id="42",
                    ts=TS,
                    error=f"{BRIDGE}: {describe(reason)}",
                    code=code,
                    bridge=BRIDGE,
                    state="UNKNOWN",
                ),
            )
        ],
        counts=list(counts),
        circuit=circuit,
    )


def cancelled_step() -> Step:
    return Step(
        state=State.CANCELLED,
        reason=CancelledByOwner(),
        changes=[
            MarkFinal(
                msg_id="42",
                outcome="CANCELLED",
                code=None,
                error=describe(CancelledByOwner()),
                at=NOW,
            )
        ],
        events=[(ORIGIN, CancelledEvent(id="ref-1", msg_id="42", ts=TS))],
        counts=[Count("cancelled")],
    )


def reported_step(
    smpp: str,
    state: State,
    code: str | None,
    *,
    cost: float | None = None,
    currency: str | None = None,
) -> Step:
    """A final report; one that states the provider's charge (Route Mobile) keeps it first."""
    final_change = MarkFinal(msg_id="42", outcome=smpp, code=code, error=None, at=NOW)
    changes: list[Change] = [final_change]
    if cost is not None:
        changes.insert(0, MarkCharged(msg_id="42", cost=cost, currency=currency))
    return Step(
        state=state,
        changes=changes,
        events=[dlr_event(smpp, smpp.lower())],
        report_state=smpp,
        charge=Charge(cost, currency) if cost is not None and currency is not None else None,
    )


def confirmed_step(provider_id: str | None, smpp: str) -> Step:
    """The provider has it: submitted, its id learned where the report carries one (and
    nothing else the submit recorded is touched), its deadline counted from now."""
    return Step(
        state=State.SUBMITTED,
        changes=[
            MarkConfirmed(msg_id="42", provider_id=provider_id, report_by=NOW + REPORT_TIMEOUT_S)
        ],
        events=[status_event(smpp, smpp.lower())],
    )


def deadline_step(reason: Reason) -> Step:
    return Step(
        state=State.UNKNOWN,
        reason=reason,
        changes=[
            MarkFinal(
                msg_id="42", outcome="UNKNOWN", code="no_report", error=describe(reason), at=NOW
            )
        ],
        events=[dlr_event("UNKNOWN", describe(reason))],
        counts=[Count("report_timeout")],
        report_state="UNKNOWN",
    )


# ── The table ──────────────────────────────────────────────────────────────────────


class Row(NamedTuple):
    name: str
    kind: InputKind
    message: Message
    act: Act
    expected: Step | None
    # The idempotencies it runs with; None for an input that takes no bridge context.
    idempotencies: tuple[Idempotency, ...] | None = EVERY


REJECTED_21 = Rejected("21", "Invalid msisdn")
CODE_21 = ProviderCode("21", "Invalid msisdn")
RETRY_500 = RetryLater("500", "upstream down")
CODE_500 = ProviderCode("500", "upstream down")
THROTTLED_429 = Throttled("429", "slow down")
CODE_429 = ProviderCode("429", "slow down")
UNKNOWN_1715 = Unknown("1715", "duplicate?")
PROVIDER_UNSURE = NoSafeResend("provider_unsure", "1715: duplicate?")
BAD_TOKEN = AccountRefused("401", "bad token", "credentials")
CRASH = TransportFailure(kind="crash", text=describe(CrashedInFlight()), maybe_sent=True)
MAYBE_SENT_ONLY: Final[tuple[Idempotency, ...]] = ("reference", "duplicate-window")

SMPP_FINAL: Final[dict[SmppState, State]] = {
    "DELIVRD": State.DELIVERED,
    "UNDELIV": State.UNDELIVERABLE,
    "EXPIRED": State.EXPIRED,
    "REJECTD": State.REJECTED,
    "DELETED": State.DELETED,
    "UNKNOWN": State.UNKNOWN,
}

# Inputs that come from outside at any time (a report, the deadline sweep).
OUTSIDE_INPUTS: Final[list[tuple[str, InputKind, Act]]] = [
    ("report DELIVRD", "report_final", report(receipt("DELIVRD"))),
    ("report ENROUTE", "report_pending", report(receipt("ENROUTE"))),
    ("report deadline", "report_deadline", report_deadline),
]

ROWS: Final[list[Row]] = [
    # ── waiting: expiry, cancel, circuit open ──
    Row(
        "accepted + expiry -> expired",
        "expiry",
        accepted(expires_at=NOW - 1),
        expiry,
        failed_step(
            State.EXPIRED,
            "EXPIRED",
            ValidityEnded(sent=False),
            code="validity",
            kind="expired",
            circuit=None,
        ),
    ),
    Row(
        "scheduled + expiry -> expired",
        "expiry",
        scheduled(expires_at=NOW - 1, attempt=2),
        expiry,
        failed_step(
            State.EXPIRED,
            "EXPIRED",
            ValidityEnded(sent=False),
            code="validity",
            kind="expired",
            circuit=None,
        ),
    ),
    Row(
        "accepted after maybe_sent + expiry -> unconfirmed",
        "expiry",
        accepted(expires_at=NOW - 1, attempt=1, maybe_sent_at=NOW - 60),
        expiry,
        # Its report may trail the validity end by a minute.
        unconfirmed_step(ValidityEnded(sent=True), maybe_sent_at=NOW - 60, report_by=NOW + 60),
        MAYBE_SENT_ONLY,
    ),
    Row(
        "scheduled after maybe_sent, no report wanted + expiry -> unknown",
        "expiry",
        scheduled(expires_at=NOW - 1, attempt=1, maybe_sent_at=NOW - 60, dlr=False),
        expiry,
        final_unknown_step(ValidityEnded(sent=True), code="validity"),
        MAYBE_SENT_ONLY,
    ),
    Row(
        "scheduled after maybe_sent + expiry -> unconfirmed",
        "expiry",
        scheduled(expires_at=NOW - 1, attempt=1, maybe_sent_at=NOW - 60),
        expiry,
        unconfirmed_step(ValidityEnded(sent=True), maybe_sent_at=NOW - 60, report_by=NOW + 60),
        MAYBE_SENT_ONLY,
    ),
    Row(
        "accepted after maybe_sent, no report wanted + expiry -> unknown",
        "expiry",
        accepted(expires_at=NOW - 1, attempt=1, maybe_sent_at=NOW - 60, dlr=False),
        expiry,
        final_unknown_step(ValidityEnded(sent=True), code="validity"),
        MAYBE_SENT_ONLY,
    ),
    # A resend that waited in the queue past its provider's duplicate window (SMS Club's
    # 2 minutes from the earliest attempt that may have reached it) is not sent.
    *(
        Row(
            f"{name} after maybe_sent + window passed -> unconfirmed",
            "window_passed",
            make(attempt=1, maybe_sent_at=NOW - 600),
            window_passed,
            unconfirmed_step(NoSafeResend(why="window_passed"), maybe_sent_at=NOW - 600),
            ("duplicate-window",),
        )
        for name, make in (("accepted", accepted), ("scheduled", scheduled))
    ),
    *(
        Row(
            f"{name} after maybe_sent, no report wanted + window passed -> unknown",
            "window_passed",
            make(attempt=1, maybe_sent_at=NOW - 600, dlr=False),
            window_passed,
            final_unknown_step(NoSafeResend(why="window_passed"), code="window_passed"),
            ("duplicate-window",),
        )
        for name, make in (("accepted", accepted), ("scheduled", scheduled))
    ),
    Row("accepted + cancel -> cancelled", "cancel", accepted(), cancel, cancelled_step(), None),
    Row("scheduled + cancel -> cancelled", "cancel", scheduled(), cancel, cancelled_step(), None),
    Row(
        "accepted + circuit open -> accepted on the next bridge",
        "circuit_open",
        accepted(),
        circuit_open,
        failover_step(CircuitOpen(BRIDGE), kind="circuit_open", circuit=None),
    ),
    Row(
        "scheduled + circuit open -> accepted on the next bridge",
        "circuit_open",
        scheduled(),
        circuit_open,
        failover_step(CircuitOpen(BRIDGE), kind="circuit_open", circuit=None),
    ),
    # ── inflight: Submitted ──
    Row(
        "Submitted, report wanted -> submitted",
        "submitted",
        inflight(),
        reply(Submitted("P-1", cost=0.03, currency="UAH")),
        submitted_step("P-1", cost=0.03, currency="UAH"),
    ),
    Row(
        "Submitted with a price but no currency -> submitted, kept, not counted",
        "submitted",
        inflight(),
        reply(Submitted("P-1", cost=0.03)),
        submitted_step("P-1", cost=0.03),
    ),
    Row(
        "Submitted with a currency but no price (dsc's unit alone) -> submitted, no charge",
        "submitted",
        inflight(),
        reply(Submitted("P-1", currency="RWF")),
        submitted_step("P-1", currency="RWF"),
    ),
    Row(
        "Submitted after a failover -> the estimate is this bridge's, not the first's",
        "submitted",
        inflight(bridges=("bsg", BRIDGE), bridge_index=1, cost=0.05, currency="EUR"),
        reply(Submitted("P-1", cost=0.03, currency="UAH")),
        submitted_step(
            "P-1",
            cost=0.03,
            currency="UAH",
            event=submitted_event(
                "P-1", provider_cost=0.03, provider_currency="UAH", cost=0.02, currency="USD"
            ),
        ),
    ),
    Row(
        "Submitted, validity ends before the report timeout -> report by validity + 60 s",
        "submitted",
        inflight(expires_at=NOW + 600),
        reply(Submitted("P-1")),
        submitted_step("P-1", report_by=NOW + 660),
    ),
    Row(
        "Submitted, no report wanted -> sent",
        "submitted",
        inflight(dlr=False),
        reply(Submitted("P-1")),
        sent_step("P-1"),
    ),
    Row(
        "Submitted without id, no report wanted -> sent",
        "submitted",
        inflight(dlr=False),
        reply(Submitted(None)),
        sent_step(None),
    ),
    Row(
        "Submitted without id, no way to ask -> unknown",
        "submitted",
        inflight(),
        reply(Submitted(None)),
        unknown_without_id_step(),
        ("none", "duplicate-window"),
    ),
    Row(
        "Submitted without id, asked by reference -> submitted",
        "submitted",
        inflight(),
        reply(Submitted(None)),
        submitted_step(None),
        ("reference",),
    ),
    # ── inflight: Rejected ──
    Row(
        "Rejected -> rejected",
        "rejected",
        inflight(),
        reply(REJECTED_21),
        failed_step(
            State.REJECTED, "REJECTD", CODE_21, code="21", kind="rejected", circuit="success"
        ),
    ),
    Row(
        "Rejected blaming the number -> rejected, counted as invalid_number",
        "rejected",
        inflight(),
        reply(Rejected("21", "Invalid msisdn", cause="number")),
        failed_step(
            State.REJECTED, "REJECTD", CODE_21, code="21", kind="invalid_number", circuit="success"
        ),
    ),
    Row(
        "Rejected after maybe_sent -> unconfirmed",
        "rejected",
        inflight(attempt=1, maybe_sent_at=NOW - 60),
        reply(REJECTED_21),
        unconfirmed_step(
            MaybeSentEarlier(CODE_21),
            maybe_sent_at=NOW - 60,
            counts=[Count("failed", "rejected")],
            circuit="success",
        ),
        MAYBE_SENT_ONLY,
    ),
    Row(
        "Rejected after maybe_sent, no report wanted -> unknown",
        "rejected",
        inflight(attempt=1, maybe_sent_at=NOW - 60, dlr=False),
        reply(REJECTED_21),
        final_unknown_step(
            MaybeSentEarlier(CODE_21),
            code="21",
            counts=[Count("failed", "rejected")],
            circuit="success",
        ),
        MAYBE_SENT_ONLY,
    ),
    # ── inflight: RetryLater ──
    Row(
        "RetryLater, attempts left -> scheduled",
        "retry_later",
        inflight(),
        reply(RETRY_500),
        retry_step(NOW + 0.5, 1, CODE_500, kind="retry_later", circuit="failure"),
    ),
    Row(
        "RetryLater with Retry-After above the backoff -> scheduled at Retry-After",
        "retry_later",
        inflight(),
        reply(RetryLater("500", "upstream down", delay_s=30.0)),
        retry_step(NOW + 30, 1, CODE_500, kind="retry_later", circuit="failure"),
    ),
    Row(
        "RetryLater, attempts used, failover left -> accepted on the next bridge",
        "retry_later",
        inflight(attempt=1),
        reply(RETRY_500),
        failover_step(CODE_500, kind="retry_later", circuit="failure"),
    ),
    Row(
        "RetryLater, attempts used, no failover -> rejected",
        "retry_later",
        inflight(attempt=7, bridges=ONE_BRIDGE),
        reply(RETRY_500),
        failed_step(
            State.REJECTED,
            "REJECTD",
            AttemptsUsed(8, CODE_500),
            code="500",
            kind="retry_later",
            circuit="failure",
        ),
    ),
    Row(
        "RetryLater after maybe_sent, attempts left -> scheduled, never failed over",
        "retry_later",
        inflight(attempt=1, maybe_sent_at=NOW - 60),
        reply(RETRY_500),
        retry_step(
            NOW + 1, 2, CODE_500, kind="retry_later", circuit="failure", maybe_sent_at=NOW - 60
        ),
        ("reference",),
    ),
    Row(
        "RetryLater after maybe_sent, attempts used -> unconfirmed",
        "retry_later",
        inflight(attempt=7, maybe_sent_at=NOW - 60),
        reply(RETRY_500),
        unconfirmed_step(
            MaybeSentEarlier(CODE_500),
            maybe_sent_at=NOW - 60,
            counts=[Count("failed", "retry_later")],
            circuit="failure",
        ),
        MAYBE_SENT_ONLY,
    ),
    Row(
        "RetryLater after maybe_sent, attempts used, no report wanted -> unknown",
        "retry_later",
        inflight(attempt=7, maybe_sent_at=NOW - 60, dlr=False),
        reply(RETRY_500),
        final_unknown_step(
            MaybeSentEarlier(CODE_500),
            code="500",
            counts=[Count("failed", "retry_later")],
            circuit="failure",
        ),
        MAYBE_SENT_ONLY,
    ),
    # ── inflight: Throttled (patience: max_attempts × throttle_patience) ──
    Row(
        "Throttled past max_attempts, patience left -> scheduled",
        "retry_later",
        inflight(attempt=2),
        reply(THROTTLED_429),
        retry_step(NOW + 2, 3, CODE_429, kind="throttled", circuit="release"),
    ),
    Row(
        "Throttled with Retry-After -> scheduled at Retry-After",
        "retry_later",
        inflight(),
        reply(Throttled("429", "slow down", delay_s=60.0)),
        retry_step(NOW + 60, 1, CODE_429, kind="throttled", circuit="release"),
    ),
    Row(
        "Throttled, patience used, failover left -> accepted on the next bridge",
        "retry_later",
        inflight(attempt=3),
        reply(THROTTLED_429),
        failover_step(CODE_429, kind="throttled", circuit="release"),
    ),
    Row(
        "Throttled, patience used, no failover -> rejected",
        "retry_later",
        inflight(attempt=15, bridges=ONE_BRIDGE),
        reply(THROTTLED_429),
        failed_step(
            State.REJECTED,
            "REJECTD",
            AttemptsUsed(16, CODE_429),
            code="429",
            kind="throttled",
            circuit="release",
        ),
    ),
    # ── inflight: AccountRefused (the bridge's fault: never final) ──
    Row(
        "AccountRefused, failover left -> accepted on the next bridge",
        "account_refused",
        inflight(),
        reply(BAD_TOKEN),
        failover_step(
            AccountFaultReason("credentials", "401", "bad token"),
            kind="account_credentials",
            circuit="account",
        ),
    ),
    Row(
        "AccountRefused, no failover -> scheduled after max_delay_s",
        "account_refused",
        inflight(bridges=ONE_BRIDGE),
        reply(BAD_TOKEN),
        retry_step(
            NOW + 300,
            1,
            AccountFaultReason("credentials", "401", "bad token"),
            kind="account_credentials",
            circuit="account",
        ),
    ),
    Row(
        "AccountRefused on the last attempt, no failover -> scheduled, never rejected",
        "account_refused",
        inflight(attempt=7, bridges=ONE_BRIDGE),
        reply(AccountRefused("402", "no credit", "credit")),
        retry_step(
            NOW + 300,
            8,
            AccountFaultReason("credit", "402", "no credit"),
            kind="account_credit",
            circuit="account",
        ),
    ),
    Row(
        "AccountRefused after maybe_sent -> scheduled on its bridge, never failed over",
        "account_refused",
        inflight(attempt=1, maybe_sent_at=NOW - 60),
        reply(AccountRefused("403", "blocked", "blocked")),
        retry_step(
            NOW + 300,
            2,
            AccountFaultReason("blocked", "403", "blocked"),
            kind="account_blocked",
            circuit="account",
            maybe_sent_at=NOW - 60,
        ),
        ("reference",),
    ),
    # ── inflight: Unknown ──
    Row(
        "Unknown -> unconfirmed",
        "unknown_reply",
        inflight(),
        reply(UNKNOWN_1715),
        unconfirmed_step(PROVIDER_UNSURE, maybe_sent_at=NOW, counts=[Count("failed", "unknown")]),
    ),
    Row(
        "Unknown, no report wanted -> unknown",
        "unknown_reply",
        inflight(dlr=False),
        reply(UNKNOWN_1715),
        final_unknown_step(PROVIDER_UNSURE, code="1715", counts=[Count("failed", "unknown")]),
    ),
    # ── inflight: transport failure, not sent (as RetryLater) ──
    Row(
        "transport not sent, attempts left -> scheduled",
        "transport",
        inflight(),
        transport(NOT_SENT),
        retry_step(NOW + 0.5, 1, NOT_SENT, kind="connect_failed", circuit="failure"),
    ),
    Row(
        "transport not sent, attempts used, failover left -> accepted on the next bridge",
        "transport",
        inflight(attempt=1),
        transport(NOT_SENT),
        failover_step(NOT_SENT, kind="connect_failed", circuit="failure"),
    ),
    Row(
        "transport not sent, attempts used, no failover -> rejected",
        "transport",
        inflight(attempt=7, bridges=ONE_BRIDGE),
        transport(NOT_SENT),
        failed_step(
            State.REJECTED,
            "REJECTD",
            AttemptsUsed(8),
            code=None,
            kind="connect_failed",
            circuit="failure",
        ),
    ),
    Row(
        "transport not sent after maybe_sent, attempts used -> unconfirmed",
        "transport",
        inflight(attempt=7, maybe_sent_at=NOW - 60),
        transport(NOT_SENT),
        unconfirmed_step(
            MaybeSentEarlier(NOT_SENT),
            maybe_sent_at=NOW - 60,
            counts=[Count("failed", "connect_failed")],
            circuit="failure",
        ),
        MAYBE_SENT_ONLY,
    ),
    # ── inflight: transport failure, maybe sent ──
    Row(
        "transport maybe sent, no idempotency -> unconfirmed",
        "transport",
        inflight(),
        transport(LOST_REPLY),
        unconfirmed_step(
            NoSafeResend("no_idempotency"),
            maybe_sent_at=NOW,
            counts=[Count("failed", "reply_lost")],
            circuit="failure",
        ),
        ("none",),
    ),
    Row(
        "transport maybe sent, no idempotency, no report wanted -> unknown",
        "transport",
        inflight(dlr=False),
        transport(LOST_REPLY),
        final_unknown_step(
            NoSafeResend("no_idempotency"),
            code=None,
            counts=[Count("failed", "reply_lost")],
            circuit="failure",
        ),
        ("none",),
    ),
    Row(
        "transport maybe sent, by reference -> scheduled",
        "transport",
        inflight(),
        transport(LOST_REPLY),
        retry_step(
            NOW + 0.5, 1, LOST_REPLY, kind="reply_lost", circuit="failure", maybe_sent_at=NOW
        ),
        ("reference",),
    ),
    Row(
        "transport maybe sent, by reference, attempts used -> unconfirmed",
        "transport",
        inflight(attempt=7, maybe_sent_at=NOW - 60),
        transport(LOST_REPLY),
        unconfirmed_step(
            NoSafeResend("attempts_used"),
            maybe_sent_at=NOW - 60,
            counts=[Count("failed", "reply_lost")],
            circuit="failure",
        ),
        ("reference",),
    ),
    Row(
        "transport maybe sent, first attempt, duplicate window -> scheduled",
        "transport",
        inflight(),
        transport(LOST_REPLY),
        retry_step(
            NOW + 0.5, 1, LOST_REPLY, kind="reply_lost", circuit="failure", maybe_sent_at=NOW
        ),
        ("duplicate-window",),
    ),
    Row(
        "transport maybe sent, inside the duplicate window -> scheduled",
        "transport",
        inflight(attempt=1, maybe_sent_at=NOW - 60),
        transport(LOST_REPLY),
        retry_step(
            NOW + 1, 2, LOST_REPLY, kind="reply_lost", circuit="failure", maybe_sent_at=NOW - 60
        ),
        ("duplicate-window",),
    ),
    Row(
        "transport maybe sent, backoff past the window's safe end -> scheduled at that end",
        "transport",
        # 120 s window - 10 s margin from NOW - 109.5: the last safe resend is NOW + 0.5.
        inflight(attempt=1, maybe_sent_at=NOW - 109.5),
        transport(LOST_REPLY),
        retry_step(
            NOW + 0.5,
            2,
            LOST_REPLY,
            kind="reply_lost",
            circuit="failure",
            maybe_sent_at=NOW - 109.5,
        ),
        ("duplicate-window",),
    ),
    Row(
        "transport maybe sent, past the duplicate window -> unconfirmed",
        "transport",
        inflight(attempt=1, maybe_sent_at=NOW - 200),
        transport(LOST_REPLY),
        unconfirmed_step(
            NoSafeResend("window_passed"),
            maybe_sent_at=NOW - 200,
            counts=[Count("failed", "reply_lost")],
            circuit="failure",
        ),
        ("duplicate-window",),
    ),
    Row(
        "transport maybe sent, past the window, no report wanted -> unknown",
        "transport",
        inflight(attempt=1, maybe_sent_at=NOW - 200, dlr=False),
        transport(LOST_REPLY),
        final_unknown_step(
            NoSafeResend("window_passed"),
            code=None,
            counts=[Count("failed", "reply_lost")],
            circuit="failure",
        ),
        ("duplicate-window",),
    ),
    # ── inflight: crash recovery (a maybe-sent transport failure, no circuit verdict) ──
    Row(
        "recovery, no idempotency -> unconfirmed",
        "recovery",
        inflight(),
        recovery,
        unconfirmed_step(
            NoSafeResend("no_idempotency"), maybe_sent_at=NOW, counts=[Count("failed", "crash")]
        ),
        ("none",),
    ),
    Row(
        "recovery, no idempotency, no report wanted -> unknown",
        "recovery",
        inflight(dlr=False),
        recovery,
        final_unknown_step(
            NoSafeResend("no_idempotency"), code=None, counts=[Count("failed", "crash")]
        ),
        ("none",),
    ),
    Row(
        "recovery, by reference -> scheduled",
        "recovery",
        inflight(),
        recovery,
        retry_step(NOW + 0.5, 1, CRASH, kind="crash", circuit=None, maybe_sent_at=NOW),
        ("reference",),
    ),
    Row(
        "recovery, by reference, attempts used -> unconfirmed",
        "recovery",
        inflight(attempt=7, maybe_sent_at=NOW - 60),
        recovery,
        unconfirmed_step(
            NoSafeResend("attempts_used"),
            maybe_sent_at=NOW - 60,
            counts=[Count("failed", "crash")],
        ),
        ("reference",),
    ),
    Row(
        "recovery, first attempt, duplicate window -> scheduled",
        "recovery",
        inflight(),
        recovery,
        retry_step(NOW + 0.5, 1, CRASH, kind="crash", circuit=None, maybe_sent_at=NOW),
        ("duplicate-window",),
    ),
    Row(
        "recovery, inside the duplicate window -> scheduled",
        "recovery",
        inflight(attempt=1, maybe_sent_at=NOW - 60),
        recovery,
        retry_step(NOW + 1, 2, CRASH, kind="crash", circuit=None, maybe_sent_at=NOW - 60),
        ("duplicate-window",),
    ),
    Row(
        "recovery, past the duplicate window -> unconfirmed",
        "recovery",
        inflight(attempt=1, maybe_sent_at=NOW - 200),
        recovery,
        unconfirmed_step(
            NoSafeResend("window_passed"),
            maybe_sent_at=NOW - 200,
            counts=[Count("failed", "crash")],
        ),
        ("duplicate-window",),
    ),
    Row(
        # The crashed resend went out 1 s ago, but the window runs from the first attempt
        # that may have reached the provider (115 s ago): a resend now could double-send.
        "recovery, window counted from maybe_sent_at, not the crashed attempt -> unconfirmed",
        "recovery",
        inflight(attempt=1, maybe_sent_at=NOW - 115, inflight_at=NOW - 1),
        recovery,
        unconfirmed_step(
            NoSafeResend("window_passed"),
            maybe_sent_at=NOW - 115,
            counts=[Count("failed", "crash")],
        ),
        ("duplicate-window",),
    ),
    # ── reports: final ones end it, with a `dlr` event ──
    *[
        Row(
            f"{name} + report {smpp} -> {state}",
            "report_final",
            message,
            report(receipt(smpp, provider_id=provider_id, code=code)),
            reported_step(smpp, state, code),
            None,
        )
        for smpp, state in SMPP_FINAL.items()
        for code in [("34" if smpp == "UNDELIV" else None)]
        for name, message, provider_id in [
            ("submitted", submitted(), "P-1"),
            ("unconfirmed", unconfirmed(), "P-9"),
            # An earlier attempt may have reached the provider; it reports by reference.
            ("scheduled after maybe_sent", scheduled(attempt=1, maybe_sent_at=NOW - 60), None),
            ("accepted after maybe_sent", accepted(attempt=1, maybe_sent_at=NOW - 60), None),
        ]
    ],
    # ── reports that state the provider's charge (Route Mobile): kept before the end ──
    *[
        Row(
            f"{name} + report DELIVRD charging {cost} {currency} -> delivered, charge kept",
            "report_final",
            message,
            report(receipt("DELIVRD", provider_id=provider_id, cost=cost, currency=currency)),
            reported_step("DELIVRD", State.DELIVERED, None, cost=cost, currency=currency),
            None,
        )
        for cost, currency in [(2.0, "INR"), (0.0, "INR"), (2.0, None)]
        for name, message, provider_id in [
            ("submitted", submitted(), "P-1"),
            ("unconfirmed", unconfirmed(), "P-9"),
        ]
    ],
    Row(
        "submitted + report not final with a charge -> submitted, status, charge not kept",
        "report_pending",
        submitted(),
        report(receipt("ENROUTE", cost=2.0, currency="INR")),
        Step(state=State.SUBMITTED, events=[status_event("ENROUTE", "enroute")]),
        None,
    ),
    # ── reports: not final is a `status` event, never a receipt ──
    Row(
        "submitted + report not final -> submitted, status",
        "report_pending",
        submitted(),
        report(receipt("ENROUTE")),
        Step(state=State.SUBMITTED, events=[status_event("ENROUTE", "enroute")]),
        None,
    ),
    Row(
        "unconfirmed + report not final -> submitted, learning the provider id",
        "report_pending",
        unconfirmed(),
        report(receipt("ACCEPTD", provider_id="P-9")),
        confirmed_step("P-9", "ACCEPTD"),
        None,
    ),
    Row(
        "unconfirmed + report not final by reference -> submitted, id still unknown",
        "report_pending",
        unconfirmed(),
        report(receipt("ENROUTE", provider_id=None)),
        confirmed_step(None, "ENROUTE"),
        None,
    ),
    Row(
        "submitted without id + report not final with one -> submitted, learning it",
        "report_pending",
        submitted(provider_id=None),
        report(receipt("ENROUTE", provider_id="P-9")),
        confirmed_step("P-9", "ENROUTE"),
        None,
    ),
    Row(
        "scheduled after maybe_sent + report not final -> scheduled, status",
        "report_pending",
        scheduled(attempt=1, maybe_sent_at=NOW - 60),
        report(receipt("ENROUTE", provider_id=None)),
        Step(state=State.SCHEDULED, events=[status_event("ENROUTE", "enroute")]),
        None,
    ),
    Row(
        "accepted after maybe_sent + report not final -> accepted, status",
        "report_pending",
        accepted(attempt=1, maybe_sent_at=NOW - 60),
        report(receipt("ENROUTE", provider_id=None)),
        Step(state=State.ACCEPTED, events=[status_event("ENROUTE", "enroute")]),
        None,
    ),
    # ── report deadline ──
    Row(
        "submitted + report deadline -> unknown (report timeout)",
        "report_deadline",
        submitted(due_at=NOW - 1),
        report_deadline,
        deadline_step(ReportTimeout(REPORT_TIMEOUT_S)),
        None,
    ),
    Row(
        "submitted + report deadline after the validity end -> unknown (validity ended)",
        "report_deadline",
        submitted(due_at=NOW - 1, expires_at=NOW - 61),
        report_deadline,
        deadline_step(ValidityEnded(sent=True)),
        None,
    ),
    Row(
        "unconfirmed + report deadline -> unknown (report timeout)",
        "report_deadline",
        unconfirmed(due_at=NOW - 1),
        report_deadline,
        deadline_step(ReportTimeout(REPORT_TIMEOUT_S)),
        None,
    ),
    Row(
        "unconfirmed + report deadline, validity ended exactly now -> unknown (validity ended)",
        "report_deadline",
        unconfirmed(due_at=NOW, expires_at=NOW),
        report_deadline,
        deadline_step(ValidityEnded(sent=True)),
        None,
    ),
    # ── too late, or not applicable: None, and nothing changes ──
    *[
        Row(f"{name} + cancel -> None", "cancel", message, cancel, None, None)
        for name, message in [
            ("inflight", inflight()),
            ("submitted", submitted()),
            ("unconfirmed", unconfirmed()),
            ("final", final()),
            ("scheduled after an attempt", scheduled(attempt=1)),
            ("accepted after maybe_sent", accepted(attempt=1, maybe_sent_at=NOW - 60)),
        ]
    ],
    *[
        Row(f"{name} + {label} -> None", kind, message, act, None, None)
        for name, message in [("final", final()), ("inflight", inflight())]
        for label, kind, act in OUTSIDE_INPUTS
    ],
    *[
        Row(
            f"{name} + report deadline -> None",
            "report_deadline",
            message,
            report_deadline,
            None,
            None,
        )
        for name, message in [("accepted", accepted()), ("scheduled", scheduled())]
    ],
]


def expand(rows: Sequence[Row]) -> list[Any]:
    params = []
    for row in rows:
        for idempotency in row.idempotencies or ("none",):
            label = row.name if row.idempotencies is None else f"{row.name} [{idempotency}]"
            params.append(pytest.param(row, idempotency, id=label))
    return params


def feed_changes(step: Step) -> list[Change]:
    """The AppendEvents a step with events ends with: the message's (account, msg_id,
    callback_url) and every event it announces, in order."""
    if not step.events:
        return []
    return [
        AppendEvents(
            account="default",
            msg_id=BASE.msg_id,
            callback_url=BASE.callback_url,
            events=[event for _, event in step.events],
        )
    ]


def assert_step(actual: Step | None, expected: Step | None) -> None:
    """Field by field, so a failure names what differs."""
    if expected is None:
        assert actual is None
        return
    assert actual is not None
    assert actual.state is expected.state
    # Every step's events go into the durable feed with its changes (engine.feed): its
    # last change, when it announces anything, is their AppendEvents.
    assert actual.changes == expected.changes + feed_changes(expected)
    assert actual.events == expected.events
    assert actual.counts == expected.counts
    assert actual.circuit == expected.circuit
    assert actual.reason == expected.reason
    assert actual.report_state == expected.report_state
    assert actual.charge == expected.charge


@pytest.mark.parametrize(("row", "idempotency"), expand(ROWS))
def test_golden_table(row: Row, idempotency: Idempotency) -> None:
    assert_step(row.act(row.message, context(idempotency)), row.expected)


# What `state_of` says of each row's message is the "state" column of the table.
def test_every_message_is_in_the_state_its_row_names() -> None:
    named = {
        "accepted": State.ACCEPTED,
        "scheduled": State.SCHEDULED,
        "inflight": State.INFLIGHT,
        "submitted": State.SUBMITTED,
        "unconfirmed": State.UNCONFIRMED,
        "final": State.UNKNOWN,  # a final journal row: its outcome is not read back
    }
    for row in ROWS:
        first_word = row.name.split()[0]
        expected = named.get(first_word, State.INFLIGHT)  # reply and transport rows
        assert lifecycle.state_of(row.message, NOW) is expected, row.name


# ── The table's own completeness ───────────────────────────────────────────────────

# Allowed by TRANSITIONS but produced by no input: an account refusal is never a give-up
# (RetryPolicy.decide answers Failover or RetryAt), so it never leaves a message
# unconfirmed or unknown.
UNREACHABLE: Final = {
    (State.INFLIGHT, "account_refused", State.UNCONFIRMED),
    (State.INFLIGHT, "account_refused", State.UNKNOWN),
}


def test_every_transition_of_the_table_has_a_golden_row() -> None:
    covered = {
        (lifecycle.state_of(row.message, NOW), row.kind, row.expected.state)
        for row in ROWS
        if row.expected is not None
    }
    allowed = {
        (before, kind, after)
        for (before, kind), afters in TRANSITIONS.items()
        for after in afters
        if kind != "claim"  # journal.claim's compare-and-set; no lifecycle function
    }
    assert allowed - covered == UNREACHABLE


def test_the_claim_rows_are_the_waiting_states_going_inflight() -> None:
    claims = {key: after for key, after in TRANSITIONS.items() if key[1] == "claim"}
    assert claims == {
        (State.ACCEPTED, "claim"): frozenset({State.INFLIGHT}),
        (State.SCHEDULED, "claim"): frozenset({State.INFLIGHT}),
    }
    assert lifecycle.state_of(inflight(), NOW) is State.INFLIGHT


def table_params() -> list[Any]:
    params = []
    for row in ROWS:
        if row.expected is None:
            continue
        marks: list[pytest.MarkDecorator] = []
        params.append(pytest.param(row, id=row.name, marks=marks))
    return params


@pytest.mark.parametrize("row", table_params())
def test_every_step_is_one_the_table_allows(row: Row) -> None:
    assert row.expected is not None
    before = lifecycle.state_of(row.message, NOW)
    assert row.expected.state in TRANSITIONS[before, row.kind]


# ── Pairs the table does not allow ─────────────────────────────────────────────────

STATES: Final[dict[State, Message]] = {
    State.ACCEPTED: accepted(),
    State.SCHEDULED: scheduled(),
    State.INFLIGHT: inflight(),
    State.SUBMITTED: submitted(),
    State.UNCONFIRMED: unconfirmed(),
    State.UNKNOWN: final(),
}

RAISING_INPUTS: Final[dict[InputKind, Act]] = {
    "submitted": reply(Submitted("P-2")),
    "rejected": reply(REJECTED_21),
    "retry_later": reply(RETRY_500),
    "account_refused": reply(BAD_TOKEN),
    "unknown_reply": reply(UNKNOWN_1715),
    "transport": transport(NOT_SENT),
    "recovery": recovery,
    "expiry": expiry,
    "circuit_open": circuit_open,
}

# Functions that check a fixed "before" state instead of the message's own: on_reply,
# on_transport_failure and on_recovery always INFLIGHT, on_circuit_open always ACCEPTED,
# on_expiry ACCEPTED for any message that may not have been sent.


@pytest.mark.parametrize("kind", RAISING_INPUTS)
def test_an_input_the_table_does_not_allow_raises(kind: InputKind) -> None:
    """Each state with no row for `kind`: the input must raise, not take a step."""
    taken = []
    for state, message in STATES.items():
        if (state, kind) in TRANSITIONS:
            continue
        try:
            step = RAISING_INPUTS[kind](message, context("reference"))
        except IllegalTransition:
            continue
        taken.append(f"{state} -> {step.state if step else None}")
    assert not taken


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(unconfirmed(), id="unconfirmed"),
        pytest.param(submitted(maybe_sent_at=NOW - 600), id="submitted after maybe_sent"),
        pytest.param(inflight(attempt=1, maybe_sent_at=NOW - 60), id="inflight after maybe_sent"),
    ],
)
def test_expiry_of_a_message_past_waiting_that_may_sit_at_the_provider_raises(
    message: Message,
) -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.on_expiry(message, context("reference"))


def none_pairs() -> list[Any]:
    inputs: dict[InputKind, Act] = {
        "cancel": cancel,
        "report_final": report(receipt("DELIVRD")),
        "report_pending": report(receipt("ENROUTE")),
        "report_deadline": report_deadline,
    }
    return [
        pytest.param(state, act, id=f"{state} + {kind}")
        for kind, act in inputs.items()
        for state in STATES
        if (state, kind) not in TRANSITIONS
    ]


@pytest.mark.parametrize(("state", "act"), none_pairs())
def test_an_input_that_does_not_apply_answers_none(state: State, act: Act) -> None:
    """Cancel, reports and the deadline arrive from outside at any time: where the table
    has no row for them they answer None (too late, or final already), not an error."""
    assert act(STATES[state], context("none")) is None


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(accepted(attempt=1, maybe_sent_at=NOW - 60), id="may sit at the provider"),
        pytest.param(accepted(bridges=ONE_BRIDGE), id="no next bridge"),
    ],
)
def test_circuit_open_never_moves_a_message_that_cannot_fail_over(message: Message) -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.on_circuit_open(message, context("duplicate-window"))


# ── Resends after a message may have reached a duplicate-window provider ───────────


def carry_out(message: Message, step: Step) -> Message:
    """What the journal makes of a retry step (MarkRetry): waiting again."""
    [change, appended] = step.changes
    assert isinstance(change, MarkRetry)
    assert isinstance(appended, AppendEvents)
    return msgspec.structs.replace(
        message,
        state="accepted",
        due_at=change.due_at,
        attempt=change.attempt,
        bridge_index=change.bridge_index,
        maybe_sent_at=change.maybe_sent_at,
    )


@pytest.mark.parametrize(
    ("act", "idempotency"),
    [
        pytest.param(transport(LOST_REPLY), "reference", id="lost reply, retried"),
        pytest.param(transport(LOST_REPLY), "none", id="lost reply, unconfirmed"),
        pytest.param(recovery, "duplicate-window", id="crash, retried"),
        pytest.param(recovery, "none", id="crash, unconfirmed"),
    ],
)
def test_maybe_sent_at_is_when_the_attempt_was_made(act: Act, idempotency: Idempotency) -> None:
    # The request went out 30 s ago (a read timeout, or a restart after a crash).
    step = act(inflight(inflight_at=NOW - 30), context(idempotency))
    assert step is not None
    [change, _appended] = step.changes
    assert isinstance(change, MarkRetry | MarkUnconfirmed)
    assert change.maybe_sent_at == NOW - 30


@pytest.mark.parametrize("first", ["lost reply", "crash"])
def test_resends_after_lost_replies_stay_inside_the_duplicate_window(first: str) -> None:
    """Every request times out 30 s after it went out; the first went out at NOW - 30.
    SMS Club deduplicates only within 120 s of the first: no resend may go later."""
    message = inflight(inflight_at=NOW - 30, bridges=ONE_BRIDGE)
    ctx = context("duplicate-window")
    step = recovery(message, ctx) if first == "crash" else transport(LOST_REPLY)(message, ctx)
    resends: list[float] = []
    while step is not None and step.state is State.SCHEDULED:
        message = carry_out(message, step)
        resends.append(message.due_at)
        message = msgspec.structs.replace(message, state="inflight", inflight_at=message.due_at)
        step = transport(LOST_REPLY)(message, context("duplicate-window", message.due_at + 30))
    assert step is not None
    assert step.state is State.UNCONFIRMED
    assert resends
    assert max(resends) < NOW - 30 + POLICY.duplicate_window_s, resends


@pytest.mark.parametrize(
    "act",
    [
        pytest.param(reply(RETRY_500), id="RetryLater"),
        pytest.param(reply(THROTTLED_429), id="Throttled"),
        pytest.param(transport(NOT_SENT), id="transport not sent"),
        pytest.param(reply(BAD_TOKEN), id="AccountRefused"),
    ],
)
@pytest.mark.parametrize(
    "maybe_sent_at",
    [
        pytest.param(NOW - 200, id="window passed"),
        pytest.param(NOW - 105, id="backoff crosses the window's end"),
    ],
)
def test_a_maybe_sent_message_is_never_resent_after_the_duplicate_window(
    act: Act, maybe_sent_at: float
) -> None:
    message = inflight(attempt=5, maybe_sent_at=maybe_sent_at, inflight_at=NOW - 1)
    step = act(message, context("duplicate-window"))
    assert step is not None
    latest_safe = maybe_sent_at + POLICY.duplicate_window_s - POLICY.duplicate_window_margin_s
    if step.state is State.SCHEDULED:
        [change, _appended] = step.changes
        assert isinstance(change, MarkRetry)
        assert change.due_at <= latest_safe
    else:
        assert step.state is State.UNCONFIRMED


# ── Reports beside the table ───────────────────────────────────────────────────────


PENDING: Final[tuple[SmppState, ...]] = ("ENROUTE", "ACCEPTD")


def test_a_not_final_report_never_makes_a_receipt() -> None:
    for state in PENDING:
        for message in (submitted(), unconfirmed()):
            step = lifecycle.on_report(message, receipt(state), BRIDGE, NOW, 60.0)
            assert step is not None
            assert [type(event) for _, event in step.events] == [StatusEvent]
            assert all(isinstance(e, StatusEvent) and not e.final for _, e in step.events)
            assert not [c for c in step.changes if isinstance(c, MarkFinal)]


# ── Circuit verdicts ───────────────────────────────────────────────────────────────


def verdict_step(circuit: lifecycle.CircuitVerdict | None) -> Step:
    return Step(state=State.SCHEDULED, circuit=circuit)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], None),
        ([None], None),
        (["release"], "release"),
        (["release", "failure"], "failure"),
        (["failure", "release", "success"], "success"),
        (["success", "account", "failure"], "account"),
        (["release", None, "account"], "account"),
    ],
)
def test_request_verdict_precedence(
    verdicts: list[lifecycle.CircuitVerdict | None], expected: lifecycle.CircuitVerdict | None
) -> None:
    assert lifecycle.request_verdict([verdict_step(v) for v in verdicts]) == expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([Submitted("P-1"), RETRY_500, THROTTLED_429], "success"),
        ([REJECTED_21, RETRY_500], "success"),  # a sensible answer about the message
        ([RETRY_500, THROTTLED_429], "failure"),
        ([THROTTLED_429], "release"),
        ([Submitted("P-1"), BAD_TOKEN], "account"),
        ([UNKNOWN_1715], None),
    ],
)
def test_request_verdict_from_the_replies_of_one_request(
    outcomes: list[Outcome], expected: lifecycle.CircuitVerdict | None
) -> None:
    ctx = context("none")
    steps = [lifecycle.on_reply(inflight(), outcome, ctx) for outcome in outcomes]
    assert lifecycle.request_verdict(steps) == expected


# ── describe ───────────────────────────────────────────────────────────────────────

SENTENCES: Final[list[tuple[Reason, str]]] = [
    (CODE_21, "21: Invalid msisdn"),
    (ProviderCode("453", "SMS Club 453: duplicate"), "SMS Club 453: duplicate"),
    (AttemptsUsed(8), "gave up after 8 attempts"),
    (AttemptsUsed(8, CODE_500), "gave up after 8 attempts (last: 500: upstream down)"),
    (NOT_SENT, "the request never reached the provider: connection refused"),
    (LOST_REPLY, "the request may have reached the provider: read timeout"),
    (MaybeSentEarlier(), "outcome unknown: an earlier attempt may have reached the provider"),
    (
        MaybeSentEarlier(CODE_21),
        "outcome unknown: an earlier attempt may have reached the provider;"
        " last: 21: Invalid msisdn",
    ),
    (
        MaybeSentEarlier(LOST_REPLY),
        "outcome unknown: an earlier attempt may have reached the provider;"
        " last: the request may have reached the provider: read timeout",
    ),
    (
        MaybeSentEarlier(AttemptsUsed(3)),
        "outcome unknown: an earlier attempt may have reached the provider;"
        " last: gave up after 3 attempts",
    ),
    (
        NoSafeResend("no_idempotency"),
        "outcome unknown: the request may have reached the provider and the provider offers"
        " no way to resend safely",
    ),
    (
        NoSafeResend("window_passed"),
        "outcome unknown: the request may have reached the provider and its duplicate window"
        " has passed",
    ),
    (
        NoSafeResend("attempts_used"),
        "outcome unknown: the request may have reached the provider and the attempts are used up",
    ),
    (
        PROVIDER_UNSURE,
        "outcome unknown: the request may have reached the provider and the provider could not"
        " say whether it took it (1715: duplicate?)",
    ),
    (NoProviderId(), "the provider took it but gave no message id, so no report can be matched"),
    (CrashedInFlight(), "outcome unknown: septet stopped while the request was in flight"),
    (ValidityEnded(sent=True), "no final report before the message's validity ended"),
    (ValidityEnded(sent=False), "validity ended before sending"),
    (ReportTimeout(259200.0), "no final report within 259200 s"),
    (ReportTimeout(0.5), "no final report within 0.5 s"),
    (
        AccountFaultReason("credentials", "401", "bad token"),
        "the provider refused the account's credentials (401: bad token)",
    ),
    (
        AccountFaultReason("blocked", "403", "blocked"),
        "the provider refused the account's account (403: blocked)",
    ),
    (
        AccountFaultReason("credit", "402", "no credit"),
        "the provider refused the account's credit (402: no credit)",
    ),
    (CircuitOpen("smsclub"), "smsclub's circuit breaker is open"),
    (CancelledByOwner(), "cancelled by its owner"),
]


@pytest.mark.parametrize(
    ("reason", "sentence"),
    SENTENCES,
    ids=[f"{type(reason).__name__}-{index}" for index, (reason, _) in enumerate(SENTENCES)],
)
def test_describe_renders_each_reason(reason: Reason, sentence: str) -> None:
    rendered = describe(reason)
    assert rendered == sentence
    assert rendered.strip()
    assert "{" not in rendered
    assert "}" not in rendered


def test_describe_covers_every_reason_variant_and_none() -> None:
    assert {type(reason) for reason, _ in SENTENCES} == set(typing.get_args(Reason))
    assert describe(None) == ""


def test_every_reason_in_the_golden_table_renders_a_sentence() -> None:
    for row in ROWS:
        if row.expected is not None and row.expected.reason is not None:
            rendered = describe(row.expected.reason)
            assert rendered.strip(), row.name
            assert "{" not in rendered, row.name
            assert "}" not in rendered, row.name


def test_changes_are_journal_changes() -> None:
    # The table's expected changes are the journal's own union, so record() accepts them.
    change_types = set(typing.get_args(Change))
    for row in ROWS:
        if row.expected is not None:
            assert {type(change) for change in row.expected.changes} <= change_types


# ── failover only to a bridge whose limits the message keeps (engine.admission) ────


def skipping(bridge: str) -> lifecycle.Context:
    """A context whose limits check refuses `bridge` (as bsg refuses a flash message)."""
    return msgspec.structs.replace(
        context("duplicate-window"), takes=lambda message, other, now: other != bridge
    )


def test_failover_skips_a_bridge_whose_limits_the_message_breaks() -> None:
    message = inflight(bridges=("smsclub", "dsc", "bsg"), flash=True)
    step = lifecycle.on_reply(message, BAD_TOKEN, skipping("dsc"))
    assert step.state is lifecycle.State.ACCEPTED
    (event,) = [event for _, event in step.events if isinstance(event, FailoverEvent)]
    assert (event.from_bridge, event.bridge) == ("smsclub", "bsg")
    (change, _appended) = step.changes
    assert isinstance(change, MarkRetry)
    assert change.bridge_index == 2


def test_no_failover_when_no_later_bridge_takes_the_message() -> None:
    message = inflight(flash=True)
    assert lifecycle.can_failover(message, context("duplicate-window"))
    assert not lifecycle.can_failover(message, skipping("bsg"))
    step = lifecycle.on_reply(message, BAD_TOKEN, skipping("bsg"))
    assert not [event for _, event in step.events if isinstance(event, FailoverEvent)]
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.on_circuit_open(accepted(flash=True), skipping("bsg"))


def test_event_times_are_each_the_instant_they_were_asked_for() -> None:
    """utc_from_timestamp keeps its last answer (a request's steps share one clock reading):
    a different instant is converted again, and going back gives the earlier one."""
    first, second = utc_from_timestamp(NOW), utc_from_timestamp(NOW + 1.5)
    assert (second - first).total_seconds() == 1.5
    assert [utc_from_timestamp(t).timestamp() for t in (NOW, NOW, NOW + 1.5, NOW)] == [
        NOW,
        NOW,
        NOW + 1.5,
        NOW,
    ]


def test_a_resend_is_too_late_only_past_a_windowed_providers_duplicate_window() -> None:
    latest = NOW - 30 + POLICY.duplicate_window_s - POLICY.duplicate_window_margin_s
    waiting = scheduled(attempt=1, maybe_sent_at=NOW - 30)
    assert not lifecycle.resend_too_late(waiting, context("duplicate-window", now=latest))
    assert lifecycle.resend_too_late(waiting, context("duplicate-window", now=latest + 0.1))
    # A provider that deduplicates by reference (or not at all) has no window to pass;
    # a message that never may have reached the provider has nothing to resend.
    assert not lifecycle.resend_too_late(waiting, context("reference", now=NOW + 3600))
    assert not lifecycle.resend_too_late(scheduled(), context("duplicate-window", now=NOW + 3600))
