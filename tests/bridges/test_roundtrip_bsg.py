"""bsg round trips: BsgDriver + BridgeClient against the bsg simulator over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import msgspec
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
from bridges.bsg import BsgBalance, BsgDriver
from bridges.sim.core import SimulatorConfig
from tests.bridges.roundtrip_harness import outbound, retried, round_trip

pytestmark = pytest.mark.anyio

PHONES = ["+380501234567", "+380501234568", "+380501234569"]
DLR_DELAY_S = 60.0  # on the simulator's fake clock
# docs/providers.md "bsg" Status values, for the states the simulator reports.
FINAL_STATES = {
    "delivered": "DELIVRD",
    "undeliverable": "UNDELIV",
    "expired": "EXPIRED",
    "rejected": "REJECTD",
}
_json = msgspec.json.Decoder()
BatchFactory = Callable[[], list[OutboundMessage]]


def bsg_driver(api_key: str = "test_demo") -> BsgDriver:
    return BsgDriver(BridgeSettings(base_url="unused", credentials={"api_key": api_key}))


def send_mode(driver: BsgDriver, batch: Sequence[OutboundMessage]) -> str:
    """Which of BSG's three `destination` modes the driver chose for `batch`."""
    mode: str = _json.decode(driver.build_send(batch).body)["destination"]
    return mode


def single_batch() -> list[OutboundMessage]:
    return [outbound(1, PHONES[0])]


def shared_text_batch() -> list[OutboundMessage]:
    return [outbound(n, phone) for n, phone in enumerate(PHONES)]


def individual_batch() -> list[OutboundMessage]:
    return [outbound(n, phone, f"Your code is {n}") for n, phone in enumerate(PHONES)]


def ids_of(outcomes: Sequence[object]) -> list[str]:
    return [o.provider_id or "" for o in outcomes if isinstance(o, Submitted)]


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("string_fields", [True, False])
async def test_single_send_reads_every_reply_shape(wrapped: bool, string_fields: bool) -> None:
    config = SimulatorConfig(seed=7, bsg_wrapped_single=wrapped, bsg_string_fields=string_fields)
    driver = bsg_driver()
    batch = [outbound(1, PHONES[0])]
    assert send_mode(driver, batch) == "phone"
    async with round_trip("bsg", config) as trip:
        outcomes = await trip.send(driver, batch)
    # The seed's example id, price and currency (docs/providers.md "bsg").
    assert outcomes == [Submitted("22125", 0.02, "EUR")]
    assert trip.counters.accepted_by_reference == {"ref_1": 1}


@pytest.mark.parametrize(
    ("make_batch", "mode"), [(shared_text_batch, "phones"), (individual_batch, "individual")]
)
@pytest.mark.parametrize("string_fields", [True, False])
async def test_batch_modes_submit_every_phone(
    make_batch: BatchFactory, mode: str, string_fields: bool
) -> None:
    driver = bsg_driver()
    batch = make_batch()
    assert send_mode(driver, batch) == mode
    config = SimulatorConfig(seed=7, bsg_string_fields=string_fields)
    async with round_trip("bsg", config) as trip:
        outcomes = await trip.send(driver, batch)
    assert [type(outcome) for outcome in outcomes] == [Submitted] * 3
    assert len(set(ids_of(outcomes))) == 3
    assert trip.counters.accepted_by_reference == {"ref_0": 1, "ref_1": 1, "ref_2": 1}


@pytest.mark.parametrize("make_batch", [shared_text_batch, individual_batch])
async def test_a_refused_phone_is_rejected_next_to_the_submitted_ones(
    make_batch: BatchFactory,
) -> None:
    config = SimulatorConfig(seed=7, recipient_codes={"380501234568": "21"})
    async with round_trip("bsg", config) as trip:
        outcomes = await trip.send(bsg_driver(), make_batch())
    assert [type(outcome) for outcome in outcomes] == [Submitted, Rejected, Submitted]
    assert isinstance(outcomes[1], Rejected)
    assert outcomes[1].code == "21"
    assert trip.counters.accepted_by_reference == {"ref_0": 1, "ref_2": 1}
    assert trip.counters.rejects == {"21": 1}


async def test_wrong_api_key_refuses_the_account_for_every_message() -> None:
    driver = bsg_driver("test_wrong")
    async with round_trip("bsg") as trip:
        outcomes = await trip.send(driver, shared_text_batch())
        balance = driver.parse_balance(await trip.client.request(driver.build_balance()))
    # docs/providers.md "bsg": error 1, invalid API key: the account's fault, not the messages'.
    refused = AccountRefused("1", "BSG refused the API key (BSG: Invalid API key)", "credentials")
    assert outcomes == [refused] * 3
    assert balance == refused
    assert trip.counters.accepted_total == 0


