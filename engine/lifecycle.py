"""The message lifecycle: one table of states and of the inputs that move them. Pure: no I/O.

Every state change of a message — in dispatch, in delivery reports, in crash recovery and
in the report-deadline sweep — is an input fed to `advance`, which returns a `Step`: the
journal changes to commit, the events to announce once they are committed, the metric
counts, and the new state. Dispatch, dlr and recovery only carry steps out (a request
the provider took whole is one `Taken` for all its messages, `on_taken`: the same rows,
checked once per request). h11's `_state.py` is the model: the table below is the whole
of the rules, and `TRANSITIONS` is that table in code, checked by every step and by a
golden test per row.

    state         input                               next            event
    ────────────  ──────────────────────────────────  ──────────────  ─────────────────
    accepted      claim                               inflight        —
    scheduled     claim                               inflight        —
    accepted      expiry (validity ended unsent)      expired         failed (EXPIRED)
    scheduled     expiry                              expired         failed (EXPIRED)
    accepted      cancel                              cancelled       cancelled
    scheduled     cancel                              cancelled       cancelled
    accepted      failover (circuit open, unsent)     accepted        failover
    scheduled     resend too late (maybe sent, the    unconfirmed     status (UNKNOWN)
                  duplicate window passed while it
                  waited to go)
    inflight      reply Submitted, report wanted      submitted       submitted
    inflight      reply Submitted, no report wanted   sent            submitted
    inflight      reply Submitted, no id, no way to   unknown         submitted, dlr
                  ask (not by reference)                              (UNKNOWN)
    inflight      reply Rejected                      rejected        failed (REJECTD)
    inflight      reply RetryLater/Throttled          scheduled       retry
                  (attempts left)
    inflight      reply RetryLater/Throttled          accepted        failover
                  (attempts used, failover left)      (next bridge)
    inflight      reply RetryLater/Throttled          rejected        failed (REJECTD)
                  (attempts used, no failover)
    inflight      reply AccountRefused                accepted/       failover / retry
                                                      scheduled
    inflight      reply Unknown                       unconfirmed     status (UNKNOWN)
    inflight      transport, not sent                 as RetryLater
    inflight      transport, maybe sent, provider     scheduled       retry
                  deduplicates the resend
    inflight      transport, maybe sent, no safe      unconfirmed     status (UNKNOWN)
                  resend
    inflight      crash recovery                      scheduled /     retry / status
                                                      unconfirmed     (as a maybe-sent
                                                                      transport failure)
    *             any plain failure after an earlier  unconfirmed     status (UNKNOWN)
                  attempt may have reached the
                  provider (maybe_sent)
    submitted     report final                        delivered, ...  dlr
    unconfirmed   report final                        delivered, ...  dlr
    scheduled     report final (a maybe-sent earlier  delivered, ...  dlr
                  attempt reported by reference)
    submitted     report not final                    submitted       status
    unconfirmed   report not final                    submitted       status (the
                                                                      provider has it)
    submitted     report deadline passed              unknown         dlr (UNKNOWN)
    unconfirmed   report deadline passed              unknown         dlr (UNKNOWN)
    final         anything                            (unchanged)     — (final is final)

Rules beside the table:
- Only a final state makes a `dlr` event (or a final `failed` one): a non-final provider
  status is a `status` event with `final: false`, never a receipt.
- "Outcome unknown" is `unconfirmed`, not final, while the provider may still tell: its
  report (by provider id, by the reference septet sent, or by recipient for a message
  whose id was never learned) resolves it. Only the report deadline — the validity end,
  or `report_timeout_s` after the last attempt — makes it final as UNKNOWN.
- A message that may sit at one provider never moves to another bridge: failover is only
  for messages no attempt of which may have reached the current provider.
- An account refusal is the bridge's fault: never a final state for the message.
- A provider's charge is kept where it states it: at submit (`Submitted.cost`), or with the
  final report (`Receipt.cost`, Route Mobile), journaled just before the final state.

Reasons are typed values (engine.reasons), rendered into sentences at the edge by
`describe`.

This file is past the usual 600 lines on purpose: the table and the steps that carry out
each of its rows belong together, so that a reader checks a row against its code in one
place (h11 keeps its state machine in one file for the same reason).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Final, Literal

import msgspec

from bridges.base import (
    AccountFault,
    AccountRefused,
    Idempotency,
    Outcome,
    Receipt,
    Rejected,
    RejectionCause,
    RetryLater,
    Submitted,
    Throttled,
    Unknown,
)
from engine.feed import DEFAULT_ACCOUNT, AppendEvents, account_of
from engine.journal import (
    Change,
    MarkCharged,
    MarkConfirmed,
    MarkFinal,
    MarkRetry,
    MarkSubmitted,
    MarkUnconfirmed,
)
from engine.kannel_dlr import KannelTarget
from engine.models import (
    OUTCOME_CANCELLED as OUTCOME_CANCELLED,
)
from engine.models import (
    OUTCOME_SENT as OUTCOME_SENT,
)
from engine.models import (
    SMPP_STATE as SMPP_STATE,
)
from engine.models import (
    STATE_OF_SMPP as STATE_OF_SMPP,
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
from engine.models import (
    State as State,
)
from engine.reasons import (
    AccountFaultReason as AccountFaultReason,
)
from engine.reasons import (
    AttemptsUsed as AttemptsUsed,
)
from engine.reasons import (
    CancelledByOwner as CancelledByOwner,
)
from engine.reasons import (
    CircuitOpen as CircuitOpen,
)
from engine.reasons import (
    CrashedInFlight as CrashedInFlight,
)
from engine.reasons import (
    MaybeSentEarlier as MaybeSentEarlier,
)
from engine.reasons import (
    NoProviderId as NoProviderId,
)
from engine.reasons import (
    NoSafeResend as NoSafeResend,
)
from engine.reasons import (
    ProviderCode as ProviderCode,
)
from engine.reasons import (
    Reason as Reason,
)
from engine.reasons import (
    ReportTimeout as ReportTimeout,
)
from engine.reasons import (
    TransportFailure as TransportFailure,
)
from engine.reasons import (
    ValidityEnded as ValidityEnded,
)
from engine.reasons import (
    describe as describe,
)
from engine.retry import Decision, Failover, GiveUp, RetryAt, RetryPolicy

# ── States ────────────────────────────────────────────────────────────────────────


FINAL: Final = frozenset(
    {
        State.SENT,
        State.DELIVERED,
        State.UNDELIVERABLE,
        State.EXPIRED,
        State.REJECTED,
        State.DELETED,
        State.UNKNOWN,
        State.CANCELLED,
    }
)
WAITING: Final = frozenset({State.ACCEPTED, State.SCHEDULED})
# The provider took it: submitted, or sent (final) when no report was asked for.
TAKEN: Final = frozenset({State.SUBMITTED, State.SENT})


# How long a submitted message waits for its final report before it ends as UNKNOWN,
# unless its validity ends sooner (config `dlr.report_timeout_s`): BSG's default validity.
DEFAULT_REPORT_TIMEOUT_S: Final = 72 * 3600.0

InputKind = Literal[
    "claim",
    "submitted",
    "rejected",
    "retry_later",
    "account_refused",
    "unknown_reply",
    "transport",
    "recovery",
    "report_final",
    "report_pending",
    "report_deadline",
    "expiry",
    "cancel",
    "circuit_open",
    "window_passed",
]

# (state, input) -> the states that input may lead to. Every step is checked against it.
_ANY_FAILURE: Final = frozenset(
    {State.SCHEDULED, State.ACCEPTED, State.REJECTED, State.UNCONFIRMED, State.UNKNOWN}
)
_REPORTED: Final = frozenset(
    {
        State.DELIVERED,
        State.UNDELIVERABLE,
        State.EXPIRED,
        State.REJECTED,
        State.DELETED,
        State.UNKNOWN,
    }
)
TRANSITIONS: Final[dict[tuple[State, InputKind], frozenset[State]]] = {
    **{(waiting, "claim"): frozenset({State.INFLIGHT}) for waiting in WAITING},
    **{
        (waiting, "expiry"): frozenset({State.EXPIRED, State.UNCONFIRMED, State.UNKNOWN})
        for waiting in WAITING
    },
    **{(waiting, "cancel"): frozenset({State.CANCELLED}) for waiting in WAITING},
    **{(waiting, "circuit_open"): frozenset({State.ACCEPTED}) for waiting in WAITING},
    **{
        (waiting, "window_passed"): frozenset({State.UNCONFIRMED, State.UNKNOWN})
        for waiting in WAITING
    },
    (State.INFLIGHT, "submitted"): frozenset({State.SUBMITTED, State.SENT, State.UNKNOWN}),
    (State.INFLIGHT, "rejected"): frozenset({State.REJECTED, State.UNCONFIRMED, State.UNKNOWN}),
    (State.INFLIGHT, "retry_later"): _ANY_FAILURE,
    (State.INFLIGHT, "account_refused"): frozenset(
        {State.SCHEDULED, State.ACCEPTED, State.UNCONFIRMED, State.UNKNOWN}
    ),
    (State.INFLIGHT, "unknown_reply"): frozenset({State.UNCONFIRMED, State.UNKNOWN}),
    (State.INFLIGHT, "transport"): _ANY_FAILURE,
    (State.INFLIGHT, "recovery"): frozenset({State.SCHEDULED, State.UNCONFIRMED, State.UNKNOWN}),
    **{
        (state, "report_final"): _REPORTED
        for state in (State.SUBMITTED, State.UNCONFIRMED, State.SCHEDULED, State.ACCEPTED)
    },
    (State.SUBMITTED, "report_pending"): frozenset({State.SUBMITTED}),
    (State.UNCONFIRMED, "report_pending"): frozenset({State.SUBMITTED}),
    (State.SCHEDULED, "report_pending"): frozenset({State.SCHEDULED}),
    (State.ACCEPTED, "report_pending"): frozenset({State.ACCEPTED}),
    (State.SUBMITTED, "report_deadline"): frozenset({State.UNKNOWN}),
    (State.UNCONFIRMED, "report_deadline"): frozenset({State.UNKNOWN}),
}


class IllegalTransition(Exception):  # noqa: N818 - names what happened, like h11's errors
    """An input that the table does not allow in the message's state: a bug in the caller."""


