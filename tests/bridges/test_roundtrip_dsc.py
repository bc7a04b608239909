"""dsc round trips: DscDriver + BridgeClient against the dsc simulator over real HTTP."""

from __future__ import annotations

import msgspec
import pytest

from bridges.base import (
    AccountRefused,
    BridgeSettings,
    CallbackRejected,
    Rejected,
    RetryLater,
    Submitted,
    UnparseableReply,
)
from bridges.dsc import DscDriver
from bridges.sim.core import SimulatorConfig
from engine.http_errors import ReplyLost
from tests.bridges.roundtrip_harness import (
    QUICK_DLR_DELAY_S,
    outbound,
    receiving_callbacks,
    retried,
    round_trip,
    tampered,
)
from tests.bridges.sim.conftest import eventually

pytestmark = pytest.mark.anyio

ACCOUNT = {"api_key": "demo", "username": "demo", "password": "demo"}
CALLBACK_ACCOUNT = {"callback_username": "septet", "callback_password": "s3cret-callback"}
_json = msgspec.json.Decoder()
RWANDA = ["+250782589800", "+250782589801", "+250782589802"]


def dsc_driver(callback_url: str | None = None, **credentials: str) -> DscDriver:
    account = {**ACCOUNT, **(CALLBACK_ACCOUNT if callback_url else {}), **credentials}
    return DscDriver(
        BridgeSettings(base_url="unused", credentials=account, callback_url=callback_url)
    )


async def test_single_send_is_submitted_with_the_providers_id_and_cost() -> None:
    async with round_trip("dsc") as trip:
        outcomes = await trip.send(dsc_driver(), [outbound(1, RWANDA[0])])
    assert len(outcomes) == 1
    submitted = outcomes[0]
    assert isinstance(submitted, Submitted)
    assert submitted.provider_id is not None
    assert submitted.provider_id.isdigit()
    # docs/providers.md "dsc": 75 RWF per message.
    assert (submitted.cost, submitted.currency) == (75, "RWF")
    assert trip.counters.accepted_by_recipient == {"250782589800": 1}


async def test_batch_gives_one_submitted_per_recipient_with_distinct_ids() -> None:
    batch = [outbound(n, number) for n, number in enumerate(RWANDA)]
    async with round_trip("dsc") as trip:
        outcomes = await trip.send(dsc_driver(), batch)
    assert all(isinstance(outcome, Submitted) for outcome in outcomes)
    ids = {outcome.provider_id for outcome in outcomes if isinstance(outcome, Submitted)}
    assert len(ids) == len(batch)
    assert trip.counters.accepted_by_recipient == {number[1:]: 1 for number in RWANDA}


async def test_text_arrives_intact_through_the_form_body() -> None:
    # The reply echoes each entry's `message` (docs/providers.md "dsc" Success), so the
    # simulator's reading of the form body is visible: '+', '&', '=', '%' and non-ASCII.
    text = "5+5=10 & 50% off, café 👋"
    driver = dsc_driver()
    batch = [outbound(1, RWANDA[0], text), outbound(2, RWANDA[1], text)]
    async with round_trip("dsc") as trip:
        reply = await trip.client.request(driver.build_send(batch))
    assert [entry["message"] for entry in _json.decode(reply.body)["response"]] == [text, text]
    assert all(isinstance(outcome, Submitted) for outcome in driver.parse_send(batch, reply))


async def test_a_failed_recipient_is_rejected_next_to_the_submitted_ones() -> None:
    config = SimulatorConfig(seed=7, recipient_codes={"250782589801": "failed"})
    batch = [outbound(n, number) for n, number in enumerate(RWANDA)]
    async with round_trip("dsc", config) as trip:
        outcomes = await trip.send(dsc_driver(), batch)
    assert [type(outcome) for outcome in outcomes] == [Submitted, Rejected, Submitted]
    assert isinstance(outcomes[1], Rejected)
    assert outcomes[1].code == "failed"
    assert trip.counters.accepted_total == 2
    assert trip.counters.rejects == {"failed": 1}


async def test_wrong_credentials_refuse_the_account_for_every_message() -> None:
    batch = [outbound(n, number) for n, number in enumerate(RWANDA)]
    async with round_trip("dsc") as trip:
        outcomes = await trip.send(dsc_driver(password="wrong"), batch)
    # docs/providers.md "dsc": 401 "Invalid API key or credentials": the account's fault.
    refused = AccountRefused(
        "401", "dsc refused the account credentials: Invalid API key or credentials"
    )
    assert outcomes == [refused] * 3
    assert trip.counters.accepted_total == 0
    assert trip.counters.rejects == {"401": 1}


async def test_testing_mode_daily_limit_refuses_the_batch_that_would_pass_it() -> None:
    config = SimulatorConfig(seed=7, dsc_testing_mode=True, dsc_daily_limit=4)
    driver = dsc_driver()
    async with round_trip("dsc", config) as trip:
        first = await trip.send(driver, [outbound(n, n_to) for n, n_to in enumerate(RWANDA)])
        over_batch = [outbound(3, RWANDA[0]), outbound(4, RWANDA[1])]
        over = await trip.send(driver, over_batch)
        # Nothing of the request was sent: alone, one still fits the day's limit.
        alone = [
            outcome
            for message in retried(over_batch, maybe_sent=False)
            for outcome in await trip.send(driver, [message])
        ]
        trip.clock.advance(86_400)  # the limit is per day
        next_day = await trip.send(driver, [outbound(5, RWANDA[0])])
        accepted = trip.counters.accepted_total
    assert all(isinstance(outcome, Submitted) for outcome in first)
    # docs/providers.md "dsc": 429 refuses the whole request: a retry for each of the two ...
    assert [(type(o), getattr(o, "code", None)) for o in over] == [(RetryLater, "429")] * 2
    # ... and alone the first fits while the second is refused for good (never retried).
    assert [type(outcome) for outcome in alone] == [Submitted, Rejected]
    assert isinstance(alone[1], Rejected)
    assert alone[1].code == "429"
    assert isinstance(next_day[0], Submitted)
    assert accepted == 5


