"""A provider account's balance and sender IDs, asked through the bridge's own HTTP client.

The calls are the drivers' (docs/providers.md: BSG and SMS Club have a balance call, SMS Club
a sender-ID list; dsc and Route Mobile neither). The balance reuses the credentials
check (engine.credentials), which maps every answer into a `CredentialCheck`; sender
IDs map into a `SendersAnswer` the same way. Nothing here raises for what the provider
or the network did. `serve_balance` keeps the `septet_provider_balance` gauge current.

    septet providers balance ──▶ check_credentials ──▶ describe_balance (one line)
    septet providers senders ──▶ fetch_senders     ──▶ describe_senders (one line)
    daemon                   ──▶ serve_balance (every balance_interval_s) ──▶ metrics
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, assert_never, runtime_checkable

import anyio
import msgspec

from bridges.base import BridgeDriver, HttpCall, HttpReply, UnparseableReply
from engine.bridge_limits import BridgeGate, wait_for_turn
from engine.credentials import (
    AnswerUnclear,
    BalanceDriver,
    CredentialCheck,
    CredentialsAccepted,
    NotCheckable,
    ProviderUnreachable,
    check_credentials,
    describe,
    transport_sentence,
)
from engine.dispatch import Requester
from engine.http_errors import TransportError


@runtime_checkable
class SenderIdDriver(Protocol):
    """A driver with a call listing the account's sender IDs (bridges.smsclub)."""

    def build_originators(self) -> HttpCall: ...

    def parse_originators(self, reply: HttpReply) -> list[str]: ...


class SenderIds(msgspec.Struct, frozen=True, kw_only=True, tag="senders"):
    """The sender IDs the provider lists as active on the account."""

    bridge: str
    senders: list[str]


class NoSenderCall(msgspec.Struct, frozen=True, kw_only=True, tag="no_call"):
    """The provider has no call that lists sender IDs."""

    bridge: str


SendersAnswer = SenderIds | NoSenderCall | ProviderUnreachable | AnswerUnclear


async def fetch_senders(bridge: str, driver: BridgeDriver, client: Requester) -> SendersAnswer:
    """One call to `bridge`'s provider for its sender IDs; cancellation propagates."""
    if not isinstance(driver, SenderIdDriver):
        return NoSenderCall(bridge=bridge)
    try:
        reply = await client.request(driver.build_originators())
    except TransportError as error:
        return ProviderUnreachable(bridge=bridge, reason=transport_sentence(error))
    try:
        senders = driver.parse_originators(reply)
    except UnparseableReply as error:
        return AnswerUnclear(bridge=bridge, reason=str(error))
    return SenderIds(bridge=bridge, senders=senders)


async def fetch_balance(bridge: str, driver: BridgeDriver, client: Requester) -> CredentialCheck:
    """One call to `bridge`'s provider for its balance (the credentials check's call)."""
    return await check_credentials(bridge, driver, client)


def balance_failed(check: CredentialCheck) -> bool:
    """Whether asking for the balance failed (a provider without the call has not)."""
    return not isinstance(check, CredentialsAccepted | NotCheckable)


def describe_balance(check: CredentialCheck) -> str:
    """The line `septet providers balance` prints for one bridge."""
    match check:
        case CredentialsAccepted(bridge=bridge, balance=balance) if balance is not None:
            unit = f" {balance.currency}" if balance.currency else ""
            return f"{bridge}: balance {balance.amount:.2f}{unit}"
        case NotCheckable(bridge=bridge):
            return f"{bridge}: the provider has no balance call"
        case _:
            return describe(check)


def describe_senders(answer: SendersAnswer) -> str:
    """The line `septet providers senders` prints for one bridge."""
    match answer:
        case SenderIds(bridge=bridge, senders=senders):
            listed = ", ".join(senders) if senders else "none"
            return f"{bridge}: sender IDs: {listed}"
        case NoSenderCall(bridge=bridge):
            return f"{bridge}: the provider has no call that lists sender IDs"
        case ProviderUnreachable(bridge=bridge, reason=reason):
            return f"{bridge}: sender IDs not listed, the provider could not be reached: {reason}"
        case AnswerUnclear(bridge=bridge, reason=reason):
            return f"{bridge}: sender IDs not listed, the provider's answer was unclear: {reason}"
        case _:
            assert_never(answer)


class BalanceGauge(Protocol):
    """Where a balance goes (engine.metrics.Operations.balance)."""

    def balance(self, bridge: str, amount: float, currency: str | None, at: float) -> None: ...


def record_balance(check: CredentialCheck, gauge: BalanceGauge, at: float) -> None:
    """Set the gauge from a check that carried a balance; any other answer leaves the
    last value (and its checked-at time, which an alert can watch for staleness)."""
    if isinstance(check, CredentialsAccepted) and check.balance is not None:
        gauge.balance(check.bridge, check.balance.amount, check.balance.currency, at)


async def serve_balance(
    bridge: str,
    driver: BridgeDriver,
    client: Requester,
    gauge: BalanceGauge,
    *,
    interval_s: float,
    on_check: Callable[[CredentialCheck], None] | None = None,
    clock: Callable[[], float] = time.time,
    limiter: BridgeGate | None = None,
) -> None:
    """Ask `bridge`'s provider for its balance every `interval_s` (the first time after
    one interval: the start-up credentials check asked already), until cancelled. A
    provider without the call, or an interval of 0, returns at once. Each ask takes its
    turn from `limiter`, the bridge's rate limits (SMS Club counts it among its 9 a
    second)."""
    if interval_s <= 0 or not isinstance(driver, BalanceDriver):
        return
    while True:
        await anyio.sleep(interval_s)
        if limiter is not None:
            await wait_for_turn(limiter, 1, 0, sleep=anyio.sleep)
        check = await fetch_balance(bridge, driver, client)
        record_balance(check, gauge, clock())
        if on_check is not None:
            on_check(check)
