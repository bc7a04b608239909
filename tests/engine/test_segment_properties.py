"""Properties of engine.segment over generated texts: lossless, within capacity, atoms whole,
and no more parts than the rules require (checked against a plain greedy reference)."""

from __future__ import annotations

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import gsm_tables
from engine.segment import (  # _segment_general: the reference the C path must match
    Segmentation,
    SplitMode,
    _segment_general,
    capacity,
    count_units,
    segment_text,
)

CLUSTER = regex.compile(r"\X")

# Pieces chosen to meet every rule: GSM, extension, CR LF, accents (pre- and decomposed),
# Cyrillic, surrogate pairs, flags, ZWJ sequences, skin tones, Devanagari conjuncts,
# Turkish letters for the national tables.
PIECES = [
    "a",
    "Z",
    " ",
    "7",
    "é",
    "Ω",
    "[",
    "€",
    "^",
    "\r\n",
    "\r",
    "\n",
    "ж",
    "e\u0301",
    "\u0301",
    "\U0001f600",
    "\U0001f1f7\U0001f1fc",
    "\U0001f1fa",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0001f44d\U0001f3fd",
    "\u200d",
    "क्षि",
    "ह",
    "ş",
    "ı",
    "Ğ",
]

texts = st.lists(st.sampled_from(PIECES), min_size=1, max_size=220).map("".join)
gsm_texts = st.lists(
    st.sampled_from(["a", " ", "é", "[", "€", "\r\n", "Ω"]), min_size=1, max_size=400
).map("".join)
splits = st.sampled_from(["grapheme", "codepoint"])
concat_refs = st.sampled_from([8, 16])
nationals = st.sampled_from([(), ("tr",), ("tr", "es"), ("hi",), ("pt", "es")])


def atoms(text: str, split: SplitMode) -> list[str]:
    """The pieces a part boundary may not cut, in order."""
    return CLUSTER.findall(text) if split == "grapheme" else list(text)


def greedy_segments(result: Segmentation, split: SplitMode, single_part_capacity: int) -> int:
    """The fewest parts: greedy filling is optimal for items of fixed order and size."""
    text = "".join(result.parts)
    if result.units <= single_part_capacity:
        return 1
    parts, used = 1, 0
    for atom in atoms(text, split):
        size = count_units(atom, result.encoding, result.national)
        if size > result.per_segment:  # an atom bigger than a part is cut at code points
            for character in atom:
                weight = count_units(character, result.encoding, result.national)
                if used + weight > result.per_segment:
                    parts, used = parts + 1, 0
                used += weight
            continue
        if used + size > result.per_segment:
            parts, used = parts + 1, 0
        used += size
    return parts


def single_part_capacity(result: Segmentation) -> int:
    """TS 23.040: 140 octets less the UDH a lone part carries (UDHL + 3 octets per table)."""
    national = result.national
    tables = (
        0 if national is None else (national.locking is not None) + (national.single is not None)
    )
    return capacity(result.encoding, 1 + 3 * tables if tables else 0)


def check(result: Segmentation, text: str, split: SplitMode) -> None:
    assert "".join(result.parts) == text
    assert result.segments == len(result.parts) == len(result.udh)
    sizes = [count_units(part, result.encoding, result.national) for part in result.parts]
    assert sum(sizes) == result.units
    assert all(0 < size <= result.per_segment for size in sizes)
    if result.segments > 1:
        # every edge sits between two atoms, unless the atom is larger than a whole part
        edges = set()
        position = 0
        for atom in atoms(text, split):
            position += len(atom)
            edges.add(position)
        position = 0
        for part in result.parts[:-1]:
            position += len(part)
            if position not in edges:
                containing = next(a for a in _atom_spans(text, split) if a[0] < position < a[1])
                atom = text[containing[0] : containing[1]]
                assert count_units(atom, result.encoding, result.national) > result.per_segment
    capacity = single_part_capacity(result)
    assert result.segments == greedy_segments(result, split, capacity)


def _atom_spans(text: str, split: SplitMode) -> list[tuple[int, int]]:
    spans, position = [], 0
    for atom in atoms(text, split):
        spans.append((position, position + len(atom)))
        position += len(atom)
    return spans


@settings(max_examples=300, deadline=None)
@given(texts, splits, concat_refs)
def test_parts_are_lossless_fit_and_minimal(text: str, split: SplitMode, concat_ref: int) -> None:
    result = segment_text(text, split=split, concat_ref=concat_ref)
    check(result, text, split)


@settings(max_examples=150, deadline=None)
@given(gsm_texts, splits)
def test_gsm_texts(text: str, split: SplitMode) -> None:
    result = segment_text(text, split=split)
    assert result.encoding == "GSM-7"
    check(result, text, split)


