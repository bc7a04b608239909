"""Tests for engine.numbers: a golden table of numbers and sentences; fast path = slow path."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.numbers import (
    InvalidNumber,
    _normalise_fast,
    _normalise_slow,
    check_region,
    normalise,
)

GOOD: list[tuple[str, str | None, str]] = [
    # raw, default region, E.164
    ("+250781234567", None, "+250781234567"),  # Rwanda, MTN mobile
    ("+250 78 123 4567", None, "+250781234567"),
    ("+250-78-123-4567", None, "+250781234567"),
    ("0781234567", "RW", "+250781234567"),  # local, with a default region
    ("0781234567", "rw", "+250781234567"),  # region codes in any case
    ("00250781234567", None, "+250781234567"),  # the '00' international prefix
    ("00 250 78 123 4567", "UA", "+250781234567"),
    ("+380671234567", None, "+380671234567"),  # Ukraine, Kyivstar
    ("+380 (67) 123-45-67", None, "+380671234567"),
    ("067 123 45 67", "UA", "+380671234567"),
    ("+447911123456", None, "+447911123456"),  # UK mobile
    ("+44 (0) 20 7946 0000", None, "+442079460000"),  # the national 0 in brackets
    ("07911 123456", "GB", "+447911123456"),
    ("+1 (212) 555-1234", None, "+12125551234"),  # US
    ("212.555.1234", "US", "+12125551234"),
    ("011 250 78 123 4567", "US", "+250781234567"),  # the US international prefix
    ("  +250781234567\t", None, "+250781234567"),
    ("+79161234567", None, "+79161234567"),  # Russia
    ("+88212345678", None, "+88212345678"),  # a non-geographic code
]


@pytest.mark.parametrize(("raw", "region", "expected"), GOOD)
def test_numbers_people_type_become_e164(raw: str, region: str | None, expected: str) -> None:
    assert normalise(raw, region) == expected


BAD: list[tuple[str, str | None, str]] = [
    # raw, default region, the whole sentence
    (
        "0781234567",
        None,
        "'0781234567' is a local number and no default region is configured",
    ),
    (
        "+25078",
        None,
        "'+25078' is too short for RW (+250): numbers there have 8 or 9 digits after +250",
    ),
    (
        "+2507812345678901",
        None,
        "'+2507812345678901' is too long for RW (+250): numbers there have 8 or 9 digits "
        "after +250",
    ),
    (
        "+3806712",
        None,
        "'+3806712' is too short for UA (+380): numbers there have 9 or 10 digits after +380",
    ),
    (
        "+3806712345",
        None,
        "'+3806712345' lacks its area code for UA (+380): numbers there have 9 or 10 digits "
        "after +380",
    ),
    (
        "+15551234",
        None,
        "'+15551234' lacks its area code for +1 (US and 24 other regions): numbers there "
        "have 10 digits after +1",
    ),
    (
        "+791612345678",
        None,
        "'+791612345678' has an impossible length for +7 (RU and 1 other regions): numbers "
        "there have 10 or 14 digits after +7",
    ),
    ("abc", None, "'abc' is not a phone number"),
    ("abc", "RW", "'abc' is not a phone number"),
    ("+1 800 FLOWERS", None, "'+1 800 FLOWERS' is not a phone number"),  # no vanity letters
    ("", None, "'' is not a phone number"),
    ("+", None, "'+' is not a phone number"),
    ("++250781234567", None, "'++250781234567' is not a phone number"),
    ("+999123456789", None, "'+999123456789' does not start with a known country code"),
    ("1", "RW", "'1' is not a phone number"),
    ("+250 1", None, "'+250 1' is too short to be a phone number"),
    ("1" * 300, "RW", f"'{'1' * 40}…' is too long to be a phone number"),
]


@pytest.mark.parametrize(("raw", "region", "sentence"), BAD)
def test_bad_numbers_are_refused_with_a_sentence(
    raw: str, region: str | None, sentence: str
) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalise(raw, region)
    assert str(caught.value) == sentence


def test_invalid_number_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        normalise("hello")


def test_an_unknown_default_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="'XX' is not an ISO 3166-1 code") as caught:
        normalise("0781234567", "XX")
    assert not isinstance(caught.value, InvalidNumber)


def test_check_region_upper_cases_known_regions() -> None:
    assert check_region("rw") == "RW"
    with pytest.raises(ValueError, match="ZZZ"):
        check_region("ZZZ")


@pytest.mark.parametrize(
    "number",
    ["+250781234567", "+250721234567", "+380671234567", "+447911123456", "+12125551234"],
)
def test_common_e164_numbers_take_the_fast_path(number: str) -> None:
    assert _normalise_fast(number) == number


@pytest.mark.parametrize(
    "number",
    [
        "+250 781234567",  # a separator: cleaned first
        "+4402079460000",  # a national prefix after the country code
        "+2507812",  # too short for the fast form
        "+0123456789",  # no country code starts with 0
        "+25078123456\n",  # a newline is no digit
        "+25078123456\u0661",  # nor an Arabic-Indic one (ASCII digits only)
        "+2507812345678901",  # 16 digits: longer than E.164
        "250781234567",  # no "+"
    ],
)
def test_doubtful_forms_leave_the_fast_path(number: str) -> None:
    assert _normalise_fast(number) is None


known_country_codes = st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)).map(str)
rest_digits = st.text(alphabet="0123456789", min_size=4, max_size=13)


@given(country_code=known_country_codes, rest=rest_digits)
@example(country_code="250", rest="0781234567")
@example(country_code="44", rest="02079460000")
@example(country_code="7", rest="8121234567")
@example(country_code="39", rest="0612345678")
def test_the_fast_path_agrees_with_phonenumbers(country_code: str, rest: str) -> None:
    number = f"+{country_code}{rest}"
    fast = _normalise_fast(number)
    if fast is None:
        return  # the slow path decides; the golden tables cover its sentences
    assert _normalise_slow(number, number, None) == fast


@given(raw=st.text(max_size=30), region=st.sampled_from([None, "RW", "UA", "US", "GB"]))
def test_anything_either_normalises_to_e164_or_is_refused_with_a_sentence(
    raw: str, region: str | None
) -> None:
    sentence: str | None = None
    try:
        number = normalise(raw, region)
    except InvalidNumber as error:
        sentence = str(error)
    if sentence is not None:
        assert sentence.startswith(repr(raw[:40])[:-1])  # it names the number
    else:
        assert number.startswith("+")
        assert number[1:].isdigit()
        assert len(number) <= 18  # E.164's 15 digits; libphonenumber allows a few more