async def test_gateway_failure_is_retry_later_and_nothing_was_sent() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"5xx": 1.0})
    async with round_trip("dsc", config) as trip:
        outcomes = await trip.send(dsc_driver(), [outbound(1, RWANDA[0]), outbound(2, RWANDA[1])])
    assert [type(outcome) for outcome in outcomes] == [RetryLater, RetryLater]
    assert {outcome.code for outcome in outcomes if isinstance(outcome, RetryLater)} == {"500"}
    assert trip.counters.accepted_total == 0


async def test_garbage_reply_is_unparseable() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"garbage": 1.0})
    async with round_trip("dsc", config) as trip:
        with pytest.raises(UnparseableReply):
            await trip.send(dsc_driver(), [outbound(1, RWANDA[0])])


async def test_reply_lost_after_sending_leaves_the_message_accepted_once() -> None:
    # dsc has no idempotency key (docs/providers.md): after ReplyLost the engine must report
    # the outcome as unknown, because the provider did take the message.
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"timeout_after": 1.0}, hang_s=5.0)
    async with round_trip("dsc", config) as trip:
        async with trip.impatient_client() as impatient:
            with pytest.raises(ReplyLost):
                await trip.send(dsc_driver(), [outbound(1, RWANDA[0])], client=impatient)
        assert trip.counters.accepted_by_recipient == {"250782589800": 1}
        assert trip.counters.faults == {"timeout_after": 1}


async def test_delivery_reports_come_back_by_get_callback_one_per_message() -> None:
    config = SimulatorConfig(seed=7, dlr_delay_s=QUICK_DLR_DELAY_S, dlr_mix={"DELIVRD": 1.0})
    delivered = [outbound(n, f"+25078258980{n}") for n in range(3)]
    undelivered = [outbound(n, f"+25078258980{n}", "Second text") for n in range(3, 6)]
    batch = delivered + undelivered
    async with receiving_callbacks() as receiver, round_trip("dsc", config) as trip:
        driver = dsc_driver(callback_url=receiver.endpoint("dsc"))
        receiver.drivers["dsc"] = driver
        outcomes = await trip.send(driver, delivered)
        # The outcome is drawn at send time: the second batch is reported undelivered.
        trip.configure(dlr_mix={"UNDELIV": 1.0})
        outcomes += await trip.send(driver, undelivered)
        await receiver.wait_until(lambda: len(receiver.receipts) >= len(batch))
        await eventually(lambda: trip.counters.dlr_ok == len(batch))
        counters = trip.counters
    recipient_by_id = {
        o.provider_id: m.to
        for o, m in zip(outcomes, batch, strict=True)
        if isinstance(o, Submitted)
    }
    assert len(recipient_by_id) == len(batch)
    # Nothing lost, nothing twice: one report per message, each for a submitted id.
    assert sorted(r.provider_id or "" for r in receiver.receipts) == sorted(
        i or "" for i in recipient_by_id
    )
    assert (counters.dlr_sent, counters.dlr_failed, counters.dlr_retried) == (6, 0, 0)
    assert receiver.refused == []
    assert receiver.malformed == []
    first_batch_ids = {o.provider_id for o in outcomes[:3] if isinstance(o, Submitted)}
    for receipt in receiver.receipts:
        assert receipt.final
        assert receipt.recipient == recipient_by_id[receipt.provider_id]
        # docs/providers.md "dsc" Mapping: D → DELIVRD, U → UNDELIV.
        if receipt.provider_id in first_batch_ids:
            assert (receipt.provider_status, receipt.state) == ("D", "DELIVRD")
        else:
            assert (receipt.provider_status, receipt.state) == ("U", "UNDELIV")
    # A callback whose credentials were changed on the way is refused.
    with pytest.raises(CallbackRejected):
        driver.parse_callback(tampered(receiver.taken[0], password="guessed"))


async def test_a_callback_registered_with_other_credentials_is_refused_end_to_end() -> None:
    config = SimulatorConfig(seed=7, dlr_delay_s=QUICK_DLR_DELAY_S, dlr_retries=0)
    async with receiving_callbacks() as receiver, round_trip("dsc", config) as trip:
        genuine = dsc_driver(callback_url=receiver.endpoint("dsc"))
        receiver.drivers["dsc"] = genuine
        # Someone else registers septet's endpoint with credentials septet never issued.
        forger = dsc_driver(
            callback_url=receiver.endpoint("dsc"),
            callback_username="septet",
            callback_password="guessed",
        )
        outcomes = await trip.send(forger, [outbound(1, RWANDA[0])])
        await receiver.wait_until(lambda: len(receiver.refused) >= 1)
        await eventually(lambda: trip.counters.dlr_failed == 1)
    assert isinstance(outcomes[0], Submitted)
    assert receiver.receipts == []
    assert trip.counters.dlr_ok == 0