@pytest.mark.parametrize("blocked_code", [2, 3])
async def test_a_client_blocked_after_five_auth_errors_is_an_account_fault(
    blocked_code: Literal[2, 3],
) -> None:
    # docs/providers.md "bsg" Anti-abuse: 5 auth errors in 30 min block the client IP; the
    # answer is the account-blocked code, 2 or 3 (configurable on both sides).
    config = SimulatorConfig(seed=7, bsg_auth_block=True, bsg_blocked_code=blocked_code)
    settings = BridgeSettings(
        base_url="unused",
        credentials={"api_key": "test_demo"},
        options={"blocked_code": str(blocked_code)},
    )
    async with round_trip("bsg", config) as trip:
        for _ in range(5):
            await trip.send(bsg_driver("test_wrong"), single_batch())
        outcomes = await trip.send(BsgDriver(settings), shared_text_batch())
    blocked = AccountRefused(
        str(blocked_code), "BSG says the account is blocked (BSG: Account blocked)", "blocked"
    )
    assert outcomes == [blocked] * 3
    assert trip.counters.accepted_total == 0


async def test_money_running_out_rejects_the_request_and_the_balance_shows_it() -> None:
    # Two messages' worth at 0.02 EUR each (the simulator's default price).
    config = SimulatorConfig(seed=7, bsg_balance=0.04)
    driver = bsg_driver()
    async with round_trip("bsg", config) as trip:
        paid = await trip.send(driver, shared_text_batch()[:2])
        broke = await trip.send(driver, [outbound(9, PHONES[2])])
        balance = driver.parse_balance(await trip.client.request(driver.build_balance()))
        accepted = trip.counters.accepted_total
    assert [type(outcome) for outcome in paid] == [Submitted, Submitted]
    # docs/providers.md "bsg" error 8: not enough money; the account's fault, not the message's.
    assert broke == [
        AccountRefused(
            "8", "the BSG account does not have enough money (BSG: Not enough money)", "credit"
        )
    ]
    assert isinstance(balance, BsgBalance)
    assert (balance.amount, balance.currency) == (0.0, "EUR")
    assert accepted == 2


async def test_too_many_requests_is_throttled() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"429": 1.0})
    async with round_trip("bsg", config) as trip:
        outcomes = await trip.send(bsg_driver(), shared_text_batch())
    assert [type(outcome) for outcome in outcomes] == [Throttled] * 3
    assert trip.counters.accepted_total == 0


async def test_server_error_is_retry_later() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"5xx": 1.0})
    async with round_trip("bsg", config) as trip:
        outcomes = await trip.send(bsg_driver(), shared_text_batch())
    assert [type(outcome) for outcome in outcomes] == [RetryLater] * 3
    assert trip.counters.accepted_total == 0


async def test_garbage_reply_is_unparseable() -> None:
    config = SimulatorConfig(seed=7, fail_rate=1.0, faults={"garbage": 1.0})
    async with round_trip("bsg", config) as trip:
        with pytest.raises(UnparseableReply):
            await trip.send(bsg_driver(), [outbound(1, PHONES[0])])


@pytest.mark.parametrize("make_batch", [single_batch, shared_text_batch])
async def test_resend_after_a_lost_reply_is_recognised_by_reference(
    make_batch: BatchFactory,
) -> None:
    batch = make_batch()
    async with round_trip("bsg") as trip:
        await trip.lose_reply(bsg_driver(), batch)
        outcomes = await trip.send(bsg_driver(), retried(batch))
        counters = trip.counters
    # docs/providers.md "bsg": 23 on a resend means the first attempt was accepted.
    assert outcomes == [Submitted(None)] * len(batch)
    assert counters.accepted_by_reference == {message.reference: 1 for message in batch}
    assert counters.accepted_total == len(batch)
    assert counters.rejects == {"23": len(batch)}


async def test_status_by_id_reaches_a_final_state_after_the_report_delay() -> None:
    config = SimulatorConfig(
        seed=7, dlr_delay_s=DLR_DELAY_S, dlr_mix={"DELIVRD": 1.0, "UNDELIV": 1.0}
    )
    driver = bsg_driver()
    batch = shared_text_batch()
    async with round_trip("bsg", config) as trip:
        outcomes = await trip.send(driver, batch)
        queries = [
            StatusQuery(provider_id=provider_id, reference=message.reference)
            for provider_id, message in zip(ids_of(outcomes), batch, strict=True)
        ]
        before = [await trip.poll(driver, [query]) for query in queries]
        trip.clock.advance(DLR_DELAY_S)
        after = [await trip.poll(driver, [query]) for query in queries]
    for receipts, query in zip(before, queries, strict=True):
        # docs/providers.md "bsg": "unknown" is what BSG shows before a report; not final.
        assert [(r.provider_id, r.provider_status, r.final) for r in receipts] == [
            (query.provider_id, "unknown", False)
        ]
    for receipts, query, message in zip(after, queries, batch, strict=True):
        (receipt,) = receipts
        assert (receipt.provider_id, receipt.reference) == (query.provider_id, query.reference)
        assert receipt.final
        assert receipt.state == FINAL_STATES[receipt.provider_status]
        assert receipt.recipient == message.to.removeprefix("+")


