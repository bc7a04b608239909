"""Text, concatenation, addresses, times and receipt text of a submit_sm."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.smpp import pdu as p
from engine.smpp.text import (
    ALPHABETS,
    Alphabet,
    Coding,
    PartOf,
    Reassembly,
    TextRefusedError,
    UnreadableMessageError,
    coding_of,
    decode_text,
    destination_number,
    encode_gsm,
    error_digits,
    message_octets,
    parse_smpp_time,
    preview_text,
    printable_head,
    readable_as,
    receipt_text,
)


def test_gsm_round_trip_with_extension_characters() -> None:
    text = "Hello @ £5 {x} [y] ~ | ^ € \\"
    assert decode_text(encode_gsm(text), "gsm") == text
    assert encode_gsm("日本") == b"??"


def test_ucs2_surrogate_pair_split_across_parts_joins_whole() -> None:
    octets = "a😀b".encode("utf-16-be")
    first, second = octets[:4], octets[4:]  # cuts the surrogate pair in two
    assert decode_text(first + second, "ucs2") == "a😀b"


# ── what data_coding 0 and 1 mean (issue 17) ──────────────────────────────────

GREETING = "Grüße aus Köln"


@pytest.mark.parametrize("data_coding", [0, 1])
@pytest.mark.parametrize("alphabet", ["gsm", "latin1", "ascii"])
def test_data_coding_0_and_1_are_the_accounts_alphabet(
    data_coding: int, alphabet: Alphabet
) -> None:
    other: Alphabet = "gsm" if alphabet != "gsm" else "latin1"
    zero, one = (alphabet, other) if data_coding == 0 else (other, alphabet)
    assert coding_of(data_coding, zero=zero, one=one) == alphabet


@pytest.mark.parametrize(("data_coding", "coding"), [(3, "latin1"), (8, "ucs2")])
def test_data_coding_3_and_8_do_not_depend_on_the_account(data_coding: int, coding: str) -> None:
    for alphabet in ALPHABETS:
        assert coding_of(data_coding, zero=alphabet, one=alphabet) == coding


def test_gsm_is_read_unpacked_with_its_escape_table() -> None:
    # 3GPP TS 23.038 6.2.1: ü 0x7E, ß 0x1E, ö 0x7C; 6.2.1.1: € is escape, 0x65.
    octets = b"Gr\x7e\x1ee aus K\x7cln \x1b\x65"
    assert octets == encode_gsm(GREETING + " €")
    assert decode_text(octets, "gsm") == GREETING + " €"
    # 23.038 6.2.1.1: escape, escape (kept for a further table) and a lone trailing
    # escape read as a space.
    assert decode_text(b"a\x1b\x1bb\x1b", "gsm") == "a b "


def test_latin1_and_ascii() -> None:
    assert decode_text(GREETING.encode("latin-1"), "latin1") == GREETING
    ascii_text = "Hi @ $5 [x] {y} ~_ `a` \\ | ^"
    assert decode_text(ascii_text.encode("ascii"), "ascii") == ascii_text


def test_lf_and_cr_are_text_in_every_coding() -> None:
    assert decode_text(b"a\nb\rc", "gsm") == "a\nb\rc"
    assert decode_text(b"a\nb\rc", "latin1") == "a\nb\rc"
    assert decode_text(b"a\nb\rc", "ascii") == "a\nb\rc"
    assert decode_text("a\r\nb".encode("utf-16-be"), "ucs2") == "a\r\nb"


@pytest.mark.parametrize(
    ("octets", "coding", "fault", "position", "found"),
    [
        # Kannel's alt-charset = ISO-8859-1 read as GSM: was journaled "Grö§e aus Kvln".
        (GREETING.encode("latin-1"), "gsm", "eight_bit_octet", 2, "0xFC"),
        # node-smpp's default (GSM 03.38 as data_coding 1) read as IA5: ß is 0x1E.
        (encode_gsm(GREETING), "ascii", "control_character", 3, "U+001E"),
        (encode_gsm("Mail me @ home"), "ascii", "control_character", 8, "U+0000"),
        (encode_gsm("10€"), "latin1", "control_character", 2, "U+001B"),
        # UTF-8 sent as Latin-1: ß is C3 9F, and 0x9F is a C1 control.
        ("Grüße".encode(), "latin1", "control_character", 5, "U+009F"),
        (b"caf\xe9", "ascii", "eight_bit_octet", 3, "0xE9"),
        (b"tab\there", "latin1", "control_character", 3, "U+0009"),
        (b"del\x7f", "ascii", "control_character", 3, "U+007F"),
        ("nul\x00".encode("utf-16-be"), "ucs2", "control_character", 3, "U+0000"),
        # GSM's page break (escape, 0x0A) is a form feed: a control character too.
        (b"page\x1b\x0abreak", "gsm", "control_character", 4, "U+000C"),
    ],
)
def test_a_text_with_control_characters_or_foreign_octets_is_refused(
    octets: bytes, coding: Coding, fault: str, position: int, found: str
) -> None:
    with pytest.raises(TextRefusedError) as refused:
        decode_text(octets, coding)
    error = refused.value
    assert (error.fault, error.position, error.found_label) == (fault, position, found)
    assert error.status == p.ESME_RSUBMITFAIL
    assert error.coding == coding
    # preview_text (a part's receipt head) reads them all the same, never refusing.
    assert isinstance(preview_text(octets, coding), str)


def test_odd_ucs2_and_unknown_data_coding_are_refused() -> None:
    with pytest.raises(TextRefusedError) as odd:
        decode_text(b"\x00a\x00", "ucs2")
    assert (odd.value.fault, odd.value.status) == ("odd_ucs2_length", p.ESME_RINVMSGLEN)
    assert preview_text(b"\x00a\x00", "ucs2") == "a"
    with pytest.raises(TextRefusedError) as unknown:
        coding_of(4, zero="gsm", one="gsm")
    assert (unknown.value.fault, unknown.value.status) == (
        "unknown_data_coding",
        p.ESME_RSUBMITFAIL,
    )
    assert isinstance(unknown.value, UnreadableMessageError)


def test_readable_as_names_the_alphabets_a_refused_text_reads_in() -> None:
    assert readable_as(GREETING.encode("latin-1")) == ["latin1"]
    assert readable_as(encode_gsm(GREETING)) == ["gsm"]
    assert readable_as(b"plain words") == ["gsm", "latin1", "ascii"]


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