# ── Steps ──────────────────────────────────────────────────────────────────────────

CircuitVerdict = Literal["success", "failure", "release", "account"]


class Count(msgspec.Struct, frozen=True):
    """One metrics count: `outcome` (submitted, retry, failover, failed, ...) and its reason."""

    outcome: str
    reason: str | None = None


# One for every message sent (frozen: shared by every step that counts a submit).
SUBMITTED_COUNT: Final = Count("submitted")


class Charge(msgspec.Struct, frozen=True, gc=False):
    """What the provider said it charged for one message, every part of it: the price in
    its submit reply (dsc, BSG) or in its report (Route Mobile). (gc=False: a float and a
    str hold no cycle, and one is made per message sent.)"""

    amount: float
    currency: str


class Step(msgspec.Struct, kw_only=True):
    """What one input did to one message: carry out `changes`, then (after the commit)
    announce `events` and count `counts` (and `charge`, septet_cost_total{source="provider"})."""

    state: State
    changes: list[Change] = msgspec.field(default_factory=list)
    events: list[tuple[str, Event]] = msgspec.field(default_factory=list)
    counts: list[Count] = msgspec.field(default_factory=list)
    circuit: CircuitVerdict | None = None
    reason: Reason | None = None
    # A final report: its SMPP state, and whether it ends the message now.
    report_state: str | None = None
    charge: Charge | None = None


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a bridge knows that the rules need. `now` is the caller's clock (Unix seconds);
    `price(message, bridge)` gives a message's (cost, currency) on another bridge."""

    bridge: str
    now: float
    idempotency: Idempotency
    policy: RetryPolicy
    failover_policy: RetryPolicy
    jitter: Callable[[], float]
    price: Callable[[Message, str], tuple[float, str]]
    report_timeout_s: float
    # A provider that can be asked about a message it may hold (BSG by reference).
    can_ask_by_reference: bool = False
    # `takes(message, bridge, now)`: whether another bridge's limits take the message as
    # it would be sent there (engine.admission.takes_message). A failover skips a bridge
    # that would refuse it (or quietly alter it: flash sent plain, validity cut).
    takes: Callable[[Message, str, float], bool] = lambda message, bridge, now: True