async def test_status_by_reference_finds_a_message_resent_without_an_id() -> None:
    config = SimulatorConfig(seed=7, dlr_delay_s=DLR_DELAY_S, dlr_mix={"DELIVRD": 1.0})
    driver = bsg_driver()
    batch = [outbound(1, PHONES[0])]
    async with round_trip("bsg", config) as trip:
        await trip.lose_reply(bsg_driver(), batch)
        resent = await trip.send(driver, retried(batch))
        query = StatusQuery(provider_id=None, reference="ref_1")
        assert driver.build_status([query]) is not None
        before = await trip.poll(driver, [query])
        trip.clock.advance(DLR_DELAY_S)
        after = await trip.poll(driver, [query])
        accepted = trip.counters.accepted_total
    assert resent == [Submitted(None)]
    # The lookup by reference gives the id the first attempt got, beside the reference
    # asked, before and after the report: the engine matches by either and learns the id.
    assert [(r.provider_id, r.reference, r.final) for r in before] == [("22125", "ref_1", False)]
    assert [(r.provider_id, r.reference, r.state, r.final) for r in after] == [
        ("22125", "ref_1", "DELIVRD", True)
    ]
    assert accepted == 1


async def test_a_batch_resent_without_ids_is_found_message_by_message_by_reference() -> None:
    config = SimulatorConfig(seed=7, dlr_delay_s=DLR_DELAY_S, dlr_mix={"DELIVRD": 1.0})
    driver = bsg_driver()
    batch = shared_text_batch()
    async with round_trip("bsg", config) as trip:
        await trip.lose_reply(driver, batch)
        resent = await trip.send(driver, retried(batch))
        trip.clock.advance(DLR_DELAY_S)
        polled = [
            await trip.poll(driver, [StatusQuery(provider_id=None, reference=message.reference)])
            for message in batch
        ]
        accepted = trip.counters.accepted_by_reference
    # docs/providers.md "bsg": 23 per phone on the resend, each already accepted, id unknown.
    assert resent == [Submitted(None)] * 3
    found = [(r.provider_id, r.reference, r.state) for receipts in polled for r in receipts]
    # The simulator numbered the first attempt's messages from the seed's 22125.
    assert found == [
        ("22125", "ref_0", "DELIVRD"),
        ("22126", "ref_1", "DELIVRD"),
        ("22127", "ref_2", "DELIVRD"),
    ]
    assert accepted == {"ref_0": 1, "ref_1": 1, "ref_2": 1}


async def test_status_of_an_unknown_message_gives_no_receipt() -> None:
    driver = bsg_driver()
    async with round_trip("bsg") as trip:
        by_id = await trip.poll(driver, [StatusQuery(provider_id="999999", reference="ref_x")])
        by_reference = await trip.poll(driver, [StatusQuery(provider_id=None, reference="ref_x")])
        rejects = trip.counters.rejects
    assert (by_id, by_reference) == ([], [])
    assert rejects == {"20": 2}


async def test_mass_status_polls_100_messages_in_one_request_and_counts_hurried_polls() -> None:
    config = SimulatorConfig(seed=7, dlr_delay_s=DLR_DELAY_S, dlr_mix={"DELIVRD": 1.0})
    driver = bsg_driver()
    batches = [
        [outbound(100 * wave + n, f"+38050{wave}{n:06d}") for n in range(50)] for wave in (1, 2)
    ]
    async with round_trip("bsg", config) as trip:
        outcomes = [o for batch in batches for o in await trip.send(driver, batch)]
        queries = [
            StatusQuery(provider_id=provider_id, reference=message.reference)
            for provider_id, message in zip(
                ids_of(outcomes), [m for batch in batches for m in batch], strict=True
            )
        ]
        before = await trip.poll(driver, queries)
        trip.clock.advance(DLR_DELAY_S)  # a minute on: a polite second poll
        after = await trip.poll(driver, queries)
        polite = trip.counters.poll_abuse
        trip.clock.advance(DLR_DELAY_S / 2)
        await trip.poll(driver, queries[:10])  # half a minute on: ten hurried polls
        requests = trip.counters.requests
    assert len(queries) == 100
    assert [r.final for r in before] == [False] * 100
    assert [(r.provider_id, r.reference) for r in after] == [
        (q.provider_id, q.reference) for q in queries
    ]
    assert {r.state for r in after} == {"DELIVRD"}
    assert requests["POST /rest/sms/getStatus"] == {"200": 3}
    assert polite == 0
    assert trip.counters.poll_abuse == 10
