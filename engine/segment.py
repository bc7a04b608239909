"""Segmentation: the GSM-7 / UCS-2 choice, unit counts, safe split points and each part's UDH.

Pure: no I/O. `segment_text` is called once per accepted message. With the default tables
it is one call into engine/_native_segment.c: two passes over the code points, and a call
back to `_cluster_edge` only for a part edge beside a character that may join a grapheme
cluster. The pure-Python path it replaced (bytes.translate marks, cuts in unit space) was
9× smsutil.split on a 200-character text with emoji against a target of 20×, and the
unavoidable C calls of any Python version (encode, translate, one count and one slice per
part, building the result) already cost more than that allows (bench/segment.py). National
tables take `_segment_general`, which is also the plain statement of the rules the C code
is tested against.

Rules (3GPP TS 23.038 and TS 23.040, and what handsets and Twilio's calculator do):
- GSM-7 when every character is in the default alphabet or its extension table (an
  extension character costs two septets: 0x1B and its code), otherwise UCS-2, counted in
  UTF-16 code units. No Unicode normalisation: a decomposed "é" stays UCS-2.
- A part holds 140 octets of user data (TS 23.040 9.2.3.16) less its user data header:
  160 septets or 70 UTF-16 units alone, 153 / 67 with an 8-bit concatenation reference
  and 152 / 66 with a 16-bit one. GSM-7 septets start at the next septet boundary after
  the header (TS 23.040 9.2.3.24, fill bits), hence floor((140 - UDH) * 8 / 7).
- A part never ends inside an escape pair or a surrogate pair and, with
  split="grapheme" (the default), never inside an extended grapheme cluster (Unicode
  UAX #29: CR LF, flags, ZWJ emoji sequences, a letter and its combining marks), unless a
  single cluster is longer than a whole part.
- National language tables (TS 23.038 annex A) are used only when asked for; each one in
  use adds a 3-octet information element to every part (IEI 0x24 single shift, 0x25
  locking shift, TS 23.040 9.2.3.24.15/16), and the cheapest allowed combination wins,
  as handsets choose: fewest parts, then fewest tables, then fewest septets.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Literal

import msgspec
import regex

from engine import _native_segment, gsm_tables
from engine.models import Encoding

SplitMode = Literal["grapheme", "codepoint"]

USER_DATA_OCTETS = 140  # TS 23.040 9.2.3.16: TP-User-Data is at most 140 octets
MAX_PARTS = 255  # TS 23.040 9.2.3.24.1: "maximum number of short messages" is one octet
NATIONAL_LANGUAGES: tuple[str, ...] = tuple(gsm_tables.NATIONAL_LANGUAGE_IDS)

# Concatenation information elements, TS 23.040 9.2.3.24.1 (8-bit reference, IEI 0x00) and
# 9.2.3.24.8 (16-bit reference, IEI 0x08): IEI + length + reference + total + sequence.
_CONCAT_IE_OCTETS = {8: 5, 16: 6}
_NATIONAL_IE_OCTETS = 3  # IEI 0x24 / 0x25 + length + language identifier
_SINGLE_SHIFT_IEI = 0x24
_LOCKING_SHIFT_IEI = 0x25


class NationalShift(msgspec.Struct, frozen=True):
    """The national language tables a GSM-7 message uses, by ISO 639-1 code (None: default)."""

    locking: str | None
    single: str | None


# gc=False: a Segmentation holds strings and bytes only, so it can't be part of a reference
# cycle; untracked structs are cheaper to build, and one is built per message.
class Segmentation(msgspec.Struct, frozen=True, gc=False):
    """How a text goes over the air: encoding, parts, units, and the UDH each part carries.

    `units` counts septets for GSM-7 (extension and single shift characters count 2) and
    UTF-16 code units for UCS-2. `per_segment` is the capacity of each part in that unit.
    `parts` joined give the text back (after smart replacement when asked for).
    """

    encoding: Encoding
    segments: int
    units: int
    per_segment: int
    parts: list[str]
    smart_replaced: int
    national: NationalShift | None
    udh: list[bytes]


def capacity(encoding: Encoding, udh_octets: int) -> int:
    """Units of text one part holds after a user data header of `udh_octets` (UDHL included)."""
    if encoding == "GSM-7":
        return (USER_DATA_OCTETS - udh_octets) * 8 // 7
    return (USER_DATA_OCTETS - udh_octets) // 2


def _udh_octets(information_element_octets: int) -> int:
    # The UDHL octet is only there when some information element is (TS 23.040 9.2.3.24).
    return 1 + information_element_octets if information_element_octets else 0


def _capacities(encoding: Encoding, tables: int, concat_ref: int) -> tuple[int, int]:
    national = tables * _NATIONAL_IE_OCTETS
    single = capacity(encoding, _udh_octets(national))
    multi = capacity(encoding, _udh_octets(national + _CONCAT_IE_OCTETS[concat_ref]))
    return single, multi


# (encoding, tables in use, concatenation reference bits) -> (single-part, per-part capacity)
_CAPACITIES: dict[tuple[str, int, int], tuple[int, int]] = {
    (encoding, tables, bits): _capacities(encoding, tables, bits)
    for encoding in ("GSM-7", "UCS-2")
    for tables in (0, 1, 2)
    for bits in (8, 16)
}


def _defined(table: str) -> frozenset[str]:
    return frozenset(table) - {gsm_tables.UNDEFINED}


_DEFAULT_CHARACTERS = _defined(gsm_tables.DEFAULT_ALPHABET)
_EXTENSION_CHARACTERS = _defined(gsm_tables.DEFAULT_EXTENSION) - _DEFAULT_CHARACTERS
_GSM_CHARACTERS = _DEFAULT_CHARACTERS | _EXTENSION_CHARACTERS
_LOCKING_CHARACTERS = {
    code: _defined(table) for code, table in gsm_tables.LOCKING_SHIFT_TABLES.items()
}
_SINGLE_CHARACTERS = {
    code: _defined(table) for code, table in gsm_tables.SINGLE_SHIFT_TABLES.items()
}

# UAX #29 keeps two characters in one cluster only when the second continues one (LF after CR
# GB3, Hangul jamo GB6-8, Extend / ZWJ / SpacingMark GB9-9a, a conjunct consonant GB9c, a
# pictograph after ZWJ GB11, a regional indicator GB12-13) or the first is Prepend (GB9b) or
# ZWJ (GB11). These ranges hold only characters that continue nothing (Grapheme_Cluster_Break
# Other, Control, CR or LF, and no conjunct consonant; tests check them against `regex`), so
# before one of them, after anything but a Prepend or ZWJ, a part may end without a search.
_STARTER_RANGES = (
    (0x0000, 0x02FF),  # Basic Latin to Spacing Modifier Letters (LF: CR LF is checked first)
    (0x0370, 0x0482),  # Greek, Cyrillic (U+0483-0489 combine)
    (0x048A, 0x0590),  # the rest of Cyrillic, Armenian
    (0x2000, 0x200B),  # spaces (U+200C ZWNJ is Extend, U+200D is ZWJ)
    (0x200E, 0x20CF),  # punctuation, super- and subscripts, currency signs (€)
    (0x3000, 0x3029),  # CJK symbols and punctuation
    (0x309B, 0x9FFF),  # kana, CJK ideographs
    (0x1F000, 0x1F1E5),  # game pieces, enclosed alphanumerics (regional indicators follow)
    (0x1F200, 0x1F3FA),  # enclosed ideographs, pictographs (skin tone modifiers follow)
    (0x1F400, 0x1FAFF),  # pictographs, emoticons, transport and map symbols
)
# Grapheme_Cluster_Break=Prepend (GB9b) and ZWJ (GB11): they may join what follows them.
_JOINS_FOLLOWING = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\u0d4e\u200d"
    "\U000110bd\U000110cd\U000111c2\U000111c3\U000113d1\U0001193f\U00011941\U00011a3a"
    "\U00011a84\U00011a85\U00011a86\U00011a87\U00011a88\U00011a89\U00011d46\U00011f02"
)

_NOT_GSM_PATTERN = re.compile("[^" + re.escape("".join(sorted(_GSM_CHARACTERS))) + "]")
_SMART_PATTERN = re.compile("[" + re.escape("".join(sorted(gsm_tables.SMART_REPLACEMENTS))) + "]")
_CLUSTER_PATTERN = regex.compile(r"\X")  # an extended grapheme cluster, UAX #29
_SURROGATE_PATTERN = re.compile("[\ud800-\udfff]")
_OCTETS = tuple(bytes((value,)) for value in range(256))


def segment_text(
    text: str,
    *,
    smart: bool = False,
    national: Iterable[str] = (),
    concat_ref: int = 8,
    split: SplitMode = "grapheme",
    reference: int = 0,
) -> Segmentation:
    """Choose the encoding of `text`, count its units and split it into parts with their UDH.

    `national`: ISO 639-1 codes whose TS 23.038 shift tables may be used. `concat_ref`: 8 or
    16 bits of concatenation reference, whose value is `reference`. Raises ValueError with a
    sentence naming the problem for empty text, a lone surrogate or a bad option.
    """
    if concat_ref != 8 and concat_ref != 16:
        raise ValueError(f"concat_ref must be 8 or 16 (bits), not {concat_ref!r}.")
    if split != "grapheme" and split != "codepoint":
        raise ValueError(f"split must be 'grapheme' or 'codepoint', not {split!r}.")
    if reference and not 0 <= reference < (1 << concat_ref):
        raise ValueError(
            f"reference {reference} does not fit a {concat_ref}-bit concatenation reference."
        )
    smart_replaced = 0
    if smart:
        text, smart_replaced = replace_look_alikes(text)
    if not text:
        raise ValueError("The text is empty: there is nothing to send.")
    if national:
        languages = _national_languages(national)
        if languages:
            return _segment_general(text, languages, concat_ref, split, reference, smart_replaced)

    segmentation = _native_segment.split_default_tables(
        text, concat_ref, reference, split == "grapheme", smart_replaced
    )
    if segmentation is None:
        raise _lone_surrogate_error(text)
    if segmentation.segments > MAX_PARTS:
        raise _too_many_parts_error(segmentation.segments)
    return segmentation


@functools.lru_cache(maxsize=1024)
def _concatenation_headers(concat_ref: int, reference: int, total: int) -> tuple[bytes, ...]:
    """The UDH of each part of a concatenated message with no national table."""
    if concat_ref == 8:  # TS 23.040 9.2.3.24.1: UDHL 5, IEI 0x00, length 3, reference, total
        head = bytes((5, 0x00, 3, reference, total))
    else:  # 9.2.3.24.8: UDHL 6, IEI 0x08, length 4, 16-bit reference, total
        head = bytes((6, 0x08, 4, reference >> 8, reference & 0xFF, total))
    return tuple(head + _OCTETS[sequence] for sequence in range(1, total + 1))


def _too_many_parts_error(total: int) -> ValueError:
    return ValueError(
        f"The text needs {total} parts; a concatenated message has at most {MAX_PARTS}."
    )


def count_units(text: str, encoding: Encoding, national: NationalShift | None = None) -> int:
    """Units `text` takes in `encoding` with the given tables (e.g. one part of a Segmentation)."""
    if encoding == "UCS-2":
        return len(text.encode("utf-16-le")) // 2
    if national is None or national.locking is None:
        one_septet = _DEFAULT_CHARACTERS
    else:
        one_septet = _LOCKING_CHARACTERS[national.locking]
    # Anything outside the locking shift table is reached through 0x1B: two septets.
    return len(text) + sum(1 for character in text if character not in one_septet)


def replace_look_alikes(text: str) -> tuple[str, int]:
    """Smart encoding: typographic look-alikes replaced by GSM text; (new text, count replaced)."""
    return _SMART_PATTERN.subn(_smart_replacement, text)


def _smart_replacement(match: re.Match[str]) -> str:
    return gsm_tables.SMART_REPLACEMENTS[match.group()]


def _lone_surrogate_error(text: str) -> ValueError:
    match = _SURROGATE_PATTERN.search(text)
    assert match is not None  # only called for a text that can't be encoded
    return ValueError(
        f"The text holds a lone surrogate (U+{ord(match.group()):04X} at character "
        f"{match.start()}), which is not a character and can't be sent."
    )


def _national_languages(national: Iterable[str]) -> tuple[str, ...]:
    if isinstance(national, str):
        national = national.split(",") if national else ()
    languages: list[str] = []
    for code in national:
        if code not in gsm_tables.NATIONAL_LANGUAGE_IDS:
            known = ", ".join(NATIONAL_LANGUAGES)
            raise ValueError(f"Unknown national language {code!r}: expected one of {known}.")
        if code not in languages:
            languages.append(code)
    return tuple(languages)


class _GsmChoice(msgspec.Struct, frozen=True):
    locking: str | None
    single: str | None
    double: frozenset[str]  # characters of the text reached through a single shift (2 septets)
    units: int
    segments: int


def _choose_gsm(
    text: str, characters: frozenset[str], languages: tuple[str, ...], concat_ref: int
) -> _GsmChoice | None:
    """The cheapest allowed table combination that encodes every character, or None."""
    lockings = [None, *(code for code in languages if code in _LOCKING_CHARACTERS)]
    singles = [None, *languages]
    best: _GsmChoice | None = None
    best_key: tuple[int, int, int] | None = None
    for locking in lockings:
        locking_characters = (
            _DEFAULT_CHARACTERS if locking is None else _LOCKING_CHARACTERS[locking]
        )
        for single in singles:
            single_characters = (
                _EXTENSION_CHARACTERS if single is None else _SINGLE_CHARACTERS[single]
            )
            if not characters <= locking_characters | single_characters:
                continue
            double = characters - locking_characters
            units = len(text) + sum(text.count(character) for character in double)
            tables = (locking is not None) + (single is not None)
            single_part, per_part = _CAPACITIES["GSM-7", tables, concat_ref]
            segments = 1 if units <= single_part else -(-units // per_part)
            key = (segments, tables, units)
            if best_key is None or key < best_key:
                best, best_key = _GsmChoice(locking, single, double, units, segments), key
    return best


def _segment_general(
    text: str,
    languages: tuple[str, ...],
    concat_ref: int,
    split: SplitMode,
    reference: int,
    smart_replaced: int,
) -> Segmentation:
    """Any tables, any text, stated plainly: the path national tables take, and the reference
    the C path of `segment_text` (default tables) is tested against."""
    grapheme = split == "grapheme"
    choice: _GsmChoice | None = None
    if languages:
        choice = _choose_gsm(text, frozenset(text), languages, concat_ref)
    elif _NOT_GSM_PATTERN.search(text) is None:
        double = _EXTENSION_CHARACTERS.intersection(text)
        units = len(text) + sum(text.count(character) for character in double)
        choice = _GsmChoice(None, None, double, units, 0)

    if choice is not None:
        tables = (choice.locking is not None) + (choice.single is not None)
        national = None if tables == 0 else NationalShift(choice.locking, choice.single)
        single_part, per_part = _CAPACITIES["GSM-7", tables, concat_ref]
        if choice.units <= single_part:
            return _build(
                "GSM-7",
                choice.units,
                single_part,
                [text],
                smart_replaced,
                national,
                concat_ref,
                reference,
            )
        weights = [2 if character in choice.double else 1 for character in text]
        parts = _split_greedy(text, per_part, weights, grapheme)
        return _build(
            "GSM-7", choice.units, per_part, parts, smart_replaced, national, concat_ref, reference
        )

    # UCS-2: UTF-16 code units; a character outside the BMP is a surrogate pair (2 units).
    try:
        encoded = text.encode("utf-16-le")
    except UnicodeEncodeError:
        raise _lone_surrogate_error(text) from None
    units = len(encoded) // 2
    single_part, per_part = _CAPACITIES["UCS-2", 0, concat_ref]
    if units <= single_part:
        parts = [text]
    else:
        weights = [2 if character > "\uffff" else 1 for character in text]
        parts = _split_greedy(text, per_part, weights, grapheme)
    return _build(
        "UCS-2",
        units,
        single_part if len(parts) == 1 else per_part,
        parts,
        smart_replaced,
        None,
        concat_ref,
        reference,
    )


def _split_greedy(text: str, per_part: int, weights: list[int], grapheme: bool) -> list[str]:
    """Parts, character by character: each takes every character that fits (so the fewest
    parts), then with `grapheme` gives back the end of a cluster it would cut."""
    length = len(text)
    parts: list[str] = []
    start = 0
    while True:
        end, used = start, 0
        while end < length and used + weights[end] <= per_part:
            used += weights[end]
            end += 1
        if end == length:
            parts.append(text[start:])
            return parts
        if grapheme:
            end = _cluster_edge(text, start, end)
        parts.append(text[start:end])
        start = end


def _cluster_edge(text: str, start: int, end: int) -> int:
    """The last grapheme cluster boundary in (start, end]; `end` if one cluster fills the part."""
    before, after = text[end - 1], text[end]
    if before < "\x80" and after < "\x80":
        # Between two ASCII characters the only cluster is CR LF (UAX #29 GB3).
        if before == "\r" and after == "\n" and end - 1 > start:
            return end - 1
        return end
    if (before < "\x80" or after < "\x80") and _cluster_end(text, end - 1) == end:
        # Beside an ASCII character no rule looks further left than `end - 1` (an ASCII
        # character never extends a cluster nor links one), so the cluster that starts
        # there decides; if it runs past `end`, the general search below finds its start.
        return end
    # Find a boundary to start from: a position holding an ASCII character, whose break
    # from its left neighbour depends on that neighbour only (a Prepend or CR joins it).
    anchor = end - 1
    while anchor > start:
        if text[anchor] < "\x80" and _cluster_end(text, anchor - 1) == anchor:
            break
        anchor -= 1
    position = anchor
    while True:
        stop = _cluster_end(text, position)
        if stop == end:
            return end
        if stop > end:
            return position if position > start else end
        position = stop


def _cluster_end(text: str, position: int) -> int:
    match = _CLUSTER_PATTERN.match(text, position)
    assert match is not None  # \X matches any character
    return match.end()


def _build(
    encoding: Encoding,
    units: int,
    per_segment: int,
    parts: list[str],
    smart_replaced: int,
    national: NationalShift | None,
    concat_ref: int,
    reference: int,
) -> Segmentation:
    total = len(parts)
    if total > MAX_PARTS:
        raise _too_many_parts_error(total)
    national_elements = b""
    if national is not None:
        # TS 23.040 9.2.3.24.15 (single shift) and 9.2.3.24.16 (locking shift).
        if national.single is not None:
            language = gsm_tables.NATIONAL_LANGUAGE_IDS[national.single]
            national_elements += bytes((_SINGLE_SHIFT_IEI, 1, language))
        if national.locking is not None:
            language = gsm_tables.NATIONAL_LANGUAGE_IDS[national.locking]
            national_elements += bytes((_LOCKING_SHIFT_IEI, 1, language))
    if total == 1:
        header = bytes((len(national_elements),)) + national_elements if national_elements else b""
        return Segmentation(
            encoding, 1, units, per_segment, parts, smart_replaced, national, [header]
        )
    if not national_elements:
        headers = [*_concatenation_headers(concat_ref, reference, total)]
    else:
        if concat_ref == 8:
            concat_head = bytes((0x00, 3, reference))
        else:
            concat_head = bytes((0x08, 4, reference >> 8, reference & 0xFF))
        header_length = len(concat_head) + 2 + len(national_elements)
        head = _OCTETS[header_length] + concat_head + _OCTETS[total]
        headers = [head + _OCTETS[sequence] + national_elements for sequence in range(1, total + 1)]
    return Segmentation(
        encoding, total, units, per_segment, parts, smart_replaced, national, headers
    )


# The C path gets every table and constant from here, once.
_native_segment.configure(
    "".join(sorted(_DEFAULT_CHARACTERS)),
    "".join(sorted(_EXTENSION_CHARACTERS)),
    (
        *_CAPACITIES["GSM-7", 0, 8],  # single part, 8-bit reference
        _CAPACITIES["GSM-7", 0, 16][1],
        *_CAPACITIES["UCS-2", 0, 8],
        _CAPACITIES["UCS-2", 0, 16][1],
    ),
    _STARTER_RANGES,
    "".join(sorted(_JOINS_FOLLOWING)),
    Segmentation,
    _cluster_edge,
)
