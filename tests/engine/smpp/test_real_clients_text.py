"""Text as SMPP clients nobody here wrote send it (issue 17): each way smpplib, aiosmpplib,
node-smpp and Kannel put "Grüße aus Köln" into a submit_sm is journaled as written, with
the account's data_coding_0 / data_coding_1 where the client needs one; a text the account
would read wrongly is refused with ESME_RSUBMITFAIL and one log line, never journaled.

node-smpp and Kannel are not Python: what they send is sent here with smpplib, octet for
octet as their sources build it (cited at each test)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiosmpplib
import anyio
import pytest
import smpplib.consts
import smpplib.gsm
import structlog
from structlog.testing import capture_logs

import engine.smpp.server
from engine.smpp import pdu as p
from engine.smpp.server import SmppAccount, SmppSettings
from engine.smpp.text import Alphabet
from tests.engine.smpp.harness import SmppHarness, smpp_harness
from tests.engine.smpp.test_real_clients import Recorder, SmpplibSession

pytestmark = pytest.mark.anyio

GREETING = "Grüße aus Köln"


def settings(**accounts: tuple[Alphabet, Alphabet]) -> SmppSettings:
    """One account per name (its password the same), reading data_coding 0 and 1 as given."""
    return SmppSettings(
        accounts=[
            SmppAccount(system_id=name, password=name, data_coding_0=zero, data_coding_1=one)
            for name, (zero, one) in accounts.items()
        ]
    )


async def journaled_texts(harness: SmppHarness, count: int) -> list[str]:
    """The texts of the first `count` messages as the journal holds them."""
    messages = (await harness.scheduler.wait_for(count))[:count]
    stored = await harness.journal.get([message.msg_id for message in messages])
    return [stored[message.msg_id].text for message in messages]


async def journaled_total(harness: SmppHarness) -> int:
    return sum((await harness.journal.counts()).values())


@pytest.fixture
def smpp_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """What the SMPP server logs during the test (a fresh logger: the module's may have
    been cached by a configured structlog elsewhere in the run)."""
    monkeypatch.setattr(engine.smpp.server, "log", structlog.get_logger("septet.smpp"))
    with capture_logs() as logs:
        yield logs


def refusals(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "smpp_text_refused"]


# ── smpplib ───────────────────────────────────────────────────────────────────


async def test_smpplib_gsm_and_latin1_are_journaled_as_written(tmp_path: Path) -> None:
    async with smpp_harness(tmp_path) as harness:
        session = SmpplibSession(harness.port)
        await session.bind()
        # smpplib.gsm.make_parts: data_coding 0 with its gsm_encode (GSM 03.38 unpacked,
        # escape + code for the extension table) by default; Latin-1 as 3 when asked.
        await session.send(GREETING)
        await session.send("Preis: 5€ [netto] {ca.} ~ | ^ \\")
        (latin1,), data_coding, _ = smpplib.gsm.make_parts(
            GREETING, encoding=smpplib.consts.SMPP_ENCODING_ISO88591
        )
        assert data_coding == 3
        assert isinstance(await session.send_octets(latin1, data_coding), str)
        assert await journaled_texts(harness, 3) == [
            GREETING,
            "Preis: 5€ [netto] {ca.} ~ | ^ \\",
            GREETING,
        ]
        await session.close()


async def test_kannel_alt_charset_latin1_as_data_coding_0(
    tmp_path: Path, smpp_logs: list[MutableMapping[str, Any]]
) -> None:
    # Kannel's smsc_smpp.c msg_to_pdu: with `alt-charset = ISO-8859-1`, data_coding 0
    # carries the text converted to that charset (charset_convert), not to GSM.
    latin1 = GREETING.encode("latin-1")
    async with smpp_harness(
        tmp_path, settings(kannel=("latin1", "gsm"), demo=("gsm", "gsm"))
    ) as harness:
        kannel = SmpplibSession(harness.port, system_id="kannel", password="kannel")
        demo = SmpplibSession(harness.port)
        await kannel.bind()
        await demo.bind()
        # Read as GSM 03.38 this was "Grö§e aus Kvln": now refused, nothing journaled.
        assert await demo.send_octets(latin1, 0) == p.ESME_RSUBMITFAIL
        assert isinstance(await kannel.send_octets(latin1, 0), str)
        assert await journaled_texts(harness, 1) == [GREETING]
        assert await journaled_total(harness) == 1
        (refused,) = refusals(smpp_logs)
        assert refused["log_level"] == "warning"
        assert refused["system_id"] == "demo"
        assert refused["data_coding"] == 0
        assert (refused["coding"], refused["fault"], refused["found"]) == (
            "gsm",
            "eight_bit_octet",
            "0xFC",
        )
        assert refused["readable_as"] == ["latin1"]  # what data_coding_0 should say
        await kannel.close()
        await demo.close()


async def test_node_smpp_gsm_as_data_coding_1(
    tmp_path: Path, smpp_logs: list[MutableMapping[str, Any]]
) -> None:
    # node-smpp lib/defs.js, filters.message.encode: a string with no data_coding gets
    # the first encoding that matches, `ASCII`, which is GSM 03.38 (gsmCoder.encode),
    # and data_coding consts.ENCODING.ASCII = 0x01.
    gsm = smpplib.gsm.gsm_encode(GREETING)
    assert b"\x1e" in gsm  # ß: a control character if read as IA5
    async with smpp_harness(tmp_path, settings(node=("gsm", "gsm"), ia5=("gsm", "ascii"))) as h:
        node = SmpplibSession(h.port, system_id="node", password="node")
        ia5 = SmpplibSession(h.port, system_id="ia5", password="ia5")
        await node.bind()
        await ia5.bind()
        assert isinstance(await node.send_octets(gsm, 1), str)
        # Before: journaled with NUL and ESC. An account that reads 1 as IA5 refuses it.
        assert await ia5.send_octets(gsm, 1) == p.ESME_RSUBMITFAIL
        assert await ia5.send_octets(smpplib.gsm.gsm_encode("Mail @ 5€"), 1) == (p.ESME_RSUBMITFAIL)
        assert await journaled_texts(h, 1) == [GREETING]
        assert await journaled_total(h) == 1
        first, second = refusals(smpp_logs)
        assert (first["system_id"], first["data_coding"], first["coding"]) == ("ia5", 1, "ascii")
        assert (first["fault"], first["found"], first["readable_as"]) == (
            "control_character",
            "U+001E",
            ["gsm"],
        )
        assert (second["found"], second["position"]) == ("U+0000", 5)  # GSM '@' is 0x00
        await node.close()
        await ia5.close()


async def test_a_long_message_whose_part_is_unreadable_is_refused_at_that_part(
    tmp_path: Path, smpp_logs: list[MutableMapping[str, Any]]
) -> None:
    text = GREETING + ", " + "und viele Grüße zurück! " * 8
    async with smpp_harness(tmp_path, settings(ia5=("gsm", "ascii"))) as harness:
        session = SmpplibSession(harness.port, system_id="ia5", password="ia5")
        await session.bind()
        parts, _, esm_class = smpplib.gsm.make_parts(text)  # UDH parts of GSM octets
        assert (len(parts), esm_class) == (2, smpplib.consts.SMPP_GSMFEAT_UDHI)
        # The first part is refused as it comes, not stored to wait for the second.
        assert await session.send_octets(parts[0], 1, esm_class) == p.ESME_RSUBMITFAIL
        assert await journaled_total(harness) == 0
        assert [line["system_id"] for line in refusals(smpp_logs)] == ["ia5"]
        await session.close()


# ── aiosmpplib ───────────────────────────────────────────────────────────────


async def aiosmpplib_submit(
    harness: SmppHarness,
    account: str,
    text: str,
    *,
    encoding: str = "",
    default_encoding: str = "gsm0338",
) -> tuple[int, aiosmpplib.SubmitSmResp]:
    """Send `text` as aiosmpplib does; the data_coding it put on the wire and the answer."""
    hook = Recorder()
    esme = aiosmpplib.ESME(
        smsc_host="127.0.0.1",
        smsc_port=harness.port,
        system_id=account,
        password=account,
        hook=hook,
        default_encoding=default_encoding,
        log_level="WARNING",
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(esme.start)
        await esme.broker.enqueue(
            aiosmpplib.SubmitSm(
                short_message=text,
                source=aiosmpplib.PhoneNumber("ACME", aiosmpplib.TON.ALPHANUMERIC),
                destination=aiosmpplib.PhoneNumber("380501234567", aiosmpplib.TON.INTERNATIONAL),
                encoding=encoding,
                log_id="one",
            )
        )
        answer = await hook.wait_for(aiosmpplib.SubmitSmResp)
        await esme.stop()
        tg.cancel_scope.cancel()
    (submit,) = [pdu for pdu in hook.sent if pdu[4:8] == p.SUBMIT_SM.to_bytes(4, "big")]
    # data_coding follows the three addresses' C strings (SMPP v3.4 4.4.1): found from
    # the destination's end, past esm_class .. replace_if_present_flag.
    after_destination = submit.index(b"380501234567\x00") + len(b"380501234567\x00")
    nul = submit.index(b"\x00", after_destination + 3)  # schedule_delivery_time
    nul = submit.index(b"\x00", nul + 1)  # validity_period
    return submit[nul + 3], answer


async def test_aiosmpplib_each_way_it_sends_text(
    tmp_path: Path, smpp_logs: list[MutableMapping[str, Any]]
) -> None:
    accounts = settings(demo=("gsm", "gsm"), kannel=("latin1", "gsm"), ia5=("gsm", "ascii"))
    ascii_text = "Mail me @ home_[1] {x} ~"
    async with smpp_harness(tmp_path, accounts) as harness:
        # Its default: GSM 03.38 unpacked (GSM7BitCodec) as data_coding 0.
        coding, answer = await aiosmpplib_submit(harness, "demo", GREETING + " 5€")
        assert (coding, answer.command_status) == (0, p.ESME_ROK)
        # default_encoding="latin_1": Latin-1 as 0, what Kannel's alt-charset sends.
        coding, answer = await aiosmpplib_submit(
            harness, "kannel", GREETING, default_encoding="latin_1"
        )
        assert (coding, answer.command_status) == (0, p.ESME_ROK)
        # encoding="ascii": IA5 as 1, as section 5.2.19 says, for an account that means it.
        coding, answer = await aiosmpplib_submit(harness, "ia5", ascii_text, encoding="ascii")
        assert (coding, answer.command_status) == (1, p.ESME_ROK)
        assert await journaled_texts(harness, 3) == [GREETING + " 5€", GREETING, ascii_text]
        # The same Latin-1 on an account that reads 0 as GSM: refused, not "Grö§e aus Kvln".
        coding, answer = await aiosmpplib_submit(
            harness, "demo", GREETING, default_encoding="latin_1"
        )
        assert (coding, answer.command_status) == (0, p.ESME_RSUBMITFAIL)
        assert await journaled_total(harness) == 3
        assert [(line["system_id"], line["data_coding"]) for line in refusals(smpp_logs)] == [
            ("demo", 0)
        ]
