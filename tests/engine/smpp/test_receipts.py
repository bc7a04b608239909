"""Which septet events make an SMPP receipt, and the deliver_sm built from one."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.models import (
    Accepted,
    CancelledEvent,
    DeliveryReport,
    Event,
    Failed,
    FailoverEvent,
    RetryEvent,
    StatusEvent,
    SubmittedEvent,
    encode_event_line,
)
from engine.smpp import pdu as p
from engine.smpp.codec import decode_pdu, encode_pdu
from engine.smpp.receipts import (
    build_receipt,
    outcome_of,
    outcome_of_final,
    receipt_pdu,
    wants_receipt,
)
from engine.smpp.store import GivenId, Outcome
from engine.smpp.text import Alphabet

TS = dt.datetime(2026, 11, 22, 8, 30, tzinfo=dt.UTC)


def dlr(state: str, status: str = "0") -> DeliveryReport:
    return DeliveryReport(
        id=None, msg_id="7", ts=TS, state=state, provider_status=status, bridge="dsc"
    )


@pytest.mark.parametrize(
    ("event", "state", "error"),
    [
        (dlr("DELIVRD"), "DELIVRD", "000"),
        (dlr("UNDELIV", "E34"), "UNDELIV", "034"),
        (dlr("EXPIRED"), "EXPIRED", "000"),
        (dlr("REJECTD", "12"), "REJECTD", "012"),
        (dlr("DELETED"), "DELETED", "000"),
        (dlr("UNKNOWN"), "UNKNOWN", "000"),
        (Failed(id=None, msg_id="7", ts=TS, error="no", code="21"), "UNDELIV", "021"),
        (Failed(id=None, msg_id="7", ts=TS, error="?", code="unknown"), "UNKNOWN", "000"),
        (CancelledEvent(id=None, msg_id="7", ts=TS), "DELETED", "000"),
    ],
)
def test_a_final_event_is_an_outcome(event: Event, state: str, error: str) -> None:
    assert outcome_of(encode_event_line(event)) == ("7", Outcome(state, error, TS.timestamp()))


@pytest.mark.parametrize("state", ["REJECTD", "EXPIRED", "UNDELIV", "UNKNOWN"])
def test_a_failed_event_naming_its_state_keeps_it(state: str) -> None:
    event = Failed(id=None, msg_id="7", ts=TS, error="no", code="3", state=state)
    assert outcome_of(encode_event_line(event)) == ("7", Outcome(state, "003", TS.timestamp()))


@pytest.mark.parametrize(
    "event",
    [
        StatusEvent(
            id=None, msg_id="7", ts=TS, state="UNKNOWN", provider_status="unknown", bridge="bsg"
        ),
        StatusEvent(
            id=None, msg_id="7", ts=TS, state="ENROUTE", provider_status="1", bridge="smsclub"
        ),
        dlr("ENROUTE"),
        dlr("ACCEPTD"),
        Failed(id=None, msg_id="7", ts=TS, error="retrying", code="500", final=False),
        RetryEvent(id=None, msg_id="7", ts=TS, at=TS, attempt=2, reason="503", bridge="dsc"),
        FailoverEvent(
            id=None,
            msg_id="7",
            ts=TS,
            from_bridge="dsc",
            bridge="bsg",
            reason="circuit open",
            cost=0.1,
            currency="EUR",
        ),
        SubmittedEvent(
            id=None,
            msg_id="7",
            ts=TS,
            provider_id="p1",
            bridge="dsc",
            cost=75.0,
            currency="RWF",
            provider_cost=75.0,
            provider_currency="RWF",
        ),
        Accepted(
            id=None,
            msg_id="7",
            ts=TS,
            to="+250788123456",
            encoding="GSM-7",
            segments=1,
            cost=0.1,
            currency="EUR",
            bridge="dsc",
        ),
    ],
)
def test_no_other_event_is_an_outcome(event: Event) -> None:
    assert outcome_of(encode_event_line(event)) is None


def test_a_line_that_is_not_an_event_is_no_outcome() -> None:
    assert outcome_of(b"not json\n") is None
    assert outcome_of(b'{"event": "dlr"}\n') is None


def test_registered_delivery_decides_which_outcomes_get_a_receipt() -> None:
    assert wants_receipt(1, "DELIVRD")
    assert wants_receipt(1, "UNDELIV")
    assert not wants_receipt(2, "DELIVRD")
    assert wants_receipt(2, "EXPIRED")
    assert not wants_receipt(0, "UNDELIV")
    assert not wants_receipt(0x10, "UNDELIV")  # other bits ask for no SMSC receipt


def row(**fields: object) -> GivenId:
    values: dict[str, object] = {
        "id": 42,
        "system_id": "demo",
        "msg_id": "7",
        "registered_delivery": 1,
        "submitted_at": TS.timestamp(),
        "source_addr": "ACME",
        "destination_addr": "250788123456",
        "text_head": "Hello\nworld",
    }
    values.update(fields)
    return GivenId(**values)  # type: ignore[arg-type]


def test_the_receipt_mirrors_the_submits_addresses_with_their_ton_and_npi() -> None:
    given = row(source_addr_ton=5, source_addr_npi=0, dest_addr_ton=1, dest_addr_npi=1)
    receipt = build_receipt(given, Outcome("DELIVRD", "000", TS.timestamp() + 60))
    assert receipt is not None
    pdu = decode_pdu(encode_pdu(receipt_pdu(receipt, 3)))
    assert isinstance(pdu, p.DeliverSm)
    # SMPP v3.4 4.6.1: the receipt goes from the handset back to the sender.
    assert (pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi) == ("250788123456", 1, 1)
    assert (pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi) == ("ACME", 5, 0)
    assert pdu.esm_class == p.ESM_CLASS_DELIVERY_RECEIPT
    assert pdu.optional.receipted_message_id == "42"
    assert pdu.optional.message_state == p.MESSAGE_STATES["DELIVRD"]
    assert pdu.short_message.endswith(b" stat:DELIVRD err:000 text:Hello world")


def test_international_numbers_both_ways() -> None:
    given = row(
        source_addr="380501234567",
        source_addr_ton=1,
        source_addr_npi=1,
        dest_addr_ton=2,
        dest_addr_npi=8,
    )
    receipt = build_receipt(given, Outcome("UNDELIV", "005", TS.timestamp()))
    assert receipt is not None
    pdu = receipt_pdu(receipt, 1)
    assert (pdu.source_addr_ton, pdu.source_addr_npi) == (2, 8)
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi) == (1, 1)


def test_no_receipt_when_none_was_asked_for() -> None:
    assert build_receipt(row(registered_delivery=0), Outcome("UNDELIV", "0", 0)) is None
    assert build_receipt(row(registered_delivery=2), Outcome("DELIVRD", "0", 0)) is None


@pytest.mark.parametrize(
    ("alphabet", "octets"),
    [
        ("gsm", b"Gr\x7e\x1ee \x1b\x65"),  # 3GPP TS 23.038: ü 0x7E, ß 0x1E, € escape 0x65
        ("latin1", b"Gr\xfc\xdfe ?"),  # Kannel's alt-charset = ISO-8859-1 reads it so
        ("ascii", b"Gr??e ?"),
    ],
)
def test_the_receipt_text_is_in_the_accounts_alphabet_for_data_coding_0(
    alphabet: Alphabet, octets: bytes
) -> None:
    receipt = build_receipt(row(text_head="Grüße €"), Outcome("DELIVRD", "000", TS.timestamp()))
    assert receipt is not None
    pdu = receipt_pdu(receipt, 1, alphabet)
    assert pdu.data_coding == 0
    assert pdu.short_message.endswith(b" text:" + octets)


@pytest.mark.parametrize(
    ("outcome", "code", "expected"),
    [
        ("DELIVRD", "5", Outcome("DELIVRD", "000", 9.0)),
        ("UNDELIV", "E34", Outcome("UNDELIV", "034", 9.0)),
        ("CANCELLED", None, Outcome("DELETED", "000", 9.0)),
        ("SUBMITTED", None, None),  # asked for no report: no receipt
    ],
)
def test_a_final_message_in_the_journal_is_an_outcome(
    outcome: str, code: str | None, expected: Outcome | None
) -> None:
    assert outcome_of_final(outcome, code, 9.0) == expected
