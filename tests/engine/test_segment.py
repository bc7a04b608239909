"""Golden tables for engine.segment: every capacity edge, atoms at part edges, UDH bytes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import regex

from engine import _native_segment, gsm_tables, segment
from engine.segment import (
    NationalShift,
    count_units,
    replace_look_alikes,
    segment_text,
)

EMOJI = "\U0001f600"  # 😀, a surrogate pair in UTF-16
FLAG_RW = "\U0001f1f7\U0001f1fc"  # 🇷🇼: two regional indicators, one grapheme cluster
FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # 👩‍👩‍👧: ZWJ sequence, 8 UTF-16 units


def part_lengths(text: str, **options: object) -> list[int]:
    return [len(part) for part in segment_text(text, **options).parts]  # type: ignore[arg-type]


# ── tables ─────────────────────────────────────────────────────────────────────


def test_default_alphabet_has_127_characters_and_no_escape() -> None:
    characters = set(gsm_tables.DEFAULT_ALPHABET) - {gsm_tables.UNDEFINED}
    assert len(characters) == 127
    assert "\x1b" not in characters
    assert gsm_tables.DEFAULT_ALPHABET[0x1B] == gsm_tables.UNDEFINED


def test_extension_table_is_form_feed_and_nine_symbols() -> None:
    characters = set(gsm_tables.DEFAULT_EXTENSION) - {gsm_tables.UNDEFINED}
    assert characters == set("\f^{}\\[]~|€")


def test_every_table_has_128_positions() -> None:
    tables = [gsm_tables.DEFAULT_ALPHABET, gsm_tables.DEFAULT_EXTENSION]
    tables += gsm_tables.LOCKING_SHIFT_TABLES.values()
    tables += gsm_tables.SINGLE_SHIFT_TABLES.values()
    assert all(len(table) == 128 for table in tables)
    assert set(gsm_tables.SINGLE_SHIFT_TABLES) == set(gsm_tables.NATIONAL_LANGUAGE_IDS)
    assert set(gsm_tables.LOCKING_SHIFT_TABLES) == set(gsm_tables.NATIONAL_LANGUAGE_IDS) - {"es"}


@pytest.mark.parametrize(
    ("language", "position", "character"),
    [
        ("tr", 0x07, "ı"),  # A.3.1
        ("pt", 0x15, "∞"),  # A.3.3
        ("hi", 0x15, "क"),  # A.3.6
        ("kn", 0x24, "\u0ca1"),  # A.3.7, the spec's typo corrected
        ("ur", 0x00, "ا"),  # A.3.13
    ],
)
def test_locking_shift_spot_checks(language: str, position: int, character: str) -> None:
    assert gsm_tables.LOCKING_SHIFT_TABLES[language][position] == character


@pytest.mark.parametrize(
    ("language", "position", "character"),
    [
        ("tr", 0x47, "Ğ"),  # A.2.1
        ("es", 0x09, "ç"),  # A.2.2
        ("pt", 0x12, "Φ"),  # A.2.3
        ("te", 0x22, "\u0c6c"),  # A.2.12, the spec's typo corrected
        ("ta", 0x65, "€"),  # every single shift table keeps the euro sign at 0x65
    ],
)
def test_single_shift_spot_checks(language: str, position: int, character: str) -> None:
    assert gsm_tables.SINGLE_SHIFT_TABLES[language][position] == character


def test_smart_replacements_are_all_gsm() -> None:
    gsm = set(gsm_tables.DEFAULT_ALPHABET + gsm_tables.DEFAULT_EXTENSION) - {"\x00"}
    for look_alike, replacement in gsm_tables.SMART_REPLACEMENTS.items():
        assert look_alike not in gsm
        assert set(replacement) <= gsm, look_alike


# ── encoding choice and counting ───────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "encoding", "units"),
    [
        ("Hello", "GSM-7", 5),
        ("£5 @ Ünïted", "UCS-2", 11),  # ï is not in the default alphabet
        ("[x]", "GSM-7", 5),  # extension characters cost two septets
        ("€", "GSM-7", 2),
        ("\f", "GSM-7", 2),  # form feed lives in the extension table
        ("a\r\nb", "GSM-7", 4),  # CR LF counts two
        ("€ж", "UCS-2", 2),  # once UCS-2, an extension character costs one unit
        ("e\u0301", "UCS-2", 2),  # no normalisation: a decomposed é stays UCS-2
        ("é", "GSM-7", 1),  # the precomposed one is in the default alphabet
        ("\x1b", "UCS-2", 1),  # U+001B is not a GSM character
        ("`", "UCS-2", 1),  # nor is the grave accent
        (EMOJI, "UCS-2", 2),  # surrogate pair
        ("ΔΦΓΛΩΠΨΣΘΞ", "GSM-7", 10),
    ],
)
def test_encoding_and_units(text: str, encoding: str, units: int) -> None:
    result = segment_text(text)
    assert (result.encoding, result.units, result.segments) == (encoding, units, 1)
    assert result.parts == [text]
    assert result.udh == [b""]
    assert result.national is None


# ── capacity edges ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "segments", "per_segment", "lengths"),
    [
        ("a" * 160, 1, 160, [160]),
        ("a" * 161, 2, 153, [153, 8]),
        ("a" * 306, 2, 153, [153, 153]),
        ("a" * 307, 3, 153, [153, 153, 1]),
        ("ж" * 70, 1, 70, [70]),
        ("ж" * 71, 2, 67, [67, 4]),
        ("ж" * 134, 2, 67, [67, 67]),
        ("ж" * 135, 3, 67, [67, 67, 1]),
        ("]" * 80, 1, 160, [80]),  # 160 septets
        ("]" * 81, 2, 153, [76, 5]),
        ("]" * 153, 3, 153, [76, 76, 1]),  # never half an escape pair
        ("a" * 152 + "]" + "a" * 10, 2, 153, [152, 11]),  # the pair moves to the next part
        ("a" * 66 + EMOJI + "a" * 66, 3, 67, [66, 66, 1]),  # never half a surrogate pair
        ("a" * 69 + EMOJI, 2, 67, [67, 3]),  # 71 units
        ("a" * 68 + EMOJI, 1, 70, [69]),  # exactly 70 units
    ],
)
def test_capacity_edges(text: str, segments: int, per_segment: int, lengths: list[int]) -> None:
    result = segment_text(text)
    assert result.segments == segments == len(result.parts) == len(result.udh)
    assert result.per_segment == per_segment
    assert [len(part) for part in result.parts] == lengths
    assert "".join(result.parts) == text


def test_non_ascii_gsm_text_counts_the_euro_sign_as_two_septets() -> None:
    # Latin-1 letters and the euro sign: GSM-7 after the regex search, € an escape pair.
    result = segment_text("é" * 150 + "€" * 10)
    assert (result.encoding, result.units, result.segments) == ("GSM-7", 170, 2)
    # 150 + 2 septets; a second € would make 154, so it opens part two (9 * 2 septets)
    assert [len(part) for part in result.parts] == [151, 9]
    edge = segment_text("é" * 152 + "€" + "Ω" * 10)  # € would straddle septet 153
    assert [len(part) for part in edge.parts] == [152, 11]
    assert edge.units == 164


@pytest.mark.parametrize(
    ("text", "units"),
    [("’", 1), ("€’", 2), ("é’", 2), ("Ωж", 2), ("£😀", 3)],
)
def test_characters_beside_gsm_ones_make_the_text_ucs2(text: str, units: int) -> None:
    # ’ shares its UTF-8 lead byte with €, ж with no GSM character, 😀 is astral.
    result = segment_text(text)
    assert (result.encoding, result.units) == ("UCS-2", units)


def test_cr_lf_between_ascii_characters_of_a_ucs2_text() -> None:
    text = "ж" + "a" * 65 + "\r\n" + "b" * 10  # the cut at unit 67 falls inside CR LF
    assert part_lengths(text) == [66, 12]
    assert part_lengths(text, split="codepoint") == [67, 11]


def test_16_bit_reference_with_escape_and_surrogate_pairs() -> None:
    escapes = segment_text("]" * 80 + "a", concat_ref=16, reference=0xBEEF)
    assert [len(part) for part in escapes.parts] == [76, 5]  # 152 septets, then 9
    assert escapes.udh == [bytes.fromhex("060804beef0201"), bytes.fromhex("060804beef0202")]
    emoji = segment_text(EMOJI * 40, concat_ref=16)
    assert [len(part) for part in emoji.parts] == [33, 7]  # 66 units, then 14
    assert emoji.per_segment == 66


def test_each_result_has_its_own_udh_list() -> None:
    first = segment_text("a" * 200, reference=7)
    first.udh.append(b"changed")
    second = segment_text("a" * 200, reference=7)
    assert second.udh == [bytes.fromhex("050003070201"), bytes.fromhex("050003070202")]


def test_smart_encoding_of_a_long_text_splits_the_replaced_text() -> None:
    text = "“quote” — " * 30  # 30 * 10 characters, 90 replaced
    result = segment_text(text, smart=True)
    assert (result.encoding, result.smart_replaced, result.segments) == ("GSM-7", 90, 2)
    assert "".join(result.parts) == '"quote" - ' * 30
    assert [len(part) for part in result.parts] == [153, 147]


def test_16_bit_reference_shrinks_parts_by_one() -> None:
    assert part_lengths("a" * 161, concat_ref=16) == [152, 9]
    assert part_lengths("a" * 305, concat_ref=16) == [152, 152, 1]
    assert part_lengths("ж" * 133, concat_ref=16) == [66, 66, 1]
    assert segment_text("a" * 160, concat_ref=16).segments == 1


# ── grapheme clusters at part edges ────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "grapheme", "codepoint"),
    [
        # regional indicator pair straddling unit 67
        ("a" * 65 + FLAG_RW + "a" * 10, [65, 12], [66, 11]),
        # letter + combining acute accent straddling the edge
        ("a" * 66 + "e\u0301" + "b" * 10, [66, 12], [67, 11]),
        # ZWJ family sequence (8 units) straddling the edge
        ("a" * 60 + FAMILY + "b" * 10, [60, 15], [64, 11]),
        # CR LF straddling a GSM-7 edge
        ("a" * 152 + "\r\n" + "b" * 10, [152, 12], [153, 11]),
        # emoji with skin tone modifier
        ("ж" * 65 + "\U0001f44d\U0001f3fd" + "ж" * 5, [65, 7], [66, 6]),
    ],
)
def test_grapheme_clusters_stay_whole(text: str, grapheme: list[int], codepoint: list[int]) -> None:
    assert part_lengths(text) == grapheme
    assert part_lengths(text, split="codepoint") == codepoint


def test_a_cluster_longer_than_a_part_is_cut_at_code_points() -> None:
    text = "e" + "\u0301" * 100  # one grapheme cluster of 101 units
    result = segment_text(text)
    assert [len(part) for part in result.parts] == [67, 34]
    assert "".join(result.parts) == text


def test_flags_only_text_splits_between_flags() -> None:
    result = segment_text(FLAG_RW * 40)  # 160 units, 4 per flag
    assert [len(part) for part in result.parts] == [32, 32, 16]
    assert all(len(part) % 2 == 0 for part in result.parts)


def test_indic_conjunct_is_not_split() -> None:
    conjunct = "क्षि"  # ka + virama + ssa + vowel sign i: one cluster (UAX #29 GB9c)
    text = "ह" * 65 + conjunct + "ह" * 5
    assert part_lengths(text) == [65, 9]
    assert part_lengths(text, split="codepoint") == [67, 7]


# ── UDH ────────────────────────────────────────────────────────────────────────


def test_concatenation_udh_8_bit() -> None:
    result = segment_text("a" * 161, reference=0x2A)
    assert result.udh == [bytes.fromhex("0500032a0201"), bytes.fromhex("0500032a0202")]


def test_concatenation_udh_16_bit() -> None:
    result = segment_text("a" * 161, concat_ref=16, reference=0x1234)
    assert result.udh == [bytes.fromhex("06080412340201"), bytes.fromhex("06080412340202")]


def test_national_udh_single_part_and_multi_part() -> None:
    single = segment_text("ş", national=["tr"])
    assert single.national == NationalShift(locking="tr", single=None)
    assert single.udh == [bytes.fromhex("03250101")]  # UDHL, IEI 0x25, length 1, Turkish
    multi = segment_text("ş" * 160, national=["tr"], reference=9)
    assert multi.segments == 2
    assert multi.udh[1] == bytes.fromhex("080003090202250101")


def test_both_shift_tables_in_one_udh() -> None:
    # Portuguese locking table for ã and õ, Spanish single shift for í and ú.
    text = "ção não ÂÊ " * 2 + "{}"  # { } cost 2 through either single shift table
    result = segment_text(text, national=["pt", "es"])
    assert result.encoding == "GSM-7"
    assert result.national is not None
    assert result.national.locking == "pt"


# ── national language tables ───────────────────────────────────────────────────


def _locking_only_character(language: str) -> str:
    """A character of the language's locking table that GSM's default tables lack."""
    default = set(gsm_tables.DEFAULT_ALPHABET + gsm_tables.DEFAULT_EXTENSION)
    table = gsm_tables.LOCKING_SHIFT_TABLES[language]
    return next(c for c in table if c not in default)


def _single_only_character(language: str) -> str | None:
    default = set(gsm_tables.DEFAULT_ALPHABET + gsm_tables.DEFAULT_EXTENSION)
    locking = set(gsm_tables.LOCKING_SHIFT_TABLES.get(language, ""))
    table = gsm_tables.SINGLE_SHIFT_TABLES[language]
    return next((c for c in table if c not in default | locking and c != "\x00"), None)


LOCKING_LANGUAGES = sorted(gsm_tables.LOCKING_SHIFT_TABLES)
SINGLE_ONLY_LANGUAGES = sorted(
    code for code in gsm_tables.SINGLE_SHIFT_TABLES if _single_only_character(code) is not None
)


@pytest.mark.parametrize("language", LOCKING_LANGUAGES)
def test_locking_shift_table_edges(language: str) -> None:
    character = _locking_only_character(language)
    assert segment_text(character).encoding == "UCS-2"
    # One table: UDH 4 octets alone -> 155 septets; 9 octets with concatenation -> 149.
    fits = segment_text(character + "a" * 154, national=[language])
    assert (fits.encoding, fits.segments, fits.units, fits.per_segment) == ("GSM-7", 1, 155, 155)
    assert fits.national == NationalShift(locking=language, single=None)
    over = segment_text(character + "a" * 155, national=[language])
    assert (over.segments, over.per_segment) == (2, 149)
    assert [len(part) for part in over.parts] == [149, 7]
    language_id = gsm_tables.NATIONAL_LANGUAGE_IDS[language]
    assert over.udh[0] == bytes((8, 0, 3, 0, 2, 1, 0x25, 1, language_id))


@pytest.mark.parametrize("language", SINGLE_ONLY_LANGUAGES)
def test_single_shift_table_edges(language: str) -> None:
    character = _single_only_character(language)
    assert character is not None
    fits = segment_text(character + "a" * 153, national=[language])
    assert (fits.encoding, fits.segments, fits.units, fits.per_segment) == ("GSM-7", 1, 155, 155)
    assert fits.national == NationalShift(locking=None, single=language)
    language_id = gsm_tables.NATIONAL_LANGUAGE_IDS[language]
    assert fits.udh == [bytes((3, 0x24, 1, language_id))]
    # The two-septet character at the edge of a 149-septet part moves to the next part.
    edge = segment_text("a" * 148 + character + "a" * 10, national=[language])
    assert [len(part) for part in edge.parts] == [148, 11]
    assert edge.udh[1] == bytes((8, 0, 3, 0, 2, 2, 0x24, 1, language_id))


def test_spanish_has_no_locking_table_but_its_single_shift_works() -> None:
    result = segment_text("Mañana a las 10, ¿vale? Está en Málaga, ¡sí!", national=["es"])
    assert result.encoding == "GSM-7"
    assert result.national == NationalShift(locking=None, single="es")
    assert result.units == 47  # á (twice) and í cost two septets each


def test_default_tables_win_ties() -> None:
    result = segment_text("plain text [x]", national=["pt", "tr"])
    assert result.national is None
    assert result.udh == [b""]


def test_locking_table_wins_when_it_saves_a_part() -> None:
    text = "^" * 100  # 200 septets by the default extension; 100 in the Portuguese table
    assert segment_text(text).segments == 2
    result = segment_text(text, national=["pt"])
    assert (result.segments, result.units) == (1, 100)
    assert result.national == NationalShift(locking="pt", single=None)


def test_hindi_text_is_gsm_with_the_hindi_tables() -> None:
    text = "नमस्ते दुनिया, आज का कोड 4821 है।"
    assert segment_text(text).encoding == "UCS-2"
    result = segment_text(text, national=["hi"])
    assert result.encoding == "GSM-7"
    assert result.national == NationalShift(locking="hi", single="hi")  # । is single shift


# ── options ────────────────────────────────────────────────────────────────────


def test_smart_encoding_replaces_look_alikes_and_counts_them() -> None:
    text = "“Hello” — it’s here…\u00a0ok"
    assert segment_text(text).encoding == "UCS-2"
    result = segment_text(text, smart=True)
    assert result.encoding == "GSM-7"
    assert result.parts == ['"Hello" - it\'s here... ok']
    assert result.smart_replaced == 6
    assert replace_look_alikes("plain") == ("plain", 0)


def test_smart_encoding_keeps_ucs2_when_other_characters_need_it() -> None:
    result = segment_text("“Привет”", smart=True)
    assert (result.encoding, result.parts, result.smart_replaced) == ("UCS-2", ['"Привет"'], 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concat_ref": 12}, "concat_ref must be 8 or 16"),
        ({"split": "word"}, "split must be"),
        ({"national": ["xx"]}, "Unknown national language 'xx'"),
        ({"reference": 256}, "does not fit a 8-bit"),
        ({"reference": -1}, "does not fit"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segment_text("hello", **options)  # type: ignore[arg-type]


def test_empty_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        segment_text("")
    with pytest.raises(ValueError, match="empty"):
        segment_text("\u200b", smart=True)  # nothing left after replacement


def test_too_many_parts_is_an_error() -> None:
    with pytest.raises(ValueError, match="at most 255"):
        segment_text("a" * 153 * 256)


def test_national_accepts_a_comma_separated_string() -> None:
    assert segment_text("ş", national="tr,es").national == NationalShift("tr", None)


def test_count_units_matches_each_part() -> None:
    result = segment_text("ş" * 100 + "{" * 30 + "ğ" * 40, national=["tr"])
    per_part = [count_units(part, result.encoding, result.national) for part in result.parts]
    assert sum(per_part) == result.units
    assert max(per_part) <= result.per_segment


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("hi\ud83d there", r"U\+D83D at character 2"),  # after a GSM start
        ("жж\udc00", r"U\+DC00 at character 2"),  # in a UCS-2 text
        (EMOJI * 100 + "\ud800", r"U\+D800 at character 100"),  # after astral characters
        ("\udfff" + "a" * 300, r"U\+DFFF at character 0"),
    ],
)
def test_a_lone_surrogate_is_an_error_that_names_it(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=rf"lone surrogate \({named}\)"):
        segment_text(text)
    with pytest.raises(ValueError, match=rf"lone surrogate \({named}\)"):
        segment_text(text, national=["tr"])


# ── the C path's own guards (engine/_native_segment.c) ─────────────────────────


def test_the_c_path_refuses_what_segment_text_never_passes() -> None:
    split = _native_segment.split_default_tables
    with pytest.raises(TypeError, match="non-empty str"):
        split("", 8, 0, True, 0)
    with pytest.raises(TypeError, match="non-empty str"):
        split(b"bytes", 8, 0, True, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concatenation reference"):
        split("a", 12, 0, True, 0)
    with pytest.raises(ValueError, match="concatenation reference"):
        split("a", 8, 256, True, 0)
    with pytest.raises(TypeError, match="5 arguments"):
        split("a", 8, 0)  # type: ignore[call-arg]


def test_a_failing_cluster_search_is_raised_not_swallowed() -> None:
    def broken(text: str, start: int, end: int) -> int:
        raise RuntimeError("no search today")

    def outside(text: str, start: int, end: int) -> int:
        return end + 1

    # A combining mark at the edge of the first part needs the search.
    text = "ж" * 66 + "e\u0301" + "ж" * 10
    try:
        for edge, error, message in (
            (broken, RuntimeError, "no search today"),
            (outside, ValueError, r"cluster_edge gave 68, outside \(0, 67\]"),
        ):
            _configure_native(edge)
            with pytest.raises(error, match=message):
                segment_text(text)
    finally:
        _configure_native(segment._cluster_edge)
    assert part_lengths(text) == [66, 12]


def _configure_native(cluster_edge: Callable[[str, int, int], int]) -> None:
    _native_segment.configure(
        "".join(segment._DEFAULT_CHARACTERS),
        "".join(segment._EXTENSION_CHARACTERS),
        (160, 153, 152, 70, 67, 66),
        segment._STARTER_RANGES,
        "".join(segment._JOINS_FOLLOWING),
        segment.Segmentation,
        cluster_edge,
    )


# ── the tables behind the C path ───────────────────────────────────────────────
# engine/_native_segment.c decides most part edges without a grapheme cluster search, from
# constants checked here against the Unicode data of the `regex` module (the same data \X
# uses).

ALL_CODE_POINTS = "".join(chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF)


def test_starter_ranges_hold_only_characters_that_continue_nothing() -> None:
    continues = regex.compile(
        r"[^\p{GCB=Other}\p{GCB=Control}\p{GCB=CR}\p{GCB=LF}]|\p{InCB=Consonant}"
    )
    for low, high in segment._STARTER_RANGES:
        block = "".join(chr(code) for code in range(low, high + 1))
        assert continues.findall(block) == [], (hex(low), hex(high))


def test_joiners_are_every_prepend_character_and_zwj() -> None:
    prepend = set(regex.findall(r"\p{GCB=Prepend}", ALL_CODE_POINTS))
    assert prepend | {"\u200d"} <= segment._JOINS_FOLLOWING


@pytest.mark.parametrize(
    "before",
    [
        "a",
        " ",
        "\r",
        "\n",
        "\x00",
        "é",
        "ж",
        "\u0301",
        "\U0001f600",
        "\U0001f3fd",
        "\U0001f1f7",
        "\u1100",
        "\uac00",
        "\u094d",
        "\u0915",
        "\u4e2d",
        "\U000e0067",
        "\u200c",
    ],
)
def test_a_starter_after_a_non_joiner_always_begins_a_cluster(before: str) -> None:
    cluster = regex.compile(r"\X")
    for low, high in segment._STARTER_RANGES:
        for code in range(low, high + 1, 7):
            after = chr(code)
            if before == "\r" and after == "\n":
                continue  # GB3, handled before the table
            assert len(cluster.findall(before + after)) == 2, (before, hex(code))


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("a" * 152 + "\r\n" + "b" * 10, [152, 12]),  # GSM, the CR LF moves whole
        ("ж" * 66 + "\r\n" + "b" * 10, [66, 12]),  # UCS-2
        ("[" * 76 + "\r\n" + "b" * 10, [76, 12]),  # escape pairs before it
        ("\U0001f600" * 33 + "\r\n" + "b" * 10, [33, 12]),  # surrogate pairs before it
    ],
)
def test_cr_lf_is_never_split(text: str, lengths: list[int]) -> None:
    assert part_lengths(text) == lengths


def test_cr_lf_is_the_only_cluster_a_default_alphabet_text_can_hold() -> None:
    # Why GSM-7 texts (default tables) are cut with the CR LF rule alone.
    gsm = set(gsm_tables.DEFAULT_ALPHABET + gsm_tables.DEFAULT_EXTENSION) - {gsm_tables.UNDEFINED}
    starters = [(chr(low), chr(high)) for low, high in segment._STARTER_RANGES]
    for character in gsm:
        assert any(low <= character <= high for low, high in starters), character
        assert character not in segment._JOINS_FOLLOWING
