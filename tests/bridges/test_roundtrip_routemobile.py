"""routemobile round trips: RouteMobileDriver + BridgeClient against its simulator over HTTP."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import pytest

from bridges.base import (
    AccountRefused,
    BridgeSettings,
    CallbackRejected,
    OutboundMessage,
    Rejected,
    RetryLater,
    Submitted,
    UnparseableReply,
)
from bridges.routemobile import RouteMobileDriver
from bridges.sim.core import SimulatorConfig
from bridges.sim.routemobile import RouteMobileSimulator
from engine.http_errors import ReplyLost
from tests.bridges.roundtrip_harness import (
    QUICK_DLR_DELAY_S,
    RoundTrip,
    outbound,
    receiving_callbacks,
    round_trip,
    tampered,
)
from tests.bridges.sim.conftest import eventually

pytestmark = pytest.mark.anyio

CELLS = ["+447700900001", "+447700900002", "+447700900003", "+447700900004"]
CALLBACK_TOKEN = "rm-callback-token"


def routemobile_driver(
    callback_url: str | None = None, password: str = "demo", charset: str | None = None
) -> RouteMobileDriver:
    credentials = {"username": "demo", "password": password, "callback_token": CALLBACK_TOKEN}
    options = {"charset": charset} if charset else {}
    return RouteMobileDriver(
        BridgeSettings(
            base_url="unused", credentials=credentials, callback_url=callback_url, options=options
        )
    )


# The duplicate window makes the simulator remember (cell, message) as it received them.
WITH_DUPLICATE_MEMORY = SimulatorConfig(seed=7, routemobile_duplicate_window_s=60.0)


def received_texts(trip: RoundTrip) -> set[str]:
    """The `message` values the simulator received, as it decoded them."""
    simulator = trip.simulator
    assert isinstance(simulator, RouteMobileSimulator)
    return {message for _cell, message in simulator.recent}


def batch_of(count: int, *, flash: bool = False) -> list[OutboundMessage]:
    return [outbound(n, CELLS[n], flash=flash) for n in range(count)]


def assert_message_ids(outcomes: list[Submitted]) -> None:
    """docs/providers.md "routemobile": message ids are UUIDs, one per destination."""
    ids = [outcome.provider_id or "" for outcome in outcomes]
    assert len(set(ids)) == len(ids)
    for provider_id in ids:
        uuid.UUID(provider_id)


async def test_single_gsm_send_is_submitted_with_a_uuid() -> None:
    async with round_trip("routemobile") as trip:
        outcomes = await trip.send(routemobile_driver(), batch_of(1))
    submitted = [outcome for outcome in outcomes if isinstance(outcome, Submitted)]
    assert len(submitted) == 1
    assert_message_ids(submitted)
    assert trip.counters.accepted_by_recipient == {"447700900001": 1}


@pytest.mark.parametrize("separator", ["|", ":"])
async def test_gsm_batch_reads_either_id_separator(separator: Literal["|", ":"]) -> None:
    config = SimulatorConfig(seed=7, routemobile_id_separator=separator)
    async with round_trip("routemobile", config) as trip:
        outcomes = await trip.send(routemobile_driver(), batch_of(4))
    submitted = [outcome for outcome in outcomes if isinstance(outcome, Submitted)]
    assert len(submitted) == 4
    assert_message_ids(submitted)
    assert trip.counters.accepted_by_recipient == {cell[1:]: 1 for cell in CELLS}


@pytest.mark.parametrize(
    "text",
    [
        "Привет, мир",
        "Hi 👋 from septet",  # outside the BMP: a surrogate pair, 8 hex digits
    ],
)
@pytest.mark.parametrize("flash", [False, True])
async def test_unicode_hex_batch_is_accepted(text: str, flash: bool) -> None:
    # The simulator answers 1705 unless `message` is UTF-16BE as hex (docs/providers.md).
    batch = [outbound(n, CELLS[n], text, encoding="UCS-2", flash=flash) for n in range(2)]
    async with round_trip("routemobile", WITH_DUPLICATE_MEMORY) as trip:
        outcomes = await trip.send(routemobile_driver(), batch)
        received = received_texts(trip)
    assert [type(outcome) for outcome in outcomes] == [Submitted, Submitted]
    assert trip.counters.accepted_total == 2
    assert trip.counters.rejects == {}
    assert {bytes.fromhex(message).decode("utf-16-be") for message in received} == {text}


async def test_gsm_text_with_reserved_characters_arrives_intact_in_the_query() -> None:
    # A '+' left literal in a GET query would arrive as a space (engine/http_io.py).
    text = "5+5=10 & 50% off, ok? #1 |a|"
    async with round_trip("routemobile", WITH_DUPLICATE_MEMORY) as trip:
        outcomes = await trip.send(routemobile_driver(), [outbound(1, CELLS[0], text)])
        received = received_texts(trip)
    assert isinstance(outcomes[0], Submitted)
    assert received == {text}


async def test_gsm_flash_batch_is_accepted() -> None:
    async with round_trip("routemobile") as trip:
        outcomes = await trip.send(routemobile_driver(), batch_of(2, flash=True))
    assert [type(outcome) for outcome in outcomes] == [Submitted, Submitted]
    assert trip.counters.accepted_total == 2


@pytest.mark.parametrize("flash", [False, True])
async def test_latin1_text_arrives_intact_as_type_5_or_7(flash: bool) -> None:
    latin1 = "Crème brûlée ¿sí?"
    not_latin1 = "Café à 5€? Non: 5£"  # '€' is not in ISO-8859-1: sent as GSM text
    driver = routemobile_driver(charset="latin1")
    batches = [[outbound(1, CELLS[0], latin1, flash=flash)], [outbound(2, CELLS[1], not_latin1)]]
    async with round_trip("routemobile", WITH_DUPLICATE_MEMORY) as trip:
        outcomes = [(await trip.send(driver, batch))[0] for batch in batches]
        received = received_texts(trip)
    types = [dict(driver.build_send(batch).query)["type"] for batch in batches]
    assert types == [("7" if flash else "5"), "0"]
    assert [type(outcome) for outcome in outcomes] == [Submitted, Submitted]
    assert received == {latin1, not_latin1}


async def test_scheduled_batch_is_submitted_like_a_send() -> None:
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    when = dt.datetime(2026, 11, 22, 20, 30, tzinfo=india)
    driver = routemobile_driver()
    batch = batch_of(3)
    async with round_trip("routemobile") as trip:
        reply = await trip.client.request(driver.build_schedule(batch, when))
        outcomes = driver.parse_send(batch, reply)
    submitted = [outcome for outcome in outcomes if isinstance(outcome, Submitted)]
    assert len(submitted) == 3
    assert_message_ids(submitted)
    assert trip.counters.requests == {"GET /bulksms/schedulemsg": {"200": 1}}
    assert trip.counters.accepted_total == 3


@pytest.mark.parametrize(("numbering", "dnd_code"), [("seed", "1732"), ("routemobile", "1032")])
async def test_per_destination_failures_sit_next_to_submitted(
    numbering: Literal["seed", "routemobile"], dnd_code: str
) -> None:
    config = SimulatorConfig(
        seed=7,
        routemobile_numbering=numbering,
        recipient_codes={"447700900002": "DND", "447700900004": "1706"},
    )
    async with round_trip("routemobile", config) as trip:
        outcomes = await trip.send(routemobile_driver(), batch_of(4))
    assert [type(outcome) for outcome in outcomes] == [Submitted, Rejected, Submitted, Rejected]
    codes = [outcome.code for outcome in outcomes if isinstance(outcome, Rejected)]
    assert codes == [dnd_code, "1706"]
    assert trip.counters.accepted_total == 2
    assert trip.counters.rejects == {dnd_code: 1, "1706": 1}


async def test_wrong_password_refuses_the_account_for_all() -> None:
    async with round_trip("routemobile") as trip:
        outcomes = await trip.send(routemobile_driver(password="wrong"), batch_of(3))
    # docs/providers.md "routemobile": a bare 1703 (bad username/password) for the request.
    refused = AccountRefused("1703", "routemobile: the username or password was refused.")
    assert outcomes == [refused] * 3
    assert trip.counters.accepted_total == 0
    assert trip.counters.rejects == {"1703": 1}


@pytest.mark.parametrize(
    ("lists", "code", "sentence"),
    [
        ({"routemobile_ip_blacklist": ["127.0.0.1"]}, "16", "blacklisted"),
        ({"routemobile_ip_whitelist": ["10.0.0.1"]}, "18", "not whitelisted"),
    ],
)
async def test_a_refused_client_ip_blocks_the_account_for_all(
    lists: dict[str, list[str]], code: str, sentence: str
) -> None:
    async with round_trip("routemobile") as trip:
        trip.configure(**lists)
        outcomes = await trip.send(routemobile_driver(), batch_of(2))
    # docs/providers.md "routemobile": 16 IP blacklisted, 18 IP not whitelisted.
    reason = f"routemobile: the client IP address is {sentence}."
    assert outcomes == [AccountRefused(code, reason, "blocked")] * 2
    assert trip.counters.accepted_total == 0


@pytest.mark.parametrize(("numbering", "no_credit"), [("seed", "1725"), ("routemobile", "1025")])
async def test_credit_running_out_mid_batch_submits_the_prefix_and_refuses_the_rest(
    numbering: Literal["seed", "routemobile"], no_credit: str
) -> None:
    config = SimulatorConfig(seed=7, routemobile_credit=2, routemobile_numbering=numbering)
    async with round_trip("routemobile", config) as trip:
        outcomes = await trip.send(routemobile_driver(), batch_of(4))
        later = await trip.send(routemobile_driver(), [outbound(9, CELLS[0], "Again")])
    # The third got the no-credit entry; processing stopped, so the fourth got none. Both
    # were never sent: the account's fault, not theirs (docs/providers.md "routemobile").
    assert [type(outcome) for outcome in outcomes] == [
        Submitted,
        Submitted,
        AccountRefused,
        AccountRefused,
    ]
    refusals = [outcome for outcome in outcomes[2:] + later if isinstance(outcome, AccountRefused)]
    assert [(refusal.code, refusal.fault) for refusal in refusals] == [(no_credit, "credit")] * 3
    assert trip.counters.accepted_by_recipient == {"447700900001": 1, "447700900002": 1}


async def test_gateway_failure_is_retry_later() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"5xx": 1.0})
    async with round_trip("routemobile", config) as trip:
        outcomes = await trip.send(routemobile_driver(), batch_of(2))
    assert [type(outcome) for outcome in outcomes] == [RetryLater, RetryLater]
    assert trip.counters.accepted_total == 0


async def test_garbage_reply_is_unparseable() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"garbage": 1.0})
    async with round_trip("routemobile", config) as trip:
        with pytest.raises(UnparseableReply):
            await trip.send(routemobile_driver(), batch_of(1))


async def test_reply_lost_after_sending_leaves_the_batch_accepted_once() -> None:
    # A GET send must not be resent by the HTTP client on its own (engine/http_io.py):
    # the simulator sees exactly one request, so each destination is accepted once.
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"timeout_after": 1.0}, hang_s=5.0)
    async with round_trip("routemobile", config) as trip:
        async with trip.impatient_client() as impatient:
            with pytest.raises(ReplyLost):
                await trip.send(routemobile_driver(), batch_of(2), client=impatient)
        # The simulator counts the request once the client has gone.
        await eventually(lambda: bool(trip.counters.requests))
        assert trip.counters.requests == {"GET /bulksms/bulksms": {"aborted": 1}}
        assert trip.counters.accepted_by_recipient == {"447700900001": 1, "447700900002": 1}
        assert trip.counters.faults == {"timeout_after": 1}


async def test_delivery_reports_come_back_by_post_callback_with_the_token() -> None:
    config = SimulatorConfig(
        seed=7,
        dlr_delay_s=QUICK_DLR_DELAY_S,
        dlr_mix={"DELIVRD": 2.0, "UNDELIV": 1.0, "EXPIRED": 1.0},
    )
    async with receiving_callbacks() as receiver, round_trip("routemobile", config) as trip:
        driver = routemobile_driver(callback_url=receiver.endpoint("routemobile"))
        receiver.drivers["routemobile"] = driver
        # Route Mobile pushes to the URL configured on the account (docs/providers.md).
        trip.configure(routemobile_dlr_url=driver.callback_registration_url())
        batch = batch_of(4)
        outcomes = await trip.send(driver, batch)
        await receiver.wait_until(lambda: len(receiver.receipts) >= len(batch))
        await eventually(lambda: trip.counters.dlr_ok == len(batch))
        counters = trip.counters
    submitted = {
        o.provider_id: m.to
        for o, m in zip(outcomes, batch, strict=True)
        if isinstance(o, Submitted)
    }
    assert len(submitted) == 4
    # Nothing lost, nothing twice.
    assert sorted(r.provider_id or "" for r in receiver.receipts) == sorted(
        i or "" for i in submitted
    )
    assert (counters.dlr_sent, counters.dlr_failed) == (4, 0)
    assert {request.method for request in receiver.taken} == {"POST"}
    assert {receipt.provider_status for receipt in receiver.receipts} <= {
        "DELIVRD",
        "UNDELIV",
        "EXPIRED",
    }
    for receipt in receiver.receipts:
        assert receipt.final
        assert receipt.state == receipt.provider_status
        assert receipt.recipient == submitted[receipt.provider_id]
        assert receipt.error_code is not None
    with pytest.raises(CallbackRejected):
        driver.parse_callback(tampered(receiver.taken[0], token="guessed"))


async def test_no_report_is_pushed_for_dlr_0_and_a_tokenless_push_is_refused() -> None:
    config = SimulatorConfig(seed=7, dlr_delay_s=QUICK_DLR_DELAY_S, dlr_retries=0)
    async with receiving_callbacks() as receiver, round_trip("routemobile", config) as trip:
        driver = routemobile_driver(callback_url=receiver.endpoint("routemobile"))
        receiver.drivers["routemobile"] = driver
        # The account is configured with septet's endpoint but without its token.
        trip.configure(routemobile_dlr_url=receiver.endpoint("routemobile"))
        quiet = await trip.send(driver, [outbound(1, CELLS[0], dlr=False)])
        reported = await trip.send(driver, [outbound(2, CELLS[1], dlr=True)])
        await receiver.wait_until(lambda: len(receiver.refused) >= 1)
        await eventually(lambda: trip.counters.dlr_failed == 1)
        counters = trip.counters
    assert isinstance(quiet[0], Submitted)
    assert isinstance(reported[0], Submitted)
    # Only the dlr=1 message was reported, and its report was refused.
    assert [request.query["sMessageId"] for request in receiver.refused] == [
        reported[0].provider_id
    ]
    assert receiver.receipts == []
    assert (counters.dlr_sent, counters.dlr_ok) == (1, 0)
