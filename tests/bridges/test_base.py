"""The shared helpers of bridges/base.py that every driver leans on."""

from __future__ import annotations

import pytest

from bridges.base import ascii_digits


@pytest.mark.parametrize(
    ("number", "digits"),
    [
        ("+380501234567", "380501234567"),
        ("380501234567", "380501234567"),
        ("+38 050-123-45-67", "380501234567"),
        (380501234567, "380501234567"),
        # Arabic-Indic and superscript digits are digits to str.isdigit, not to a provider.
        ("+٣٨٠50", "50"),
        ("+²50", "50"),
        ("", ""),
        ("+", ""),
    ],
)
def test_ascii_digits_keeps_only_ascii_digits(number: str | int, digits: str) -> None:
    assert ascii_digits(number) == digits