def state_of(message: Message, now: float) -> State:
    """A journaled message's lifecycle state (`Message.state` holds the journal's phase)."""
    match message.state:
        case "accepted":
            return State.SCHEDULED if message.due_at > now else State.ACCEPTED
        case "inflight":
            return State.INFLIGHT
        case "submitted":
            # Without a provider id, and sent in a way that may or may not have reached
            # it (a lost reply, a resend answered "already have it"): its word is awaited.
            if message.provider_id is None and message.maybe_sent:
                return State.UNCONFIRMED
            return State.SUBMITTED
        case _:
            return State.UNKNOWN


def _check(message: Message, before: State, kind: InputKind, step: Step) -> Step:
    """Every step leaves through here: checked against the table, and its events put beside
    its changes for the durable feed (engine.feed), so they commit in one transaction."""
    allowed = TRANSITIONS.get((before, kind))
    if allowed is None or step.state not in allowed:
        raise IllegalTransition(f"{kind} may not move a message from {before} to {step.state}")
    events = step.events
    if events:
        step.changes.append(
            # One event, as most steps have, without a comprehension's frame.
            _feed_append(
                message,
                [events[0][1]] if len(events) == 1 else [event for _, event in events],
            )
        )
    return step


def _feed_append(message: Message, events: list[Event]) -> AppendEvents:
    """The feed's change for a step's events (engine.feed), committed with its changes."""
    return AppendEvents(
        account=account_of(message),
        msg_id=message.msg_id,
        callback_url=message.callback_url,
        events=events,
        kannel=None if message.dlr_url is None else kannel_target(message),
    )


def kannel_target(message: Message) -> KannelTarget | None:
    """What a message sent with Kannel's dlr-url needs for its reports' GETs."""
    if message.dlr_url is None:
        return None
    return KannelTarget(
        url=message.dlr_url,
        mask=message.dlr_mask,
        to=message.to,
        sender=message.sender or "",
        text=message.text,
        account=account_of(message),
        provider_id=message.provider_id or "",
    )


def report_deadline(message: Message, at: float, timeout_s: float) -> float:
    """When a message sent at `at` ends as UNKNOWN if no final report has come."""
    deadline = at + timeout_s
    if message.expires_at is not None:
        # A report may trail the validity end a little (the provider's own expiry report).
        deadline = min(deadline, max(message.expires_at, at) + 60.0)
    return deadline


# ── Replies to a send ──────────────────────────────────────────────────────────────


