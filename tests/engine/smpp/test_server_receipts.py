"""serve_smpp's receipts follow the message lifecycle: only a final state makes one, one
per message id given out (also across a restart and when the report outruns the
submit_sm_resp), with the submit's TON/NPI mirrored and a `text:` field without control
characters. Driven by septet's bare client, so every PDU the server sends is seen."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from engine.accounts import Account
from engine.ingress.prepare import LineError
from engine.models import Message, Submission
from engine.smpp import pdu as p
from engine.smpp.server import Accept
from tests.engine.smpp.harness import SmppHarness, smpp_harness
from tests.engine.smpp.raw_client import RawClient

pytestmark = pytest.mark.anyio


async def next_receipt(client: RawClient) -> p.DeliverSm:
    """The next deliver_sm, acknowledged."""
    receipt = await client.read()
    assert isinstance(receipt, p.DeliverSm)
    await client.send(p.DeliverSmResp(sequence_number=receipt.sequence_number))
    return receipt


async def assert_next_receipt_is_for_a_new_message(
    harness: SmppHarness, client: RawClient, known: int
) -> None:
    """Nothing else is on its way: a new message's receipt is the next PDU. (Events are
    turned into receipts in order, so one owed for an earlier event would come first.)"""
    answer = await client.submit(registered_delivery=1, short_message=b"sentinel")
    *_, sentinel = await harness.scheduler.wait_for(known + 1)
    harness.report(sentinel, "DELIVRD")
    receipt = await next_receipt(client)
    assert receipt.optional.receipted_message_id == answer.message_id


async def test_status_events_make_no_receipt_and_the_final_one_makes_one(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.status(message, "ENROUTE")
        harness.status(message, "UNKNOWN", "unknown")  # BSG's early poll answer
        harness.report(message, "ACCEPTD")  # a dlr with a state that is not final
        harness.fail(message, "503", final=False)
        harness.report(message, "DELIVRD")
        receipt = await next_receipt(client)
        assert receipt.optional.receipted_message_id == answer.message_id
        assert b" stat:DELIVRD " in receipt.short_message
        assert receipt.optional.message_state == p.MESSAGE_STATES["DELIVRD"]
        await assert_next_receipt_is_for_a_new_message(harness, client, 1)


async def test_a_second_final_event_sends_no_second_receipt(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.fail(message, "21")  # a final failed ...
        receipt = await next_receipt(client)
        assert receipt.optional.receipted_message_id == answer.message_id
        assert b" stat:UNDELIV err:021 " in receipt.short_message
        harness.report(message, "DELIVRD")  # ... then a dlr, and the same dlr again
        harness.report(message, "DELIVRD")
        harness.fail(message, "21")
        await assert_next_receipt_is_for_a_new_message(harness, client, 1)


async def test_final_events_in_one_batch_make_one_receipt_with_the_first(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        await client.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "EXPIRED")
        harness.report(message, "DELIVRD")
        receipt = await next_receipt(client)
        assert b" stat:EXPIRED " in receipt.short_message
        await assert_next_receipt_is_for_a_new_message(harness, client, 1)


async def test_one_receipt_per_id_across_a_restart(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "UNDELIV", "5")
        receipt = await next_receipt(client)
        assert receipt.optional.receipted_message_id == answer.message_id
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        # The same message's report again after the restart, and another final event.
        harness.report(message, "UNDELIV", "5")
        harness.report(message, "DELIVRD")
        harness.fail(message, "unknown")
        await assert_next_receipt_is_for_a_new_message(harness, client, 0)


class EarlyReports:
    """The provider answers before the submit_sm_resp: a failed, then a dlr, arrive as
    soon as the message is journaled, before the server stores the id it gives out."""

    def __init__(self) -> None:
        self.harness: SmppHarness | None = None

    def wrap(self, accept: Accept) -> Accept:
        async def accept_and_report(
            account: Account,
            origin: str,
            submissions: Sequence[Submission | bytes],
            *,
            room_wait_s: float | None = None,
            turn: anyio.Lock | None = None,
        ) -> list[list[Message] | LineError]:
            results = await accept(account, origin, submissions, room_wait_s=room_wait_s, turn=turn)
            for result in results:
                if self.harness is not None and not isinstance(result, LineError):
                    for message in result:
                        self.harness.fail(message, "34")
                        self.harness.report(message, "DELIVRD")
            return results

        return accept_and_report


async def test_reports_that_outrun_the_submit_resp_make_one_receipt(tmp_path: Path) -> None:
    early = EarlyReports()
    async with (
        smpp_harness(tmp_path, wrap_accept=early.wrap) as harness,
        await RawClient.connect(harness.port) as client,
    ):
        await client.bind()
        early.harness = harness
        answer = await client.submit(registered_delivery=1)
        receipt = await next_receipt(client)
        assert receipt.optional.receipted_message_id == answer.message_id
        assert b" stat:UNDELIV err:034 " in receipt.short_message  # the first final event
        early.harness = None
        await assert_next_receipt_is_for_a_new_message(harness, client, 1)


async def test_a_cancelled_message_gets_a_deleted_receipt(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.cancel(message)
        receipt = await next_receipt(client)
        assert receipt.optional.receipted_message_id == answer.message_id
        assert b" stat:DELETED " in receipt.short_message
        assert receipt.optional.message_state == p.MESSAGE_STATES["DELETED"]


async def test_the_receipt_mirrors_the_submits_ton_and_npi(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        await client.submit(
            registered_delivery=1,
            source_addr="ACME",
            source_addr_ton=5,
            source_addr_npi=0,
            destination_addr="250788123456",
            dest_addr_ton=1,
            dest_addr_npi=1,
        )
        second_answer = await client.submit(
            registered_delivery=1,
            source_addr="250788000111",
            source_addr_ton=1,
            source_addr_npi=1,
            destination_addr="250788123456",
            dest_addr_ton=0,
            dest_addr_npi=1,
        )
        assert second_answer.command_status == p.ESME_ROK
        first, second = await harness.scheduler.wait_for(2)
        harness.report(first, "DELIVRD")
        receipt = await next_receipt(client)
        assert (receipt.source_addr, receipt.source_addr_ton, receipt.source_addr_npi) == (
            "250788123456",
            1,
            1,
        )
        assert (receipt.destination_addr, receipt.dest_addr_ton, receipt.dest_addr_npi) == (
            "ACME",
            5,
            0,
        )
        harness.report(second, "DELIVRD")
        receipt = await next_receipt(client)
        assert (receipt.source_addr_ton, receipt.source_addr_npi) == (0, 1)
        assert (receipt.dest_addr_ton, receipt.dest_addr_npi) == (1, 1)


async def test_the_receipt_text_field_has_no_control_characters(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        # GSM 03.38 0x0A and 0x0D are LF and CR, the only control characters a text may
        # hold (others are refused: engine.smpp.text); UCS-2 carries them too.
        await client.submit(registered_delivery=1, short_message=b"Code:\n1234\rok")
        await client.submit(
            registered_delivery=1, data_coding=8, short_message="a\r\nb".encode("utf-16-be")
        )
        first, second = await harness.scheduler.wait_for(2)
        harness.report(first, "DELIVRD")
        receipt = await next_receipt(client)
        assert receipt.short_message.endswith(b" text:Code: 1234 ok")
        harness.report(second, "DELIVRD")
        receipt = await next_receipt(client)
        assert receipt.short_message.endswith(b" text:a  b")
