"""Start-up credential checks and the balance poll against the real simulators over HTTP
on 127.0.0.1."""

from __future__ import annotations

import socket
from functools import partial

import anyio
import msgspec
import pytest

from bridges.base import BridgeDriver, BridgeSettings, HttpCall, HttpReply
from bridges.bsg import BsgDriver
from bridges.dsc import DscDriver
from bridges.routemobile import RouteMobileDriver
from bridges.sim.core import SimulatorConfig
from bridges.smsclub import SmsClubDriver
from engine.credentials import (
    AnswerUnclear,
    Balance,
    BalanceDriver,
    CredentialCheck,
    CredentialsAccepted,
    CredentialsRefused,
    NotCheckable,
    ProviderUnreachable,
    check_credentials,
    describe,
)
from engine.dispatch import Requester
from engine.http_io import BridgeClient
from engine.provider_accounts import serve_balance
from tests.bridges.roundtrip_harness import round_trip

pytestmark = pytest.mark.anyio


def bsg(api_key: str = "test_demo") -> BsgDriver:
    return BsgDriver(BridgeSettings(base_url="unused", credentials={"api_key": api_key}))


def smsclub(token: str = "demo") -> SmsClubDriver:
    return SmsClubDriver(BridgeSettings(base_url="unused", credentials={"token": token}))


class Replying:
    """A client that answers every call with one reply and counts the calls."""

    def __init__(self, reply: HttpReply) -> None:
        self.reply = reply
        self.calls: list[HttpCall] = []

    async def request(self, call: HttpCall) -> HttpReply:
        self.calls.append(call)
        return self.reply


def test_the_balance_drivers_offer_the_check_statically() -> None:
    # mypy checks these assignments: the drivers' balance calls fit the protocol.
    checkers: list[BalanceDriver] = [bsg(), smsclub()]
    assert all(isinstance(checker, BalanceDriver) for checker in checkers)


# ── BSG: GET /rest/common/balance (docs/providers.md "bsg" Balance) ─────────────────────


async def test_bsg_right_key_is_accepted_with_the_balance() -> None:
    async with round_trip("bsg", SimulatorConfig(seed=7, bsg_balance=12.5)) as trip:
        check = await check_credentials("bsg-eu", bsg(), trip.client)
        counters = trip.counters
    assert check == CredentialsAccepted(
        bridge="bsg-eu", balance=Balance(amount=12.5, currency="EUR")
    )
    assert describe(check) == "bsg-eu: credentials accepted (balance 12.50 EUR)"
    assert (counters.accepted_total, counters.rejects) == (0, {})  # nothing was sent


async def test_bsg_wrong_key_is_refused_with_the_providers_reason() -> None:
    async with round_trip("bsg") as trip:
        check = await check_credentials("bsg", bsg("test_wrong"), trip.client)
    # docs/providers.md "bsg": error 1, invalid API key.
    assert check == CredentialsRefused(
        bridge="bsg",
        code="1",
        reason="BSG refused the API key (BSG: Invalid API key)",
        fault="credentials",
    )
    assert describe(check) == (
        "bsg: credentials refused by the provider: BSG refused the API key (BSG: Invalid API key)"
    )


async def test_bsg_blocked_client_is_refused_as_blocked() -> None:
    # docs/providers.md "bsg" Anti-abuse: 5 auth errors in 30 minutes block the client IP.
    config = SimulatorConfig(seed=7, bsg_auth_block=True)
    async with round_trip("bsg", config) as trip:
        for _ in range(5):
            await check_credentials("bsg", bsg("test_wrong"), trip.client)
        check = await check_credentials("bsg", bsg(), trip.client)
    assert isinstance(check, CredentialsRefused)
    assert (check.code, check.fault) == ("2", "blocked")
    assert describe(check) == (
        "bsg: account blocked by the provider: "
        "BSG says the account is blocked (BSG: Account blocked)"
    )


# ── SMS Club: POST /sms/balance (docs/providers.md "smsclub" Balance) ───────────────────


async def test_smsclub_right_token_is_accepted_with_the_balance() -> None:
    async with round_trip("smsclub") as trip:
        check = await check_credentials("smsclub", smsclub(), trip.client)
        accepted = trip.counters.accepted_total
    # The simulator's default balance, as the seed's real shape writes it: "8111.1700".
    assert check == CredentialsAccepted(
        bridge="smsclub", balance=Balance(amount=8111.17, currency="UAH")
    )
    assert describe(check) == "smsclub: credentials accepted (balance 8111.17 UAH)"
    assert accepted == 0


async def test_smsclub_wrong_token_is_refused() -> None:
    async with round_trip("smsclub") as trip:
        check = await check_credentials("smsclub", smsclub("wrong"), trip.client)
    # docs/providers.md "smsclub" Errors: 401 auth.
    reason = "SMS Club refused the token: Your request was made with invalid credentials."
    assert check == CredentialsRefused(
        bridge="smsclub", code="401", reason=reason, fault="credentials"
    )
    assert describe(check) == f"smsclub: credentials refused by the provider: {reason}"


# ── No cheap authenticated call: dsc, Route Mobile ─────────────────────────────────