def next_bridge_index(message: Message, ctx: Context) -> int | None:
    """The index of the next bridge of the route that takes the message (`ctx.takes`),
    or None: none is left, or an attempt may have reached this provider."""
    if message.maybe_sent:
        return None
    for index in range(message.bridge_index + 1, len(message.bridges)):
        if ctx.takes(message, message.bridges[index], ctx.now):
            return index
    return None


def can_failover(message: Message, ctx: Context) -> bool:
    """A next bridge that takes the message is there, and no attempt may have reached
    this provider."""
    return next_bridge_index(message, ctx) is not None


def on_reply(message: Message, outcome: Outcome, ctx: Context) -> Step:
    """The provider answered a request carrying `message` (inflight)."""
    if isinstance(outcome, Submitted):
        return _check(
            message, state_of(message, ctx.now), "submitted", _submitted(message, outcome, ctx)
        )
    if isinstance(outcome, Unknown):
        step = _unconfirmed(
            message,
            NoSafeResend("provider_unsure", describe(ProviderCode(outcome.code, outcome.reason))),
            ctx,
            code=outcome.code,
        )
        step.counts.append(Count("failed", "unknown"))
        return _check(message, state_of(message, ctx.now), "unknown_reply", step)
    if isinstance(outcome, AccountRefused):
        reason: Reason = AccountFaultReason(outcome.fault, outcome.code, outcome.reason)
        decision = _policy(message, ctx).decide(
            outcome,
            message.attempt + 1,
            ctx.now,
            ctx.jitter,
            ctx.idempotency,
            can_failover(message, ctx),
        )
        fault = ACCOUNT_FAULT_REASONS[outcome.fault]
        step = _after_decision(message, decision, reason, ctx, kind=fault, maybe_sent=False)
        step.circuit = "account"
        return _check(message, state_of(message, ctx.now), "account_refused", step)
    kind: InputKind = "rejected" if isinstance(outcome, Rejected) else "retry_later"
    metric = _metric_reason(outcome)
    decision = _policy(message, ctx).decide(
        outcome,
        message.attempt + 1,
        ctx.now,
        ctx.jitter,
        ctx.idempotency,
        can_failover(message, ctx),
    )
    step = _after_decision(
        message,
        decision,
        ProviderCode(outcome.code, outcome.reason),
        ctx,
        kind=metric,
        maybe_sent=False,
        code=outcome.code,
    )
    if isinstance(outcome, Rejected):
        step.circuit = "success"
    elif isinstance(outcome, RetryLater):
        step.circuit = "failure"
    else:
        step.circuit = "release"
    return _check(message, state_of(message, ctx.now), kind, step)


def on_transport_failure(
    message: Message, failure: TransportFailure, ctx: Context, *, first_attempt_at: float
) -> Step:
    """The request carrying `message` got no reply to parse. `first_attempt_at` is when the
    earliest attempt that may have reached the provider was made (this one if none)."""
    step = _transport_step(message, failure, ctx, first_attempt_at=first_attempt_at)
    return _check(message, state_of(message, ctx.now), "transport", step)


def _transport_step(
    message: Message, failure: TransportFailure, ctx: Context, *, first_attempt_at: float
) -> Step:
    decision = _policy(message, ctx).decide_transport(
        maybe_sent=failure.maybe_sent,
        attempt=message.attempt + 1,
        now=ctx.now,
        jitter=ctx.jitter,
        idempotency=ctx.idempotency,
        can_failover=can_failover(message, ctx) and not failure.maybe_sent,
        first_attempt_at=first_attempt_at,
    )
    step = _after_decision(
        message, decision, failure, ctx, kind=failure.kind, maybe_sent=failure.maybe_sent
    )
    step.circuit = "failure"
    return step


def on_recovery(message: Message, ctx: Context) -> Step:
    """A message a stopped daemon left in flight: as a transport failure that may have
    reached the provider, decided by the same rules (resend only where it deduplicates)."""
    first = message.maybe_sent_at or message.inflight_at or message.due_at
    failure = TransportFailure(kind="crash", text=describe(CrashedInFlight()), maybe_sent=True)
    step = _transport_step(message, failure, ctx, first_attempt_at=first)
    step.circuit = None
    return _check(message, state_of(message, ctx.now), "recovery", step)


def _policy(message: Message, ctx: Context) -> RetryPolicy:
    return ctx.failover_policy if can_failover(message, ctx) else ctx.policy


# The metrics reason (engine.metrics.REASONS) of a refusal, by what it blamed: a bad
# number apart from a sender, a content or an account the provider would not take.
REJECTION_REASONS: dict[RejectionCause, str] = {
    "number": "invalid_number",
    "sender": "sender_refused",
    "content": "content_refused",
    "other": "rejected",
}
ACCOUNT_FAULT_REASONS: dict[AccountFault, str] = {
    "credentials": "account_credentials",
    "blocked": "account_blocked",
    "credit": "account_credit",
}


def _metric_reason(outcome: Outcome) -> str:
    if isinstance(outcome, Throttled):
        return "throttled"
    if isinstance(outcome, RetryLater):
        return "retry_later"
    if isinstance(outcome, Rejected):
        return REJECTION_REASONS[outcome.cause]
    return "rejected"


