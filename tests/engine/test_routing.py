"""Tests for engine.routing: longest-prefix routes, pinned routes, defaults, validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from engine.routing import (
    DEFAULT_FALLBACK_ROUTE,
    EMBEDDED_BRIDGES,
    Router,
    UnknownRoute,
    default_router,
    default_routes,
)

BRIDGES = ("dsc", "routemobile", "bsg", "smsclub")


@pytest.fixture
def router() -> Router:
    return Router(
        {
            "250": ("dsc", "routemobile"),
            "25072": ("routemobile",),  # one operator's range goes elsewhere
            "1": ("routemobile", "bsg"),
            "1876": ("bsg",),  # Jamaica shares +1 but not its route
        },
        default=("bsg",),
        bridges=BRIDGES,
    )


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("+250781234567", ("dsc", "routemobile")),
        ("+250721234567", ("routemobile",)),  # the longer prefix wins
        ("+12125551234", ("routemobile", "bsg")),
        ("+18761234567", ("bsg",)),
        ("+447911123456", ("bsg",)),  # no prefix: the default
        ("250781234567", ("dsc", "routemobile")),  # the '+' is optional
        ("+2507", ("dsc", "routemobile")),  # shorter than the longest prefix
    ],
)
def test_longest_prefix_wins(router: Router, to: str, expected: tuple[str, ...]) -> None:
    assert router.route(to) == expected


def test_numbers_alike_in_their_first_prefix_length_characters_share_a_route(
    router: Router,
) -> None:
    """What prepare's batch memo relies on: the route is a function of that much."""
    assert router.prefix_length == len("+25072")
    numbers = [
        f"+{country}{rest}"
        for country in ("250", "2507", "25072", "1", "1876", "44")
        for rest in ("0", "21234567", "91234567", "2", "")
    ]
    by_prefix: dict[str, set[tuple[str, ...]]] = {}
    for number in numbers:
        by_prefix.setdefault(number[: router.prefix_length], set()).add(router.route(number))
    assert all(len(routes) == 1 for routes in by_prefix.values())
    assert len(by_prefix) > 10


def test_a_requested_route_means_that_bridge_only(router: Router) -> None:
    assert router.route("+250781234567", requested="smsclub") == ("smsclub",)
    assert router.route("+250781234567", requested="dsc") == ("dsc",)


def test_a_requested_route_that_is_not_a_bridge_is_refused(router: Router) -> None:
    with pytest.raises(UnknownRoute, match=r"route 'twilio' is not a configured bridge"):
        router.route("+250781234567", requested="twilio")


def test_no_match_and_no_default_is_refused() -> None:
    router = Router({"250": ("dsc",)}, default=None, bridges=BRIDGES)
    with pytest.raises(UnknownRoute, match=r"no route matches '\+447911123456'"):
        router.route("+447911123456")


def test_unknown_route_is_a_value_error() -> None:
    router = Router({}, default=None, bridges=BRIDGES)
    with pytest.raises(ValueError, match="no default route"):
        router.route("+250781234567")


@pytest.mark.parametrize("to", ["", "+", "+25078x", "0781 234", "+٢٥٠٧٨"])
def test_a_malformed_number_is_refused(router: Router, to: str) -> None:
    with pytest.raises(UnknownRoute, match=r"not an E\.164 number"):
        router.route(to)


@pytest.mark.parametrize(
    ("routes", "default", "message"),
    [
        ({"250": ("dsc", "twilio")}, None, "not configured: twilio"),
        ({"250": ("dsc",)}, ("nexmo", "twilio"), "not configured: nexmo, twilio"),
        ({"+250": ("dsc",)}, None, "must be digits only"),
        ({"": ("dsc",)}, None, "must be digits only"),
        ({"25O": ("dsc",)}, None, "must be digits only"),
        ({"250": ()}, None, "names no bridge"),
        ({"250": ("dsc", "dsc")}, None, "names a bridge twice"),
        ({"250": "dsc"}, None, "not the string 'dsc'"),
        ({}, (), "default route names no bridge"),
    ],
)
def test_bad_tables_are_refused_at_construction(
    routes: Mapping[str, Sequence[str]], default: Sequence[str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Router(routes, default=default, bridges=BRIDGES)


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("+250781234567", ("dsc", "routemobile")),
        ("+380671234567", ("smsclub", "bsg")),
        ("+447911123456", ("bsg", "routemobile")),
        ("+4915123456789", ("bsg", "routemobile")),
        ("+79161234567", ("bsg", "routemobile")),
        ("+919812345678", ("routemobile", "bsg")),
        ("+8801712345678", ("routemobile", "bsg")),
        ("+2348031234567", ("routemobile", "bsg")),
        ("+12125551234", ("routemobile", "bsg")),
        ("+61412345678", DEFAULT_FALLBACK_ROUTE),  # Australia: no entry, the default
    ],
)
def test_the_embedded_default_routes(to: str, expected: tuple[str, ...]) -> None:
    assert default_router().route(to) == expected


def test_default_routes_cover_the_listed_countries() -> None:
    routes = default_routes()
    listed = {"250", "380", "44", "49", "33", "39", "34", "48", "40", "7"}
    listed |= {"91", "92", "880", "234", "254", "27", "1"}
    assert set(routes) == listed
    assert all(set(route) <= set(EMBEDDED_BRIDGES) for route in routes.values())
