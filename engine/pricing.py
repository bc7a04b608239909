"""Pricing: what a segmented message costs on a bridge, by destination prefix.

Pure: no I/O. A bridge's price table maps destination prefixes (country code and beyond,
digits only) to a price per segment or per message, in one currency; the longest matching
prefix wins and `default` covers every other number. Amounts are held as integer
millionths of the currency unit ("micros"), so sums are exact; `Cost.amount` is the same
value as a float rounded to 6 decimals, for the event stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

PricedBy = Literal["segment", "message"]
MICROS_PER_UNIT = 1_000_000

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]  # ISO 4217 code
Price = Annotated[float, msgspec.Meta(ge=0)]


class NoPriceError(LookupError):
    """A destination matches no prefix of a table that has no default."""


class PriceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A price table as users write it in TOML:

    [pricing.bsg]
    currency = "EUR"
    per = "segment"
    default = 0.05
    prefixes = { "380" = 0.0225, "48" = 0.035 }
    """

    currency: Currency
    per: PricedBy = "segment"
    default: Price | None = None
    prefixes: dict[str, Price] = msgspec.field(default_factory=dict)


class PriceTable(msgspec.Struct, frozen=True, kw_only=True):
    """A bridge's prices in micros, ready for lookups (build one with `price_table`)."""

    currency: str
    per: PricedBy
    default_micros: int | None
    prefix_micros: dict[str, int]
    longest_prefix: int

    def unit_price(self, number: str) -> tuple[str | None, int]:
        """(matching prefix or None for the default, price in micros) for an E.164 number."""
        digits = destination_digits(number)
        for length in range(min(self.longest_prefix, len(digits)), 0, -1):
            micros = self.prefix_micros.get(digits[:length])
            if micros is not None:
                return digits[:length], micros
        if self.default_micros is None:
            raise NoPriceError(f"No price for {number}: no prefix matches and there is no default.")
        return None, self.default_micros


class Cost(msgspec.Struct, frozen=True, kw_only=True):
    """The cost of one message to one number."""

    micros: int
    currency: str
    per: PricedBy
    unit_micros: int
    quantity: int  # segments when priced per segment, else 1
    prefix: str | None  # the prefix that matched, None when the default applied

    @property
    def amount(self) -> float:
        return micros_to_amount(self.micros)

    @property
    def unit_price(self) -> float:
        return micros_to_amount(self.unit_micros)


def amount_to_micros(amount: float) -> int:
    return round(amount * MICROS_PER_UNIT)


def micros_to_amount(micros: int) -> float:
    return round(micros / MICROS_PER_UNIT, 6)


def destination_digits(number: str) -> str:
    """The digits of an international number ("+250 788 123 456" -> "250788123456")."""
    digits = number.removeprefix("+").replace(" ", "")
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"{number!r} is not an international phone number (digits after '+').")
    return digits


def price_table(config: PriceConfig) -> PriceTable:
    for prefix in config.prefixes:
        if not prefix.isdigit() or not prefix.isascii():
            raise ValueError(f'Price prefix {prefix!r} must be digits only (e.g. "250").')
    return PriceTable(
        currency=config.currency,
        per=config.per,
        default_micros=None if config.default is None else amount_to_micros(config.default),
        prefix_micros={
            prefix: amount_to_micros(price) for prefix, price in config.prefixes.items()
        },
        longest_prefix=max(map(len, config.prefixes), default=0),
    )


def price_tables(configs: Mapping[str, object]) -> dict[str, PriceTable]:
    """Tables per bridge from decoded config data (e.g. the `[pricing]` TOML table)."""
    decoded = msgspec.convert(configs, dict[str, PriceConfig])
    return {bridge: price_table(config) for bridge, config in decoded.items()}


def message_cost(table: PriceTable, number: str, segments: int) -> Cost:
    """What a message of `segments` parts to `number` costs on the bridge of `table`."""
    if segments < 1:
        raise ValueError(f"A message has at least one segment, not {segments}.")
    prefix, unit_micros = table.unit_price(number)
    quantity = segments if table.per == "segment" else 1
    return Cost(
        micros=unit_micros * quantity,
        currency=table.currency,
        per=table.per,
        unit_micros=unit_micros,
        quantity=quantity,
        prefix=prefix,
    )


# The embedded default's demo prices: plausible figures for trying septet out, not any
# provider's tariff. dsc charges 75 RWF per message part in its own examples (seed 000);
# BSG's examples show 0.02 EUR; SMS Club bills in UAH; Route Mobile bills in INR.
_DEFAULT_PRICES: dict[str, PriceConfig] = {
    "dsc": PriceConfig(currency="RWF", per="segment", default=150.0, prefixes={"250": 75.0}),
    "routemobile": PriceConfig(
        currency="INR",
        per="segment",
        default=6.5,
        prefixes={"91": 0.18, "971": 2.4, "44": 3.1, "1": 0.65},
    ),
    "bsg": PriceConfig(
        currency="EUR",
        per="segment",
        default=0.06,
        prefixes={"380": 0.0225, "48": 0.035, "44": 0.0325, "49": 0.075, "250": 0.045},
    ),
    "smsclub": PriceConfig(
        currency="UAH",
        per="segment",
        default=3.5,
        prefixes={"380": 0.98, "38050": 0.95, "38067": 0.95},
    ),
}


def default_price_tables() -> dict[str, PriceTable]:
    """The embedded default's demo price tables, one per bridge (see _DEFAULT_PRICES)."""
    return {bridge: price_table(config) for bridge, config in _DEFAULT_PRICES.items()}
