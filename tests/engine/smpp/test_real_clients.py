"""serve_smpp against SMPP clients nobody here wrote: smpplib (blocking sockets, run in a
worker thread) and aiosmpplib (asyncio, in the test's own loop)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiosmpplib
import anyio
import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp

from engine.smpp import pdu as p
from tests.engine.smpp.harness import AcceptGate, smpp_harness

pytestmark = pytest.mark.anyio

RECEIPT = re.compile(
    r"id:(?P<id>\d+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:\d{10} done date:\d{10}"
    r" stat:(?P<stat>[A-Z]{7}) err:(?P<err>\d{3}) text:(?P<text>.*)"
)


class SmpplibSession:
    """One smpplib transceiver; every blocking call runs in a worker thread. `bind_fields`
    go into its bind_transceiver (system_id and password are demo's unless given)."""

    def __init__(self, port: int, **bind_fields: str) -> None:
        self.client = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
        self.bind_fields = {"system_id": "demo", "password": "demo", **bind_fields}
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self.client.set_message_sent_handler(lambda pdu, **_: self.sent.append(pdu))
        self.client.set_message_received_handler(lambda pdu, **_: self.received.append(pdu))

    async def run(self, work: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(work, *args)

    def _bind(self) -> None:
        self.client.connect()
        self.client.bind_transceiver(**self.bind_fields)

    def _send(self, text: str, registered_delivery: int = 1, **addresses: Any) -> int:
        parts, encoding, esm_class = smpplib.gsm.make_parts(text)
        fields: dict[str, Any] = {
            "source_addr_ton": smpplib.consts.SMPP_TON_ALNUM,
            "source_addr": "ACME",
            "dest_addr_ton": smpplib.consts.SMPP_TON_INTL,
            "destination_addr": "250788123456",
        }
        fields.update(addresses)
        for part in parts:
            self.client.send_message(
                short_message=part,
                data_coding=encoding,
                esm_class=esm_class,
                registered_delivery=registered_delivery,
                **fields,
            )
        return len(parts)

    def _send_octets(self, octets: bytes, data_coding: int, esm_class: int) -> None:
        self.client.send_message(
            esm_class=esm_class,
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="ACME",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr="250788123456",
            short_message=octets,
            data_coding=data_coding,
            registered_delivery=1,
        )

    def _read(self, count: int, into: list[Any]) -> None:
        # The server's enquire_link timer is 30 s, so smpplib need not probe; its 5 s
        # socket timeout then ends a read that waits for a PDU that never comes.
        while len(into) < count:
            try:
                self.client.read_once(auto_send_enquire_link=False)
            except TimeoutError:
                raise AssertionError(f"{len(into)} PDUs came, not {count}") from None

    async def bind(self) -> None:
        await self.run(self._bind)

    async def send(self, text: str, **addresses: Any) -> list[str]:
        """Submit `text` (split by smpplib as it likes) and return the message ids."""
        before = len(self.sent)
        parts = await self.run(lambda: self._send(text, **addresses))
        await self.run(self._read, before + parts, self.sent)
        return [pdu.message_id.decode() for pdu in self.sent[before:]]

    async def send_octets(self, octets: bytes, data_coding: int, esm_class: int = 0) -> str | int:
        """Submit octets as they are with `data_coding`: the message id, or the status
        of the refusal."""
        before = len(self.sent)
        await self.run(self._send_octets, octets, data_coding, esm_class)
        try:
            await self.run(self._read, before + 1, self.sent)
        except smpplib.exceptions.PDUError as refused:
            status: int = refused.args[1]
            return status
        return str(self.sent[before].message_id.decode())

    async def receipts(self, count: int) -> list[Any]:
        await self.run(self._read, count, self.received)
        return self.received[:count]

    async def close(self) -> None:
        await self.run(self.client.unbind)
        await self.run(self.client.disconnect)


async def test_smpplib_short_gsm_and_long_ucs2_with_emoji(tmp_path: Path) -> None:
    long_text = "Привет, мир! 😀 Это длинное сообщение в UCS-2. " * 3
    async with smpp_harness(tmp_path) as harness:
        session = SmpplibSession(harness.port)
        await session.bind()
        short_ids = await session.send("Hello from smpplib @ 10€")
        long_ids = await session.send(long_text)
        assert len(short_ids) == 1
        assert len(long_ids) == 3  # UDH with an 8-bit reference, 67 UCS-2 units a part
        assert all(value.isdigit() for value in short_ids + long_ids)
        short, joined = await harness.scheduler.wait_for(2)
        assert short.text == "Hello from smpplib @ 10€"
        assert joined.text == long_text  # one septet message for the three parts
        assert joined.encoding == "UCS-2"
        harness.report(short, "DELIVRD")
        harness.report(joined, "UNDELIV", "5")
        receipts = await session.receipts(4)
        seen = {}
        for pdu in receipts:
            assert pdu.esm_class == 0x04  # SMPP v3.4 5.2.12: SMSC delivery receipt
            match = RECEIPT.fullmatch(pdu.short_message.decode("ascii", "replace"))
            assert match is not None
            assert pdu.receipted_message_id.decode() == match["id"]
            seen[match["id"]] = (match["stat"], match["err"], pdu.message_state)
        assert seen[short_ids[0]] == ("DELIVRD", "000", 2)
        for part_id in long_ids:
            assert seen[part_id] == ("UNDELIV", "005", 5)
        await session.close()


async def test_smpplib_sees_throttling(tmp_path: Path) -> None:
    from engine.smpp.server import SmppAccount, SmppSettings

    settings = SmppSettings(
        accounts=[SmppAccount(system_id="demo", password="demo", throughput=0.001, burst=1)]
    )
    async with smpp_harness(tmp_path, settings) as harness:
        session = SmpplibSession(harness.port)
        await session.bind()
        assert len(await session.send("first")) == 1
        await session.run(session._send, "second")
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            await session.run(session._read, 2, session.sent)
        assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RTHROTTLED
        await session.close()


async def test_smpplib_gets_one_receipt_for_the_final_state_only(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness:
        session = SmpplibSession(harness.port)
        await session.bind()
        (first_id,) = await session.send(
            "Your code:\n1234",
            source_addr_npi=smpplib.consts.SMPP_NPI_UNK,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
        )
        (message,) = await harness.scheduler.wait_for(1)
        harness.status(message, "UNKNOWN", "unknown")  # BSG polled before its report
        harness.status(message, "ENROUTE")
        harness.report(message, "DELIVRD")
        (receipt,) = await session.receipts(1)
        match = RECEIPT.fullmatch(receipt.short_message.decode("ascii"))
        assert match is not None
        assert (match["id"], match["stat"]) == (first_id, "DELIVRD")
        assert match["text"] == "Your code: 1234"  # no line break inside the receipt
        # SMPP v3.4 4.6.1: the receipt's addresses are the submit's, swapped with their
        # TON and NPI.
        assert receipt.source_addr.decode() == "250788123456"
        assert (receipt.source_addr_ton, receipt.source_addr_npi) == (
            smpplib.consts.SMPP_TON_INTL,
            smpplib.consts.SMPP_NPI_ISDN,
        )
        assert receipt.destination_addr.decode() == "ACME"
        assert (receipt.dest_addr_ton, receipt.dest_addr_npi) == (
            smpplib.consts.SMPP_TON_ALNUM,
            smpplib.consts.SMPP_NPI_UNK,
        )
        # A second final event for the same message sends nothing: the next receipt
        # smpplib reads is the next message's.
        harness.fail(message, "21")
        harness.report(message, "DELIVRD")
        (second_id,) = await session.send("second")
        _, second = await harness.scheduler.wait_for(2)
        harness.report(second, "EXPIRED")
        _, next_receipt = await session.receipts(2)
        match = RECEIPT.fullmatch(next_receipt.short_message.decode("ascii"))
        assert match is not None
        assert (match["id"], match["stat"]) == (second_id, "EXPIRED")
        await session.close()


async def test_smpplib_gets_every_submit_sm_resp_before_its_unbind_resp(tmp_path: Path) -> None:
    gate = AcceptGate()
    async with smpp_harness(tmp_path, wrap_accept=gate.wrap) as harness:
        session = SmpplibSession(harness.port)
        await session.bind()
        client = session.client

        def submit_three_then_unbind() -> list[str]:
            for n in range(3):
                client.send_message(
                    source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
                    source_addr="ACME",
                    dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                    destination_addr="250788123456",
                    short_message=f"message {n}".encode(),
                )
            client.send_pdu(smpplib.smpp.make_pdu("unbind", client=client))
            return [client.read_pdu().command for _ in range(4)]

        answers: list[str] = []

        async def run() -> None:
            answers.extend(await session.run(submit_three_then_unbind))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await gate.wait_for(3)  # all three in progress when the unbind arrives
            gate.open()
        assert answers == ["submit_sm_resp"] * 3 + ["unbind_resp"]
        await session.run(client.disconnect)


class Recorder(aiosmpplib.AbstractHook):  # type: ignore[misc]  # untyped library
    def __init__(self) -> None:
        self.messages: list[aiosmpplib.SmppMessage] = []
        self.sent: list[bytes] = []
        self.changed = anyio.Event()

    async def sending(
        self, smpp_message: aiosmpplib.SmppMessage, pdu: bytes, client_id: str
    ) -> None:
        self.sent.append(pdu)

    async def received(
        self, smpp_message: aiosmpplib.SmppMessage | None, pdu: bytes, client_id: str
    ) -> None:
        if smpp_message is not None:
            self.messages.append(smpp_message)
            self.changed.set()
            self.changed = anyio.Event()

    async def send_error(
        self, smpp_message: aiosmpplib.SmppMessage, error: Exception, client_id: str
    ) -> None:
        raise AssertionError(f"aiosmpplib could not send: {error!r}")

    async def wait_for(self, kind: type[Any]) -> Any:
        with anyio.fail_after(5):
            while True:
                for message in self.messages:
                    if isinstance(message, kind):
                        return message
                await self.changed.wait()


async def test_aiosmpplib_message_payload_and_receipt(tmp_path: Path) -> None:
    text = "message_payload carries this whole text in one PDU. " * 6
    async with smpp_harness(tmp_path) as harness, anyio.create_task_group() as tg:
        hook = Recorder()
        esme = aiosmpplib.ESME(
            smsc_host="127.0.0.1",
            smsc_port=harness.port,
            system_id="demo",
            password="demo",
            hook=hook,
            log_level="WARNING",
        )
        tg.start_soon(esme.start)
        await esme.broker.enqueue(
            aiosmpplib.SubmitSm(
                short_message=text,
                source=aiosmpplib.PhoneNumber("ACME", aiosmpplib.TON.ALPHANUMERIC),
                destination=aiosmpplib.PhoneNumber("380501234567", aiosmpplib.TON.INTERNATIONAL),
                registered_delivery=1,
                log_id="one",
            )
        )
        answer = await hook.wait_for(aiosmpplib.SubmitSmResp)
        assert answer.message_id.isdigit()
        (submit,) = [pdu for pdu in hook.sent if pdu[4:8] == b"\x00\x00\x00\x04"]
        assert b"\x04\x24" in submit  # the message_payload TLV tag (SMPP v3.4 5.3.2.32)
        (message,) = await harness.scheduler.wait_for(1)
        assert message.text == text
        assert message.to == "+380501234567"
        harness.report(message, "DELIVRD")
        receipt = await hook.wait_for(aiosmpplib.DeliverSm)
        assert receipt.is_receipt()
        parsed = receipt.parse_receipt()
        assert parsed["id"] == answer.message_id
        assert parsed["stat"] == "DELIVRD"
        await esme.stop()
        tg.cancel_scope.cancel()


async def test_aiosmpplib_answers_the_unbind_of_a_stopping_server(tmp_path: Path) -> None:
    hook = Recorder()
    async with anyio.create_task_group() as tg:
        # The server would wait a minute for the unbind_resp: stopping within the bound
        # means aiosmpplib's answer ended the session.
        with anyio.fail_after(10):
            async with smpp_harness(tmp_path, unbind_wait_s=60) as harness:
                esme = aiosmpplib.ESME(
                    smsc_host="127.0.0.1",
                    smsc_port=harness.port,
                    system_id="demo",
                    password="demo",
                    hook=hook,
                    log_level="WARNING",
                )
                tg.start_soon(esme.start)
                await hook.wait_for(aiosmpplib.BindTransceiverResp)
        await esme.stop()
        tg.cancel_scope.cancel()
    assert any(isinstance(message, aiosmpplib.Unbind) for message in hook.messages)
    answers = [pdu for pdu in hook.sent if pdu[4:8] == p.UNBIND_RESP.to_bytes(4, "big")]
    assert len(answers) == 1


async def test_two_smpplib_links_of_one_account_each_get_their_own_receipts(
    tmp_path: Path,
) -> None:
    # Two Kannel-like links on one account: each binds with its own system_type (Kannel
    # sends its smsc group's system-type, and matches a receipt only on the link that
    # submitted its message: dlr_find by smsc-id).
    async with smpp_harness(tmp_path) as harness:
        links = [SmpplibSession(harness.port, system_type=name) for name in ("link-a", "link-b")]
        for link in links:
            await link.bind()
        sent = [
            [(await link.send(f"{n} via link {name}"))[0] for n in range(3)]
            for link, name in zip(links, "ab", strict=True)
        ]
        for message in await harness.scheduler.wait_for(6):
            harness.report(message, "DELIVRD")
        for link, ids in zip(links, sent, strict=True):
            receipts = await link.receipts(3)  # an AssertionError if fewer come
            assert [pdu.receipted_message_id.decode() for pdu in receipts] == ids
        for link in links:
            await link.close()