def _submitted(message: Message, outcome: Submitted, ctx: Context) -> Step:
    no_way_to_ask = message.dlr and outcome.provider_id is None and not ctx.can_ask_by_reference
    step = Step(
        state=State.SUBMITTED if message.dlr else State.SENT,
        changes=[_submit_change(message, outcome, ctx)],
        events=[
            (message.origin, _submitted_event(message, outcome, ctx, utc_from_timestamp(ctx.now)))
        ],
        counts=[SUBMITTED_COUNT],
        circuit="success",
        charge=_charge(outcome.cost, outcome.currency),
    )
    if no_way_to_ask:
        # SMS Club's 453 on a resend: it took the message but no report can ever be
        # matched to it. Say so now rather than wait out the deadline.
        step.state = State.UNKNOWN
        step.reason = NoProviderId()
        step.changes.append(_final_change(message, State.UNKNOWN, None, NoProviderId(), ctx.now))
        step.events.append(
            _report(message, "UNKNOWN", describe(NoProviderId()), ctx.bridge, ctx.now)
        )
    return step


def _submit_change(message: Message, outcome: Submitted, ctx: Context) -> MarkSubmitted:
    """The journal's change for a message the provider took: final at once when it asked
    for no report, else awaiting one until its deadline."""
    final = not message.dlr
    return MarkSubmitted(
        msg_id=message.msg_id,
        provider_id=outcome.provider_id,
        cost=outcome.cost,
        currency=outcome.currency,
        at=ctx.now,
        final=final,
        report_by=0.0 if final else report_deadline(message, ctx.now, ctx.report_timeout_s),
    )


def _submitted_event(
    message: Message, outcome: Submitted, ctx: Context, ts: dt.datetime
) -> SubmittedEvent:
    # The accept-time estimate is for the route's first bridge; after a failover, this one's.
    if message.bridge_index:
        cost, currency = ctx.price(message, ctx.bridge)
    else:
        cost, currency = message.cost, message.currency
    provider_cost = outcome.cost
    return SubmittedEvent(
        id=message.client_ref,
        msg_id=message.msg_id,
        ts=ts,
        provider_id=outcome.provider_id,
        bridge=ctx.bridge,
        cost=cost,
        currency=currency,
        provider_cost=provider_cost,
        provider_currency=outcome.currency if provider_cost is not None else None,
    )


class Taken(msgspec.Struct, kw_only=True):
    """What a request's replies did when the provider took every message of it: on_reply's
    "reply Submitted" rows for the whole request at once (`on_taken`), without a Step per
    message. Carried out as Steps are: commit `changes`, then announce `events`, count a
    submit per message of `submitted` (each with its provider id) and each of `charges`;
    the request's circuit verdict is "success"."""

    changes: list[Change]
    events: list[tuple[str, Event]]
    submitted: list[tuple[Message, str | None]]
    charges: list[Charge]


def on_taken(
    messages: Sequence[Message], outcomes: Sequence[Outcome], ctx: Context
) -> Taken | None:
    """`on_reply` for every message of a request the provider took, the common case, at
    once. None when a message needs a step of its own (`on_reply` then): a reply other
    than Submitted, a message not inflight, or one taken without an id that no report
    could ever be matched to. Its rows are checked against the table once, at import
    (`_check_row` below). What _submitted_event, _submit_change and _feed_append give is
    built inline (the send path's busiest loop): the same structs, the same fields."""
    now, bridge = ctx.now, ctx.bridge
    ts = utc_from_timestamp(now)
    changes: list[Change] = []
    appends: list[Change] = []
    events: list[tuple[str, Event]] = []
    submitted: list[tuple[Message, str | None]] = []
    charges: list[Charge] = []
    for message, outcome in zip(messages, outcomes, strict=True):
        if type(outcome) is not Submitted or message.state != "inflight":
            return None
        provider_id, dlr, msg_id = outcome.provider_id, message.dlr, message.msg_id
        if dlr and provider_id is None and not ctx.can_ask_by_reference:
            return None
        # The accept-time estimate is the route's first bridge's; after a failover, this one's.
        if message.bridge_index:
            cost, currency = ctx.price(message, bridge)
        else:
            cost, currency = message.cost, message.currency
        paid, paid_in = outcome.cost, outcome.currency
        event = SubmittedEvent(
            id=message.client_ref,
            msg_id=msg_id,
            ts=ts,
            provider_id=provider_id,
            bridge=bridge,
            cost=cost,
            currency=currency,
            provider_cost=paid,
            provider_currency=paid_in if paid is not None else None,
        )
        report_by = report_deadline(message, now, ctx.report_timeout_s) if dlr else 0.0
        changes.append(MarkSubmitted(msg_id, provider_id, paid, paid_in, now, not dlr, report_by))
        kannel = None if message.dlr_url is None else kannel_target(message)
        account = message.account or DEFAULT_ACCOUNT  # account_of, inline
        appends.append(AppendEvents(account, msg_id, message.callback_url, [event], kannel))
        events.append((message.origin, event))
        submitted.append((message, provider_id))
        if paid is not None and paid_in is not None:
            charges.append(Charge(paid, paid_in))
    # The feed's events after the state changes (one run of each kind for the journal).
    changes += appends
    return Taken(changes=changes, events=events, submitted=submitted, charges=charges)


