"""Check a bridge's credentials at start-up with the provider's cheapest authenticated call.

Where a driver has one (BSG's and SMS Club's balance: docs/providers.md "bsg" Balance,
"smsclub" Balance), `check_credentials` makes that call once and maps what came back
into a `CredentialCheck`; dsc and Route Mobile have none, so theirs are "not checkable"
and a wrong credential shows only on the first send. The parsing stays in the driver
(`parse_balance` gives a balance or an `AccountRefused`); this module does the call and
the mapping, and `describe` renders the one line the daemon logs.

    driver.build_balance ──HttpCall──▶ client.request ──HttpReply──▶ driver.parse_balance
                                            │                              │
                                     TransportError            balance │ AccountRefused │
                                            ▼                  UnparseableReply
                                  ProviderUnreachable    CredentialsAccepted │ CredentialsRefused
                                                                   │ AnswerUnclear

A check never sends a message and never raises for what the provider or the network
did: every answer is one of the `CredentialCheck` values.
"""

from __future__ import annotations

from typing import Protocol, assert_never, runtime_checkable

import msgspec

from bridges.base import (
    AccountFault,
    AccountRefused,
    BridgeDriver,
    HttpCall,
    HttpReply,
    UnparseableReply,
)
from engine.dispatch import Requester
from engine.http_errors import TransportError

# ── What a driver offers ─────────────────────────────────────────────────────────


class ProviderBalance(Protocol):
    """A driver's balance value (bridges.bsg.BsgBalance, bridges.smsclub.SmsClubBalance)."""

    @property
    def amount(self) -> float: ...

    @property
    def currency(self) -> str: ...


@runtime_checkable
class BalanceDriver(Protocol):
    """A driver with an authenticated balance call, the cheapest proof of its credentials."""

    def build_balance(self) -> HttpCall: ...

    def parse_balance(self, reply: HttpReply) -> ProviderBalance | AccountRefused: ...


# ── What a check found ───────────────────────────────────────────────────────────


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    """The account's balance as the provider stated it; `currency` None when not given."""

    amount: float
    currency: str | None = None


class CredentialsAccepted(msgspec.Struct, frozen=True, kw_only=True, tag="ok"):
    """The provider took the credentials; `balance` where its answer carried one."""

    bridge: str
    balance: Balance | None = None


class CredentialsRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    """The provider refused the account: the driver's `AccountRefused`, for this bridge."""

    bridge: str
    code: str
    reason: str
    fault: AccountFault


class ProviderUnreachable(msgspec.Struct, frozen=True, kw_only=True, tag="unreachable"):
    """The call did not complete (engine.http_errors.TransportError): nothing is known."""

    bridge: str
    reason: str


class AnswerUnclear(msgspec.Struct, frozen=True, kw_only=True, tag="unclear"):
    """The provider answered, but not in a shape that says whether the credentials hold
    (an HTTP 5xx from a gateway, an undocumented body)."""

    bridge: str
    reason: str


class NotCheckable(msgspec.Struct, frozen=True, kw_only=True, tag="not_checkable"):
    """The provider has no call that checks credentials without sending a message."""

    bridge: str


CredentialCheck = (
    CredentialsAccepted | CredentialsRefused | ProviderUnreachable | AnswerUnclear | NotCheckable
)


# ── The check ────────────────────────────────────────────────────────────────────


async def check_credentials(
    bridge: str, driver: BridgeDriver, client: Requester
) -> CredentialCheck:
    """One authenticated call to `bridge`'s provider, mapped into a `CredentialCheck`.

    `client` is the bridge's own HTTP client (engine.http_io.BridgeClient), so the call
    takes its base URL, pool and timeouts. Cancellation propagates untouched.
    """
    if not isinstance(driver, BalanceDriver):
        return NotCheckable(bridge=bridge)
    try:
        reply = await client.request(driver.build_balance())
    except TransportError as error:
        return ProviderUnreachable(bridge=bridge, reason=transport_sentence(error))
    try:
        answer = driver.parse_balance(reply)
    except UnparseableReply as error:
        return AnswerUnclear(bridge=bridge, reason=str(error))
    if isinstance(answer, AccountRefused):
        return CredentialsRefused(
            bridge=bridge, code=answer.code, reason=answer.reason, fault=answer.fault
        )
    balance = Balance(amount=answer.amount, currency=answer.currency or None)
    return CredentialsAccepted(bridge=bridge, balance=balance)


def transport_sentence(error: TransportError) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


# ── The line for people ──────────────────────────────────────────────────────────

_REFUSALS: dict[AccountFault, str] = {
    "credentials": "credentials refused by the provider",
    "blocked": "account blocked by the provider",
    "credit": "account out of credit at the provider",
}


def describe(check: CredentialCheck) -> str:
    """One log line for a check, naming the bridge first: "bsg: credentials accepted ..."."""
    match check:
        case CredentialsAccepted(bridge=bridge, balance=balance):
            if balance is None:
                return f"{bridge}: credentials accepted"
            unit = f" {balance.currency}" if balance.currency else ""
            return f"{bridge}: credentials accepted (balance {balance.amount:.2f}{unit})"
        case CredentialsRefused(bridge=bridge, reason=reason, fault=fault):
            return f"{bridge}: {_REFUSALS[fault]}: {reason}"
        case ProviderUnreachable(bridge=bridge, reason=reason):
            return f"{bridge}: credentials not checked, the provider could not be reached: {reason}"
        case AnswerUnclear(bridge=bridge, reason=reason):
            return f"{bridge}: credentials not checked, the provider's answer was unclear: {reason}"
        case NotCheckable(bridge=bridge):
            return (
                f"{bridge}: credentials not checked, the provider has no call that proves them "
                "without sending a message"
            )
        case _:
            assert_never(check)
