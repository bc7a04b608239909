"""engine.pricing: longest prefix, default, per segment or message, exact sums, config."""

from __future__ import annotations

import msgspec
import pytest

from engine.pricing import (
    NoPriceError,
    PriceConfig,
    default_price_tables,
    message_cost,
    price_table,
    price_tables,
)

TABLE = price_table(
    PriceConfig(
        currency="EUR",
        per="segment",
        default=0.05,
        prefixes={"380": 0.0225, "38050": 0.02, "1": 0.01},
    )
)


@pytest.mark.parametrize(
    ("number", "prefix", "unit_price"),
    [
        ("+380501234567", "38050", 0.02),  # longest prefix wins
        ("+380671234567", "380", 0.0225),
        ("380671234567", "380", 0.0225),  # the '+' is optional
        ("+1 555 0100", "1", 0.01),  # spaces are ignored
        ("+250788123456", None, 0.05),  # no prefix: the default
    ],
)
def test_longest_prefix_then_default(number: str, prefix: str | None, unit_price: float) -> None:
    cost = message_cost(TABLE, number, 1)
    assert (cost.prefix, cost.unit_price, cost.currency) == (prefix, unit_price, "EUR")


def test_per_segment_multiplies_exactly() -> None:
    cost = message_cost(TABLE, "+380671234567", 3)
    assert cost.micros == 67_500
    assert cost.amount == 0.0675  # 3 x 0.0225, not 0.06749999999999999
    assert cost.quantity == 3


def test_sums_are_exact_in_micros() -> None:
    costs = [message_cost(TABLE, "+380671234567", 1) for _ in range(10)]
    assert sum(cost.micros for cost in costs) == 225_000
    assert sum(cost.amount for cost in costs) != 0.225  # why micros exist
    assert round(sum(cost.micros for cost in costs) / 1_000_000, 6) == 0.225


def test_per_message_ignores_segments() -> None:
    table = price_table(PriceConfig(currency="UAH", per="message", prefixes={"380": 1.5}))
    cost = message_cost(table, "+380501234567", 4)
    assert (cost.amount, cost.quantity, cost.per) == (1.5, 1, "message")


def test_no_prefix_and_no_default_is_an_error() -> None:
    table = price_table(PriceConfig(currency="RWF", prefixes={"250": 75.0}))
    with pytest.raises(NoPriceError, match=r"No price for \+1555"):
        message_cost(table, "+15550100", 1)


@pytest.mark.parametrize("number", ["", "+", "+25078x", "hello", "+٢٥٠"])
def test_bad_numbers_are_rejected(number: str) -> None:
    with pytest.raises(ValueError, match="not an international phone number"):
        message_cost(TABLE, number, 1)


def test_zero_segments_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one segment"):
        message_cost(TABLE, "+380501234567", 0)


def test_tables_from_toml() -> None:
    document = msgspec.toml.decode(
        b"""
        [dsc]
        currency = "RWF"
        prefixes = { "250" = 75 }

        [bsg]
        currency = "EUR"
        per = "message"
        default = 0.06
        prefixes = { "380" = 0.0225, "48" = 0.035 }
        """
    )
    tables = price_tables(document)
    assert message_cost(tables["dsc"], "+250788123456", 2).amount == 150.0
    assert message_cost(tables["bsg"], "+48601234567", 3).amount == 0.035


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"x": {"currency": "EUR", "colour": "red"}}, "unknown field"),
        ({"x": {"currency": "euro"}}, "currency"),
        ({"x": {"currency": "EUR", "per": "minute"}}, "per"),
        ({"x": {"currency": "EUR", "default": -1}}, "default"),
    ],
)
def test_bad_config_is_rejected(config: dict[str, object], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        price_tables(config)


def test_prefixes_must_be_digits() -> None:
    with pytest.raises(ValueError, match="digits only"):
        price_table(PriceConfig(currency="EUR", prefixes={"+250": 1.0}))


def test_default_tables_cover_the_four_bridges() -> None:
    tables = default_price_tables()
    assert sorted(tables) == ["bsg", "dsc", "routemobile", "smsclub"]
    assert {name: table.currency for name, table in tables.items()} == {
        "dsc": "RWF",
        "routemobile": "INR",
        "bsg": "EUR",
        "smsclub": "UAH",
    }
    dsc = message_cost(tables["dsc"], "+250788123456", 2)
    assert (dsc.prefix, dsc.unit_price, dsc.amount) == ("250", 75.0, 150.0)
    assert message_cost(tables["smsclub"], "+380671234567", 1).prefix == "38067"
    assert all(table.default_micros is not None for table in tables.values())