@pytest.mark.parametrize(
    "driver",
    [
        DscDriver(
            BridgeSettings(
                base_url="unused",
                credentials={"api_key": "demo", "username": "demo", "password": "demo"},
            )
        ),
        RouteMobileDriver(
            BridgeSettings(base_url="unused", credentials={"username": "x", "password": "y"})
        ),
    ],
)
async def test_providers_without_a_balance_call_are_not_checkable_and_not_called(
    driver: BridgeDriver,
) -> None:
    client = Replying(HttpReply(status=200, body=b""))
    check = await check_credentials(driver.name, driver, client)
    assert check == NotCheckable(bridge=driver.name)
    assert client.calls == []
    assert describe(check) == (
        f"{driver.name}: credentials not checked, the provider has no call that proves them "
        "without sending a message"
    )


# ── When the answer says nothing about the credentials ─────────────────────────────


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_provider_that_cannot_be_reached_is_unreachable() -> None:
    async with BridgeClient(f"http://127.0.0.1:{closed_port()}", connect_timeout_s=2.0) as client:
        check = await check_credentials("smsclub", smsclub(), client)
    assert isinstance(check, ProviderUnreachable)
    assert check.bridge == "smsclub"
    assert check.reason.startswith("ConnectFailed")
    assert describe(check) == (
        f"smsclub: credentials not checked, the provider could not be reached: {check.reason}"
    )


@pytest.mark.parametrize(
    ("driver", "reply", "reason"),
    [
        (bsg(), HttpReply(status=502, body=b"Bad Gateway"), "bsg answered HTTP 502: Bad Gateway"),
        (
            bsg(),
            HttpReply(status=200, body=b'{"error": 4, "errorDescription": "Method not supported"}'),
            "BSG does not support this method (BSG: Method not supported)",
        ),
        (
            smsclub(),
            HttpReply(status=503, body=b'{"name":"x","message":"Down","code":0,"status":503}'),
            "smsclub answered HTTP 503: Down",
        ),
        (
            smsclub(),
            HttpReply(status=200, body=b'{"success_request": {"info": []}}'),
            'smsclub sent a balance without money: \'{"success_request": {"info": []}}\'',
        ),
    ],
)
async def test_an_answer_that_does_not_say_is_unclear(
    driver: BridgeDriver, reply: HttpReply, reason: str
) -> None:
    client = Replying(reply)
    check = await check_credentials(driver.name, driver, client)
    assert check == AnswerUnclear(bridge=driver.name, reason=reason)
    assert len(client.calls) == 1
    assert describe(check) == (
        f"{driver.name}: credentials not checked, the provider's answer was unclear: {reason}"
    )


# ── The values themselves ──────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("check", "line"),
    [
        (CredentialsAccepted(bridge="b"), "b: credentials accepted"),
        (
            CredentialsAccepted(bridge="b", balance=Balance(amount=3.0)),
            "b: credentials accepted (balance 3.00)",
        ),
        (
            CredentialsRefused(bridge="b", code="8", reason="no money", fault="credit"),
            "b: account out of credit at the provider: no money",
        ),
    ],
)
def test_describe_the_remaining_shapes(check: CredentialCheck, line: str) -> None:
    assert describe(check) == line


@pytest.mark.parametrize(
    "check",
    [
        CredentialsAccepted(bridge="b", balance=Balance(amount=1.5, currency="EUR")),
        CredentialsRefused(bridge="b", code="1", reason="r", fault="credentials"),
        ProviderUnreachable(bridge="b", reason="r"),
        AnswerUnclear(bridge="b", reason="r"),
        NotCheckable(bridge="b"),
    ],
)
def test_a_check_is_a_tagged_value_that_round_trips_as_json(check: CredentialCheck) -> None:
    encoded = msgspec.json.encode(check)
    assert msgspec.json.decode(encoded, type=CredentialCheck) == check


class Recording:
    """A gate that gives every turn at once and a client that passes calls on, both
    writing what happened, in order, to one list."""

    def __init__(self, client: Requester, steps: list[str]) -> None:
        self.client = client
        self.steps = steps

    async def reserve(self, requests: int, messages: int, /) -> float:
        self.steps.append(f"turn {requests} {messages}")
        return 0.0

    @property
    def fault(self) -> str | None:
        return None

    async def request(self, call: HttpCall) -> HttpReply:
        self.steps.append(f"request {call.path}")
        return await self.client.request(call)


class Balances:
    def __init__(self, wanted: int) -> None:
        self.seen: list[float] = []
        self.wanted = wanted
        self.enough = anyio.Event()

    def balance(self, bridge: str, amount: float, currency: str | None, at: float) -> None:
        self.seen.append(amount)
        if len(self.seen) >= self.wanted:
            self.enough.set()


async def test_each_balance_ask_takes_its_turn_from_the_bridges_rate_limits() -> None:
    steps: list[str] = []
    gauge = Balances(wanted=2)
    async with round_trip("smsclub") as trip, anyio.create_task_group() as tg:
        recording = Recording(trip.client, steps)
        tg.start_soon(
            partial(
                serve_balance,
                "smsclub",
                smsclub(),
                recording,
                gauge,
                interval_s=0.01,
                limiter=recording,
            )
        )
        with anyio.fail_after(10):
            await gauge.enough.wait()
        tg.cancel_scope.cancel()
    # SMS Club counts a balance call among its 9 requests a second: each one waited for
    # a turn of one request and no message, before it went.
    assert steps[:4] == [
        "turn 1 0",
        "request /sms/balance",
        "turn 1 0",
        "request /sms/balance",
    ]
    assert gauge.seen[:2] == [8111.17, 8111.17]
