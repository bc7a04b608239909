"""Phone numbers in, E.164 out ('+' and digits), or a sentence saying what is wrong. Pure: no I/O.

`normalise(raw, default_region)` accepts what people type — spaces, dashes, dots,
parentheses, the `00` international prefix, local numbers when a default region is
configured — and returns the E.164 form every driver starts from (ITU-T E.164: a
country code and at most 15 digits in all).

Two paths give the same answer:

- **Fast path** (about a microsecond): input already `+` and 8–15 digits. String
  methods, the country code looked up among those libphonenumber knows, and the rest's
  length checked against that country's possible lengths, read once per country code
  from libphonenumber's metadata and cached. A number whose national part could start
  with a national prefix (the `0` of `+44 0…`; a regular expression only where the
  prefix is more than digits) is left to the slow path, which knows when to strip it.
- **Slow path** (tens of microseconds): `phonenumbers.parse`, then the possible-length
  check, then E.164 formatting.

Both check possible *lengths*, never `is_valid_number`: carriers open number ranges
faster than libphonenumber releases follow, and refusing a real customer's new number is
worse than letting the provider refuse a wrong one. Lengths that are possible only as a
local number (a subscriber number without its area code) are refused: an SMS needs
the full number.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult
from phonenumbers.phonemetadata import PhoneMetadata

# ITU-T E.164: a country code of 1–3 digits, never starting with 0, and at most
# 15 digits in all. Numbers shorter than 8 digits in all exist (small islands) but
# take the slow path. The fast path's form: "+", then 8 to 15 ASCII digits, the first not
# 0 (`\+[1-9][0-9]{7,14}`, asked in _normalise_fast without a regular expression).
_DIGITS_FORM = re.compile(r"\+?[0-9]+")
# What people put between digits; everything else that is not a digit is refused.
_SEPARATORS = str.maketrans("", "", " \t\u00a0-.()")
# Error sentences quote at most this much of what was given.
_QUOTE_LIMIT = 40


class InvalidNumber(ValueError):  # noqa: N818 -- the name ingress and the CLI catch
    """Not a number septet can send to; the message says which number and why."""


class _CountryRules:
    """What the fast path needs to know about one country code."""

    __slots__ = ("national_digits", "national_prefix", "possible_lengths")

    def __init__(self, possible_lengths: frozenset[int], national_prefix: str | None):
        self.possible_lengths = possible_lengths
        # Most countries' national prefix pattern is digits alone ("0", "8"): asked with
        # startswith, not a regular expression, for every number.
        self.national_digits = (
            national_prefix if national_prefix and national_prefix.isdigit() else None
        )
        self.national_prefix = (
            re.compile(national_prefix)
            if national_prefix and self.national_digits is None
            else None
        )


@functools.cache
def _country_rules(country_code: str) -> _CountryRules | None:
    """The rules for a country code given as digits, or None if there is no such code.

    The metadata is the code's main region's, as `is_possible_number` uses: for shared
    codes (+1, +7, +290) libphonenumber lists every member's lengths there.
    """
    code = int(country_code)
    if code not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        return None
    region = phonenumbers.region_code_for_country_code(code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None or metadata.general_desc is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    return _CountryRules(frozenset(metadata.general_desc.possible_length), prefix)


@functools.cache
def _country_of(first_digits: str) -> tuple[int, _CountryRules] | None:
    """The country code that starts `first_digits` (a number's first three digits): its
    length and rules, or None. At most a thousand of them, each worked out once."""
    # Country codes are prefix-free (ITU-T E.164): the first known one is the one.
    for length in (1, 2, 3):
        rules = _country_rules(first_digits[:length])
        if rules is not None:
            return length, rules
    return None


def _normalise_fast(number: str) -> str | None:
    """`number` itself when it is plainly E.164 and possible; None means "ask the slow path"."""
    if not (
        9 <= len(number) <= 16
        and number[0] == "+"
        and number[1] != "0"
        and number.isascii()
        and number[1:].isdigit()
    ):
        return None
    country = _country_of(number[1:4])
    if country is None:
        return None
    length, rules = country
    national = number[1 + length :]
    if len(national) not in rules.possible_lengths:
        return None
    if rules.national_digits is not None:
        if national.startswith(rules.national_digits):
            return None
    elif rules.national_prefix is not None and rules.national_prefix.match(national):
        return None
    return number


def _quote(raw: str) -> str:
    return repr(raw if len(raw) <= _QUOTE_LIMIT else raw[:_QUOTE_LIMIT] + "…")


def _describe_lengths(lengths: tuple[int, ...]) -> str:
    """(8, 9) → "8 or 9"; (4, …, 15) → "4 to 15"; (7, 9, 10) → "7, 9 or 10"."""
    ordered = sorted(set(lengths))
    if len(ordered) > 2 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f"{ordered[0]} to {ordered[-1]}"
    if len(ordered) == 1:
        return str(ordered[0])
    return ", ".join(map(str, ordered[:-1])) + f" or {ordered[-1]}"


def _describe_country(code: int) -> str:
    """'RW (+250)', '+1 (US and 24 other regions)', 'the non-geographic code +882'."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if not regions or regions == ("001",):
        return f"the non-geographic code +{code}"
    if len(regions) == 1:
        return f"{regions[0]} (+{code})"
    return f"+{code} ({regions[0]} and {len(regions) - 1} other regions)"


def _parse_error_sentence(quoted: str, error: NumberParseException) -> str:
    match error.error_type:
        case NumberParseException.INVALID_COUNTRY_CODE:
            return f"{quoted} does not start with a known country code"
        case NumberParseException.TOO_SHORT_NSN | NumberParseException.TOO_SHORT_AFTER_IDD:
            return f"{quoted} is too short to be a phone number"
        case NumberParseException.TOO_LONG:
            return f"{quoted} is too long to be a phone number"
        case _:
            return f"{quoted} is not a phone number"


def _normalise_slow(cleaned: str, raw: str, default_region: str | None) -> str:
    quoted = _quote(raw)
    if _DIGITS_FORM.fullmatch(cleaned) is None:
        raise InvalidNumber(f"{quoted} is not a phone number")
    if not cleaned.startswith("+"):
        if default_region is None:
            raise InvalidNumber(f"{quoted} is a local number and no default region is configured")
        default_region = check_region(default_region)
    try:
        parsed = phonenumbers.parse(cleaned, default_region)
    except NumberParseException as error:
        raise InvalidNumber(_parse_error_sentence(quoted, error)) from None
    verdict = phonenumbers.is_possible_number_with_reason(parsed)
    if verdict == ValidationResult.IS_POSSIBLE:
        return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    code = parsed.country_code
    if verdict == ValidationResult.INVALID_COUNTRY_CODE or code is None:
        raise InvalidNumber(f"{quoted} does not start with a known country code")
    country = _describe_country(code)
    region = phonenumbers.region_code_for_country_code(code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None or metadata.general_desc is None:
        raise InvalidNumber(f"{quoted} does not start with a known country code")
    lengths = metadata.general_desc.possible_length
    expected = f"numbers there have {_describe_lengths(lengths)} digits after +{code}"
    if verdict == ValidationResult.TOO_SHORT:
        raise InvalidNumber(f"{quoted} is too short for {country}: {expected}")
    if verdict == ValidationResult.TOO_LONG:
        raise InvalidNumber(f"{quoted} is too long for {country}: {expected}")
    if verdict == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        raise InvalidNumber(f"{quoted} lacks its area code for {country}: {expected}")
    raise InvalidNumber(f"{quoted} has an impossible length for {country}: {expected}")


def check_region(region: str) -> str:
    """`region` as an upper-case ISO 3166-1 alpha-2 code libphonenumber knows, or ValueError.

    For config: a default region is checked once at start-up, not per number.
    """
    upper = region.upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"default region {region!r} is not an ISO 3166-1 code phonenumbers knows")
    return upper


def normalise(raw: str, default_region: str | None = None) -> str:
    """`raw` as E.164 (`+` and digits), or InvalidNumber with a sentence naming it and why.

    A number without `+` or the `00` international prefix is read as a local number of
    `default_region` (an ISO 3166-1 code such as "RW"; ValueError if phonenumbers does not
    know it); with no default region it is refused rather than guessed at.
    """
    fast = _normalise_fast(raw)
    if fast is not None:
        return fast
    cleaned = raw.strip().translate(_SEPARATORS)
    # "00" is the international prefix the ITU-T recommends and most of septet's
    # destinations dial; another region's (011) is handled by phonenumbers through
    # default_region.
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if cleaned != raw:
        fast = _normalise_fast(cleaned)
        if fast is not None:
            return fast
    return _normalise_slow(cleaned, raw, default_region)
