"""Text, concatenation, addresses, times and receipt text of a submit_sm."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.smpp import pdu as p
from engine.smpp.text import (
    PartOf,
    Reassembly,
    UnreadableMessageError,
    decode_text,
    destination_number,
    encode_gsm,
    error_digits,
    message_octets,
    parse_smpp_time,
    printable_head,
    receipt_text,
)


def test_gsm_round_trip_with_extension_characters() -> None:
    text = "Hello @ £5 {x} [y] ~ | ^ € \\"
    assert decode_text(encode_gsm(text), 0) == text
    assert encode_gsm("日本") == b"??"


def test_ucs2_surrogate_pair_split_across_parts_joins_whole() -> None:
    octets = "a😀b".encode("utf-16-be")
    first, second = octets[:4], octets[4:]  # cuts the surrogate pair in two
    assert decode_text(first + second, 8) == "a😀b"


def test_unsupported_data_coding() -> None:
    with pytest.raises(UnreadableMessageError) as error:
        decode_text(b"\x01\x02", 4)
    assert error.value.status == p.ESME_RSUBMITFAIL


def test_udh_8_and_16_bit_references() -> None:
    eight = p.SubmitSm(
        sequence_number=1, esm_class=0x40, short_message=b"\x05\x00\x03\x2a\x02\x01hi"
    )
    assert message_octets(eight) == (PartOf(0x2A, 2, 1), b"hi")
    sixteen = p.SubmitSm(
        sequence_number=1, esm_class=0x40, short_message=b"\x06\x08\x04\x12\x34\x03\x03yo"
    )
    assert message_octets(sixteen) == (PartOf(0x1234, 3, 3), b"yo")


def test_bad_udh_and_incomplete_sar() -> None:
    with pytest.raises(UnreadableMessageError):
        message_octets(p.SubmitSm(sequence_number=1, esm_class=0x40, short_message=b"\x09\x00"))
    with pytest.raises(UnreadableMessageError) as error:
        message_octets(
            p.SubmitSm(sequence_number=1, optional=p.OptionalParameters(sar_msg_ref_num=1))
        )
    assert error.value.status == p.ESME_RMISSINGOPTPARAM


def test_payload_and_short_message_together_are_refused() -> None:
    submit = p.SubmitSm(
        sequence_number=1,
        short_message=b"a",
        optional=p.OptionalParameters(message_payload=b"b"),
    )
    with pytest.raises(UnreadableMessageError):
        message_octets(submit)


def test_reassembly_joins_in_order_and_expires() -> None:
    parts: Reassembly[str] = Reassembly()
    assert parts.add(("k",), 2, 2, "second", now=1.0) is None
    assert parts.add(("k",), 1, 2, "first", now=2.0) == ["first", "second"]
    assert parts.add(("old",), 1, 3, "alone", now=5.0) is None
    assert parts.next_expiry() == 5.0
    assert parts.expire(before=5.0) == []
    assert parts.expire(before=6.0) == [["alone"]]
    assert len(parts) == 0


@pytest.mark.parametrize(
    ("address", "ton", "number"),
    [
        ("250788123456", 1, "+250788123456"),
        ("+250788123456", 0, "+250788123456"),
        ("00250788123456", 0, "+250788123456"),
        ("250788123456", 0, "+250788123456"),
        ("0788123456", 0, "0788123456"),
        ("0788123456", 2, "0788123456"),
    ],
)
def test_destination_numbers(address: str, ton: int, number: str) -> None:
    assert destination_number(address, ton) == number


def test_smpp_times() -> None:
    now = 1_000_000.0
    assert parse_smpp_time("", now) is None
    assert parse_smpp_time("000001020304000R", now) == now + 93784
    absolute = parse_smpp_time("261122080000004+", now)
    assert absolute == dt.datetime(2026, 11, 22, 7, 0, tzinfo=dt.UTC).timestamp()
    with pytest.raises(ValueError, match="SMPP time"):
        parse_smpp_time("2611", now)


def test_receipt_text_follows_appendix_b() -> None:
    submitted = dt.datetime(2026, 11, 22, 8, 30, tzinfo=dt.UTC).timestamp()
    text = receipt_text(
        message_id="42",
        state="DELIVRD",
        error="000",
        submitted_at=submitted,
        done_at=submitted + 60,
        text="A rather long message text here",
    )
    assert text == (
        "id:42 sub:001 dlvrd:001 submit date:2611220830 done date:2611220831"
        " stat:DELIVRD err:000 text:A rather long messag"
    )
    assert error_digits("E1234") == "234"
    assert error_digits("7") == "007"
    assert error_digits(None) == "000"


@pytest.mark.parametrize(
    ("head", "shown"),
    [
        ("Line one\nline two", "Line one line two"),
        ("Tab\there\r\n", "Tab here  "),
        ("nul\x00 esc\x1b del\x7f", "nul  esc  del "),
        ("c1 \x85 \x9b csi", "c1     csi"),
        ("Привет 😀 @ £", "Привет 😀 @ £"),  # printable characters stay as they are
    ],
)
def test_receipt_text_field_has_no_control_characters(head: str, shown: str) -> None:
    assert printable_head(head) == shown
    text = receipt_text(
        message_id="1", state="DELIVRD", error="000", submitted_at=0, done_at=0, text=head
    )
    assert text.endswith(f" text:{shown}")
    assert "\n" not in text


def test_receipt_text_field_is_cut_before_it_is_cleaned() -> None:
    assert printable_head("\n" * 30) == " " * 20
