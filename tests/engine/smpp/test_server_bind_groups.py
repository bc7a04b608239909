"""Receipts go back to the bind group that submitted their message: the (system_type,
address_range) its bind declared, as a Kannel link declares them per smsc group. A group
with no receiving bind connected falls back to any bind of the account; the group is kept
with the id, so this holds across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.smpp import pdu as p
from tests.engine.smpp.harness import smpp_harness
from tests.engine.smpp.raw_client import RawClient
from tests.engine.smpp.test_server_receipts import next_receipt

pytestmark = pytest.mark.anyio


async def submit(client: RawClient, text: bytes) -> str:
    answer = await client.submit(registered_delivery=1, short_message=text)
    assert answer.command_status == p.ESME_ROK
    return answer.message_id


async def test_two_links_of_one_account_each_get_only_their_receipts(tmp_path: Path) -> None:
    async with (
        smpp_harness(tmp_path) as harness,
        await RawClient.connect(harness.port) as link_a,
        await RawClient.connect(harness.port) as link_b,
    ):
        await link_a.bind(system_type="link-a")
        await link_b.bind(system_type="link-b")
        ids_a = [await submit(link_a, b"from a %d" % n) for n in range(3)]
        ids_b = [await submit(link_b, b"from b %d" % n) for n in range(3)]
        for message in await harness.scheduler.wait_for(6):
            harness.report(message, "DELIVRD")
        # Each receipt is sent once: had one gone to the other link, a read would time out.
        got_a = [(await next_receipt(link_a)).optional.receipted_message_id for _ in ids_a]
        got_b = [(await next_receipt(link_b)).optional.receipted_message_id for _ in ids_b]
        assert (got_a, got_b) == (ids_a, ids_b)


async def test_the_group_is_system_type_and_address_range_together(tmp_path: Path) -> None:
    async with (
        smpp_harness(tmp_path) as harness,
        await RawClient.connect(harness.port) as first,
        await RawClient.connect(harness.port) as second,
    ):
        await first.bind(system_type="VMA", address_range="link-a")
        await second.bind(system_type="VMA", address_range="link-b")
        first_id = await submit(first, b"first")
        second_id = await submit(second, b"second")
        one, two = await harness.scheduler.wait_for(2)
        harness.report(two, "DELIVRD")
        harness.report(one, "DELIVRD")
        assert (await next_receipt(first)).optional.receipted_message_id == first_id
        assert (await next_receipt(second)).optional.receipted_message_id == second_id


async def test_a_group_without_a_receiving_bind_falls_back_to_any_bind(tmp_path: Path) -> None:
    async with (
        smpp_harness(tmp_path) as harness,
        await RawClient.connect(harness.port) as transmitter,
        await RawClient.connect(harness.port) as receiver,
    ):
        # Link A only transmits; link B receives: A's receipts have nowhere else to go.
        await transmitter.bind(p.BindTransmitter, system_type="link-a")
        await receiver.bind(p.BindReceiver, system_type="link-b")
        sent_id = await submit(transmitter, b"from a")
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "DELIVRD")
        assert (await next_receipt(receiver)).optional.receipted_message_id == sent_id


async def test_a_disconnected_groups_receipts_go_to_a_bind_still_there(tmp_path: Path) -> None:
    async with (
        smpp_harness(tmp_path) as harness,
        await RawClient.connect(harness.port) as link_b,
    ):
        await link_b.bind(system_type="link-b")
        async with await RawClient.connect(harness.port) as link_a:
            await link_a.bind(system_type="link-a")
            sent_id = await submit(link_a, b"from a")
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "DELIVRD")
        assert (await next_receipt(link_b)).optional.receipted_message_id == sent_id


async def test_the_group_is_kept_with_the_id_across_a_restart(tmp_path: Path) -> None:
    async with (
        smpp_harness(tmp_path) as harness,
        await RawClient.connect(harness.port) as link_a,
    ):
        await link_a.bind(system_type="link-a")
        sent_id = await submit(link_a, b"from a")
        (message,) = await harness.scheduler.wait_for(1)
    async with (
        smpp_harness(tmp_path) as harness,
        await RawClient.connect(harness.port) as link_b,
        await RawClient.connect(harness.port) as link_a,
    ):
        # Link B binds first and both are bound when the report comes: the id's stored
        # group sends its receipt to link A.
        await link_b.bind(system_type="link-b")
        await link_a.bind(system_type="link-a")
        harness.report(message, "DELIVRD")
        assert (await next_receipt(link_a)).optional.receipted_message_id == sent_id
        other_id = await submit(link_b, b"from b")
        (other,) = await harness.scheduler.wait_for(1)  # the new run's first
        harness.report(other, "DELIVRD")
        assert (await next_receipt(link_b)).optional.receipted_message_id == other_id
