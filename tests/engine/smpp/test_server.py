"""serve_smpp over the real journal and ingress, driven by septet's own bare client:
binds, submit forms, throttling, malformed input, receipts across reconnects."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.smpp import pdu as p
from engine.smpp.codec import HEADER, encode_pdu
from engine.smpp.server import SmppAccount, SmppSettings
from tests.engine.smpp.harness import smpp_harness
from tests.engine.smpp.raw_client import RawClient

pytestmark = pytest.mark.anyio


async def test_bind_submit_and_receipt(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        bound = await client.bind()
        assert isinstance(bound, p.BindTransceiverResp)
        assert bound.command_status == p.ESME_ROK
        assert bound.sc_interface_version == 0x34
        answer = await client.submit(short_message=b"Hello world", registered_delivery=1)
        assert isinstance(answer, p.SubmitSmResp)
        assert answer.command_status == p.ESME_ROK
        assert answer.message_id.isdigit()
        (message,) = await harness.scheduler.wait_for(1)
        assert message.to == "+250788123456"
        assert message.text == "Hello world"
        assert message.sender == "ACME"
        assert message.origin == "smpp:demo"
        harness.report(message, "DELIVRD")
        receipt = await client.read()
        assert isinstance(receipt, p.DeliverSm)
        assert receipt.esm_class == p.ESM_CLASS_DELIVERY_RECEIPT
        assert receipt.optional.receipted_message_id == answer.message_id
        assert receipt.optional.message_state == 2
        text = receipt.short_message.decode("ascii")
        assert text.startswith(f"id:{answer.message_id} sub:001 dlvrd:001 submit date:")
        assert " stat:DELIVRD err:000 text:Hello world" in text
        assert receipt.source_addr == "250788123456"
        assert receipt.destination_addr == "ACME"
        await client.send(p.DeliverSmResp(sequence_number=receipt.sequence_number))
        await client.send(p.Unbind(sequence_number=client.next_sequence()))
        assert isinstance(await client.read(), p.UnbindResp)
        assert await client.closed_by_server()


async def test_submit_before_bind_and_on_receiver_bind_is_refused(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        answer = await client.submit()
        assert answer.command_status == p.ESME_RINVBNDSTS
        assert (await client.bind(p.BindReceiver)).command_status == p.ESME_ROK
        assert (await client.submit()).command_status == p.ESME_RINVBNDSTS
        assert (await client.bind()).command_status == p.ESME_RALYBND


@pytest.mark.parametrize("version", [0x33, 0x34, 0x50])
async def test_interface_versions_accepted(tmp_path: Path, version: int) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        bound = await client.bind(interface_version=version)
        assert bound.command_status == p.ESME_ROK
        assert isinstance(bound, p.BindTransceiverResp)
        # SMPP v3.4 5.3.2.25: no sc_interface_version for a v3.3 ESME.
        assert (bound.sc_interface_version is None) == (version == 0x33)


async def test_wrong_password_and_failed_bind_limit(tmp_path: Path) -> None:
    settings = SmppSettings(
        max_failed_binds=3,
        accounts=[
            SmppAccount(system_id="demo", password="demo"),
            SmppAccount(system_id="other", password="other"),
        ],
    )
    async with smpp_harness(tmp_path, settings) as harness:
        async with await RawClient.connect(harness.port) as client:
            assert (await client.bind(password="nope")).command_status == p.ESME_RINVPASWD
            assert (await client.bind(system_id="who")).command_status == p.ESME_RINVSYSID
            assert (await client.bind(password="nope2")).command_status == p.ESME_RINVPASWD
            assert (await client.bind(password="nope3")).command_status == p.ESME_RINVPASWD
            # demo is blocked from this address now, even with the right password; the
            # connection is closed.
            assert (await client.bind()).command_status == p.ESME_RBINDFAIL
            assert await client.closed_by_server()
        async with await RawClient.connect(harness.port) as client:
            assert (await client.bind()).command_status == p.ESME_RBINDFAIL
        # Another account from the same address is not punished for demo's failures.
        async with await RawClient.connect(harness.port) as client:
            bound = await client.bind(system_id="other", password="other")
            assert bound.command_status == p.ESME_ROK


async def test_unknown_system_ids_are_limited_without_locking_out_accounts(
    tmp_path: Path,
) -> None:
    settings = SmppSettings(max_failed_binds=2)
    async with smpp_harness(tmp_path, settings) as harness:
        async with await RawClient.connect(harness.port) as client:
            assert (await client.bind(system_id="who")).command_status == p.ESME_RINVSYSID
            assert (await client.bind(system_id="what")).command_status == p.ESME_RINVSYSID
            # Unknown names are counted together per address: the third is refused.
            assert (await client.bind(system_id="where")).command_status == p.ESME_RBINDFAIL
            assert await client.closed_by_server()
        async with await RawClient.connect(harness.port) as client:
            assert (await client.bind()).command_status == p.ESME_ROK


async def test_bind_type_not_allowed(tmp_path: Path) -> None:
    settings = SmppSettings(
        accounts=[SmppAccount(system_id="tx", password="pw", bind_types=["transmitter"])]
    )
    async with (
        smpp_harness(tmp_path, settings) as harness,
        await RawClient.connect(harness.port) as client,
    ):
        refused = await client.bind(p.BindReceiver, system_id="tx", password="pw")
        assert refused.command_status == p.ESME_RBINDFAIL
        accepted = await client.bind(p.BindTransmitter, system_id="tx", password="pw")
        assert isinstance(accepted, p.BindTransmitterResp)
        assert accepted.command_status == p.ESME_ROK


async def test_throttled_over_account_rate(tmp_path: Path) -> None:
    settings = SmppSettings(
        accounts=[SmppAccount(system_id="demo", password="demo", throughput=0.001, burst=2)]
    )
    async with (
        smpp_harness(tmp_path, settings) as harness,
        await RawClient.connect(harness.port) as client,
    ):
        await client.bind()
        statuses = [(await client.submit()).command_status for _ in range(4)]
        assert statuses == [p.ESME_ROK, p.ESME_ROK, p.ESME_RTHROTTLED, p.ESME_RTHROTTLED]
        assert len(harness.scheduler.messages) == 2


async def test_refusals_map_to_statuses(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        assert (await client.submit(destination_addr="12")).command_status == p.ESME_RINVDSTADR
        assert (await client.submit(dest_addr_ton=5)).command_status == p.ESME_RINVDSTTON
        assert (await client.submit(data_coding=4)).command_status == p.ESME_RSUBMITFAIL
        assert (await client.submit(short_message=b"")).command_status == p.ESME_RINVMSGLEN
        bad_time = await client.submit(schedule_delivery_time="tomorrow")
        assert bad_time.command_status == p.ESME_RINVSCHED
        assert harness.scheduler.messages == []


@pytest.mark.parametrize(
    ("data_coding", "octets"),
    [
        (0, "Grüße".encode("latin-1")),  # not GSM 03.38 unpacked: a top bit set
        (0, b"page\x1b\x0abreak"),  # GSM's page break is a form feed
        (3, "Grüße".encode()),  # UTF-8 as Latin-1: ß is C3 9F, a C1 control
        (3, b"tab\there"),
        (8, "nul\x00".encode("utf-16-be")),
    ],
)
async def test_a_text_with_control_characters_is_refused_never_journaled(
    tmp_path: Path, data_coding: int, octets: bytes
) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(data_coding=data_coding, short_message=octets)
        assert answer.command_status == p.ESME_RSUBMITFAIL
        assert (await client.submit(short_message=b"next")).command_status == p.ESME_ROK
        (message,) = await harness.scheduler.wait_for(1)
        assert message.text == "next"
        assert sum((await harness.journal.counts()).values()) == 1


async def test_a_long_ucs2_message_with_a_control_character_is_refused_when_joined(
    tmp_path: Path,
) -> None:
    octets = ("Grüße\x1baus Köln " * 5).encode("utf-16-be")
    halves = [octets[:81], octets[81:]]  # the first part ends mid-character
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answers = [
            await client.submit(
                esm_class=0x40,
                data_coding=8,
                registered_delivery=1,
                short_message=bytes((5, 0, 3, 9, 2, seq)) + half,
            )
            for seq, half in enumerate(halves, start=1)
        ]
        # A UCS-2 part is read only with its siblings: the last one carries the refusal,
        # and the first one's id gets a receipt saying REJECTD.
        assert [a.command_status for a in answers] == [p.ESME_ROK, p.ESME_RSUBMITFAIL]
        receipt = await client.read()
        assert isinstance(receipt, p.DeliverSm)
        assert receipt.optional.receipted_message_id == answers[0].message_id
        assert b" stat:REJECTD " in receipt.short_message
        assert sum((await harness.journal.counts()).values()) == 0


@pytest.mark.parametrize(
    ("data_coding", "octets", "text"),
    [
        (0, b"\x00 \x1b\x65uro \x1b\x3c\x1b\x3e", "@ €uro []"),
        (1, b"plain ascii", "plain ascii"),
        (3, "Grüße".encode("latin-1"), "Grüße"),
        (8, "Привет 😀".encode("utf-16-be"), "Привет 😀"),
    ],
)
async def test_data_codings(tmp_path: Path, data_coding: int, octets: bytes, text: str) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(data_coding=data_coding, short_message=octets)
        assert answer.command_status == p.ESME_ROK
        (message,) = await harness.scheduler.wait_for(1)
        assert message.text == text


async def test_long_message_by_udh_16bit_and_sar(tmp_path: Path) -> None:
    text = "é" * 40 + "x" * 30
    octets = text.encode("utf-16-be")
    halves = [octets[:70], octets[70:]]
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        ids = []
        for seq, half in enumerate(halves, start=1):
            udh = bytes((6, 0x08, 4, 0x12, 0x34, 2, seq))
            answer = await client.submit(
                esm_class=0x40, data_coding=8, short_message=udh + half, registered_delivery=1
            )
            assert answer.command_status == p.ESME_ROK
            ids.append(answer.message_id)
        for seq, half in enumerate(halves, start=1):
            answer = await client.submit(
                data_coding=8,
                short_message=half,
                optional=p.OptionalParameters(
                    sar_msg_ref_num=77, sar_total_segments=2, sar_segment_seqnum=seq
                ),
            )
            assert answer.command_status == p.ESME_ROK
        first, second = await harness.scheduler.wait_for(2)
        assert first.text == text
        assert second.text == text
        harness.report(first, "UNDELIV", "34")
        receipts = [await client.read(), await client.read()]
        assert sorted(
            r.optional.receipted_message_id or "" for r in receipts if isinstance(r, p.DeliverSm)
        ) == sorted(ids)
        for receipt in receipts:
            assert isinstance(receipt, p.DeliverSm)
            assert b"stat:UNDELIV err:034" in receipt.short_message
            assert receipt.optional.message_state == 5


async def test_message_payload(tmp_path: Path) -> None:
    text = "A long text in one PDU. " * 20
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        answer = await client.submit(
            short_message=b"", optional=p.OptionalParameters(message_payload=text.encode())
        )
        assert answer.command_status == p.ESME_ROK
        (message,) = await harness.scheduler.wait_for(1)
        assert message.text == text
        assert message.segments == 4


async def test_receipt_resent_after_reconnect_until_acknowledged(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness:
        async with await RawClient.connect(harness.port) as sender:
            await sender.bind(p.BindTransmitter)
            answer = await sender.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "DELIVRD")
        async with await RawClient.connect(harness.port) as receiver:
            await receiver.bind(p.BindReceiver)
            first = await receiver.read()
            assert isinstance(first, p.DeliverSm)
            assert first.optional.receipted_message_id == answer.message_id
            # Not acknowledged: gone with the connection.
        async with await RawClient.connect(harness.port) as receiver:
            await receiver.bind(p.BindReceiver)
            again = await receiver.read()
            assert isinstance(again, p.DeliverSm)
            assert again.optional.receipted_message_id == answer.message_id
            await receiver.send(p.DeliverSmResp(sequence_number=again.sequence_number))
            await receiver.send(p.EnquireLink(sequence_number=receiver.next_sequence()))
            assert isinstance(await receiver.read(), p.EnquireLinkResp)


async def test_receipts_survive_a_restart(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness:
        async with await RawClient.connect(harness.port) as sender:
            await sender.bind(p.BindTransmitter)
            answer = await sender.submit(registered_delivery=1)
        (message,) = await harness.scheduler.wait_for(1)
        harness.report(message, "EXPIRED")
        # Stopping now: the report may still be unread; it goes back to the outbox then.
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as receiver:
        await receiver.bind(p.BindReceiver)
        receipt = await receiver.read()
        assert isinstance(receipt, p.DeliverSm)
        assert receipt.optional.receipted_message_id == answer.message_id
        assert b"stat:EXPIRED" in receipt.short_message


async def test_no_receipt_unless_asked(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        await client.submit(registered_delivery=0)
        await client.submit(registered_delivery=2)  # on failure only
        first, second = await harness.scheduler.wait_for(2)
        harness.report(first, "UNDELIV")
        harness.report(second, "DELIVRD")
        await client.send(p.EnquireLink(sequence_number=client.next_sequence()))
        assert isinstance(await client.read(), p.EnquireLinkResp)
        third = await client.submit(registered_delivery=2)
        (*_, message) = await harness.scheduler.wait_for(3)
        harness.report(message, "REJECTD")
        receipt = await client.read()
        assert isinstance(receipt, p.DeliverSm)
        assert receipt.optional.receipted_message_id == third.message_id


# ── malformed input: answered or closed, never a crash ────────────────────────


async def _still_serving(port: int) -> None:
    async with await RawClient.connect(port) as client:
        assert (await client.bind()).command_status == p.ESME_ROK


async def test_bad_command_length_gets_nack_and_close(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness:
        for length in (4, 15, 10_000_000):
            async with await RawClient.connect(harness.port) as client:
                await client.send_bytes(HEADER.pack(length, p.ENQUIRE_LINK, 0, 9))
                nack = await client.read()
                assert isinstance(nack, p.GenericNack)
                assert nack.command_status == p.ESME_RINVCMDLEN
                assert await client.closed_by_server()
        await _still_serving(harness.port)


async def test_unknown_command_and_truncated_body_get_nack(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        await client.send_bytes(HEADER.pack(16, 0x00000099, 0, 5))
        nack = await client.read()
        assert isinstance(nack, p.GenericNack)
        assert (nack.command_status, nack.sequence_number) == (p.ESME_RINVCMDID, 5)
        whole = encode_pdu(p.SubmitSm(sequence_number=6, destination_addr="250788123456"))
        cut = whole[:30]
        await client.send_bytes(HEADER.pack(len(cut), p.SUBMIT_SM, 0, 6) + cut[16:])
        nack = await client.read()
        assert isinstance(nack, p.GenericNack)
        assert nack.sequence_number == 6
        # Known but unserved commands get their own response with ESME_RINVCMDID.
        await client.send_bytes(HEADER.pack(16, p.QUERY_SM, 0, 7))
        answer = await client.read()
        assert isinstance(answer, p.HeaderOnly)
        assert (answer.command, answer.command_status) == (
            p.response_id(p.QUERY_SM),
            p.ESME_RINVCMDID,
        )
        # The session goes on.
        assert (await client.submit()).command_status == p.ESME_ROK


async def test_random_bytes_never_crash_the_server(tmp_path: Path) -> None:
    generator = random.Random(7)
    async with smpp_harness(tmp_path) as harness:
        for _ in range(20):
            async with await RawClient.connect(harness.port) as client:
                junk = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 300)))
                await client.send_bytes(junk)
        await _still_serving(harness.port)
        assert harness.scheduler.messages == []


async def test_a_part_waits_across_a_restart(tmp_path: Path) -> None:
    text = "x" * 200
    halves = [text[:153].encode(), text[153:].encode()]
    udh = [bytes((5, 0, 3, 9, 2, seq)) for seq in (1, 2)]
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        first = await client.submit(esm_class=0x40, short_message=udh[0] + halves[0])
        assert first.command_status == p.ESME_ROK
    async with smpp_harness(tmp_path) as harness, await RawClient.connect(harness.port) as client:
        await client.bind()
        second = await client.submit(esm_class=0x40, short_message=udh[1] + halves[1])
        assert second.command_status == p.ESME_ROK
        (message,) = await harness.scheduler.wait_for(1)
        assert message.text == text


async def test_incomplete_long_message_gets_undeliv_receipts(tmp_path: Path) -> None:
    settings = SmppSettings(reassembly_timeout_s=0.01)
    async with (
        smpp_harness(tmp_path, settings) as harness,
        await RawClient.connect(harness.port) as client,
    ):
        await client.bind()
        lonely = await client.submit(
            esm_class=0x40, registered_delivery=1, short_message=bytes((5, 0, 3, 1, 3, 1)) + b"a"
        )
        receipt = await client.read()
        assert isinstance(receipt, p.DeliverSm)
        assert receipt.optional.receipted_message_id == lonely.message_id
        assert b"stat:UNDELIV" in receipt.short_message
        assert harness.scheduler.messages == []
