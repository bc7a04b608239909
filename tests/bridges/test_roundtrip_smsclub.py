"""smsclub round trips: SmsClubDriver + BridgeClient against the smsclub simulator over HTTP."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bridges.base import (
    AccountRefused,
    BridgeSettings,
    OutboundMessage,
    Rejected,
    RetryLater,
    StatusQuery,
    Submitted,
    Throttled,
    UnparseableReply,
)
from bridges.sim.core import SimulatorConfig
from bridges.smsclub import SmsClubBalance, SmsClubDriver
from tests.bridges.roundtrip_harness import outbound, retried, round_trip

pytestmark = pytest.mark.anyio

PHONES = [f"+38098936113{digit}" for digit in range(10)]
DLR_DELAY_S = 30.0  # on the simulator's fake clock
RATE_LIMIT = 9  # docs/providers.md "smsclub": more than 9 requests per second get 429


def smsclub_driver(token: str = "demo") -> SmsClubDriver:
    return SmsClubDriver(BridgeSettings(base_url="unused", credentials={"token": token}))


def batch_of(count: int, text: str = "Your order is ready") -> list[OutboundMessage]:
    return [outbound(n, PHONES[n], text) for n in range(count)]


def ids_of(outcomes: Sequence[object]) -> list[str]:
    return [o.provider_id or "" for o in outcomes if isinstance(o, Submitted)]


async def test_single_send_is_submitted_with_the_providers_id() -> None:
    async with round_trip("smsclub") as trip:
        outcomes = await trip.send(smsclub_driver(), batch_of(1))
    # The seed's first example id.
    assert outcomes == [Submitted("106")]
    assert trip.counters.accepted_by_recipient == {"380989361130": 1}


async def test_batch_gives_one_id_per_phone_in_order() -> None:
    async with round_trip("smsclub") as trip:
        outcomes = await trip.send(smsclub_driver(), batch_of(4))
    assert outcomes == [Submitted(str(106 + n)) for n in range(4)]
    assert trip.counters.accepted_by_recipient == {phone[1:]: 1 for phone in PHONES[:4]}


async def test_refused_phones_are_rejected_next_to_the_submitted_ones() -> None:
    config = SimulatorConfig(seed=7, recipient_codes={"380989361131": "Number is blacklisted"})
    batch = [*batch_of(3), outbound(3, "+38098", "Your order is ready")]
    async with round_trip("smsclub", config) as trip:
        outcomes = await trip.send(smsclub_driver(), batch)
    assert [type(outcome) for outcome in outcomes] == [Submitted, Rejected, Submitted, Rejected]
    reasons = [outcome.reason for outcome in outcomes if isinstance(outcome, Rejected)]
    assert "Number is blacklisted" in reasons[0]
    assert "Invalid phone number" in reasons[1]
    assert trip.counters.accepted_by_recipient == {"380989361130": 1, "380989361132": 1}


async def test_wrong_token_refuses_the_account_for_every_message() -> None:
    driver = smsclub_driver("wrong")
    async with round_trip("smsclub") as trip:
        outcomes = await trip.send(driver, batch_of(3))
        balance = driver.parse_balance(await trip.client.request(driver.build_balance()))
    # docs/providers.md "smsclub": 401 auth: the account's fault, not the messages'.
    refused = AccountRefused(
        "401", "SMS Club refused the token: Your request was made with invalid credentials."
    )
    assert outcomes == [refused] * 3
    assert balance == refused
    assert trip.counters.accepted_total == 0


async def test_an_invalid_sender_is_a_validation_error_for_every_message() -> None:
    batch = [outbound(n, PHONES[n], sender="NameFarTooLongForSms") for n in range(2)]
    async with round_trip("smsclub") as trip:
        outcomes = await trip.send(smsclub_driver(), batch)
    assert [outcome.code for outcome in outcomes if isinstance(outcome, Rejected)] == ["400"] * 2
    # The 400's add_info names the field (docs/providers.md "smsclub" Errors).
    assert all(
        "src_addr" in outcome.reason for outcome in outcomes if isinstance(outcome, Rejected)
    )
    assert trip.counters.accepted_total == 0


async def test_more_than_nine_requests_a_second_are_throttled_until_the_second_passes() -> None:
    driver = smsclub_driver()
    # One message per request, each to its own phone (no duplicate window in play); the
    # simulator's clock stands still, so all of them fall in the same second.
    singles = [[message] for message in batch_of(RATE_LIMIT + 1)]
    async with round_trip("smsclub") as trip:
        outcomes = [(await trip.send(driver, single))[0] for single in singles]
        trip.clock.advance(1.0)
        resent = await trip.send(driver, singles[-1])
        counters = trip.counters
    assert [type(outcome) for outcome in outcomes] == [Submitted] * RATE_LIMIT + [Throttled]
    throttled = outcomes[-1]
    # The simulator's Retry-After (1 s by default) reaches the outcome.
    assert isinstance(throttled, Throttled)
    assert throttled.delay_s == 1.0
    assert isinstance(resent[0], Submitted)
    assert counters.accepted_total == RATE_LIMIT + 1
    assert counters.rejects == {"429": 1}


async def test_too_many_requests_fault_is_throttled() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"429": 1.0})
    async with round_trip("smsclub", config) as trip:
        outcomes = await trip.send(smsclub_driver(), batch_of(2))
    assert [type(outcome) for outcome in outcomes] == [Throttled, Throttled]
    assert trip.counters.accepted_total == 0


async def test_server_error_is_retry_later() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"5xx": 1.0})
    async with round_trip("smsclub", config) as trip:
        outcomes = await trip.send(smsclub_driver(), batch_of(2))
    assert [type(outcome) for outcome in outcomes] == [RetryLater, RetryLater]
    assert trip.counters.accepted_total == 0


async def test_garbage_reply_is_unparseable() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"garbage": 1.0})
    async with round_trip("smsclub", config) as trip:
        with pytest.raises(UnparseableReply):
            await trip.send(smsclub_driver(), batch_of(1))


async def test_retry_inside_the_duplicate_window_is_submitted_and_counted_once() -> None:
    batch = batch_of(3)
    async with round_trip("smsclub") as trip:
        await trip.lose_reply(smsclub_driver(), batch)
        trip.clock.advance(60.0)  # inside SMS Club's 2 minute duplicate window
        # Resends travel alone (engine.scheduler), each after a lost reply (maybe sent).
        outcomes = [
            outcome
            for message in retried(batch)
            for outcome in await trip.send(smsclub_driver(), [message])
        ]
        counters = trip.counters
    # docs/providers.md "smsclub" Retry: a 453 after a retry means the first attempt went
    # through: submitted with no id, never a failure and never a second send.
    assert outcomes == [Submitted(None)] * 3
    assert counters.accepted_by_recipient == {phone[1:]: 1 for phone in PHONES[:3]}
    assert counters.rejects == {"453": 3}


async def test_a_phone_and_text_twice_in_one_request_is_453_for_all_then_each_alone() -> None:
    # Issue 17: SMS Club refuses the whole request. septet's queue never batches one
    # destination twice; should a request hold it anyway, every message is told to
    # retry (nothing was sent) and alone each gets its own answer, sent once.
    driver = smsclub_driver()
    repeated = [outbound(0, PHONES[0]), outbound(1, PHONES[1]), outbound(2, PHONES[0])]
    async with round_trip("smsclub", SimulatorConfig(seed=7, smsclub_duplicate_window_s=0)) as trip:
        whole = await trip.send(driver, repeated)
        assert trip.counters.accepted_total == 0
        alone = [
            outcome
            for message in retried(repeated, maybe_sent=False)
            for outcome in await trip.send(driver, [message])
        ]
        counters = trip.counters
    assert [(type(o), getattr(o, "code", None)) for o in whole] == [(RetryLater, "453")] * 3
    assert [type(outcome) for outcome in alone] == [Submitted] * 3
    assert counters.refused_whole == {"repeated_phone_text": 1}
    assert counters.accepted_by_recipient == {PHONES[0][1:]: 2, PHONES[1][1:]: 1}


async def test_after_a_whole_request_453_the_genuine_duplicate_alone_is_rejected() -> None:
    # A request of three, one of them the same phone and text as a message sent a minute
    # before: SMS Club refuses all three. Alone, the other two go out and the duplicate is
    # refused: it never went out itself, so its 453 is not "my first attempt went through".
    driver = smsclub_driver()
    async with round_trip("smsclub") as trip:
        earlier = await trip.send(driver, [outbound(9, PHONES[1], "Your order is ready")])
        trip.clock.advance(60.0)
        batch = batch_of(3)
        whole = await trip.send(driver, batch)
        alone = [
            outcome
            for message in retried(batch, maybe_sent=False)
            for outcome in await trip.send(driver, [message])
        ]
        counters = trip.counters
    assert earlier == [Submitted("106")]
    assert {type(outcome) for outcome in whole} == {RetryLater}
    assert [type(outcome) for outcome in alone] == [Submitted, Rejected, Submitted]
    assert isinstance(alone[1], Rejected)
    assert alone[1].code == "453"
    assert counters.accepted_by_recipient == {PHONES[0][1:]: 1, PHONES[1][1:]: 1, PHONES[2][1:]: 1}
    assert counters.refused_whole == {}  # a duplicate window, not a batching refusal


async def test_a_first_attempt_inside_the_duplicate_window_is_rejected() -> None:
    driver = smsclub_driver()
    async with round_trip("smsclub") as trip:
        first = await trip.send(driver, batch_of(1))
        again = await trip.send(driver, [outbound(7, PHONES[0], "Your order is ready")])
        accepted = trip.counters.accepted_total
    assert first == [Submitted("106")]
    # Not a retry: the client sent the same message twice; never resent.
    assert [type(outcome) for outcome in again] == [Rejected]
    assert isinstance(again[0], Rejected)
    assert again[0].code == "453"
    assert accepted == 1


async def test_status_poll_of_a_batch_reaches_final_states_after_the_report_delay() -> None:
    config = SimulatorConfig(
        seed=7,
        dlr_delay_s=DLR_DELAY_S,
        dlr_mix={"DELIVRD": 1.0, "UNDELIV": 1.0, "EXPIRED": 1.0, "REJECTD": 1.0},
    )
    driver = smsclub_driver()
    batch = batch_of(5)
    async with round_trip("smsclub", config) as trip:
        outcomes = await trip.send(driver, batch)
        queries = [
            StatusQuery(provider_id=provider_id, reference=message.reference)
            for provider_id, message in zip(ids_of(outcomes), batch, strict=True)
        ]
        # An id SMS Club never issued comes back in add_info: no receipt for it.
        asked = [*queries, StatusQuery(provider_id="999999", reference="ref_x")]
        before = await trip.poll(driver, asked)
        trip.clock.advance(DLR_DELAY_S)
        after = await trip.poll(driver, asked)
    by_id = {query.provider_id: query.reference for query in queries}
    assert {(r.provider_id, r.state, r.final) for r in before} == {
        (provider_id, "ENROUTE", False) for provider_id in by_id
    }
    assert sorted(r.provider_id or "" for r in after) == sorted(i or "" for i in by_id)
    for receipt in after:
        # docs/providers.md "smsclub" Status: the final labels map one to one.
        assert receipt.final
        assert receipt.state == receipt.provider_status
        assert receipt.reference == by_id[receipt.provider_id]


async def test_balance_and_sender_ids_round_trip() -> None:
    config = SimulatorConfig(seed=7, smsclub_money="12.5000", smsclub_originators=["ACME"])
    driver = smsclub_driver()
    async with round_trip("smsclub", config) as trip:
        balance = driver.parse_balance(await trip.client.request(driver.build_balance()))
        senders = driver.parse_originators(await trip.client.request(driver.build_originators()))
    assert isinstance(balance, SmsClubBalance)
    assert (balance.amount, balance.currency) == (12.5, "UAH")
    assert senders == ["ACME"]