def _check_row(before: State, kind: InputKind, states: frozenset[State]) -> None:
    """`_check` for steps that all leave `before` on `kind` for one of `states`."""
    allowed = TRANSITIONS.get((before, kind))
    if allowed is None or not states <= allowed:
        raise IllegalTransition(f"{kind} may not move a message from {before} to {states}")


# on_taken's steps, checked once: TRANSITIONS is a constant.
_check_row(State.INFLIGHT, "submitted", TAKEN)


def _after_decision(
    message: Message,
    decision: Decision,
    reason: Reason,
    ctx: Context,
    *,
    kind: str,
    maybe_sent: bool,
    code: str | None = None,
) -> Step:
    """Carry out the retry policy's decision on a failed attempt."""
    attempt = message.attempt + 1
    # The window of a provider that deduplicates runs from when the attempt went out (the
    # claim, just before the request), not from when its failure was noticed.
    sent_at = message.inflight_at or ctx.now
    maybe_sent_at = message.maybe_sent_at or (sent_at if maybe_sent else 0.0)
    if isinstance(decision, RetryAt) and maybe_sent_at and ctx.idempotency == "duplicate-window":
        # Whatever made this attempt fail, an earlier one may sit at the provider: the
        # resend is safe only inside its duplicate window (engine.retry).
        latest = resend_by(maybe_sent_at, ctx.policy)
        if latest < ctx.now:
            decision = GiveUp(decision.reason, why="window_passed", maybe_sent=True)
        elif decision.at > latest:
            decision = RetryAt(latest, decision.reason)
    if isinstance(decision, RetryAt):
        return _retry(message, decision, reason, ctx, kind, maybe_sent_at)
    if isinstance(decision, Failover):
        return _failover(message, reason, ctx, kind)
    assert isinstance(decision, GiveUp)  # Done never follows a failed attempt
    if maybe_sent or message.maybe_sent:
        # It may sit at the provider: its report may still come. Not final yet.
        if decision.outcome_unknown:
            why: Reason = NoSafeResend(_no_safe_resend_why(decision))
        else:
            last = reason if isinstance(reason, ProviderCode | TransportFailure) else None
            why = MaybeSentEarlier(last)
        step = _unconfirmed(
            message, why, ctx, code=code or decision.code, maybe_sent_at=maybe_sent_at
        )
        step.counts.append(Count("failed", kind))
        return step
    if decision.why == "attempts_used" and isinstance(reason, ProviderCode):
        reason = AttemptsUsed(attempt, reason)
    elif isinstance(reason, TransportFailure):
        reason = AttemptsUsed(attempt, None)
    return _fail(message, State.REJECTED, reason, ctx, code=code or decision.code, kind=kind)


def _retry(
    message: Message,
    decision: RetryAt,
    reason: Reason,
    ctx: Context,
    kind: str,
    maybe_sent_at: float,
) -> Step:
    attempt = message.attempt + 1
    return Step(
        state=State.SCHEDULED,
        reason=reason,
        changes=[
            MarkRetry(
                msg_ids=[message.msg_id],
                due_at=decision.at,
                attempt=attempt,
                bridge_index=message.bridge_index,
                reason=describe(reason),
                maybe_sent_at=maybe_sent_at,
            )
        ],
        events=[
            (
                message.origin,
                RetryEvent(
                    id=message.client_ref,
                    msg_id=message.msg_id,
                    ts=utc_from_timestamp(ctx.now),
                    at=utc_from_timestamp(decision.at),
                    attempt=attempt + 1,
                    reason=describe(reason),
                    bridge=ctx.bridge,
                ),
            )
        ],
        counts=[Count("retry", kind)],
    )


def _no_safe_resend_why(
    decision: GiveUp,
) -> Literal["no_idempotency", "window_passed", "attempts_used", "provider_unsure"]:
    match decision.why:
        case "no_idempotency" | "window_passed" | "attempts_used":
            return decision.why
        case _:
            return "provider_unsure"


def _failover(message: Message, reason: Reason, ctx: Context, kind: str) -> Step:
    index = next_bridge_index(message, ctx)
    if index is None:  # every caller checked can_failover first
        raise IllegalTransition(f"message {message.msg_id} has no bridge to fail over to")
    bridge = message.bridges[index]
    cost, currency = ctx.price(message, bridge)
    return Step(
        state=State.ACCEPTED,
        reason=reason,
        changes=[
            MarkRetry(
                msg_ids=[message.msg_id],
                due_at=ctx.now,
                attempt=0,
                bridge_index=index,
                reason=describe(reason),
            )
        ],
        events=[
            (
                message.origin,
                FailoverEvent(
                    id=message.client_ref,
                    msg_id=message.msg_id,
                    ts=utc_from_timestamp(ctx.now),
                    from_bridge=ctx.bridge,
                    bridge=bridge,
                    reason=describe(reason),
                    cost=cost,
                    currency=currency,
                ),
            )
        ],
        counts=[Count("failover", kind)],
    )