@settings(max_examples=150, deadline=None)
@given(texts, nationals, splits)
def test_with_national_tables(text: str, national: tuple[str, ...], split: SplitMode) -> None:
    result = segment_text(text, national=national, split=split)
    check(result, text, split)
    if result.national is not None:
        assert result.encoding == "GSM-7"
        assert {result.national.locking, result.national.single} - {None} <= set(national)


# ── the C path (default tables) against the general path ──────────────────────

# Pieces for long texts, weighted towards what the C path special-cases: runs of
# extension characters and of emoji (dense two-unit characters), CR LF, and every cluster
# kind near a cut (ZWJ sequences, flags, skin tones, combining marks, Prepend, Hangul).
FAST_PATH_PIECES = [
    *PIECES,
    "[]{}",
    "€€€€€€€€€€",
    "\U0001f600" * 12,
    "\U0001f680\U0001f389",
    "abc def ",
    "\u0600\u0661",  # Arabic number sign (Prepend) and a digit
    "\u1100\u1161\u11a8",  # Hangul L V T: one cluster
    "\uac00\u11a8",  # Hangul LV T
    "a\u200d",
    "\u0915\u094d\u200d\u0937",  # conjunct with ZWJ (UAX #29 GB9c)
    "`",
    "\x1b",
    "\u4e2d\u6587",
    "\U000e0067\U000e0062",  # tag characters (Extend)
    "\u2019",  # same UTF-8 lead byte as the euro sign, but not GSM
    "£Ü",  # Latin-1 letters of the default alphabet
]
long_texts = st.lists(st.sampled_from(FAST_PATH_PIECES), min_size=1, max_size=160).map("".join)


@settings(max_examples=400, deadline=None)
@given(long_texts, splits, concat_refs, st.integers(min_value=0, max_value=255))
def test_fast_path_matches_general_path(
    text: str, split: SplitMode, concat_ref: int, reference: int
) -> None:
    fast = segment_text(text, split=split, concat_ref=concat_ref, reference=reference)
    # The general path is the plain statement of the rules (engine/segment.py says so).
    general = _segment_general(text, (), concat_ref, split, reference, 0)
    assert fast == general
    check(fast, text, split)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "é", "[", "€", "\r\n", "\U0001f600", "\u0301"]), max_size=700),
    splits,
)
def test_dense_two_unit_characters_match_general_path(pieces: list[str], split: SplitMode) -> None:
    text = "".join(pieces) or "a"
    fast = segment_text(text, split=split)
    assert fast == _segment_general(text, (), 8, split, 0, 0)
    check(fast, text, split)


# Any code point but a surrogate, weighted towards the GSM alphabet so that GSM-7 texts and
# texts with one stray character both come up; lengths cross every part edge.
any_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(sorted(set(gsm_tables.DEFAULT_ALPHABET + gsm_tables.DEFAULT_EXTENSION))),
        st.characters(exclude_categories=["Cs"]),
    ),
    min_size=1,
    max_size=500,
)


@settings(max_examples=500, deadline=None)
@given(any_texts, splits, concat_refs)
def test_any_text_matches_general_path(text: str, split: SplitMode, concat_ref: int) -> None:
    fast = segment_text(text, split=split, concat_ref=concat_ref)
    assert fast == _segment_general(text, (), concat_ref, split, 0, 0)
    check(fast, text, split)


# Multi-code-point clusters, each tried at every offset of a part edge.
CLUSTER_PIECES = [
    "e\u0301",
    "e\u0301\u0302\u0303",
    "\U0001f1f7\U0001f1fc",
    "\U0001f1f7\U0001f1fc\U0001f1fa\U0001f1f8",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0001f44d\U0001f3fd",
    "\u0915\u094d\u0937\u093f",
    "\u0915\u094d\u200d\u0937",
    "\u0600\u0661",
    "\u0600\u0600\U0001f600",
    "\u1100\u1161\u11a8",
    "\uac00\u11a8",
    "\r\n",
    "a\u200d\U0001f600",
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "\u2764\ufe0f",
]


def test_every_cluster_at_every_offset_of_an_edge_matches_general_path() -> None:
    for piece in CLUSTER_PIECES:
        for filler, counts in (
            ("ж", range(52, 70)),
            ("a", range(52, 70)),
            ("\U0001f600", range(26, 35)),
        ):
            for count in counts:
                text = filler * count + piece + filler * 80
                for split in ("grapheme", "codepoint"):
                    fast = segment_text(text, split=split)
                    assert fast == _segment_general(text, (), 8, split, 0, 0), (piece, count)
                check(segment_text(text), text, "grapheme")
