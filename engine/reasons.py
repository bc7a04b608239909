"""Why a message moved as it did: the lifecycle's reasons, as typed values. Pure: no I/O.

engine.lifecycle decides every state change and gives each one of these reasons; code
matches on them (never on words), and `describe` renders the sentence a person reads in
events and logs, at the edge.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from bridges.base import AccountFault


class ProviderCode(msgspec.Struct, frozen=True, tag="provider"):
    """The provider's own code and words for a refusal or a retryable answer."""

    code: str
    text: str


class AttemptsUsed(msgspec.Struct, frozen=True, tag="attempts_used"):
    attempts: int
    last: ProviderCode | None = None


class TransportFailure(msgspec.Struct, frozen=True, tag="transport"):
    kind: str  # the metrics reason: connect_failed, reply_lost, ...
    text: str
    maybe_sent: bool


class MaybeSentEarlier(msgspec.Struct, frozen=True, tag="maybe_sent_earlier"):
    """This attempt failed plainly, but an earlier one may have reached the provider."""

    last: ProviderCode | TransportFailure | AttemptsUsed | None = None


class NoSafeResend(msgspec.Struct, frozen=True, tag="no_safe_resend"):
    """It may have reached the provider, and resending could send it twice."""

    why: Literal["no_idempotency", "window_passed", "attempts_used", "provider_unsure"]
    detail: str = ""


class NoProviderId(msgspec.Struct, frozen=True, tag="no_provider_id"):
    """The provider took it but gave no id, and cannot be asked by reference."""


class CrashedInFlight(msgspec.Struct, frozen=True, tag="crashed_in_flight"):
    """septet stopped while a request carrying the message was in flight."""


class ValidityEnded(msgspec.Struct, frozen=True, tag="validity_ended"):
    sent: bool  # False: before any attempt reached the provider


class ReportTimeout(msgspec.Struct, frozen=True, tag="report_timeout"):
    seconds: float


class AccountFaultReason(msgspec.Struct, frozen=True, tag="account"):
    fault: AccountFault
    code: str
    text: str


class CircuitOpen(msgspec.Struct, frozen=True, tag="circuit_open"):
    bridge: str


class CancelledByOwner(msgspec.Struct, frozen=True, tag="cancelled"):
    """Its owner cancelled it before any request carried it."""


Reason = (
    ProviderCode
    | AttemptsUsed
    | TransportFailure
    | MaybeSentEarlier
    | NoSafeResend
    | NoProviderId
    | CrashedInFlight
    | ValidityEnded
    | ReportTimeout
    | AccountFaultReason
    | CircuitOpen
    | CancelledByOwner
)


def describe(reason: Reason | None) -> str:
    """The sentence a person reads for `reason` (events, logs)."""
    match reason:
        case None:
            return ""
        case ProviderCode(code=code, text=text):
            return f"{code}: {text}" if code and code not in text else text
        case AttemptsUsed(attempts=attempts, last=last):
            tail = f" (last: {describe(last)})" if last is not None else ""
            return f"gave up after {attempts} attempts{tail}"
        case TransportFailure(text=text, maybe_sent=maybe_sent):
            where = "may have reached the provider" if maybe_sent else "never reached the provider"
            return f"the request {where}: {text}"
        case MaybeSentEarlier(last=last):
            tail = f"; last: {describe(last)}" if last is not None else ""
            return f"outcome unknown: an earlier attempt may have reached the provider{tail}"
        case NoSafeResend(why=why, detail=detail):
            text = {
                "no_idempotency": "the provider offers no way to resend safely",
                "window_passed": "its duplicate window has passed",
                "attempts_used": "the attempts are used up",
                "provider_unsure": "the provider could not say whether it took it",
            }[why]
            tail = f" ({detail})" if detail else ""
            return f"outcome unknown: the request may have reached the provider and {text}{tail}"
        case NoProviderId():
            return "the provider took it but gave no message id, so no report can be matched"
        case CrashedInFlight():
            return "outcome unknown: septet stopped while the request was in flight"
        case ValidityEnded(sent=sent):
            if sent:
                return "no final report before the message's validity ended"
            return "validity ended before sending"
        case ReportTimeout(seconds=seconds):
            return f"no final report within {seconds:g} s"
        case AccountFaultReason(fault=fault, code=code, text=text):
            what = {"credentials": "credentials", "blocked": "account", "credit": "credit"}[fault]
            return f"the provider refused the account's {what} ({code}: {text})"
        case CircuitOpen(bridge=bridge):
            return f"{bridge}'s circuit breaker is open"
        case CancelledByOwner():
            return "cancelled by its owner"