def _unconfirmed(
    message: Message,
    reason: Reason,
    ctx: Context,
    *,
    code: str | None,
    maybe_sent_at: float | None = None,
) -> Step:
    """It may sit at the provider: wait for its report until the deadline. A message that
    asked for no report can never learn more: it ends UNKNOWN at once."""
    at = maybe_sent_at or message.maybe_sent_at or ctx.now
    if not message.dlr:
        return _final_unknown(message, reason, ctx, code=code)
    return Step(
        state=State.UNCONFIRMED,
        reason=reason,
        changes=[
            MarkUnconfirmed(
                msg_id=message.msg_id,
                at=ctx.now,
                maybe_sent_at=at,
                report_by=report_deadline(message, ctx.now, ctx.report_timeout_s),
                error=describe(reason),
            )
        ],
        events=[_report(message, "UNKNOWN", describe(reason), ctx.bridge, ctx.now, final=False)],
    )


def _final_unknown(message: Message, reason: Reason, ctx: Context, *, code: str | None) -> Step:
    """A message that asked for no report, whose fate is unknown: no report will ever
    tell, so it ends now, as a final `failed` event with state UNKNOWN (not a `dlr`:
    no report was asked for, none came)."""
    step = _fail(message, State.UNKNOWN, reason, ctx, code=code, kind="unknown")
    step.counts = []  # counted by the caller, under its own reason
    return step


def _fail(
    message: Message, state: State, reason: Reason, ctx: Context, *, code: str | None, kind: str
) -> Step:
    """Final before the provider took it: a `failed` event carrying the SMPP state."""
    return Step(
        state=state,
        reason=reason,
        changes=[_final_change(message, state, code, reason, ctx.now)],
        events=[
            (
                message.origin,
                Failed(
                    id=message.client_ref,
                    msg_id=message.msg_id,
                    ts=utc_from_timestamp(ctx.now),
                    error=f"{ctx.bridge}: {describe(reason)}",
                    code=code,
                    bridge=ctx.bridge,
                    state=SMPP_STATE[state],
                ),
            )
        ],
        counts=[Count("failed", kind)],
    )


def _final_change(
    message: Message, state: State, code: str | None, reason: Reason | None, now: float
) -> MarkFinal:
    outcome = SMPP_STATE.get(state) or (
        OUTCOME_CANCELLED if state is State.CANCELLED else OUTCOME_SENT
    )
    return MarkFinal(
        msg_id=message.msg_id,
        outcome=outcome,
        code=code,
        error=describe(reason) if reason is not None else None,
        at=now,
    )


def _report(
    message: Message,
    state: str,
    provider_status: str,
    bridge: str,
    now: float,
    *,
    final: bool = True,
) -> tuple[str, Event]:
    """The `dlr` event of a final state, or the `status` event of one that is not."""
    kind = DeliveryReport if final else StatusEvent
    return message.origin, kind(
        id=message.client_ref,
        msg_id=message.msg_id,
        ts=utc_from_timestamp(now),
        state=state,
        provider_status=provider_status,
        bridge=bridge,
    )


# ── Before a request ───────────────────────────────────────────────────────────────


def on_expiry(message: Message, ctx: Context) -> Step:
    """Its validity ended while it waited to be sent."""
    before = state_of(message, ctx.now)
    if message.maybe_sent:
        # An earlier attempt may have reached the provider: its report decides.
        step = _unconfirmed(message, ValidityEnded(sent=True), ctx, code="validity")
    else:
        step = _fail(
            message, State.EXPIRED, ValidityEnded(sent=False), ctx, code="validity", kind="expired"
        )
    return _check(message, before, "expiry", step)


def resend_by(maybe_sent_at: float, policy: RetryPolicy) -> float:
    """The last moment a resend may go to a provider that deduplicates within a window
    counted from the earliest attempt that may have reached it (engine.retry)."""
    return maybe_sent_at + policy.duplicate_window_s - policy.duplicate_window_margin_s


def resend_too_late(message: Message, ctx: Context) -> bool:
    """A resend waiting to go (a maybe-sent message back in the queue) whose provider's
    duplicate window passed meanwhile: sent now, the provider would take it as new."""
    return (
        ctx.idempotency == "duplicate-window"
        and message.maybe_sent_at > 0
        and resend_by(message.maybe_sent_at, ctx.policy) < ctx.now
    )


def on_window_passed(message: Message, ctx: Context) -> Step:
    """A resend that waited too long (a backlog, a takeover's resends queued behind it):
    the earlier attempt may sit at the provider and this one would be taken as new, so it
    is not sent; the provider's report, or the deadline, decides."""
    before = state_of(message, ctx.now)
    step = _unconfirmed(message, NoSafeResend(why="window_passed"), ctx, code="window_passed")
    return _check(message, before, "window_passed", step)


def on_circuit_open(message: Message, ctx: Context) -> Step:
    """The bridge's circuit is open and the message has a failover: move it now."""
    if not can_failover(message, ctx):
        raise IllegalTransition(
            f"message {message.msg_id} cannot fail over: no next bridge, or it may sit at"
            f" {ctx.bridge}"
        )
    step = _failover(message, CircuitOpen(ctx.bridge), ctx, "circuit_open")
    return _check(message, state_of(message, ctx.now), "circuit_open", step)


def on_cancel(message: Message, now: float) -> Step | None:
    """Cancel a message no request has carried yet; None where it is too late."""
    before = state_of(message, now)
    if before not in WAITING or message.attempt > 0 or message.maybe_sent:
        return None
    step = Step(
        state=State.CANCELLED,
        reason=CancelledByOwner(),
        changes=[_final_change(message, State.CANCELLED, None, CancelledByOwner(), now)],
        events=[
            (
                message.origin,
                CancelledEvent(
                    id=message.client_ref, msg_id=message.msg_id, ts=utc_from_timestamp(now)
                ),
            )
        ],
        counts=[Count("cancelled")],
    )
    return _check(message, before, "cancel", step)


# ── Reports ────────────────────────────────────────────────────────────────────────


def on_report(
    message: Message, receipt: Receipt, bridge: str, now: float, report_timeout_s: float
) -> Step | None:
    """A provider's report (callback or poll answer) for `message`; None for a message
    that is final already (a repeated report: the first one counted) or still in flight
    (its report is kept as an orphan until the submit is journaled: engine.dlr)."""
    before = state_of(message, now)
    if before in FINAL or before is State.INFLIGHT:
        return None
    if not receipt.final:
        return _check(
            message,
            before,
            "report_pending",
            _pending_report(message, receipt, before, bridge, now, report_timeout_s),
        )
    step = Step(
        state=STATE_OF_SMPP[receipt.state],
        changes=[
            MarkFinal(
                msg_id=message.msg_id,
                outcome=receipt.state,
                code=receipt.error_code,
                error=None,
                at=now,
            )
        ],
        events=[_report(message, receipt.state, receipt.provider_status, bridge, now)],
        report_state=receipt.state,
    )
    if receipt.cost is not None:
        # A provider that states its charge only in the report (Route Mobile): kept with
        # the final state, before it (no change touches a final message).
        step.changes.insert(
            0, MarkCharged(msg_id=message.msg_id, cost=receipt.cost, currency=receipt.currency)
        )
        step.charge = _charge(receipt.cost, receipt.currency)
    return _check(message, before, "report_final", step)


def _charge(cost: float | None, currency: str | None) -> Charge | None:
    """The provider's charge where it stated both the amount and its currency."""
    if cost is None or currency is None:
        return None
    return Charge(cost, currency)


def _pending_report(
    message: Message,
    receipt: Receipt,
    before: State,
    bridge: str,
    now: float,
    report_timeout_s: float,
) -> Step:
    """A non-final status: a `status` event only. An unconfirmed message is submitted
    after all (the provider has it), and a provider id it did not have is learned."""
    step = Step(
        state=before,
        events=[_report(message, receipt.state, receipt.provider_status, bridge, now, final=False)],
    )
    learns_id = message.provider_id is None and receipt.provider_id is not None
    if before is State.UNCONFIRMED or (before is State.SUBMITTED and learns_id):
        step.state = State.SUBMITTED
        step.changes.append(
            MarkConfirmed(
                msg_id=message.msg_id,
                provider_id=receipt.provider_id,
                report_by=report_deadline(message, now, report_timeout_s),
            )
        )
    return step


def on_report_deadline(message: Message, now: float, report_timeout_s: float) -> Step | None:
    """No final report came in time: the message ends UNKNOWN, with its `dlr` event."""
    before = state_of(message, now)
    if before not in (State.SUBMITTED, State.UNCONFIRMED):
        return None
    validity_over = message.expires_at is not None and message.expires_at <= now
    reason: Reason = ValidityEnded(sent=True) if validity_over else ReportTimeout(report_timeout_s)
    step = Step(
        state=State.UNKNOWN,
        reason=reason,
        changes=[_final_change(message, State.UNKNOWN, "no_report", reason, now)],
        events=[_report(message, "UNKNOWN", describe(reason), message.bridge, now)],
        counts=[Count("report_timeout")],
        report_state="UNKNOWN",
    )
    return _check(message, before, "report_deadline", step)


def request_verdict(steps: Sequence[Step]) -> CircuitVerdict | None:
    """One verdict for a request from its messages' steps (engine.circuit): an account
    refusal opens the circuit at once; any sensible answer is a success; a retryable
    failure a failure; throttles alone neither."""
    if len(steps) == 1:
        return steps[0].circuit  # a request of one message: its own verdict
    verdicts = {step.circuit for step in steps}
    order: tuple[CircuitVerdict, ...] = ("account", "success", "failure", "release")
    for verdict in order:
        if verdict in verdicts:
            return verdict
    return None
