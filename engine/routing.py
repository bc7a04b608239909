"""Which bridges carry a message to a number: the primary, then its failovers. Pure: no I/O.

A route table maps digit prefixes of an E.164 number (country code and beyond, no `+`)
to an ordered list of bridge names. The longest prefix that matches wins, so `"250"`
routes Rwanda while `"25078"` could send one operator's numbers elsewhere. Numbers no
prefix matches take the default route; with no default they cannot be sent.

An input line's `route` names one bridge (docs/design.md, "Input line"). It means exactly
that bridge and no other: a client that names a bridge does so for a reason we cannot
see (a contract, a sender ID registered only there, a test of that bridge), so septet
never quietly fails over to another one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


class UnknownRoute(ValueError):  # noqa: N818 -- the name the scheduler API uses
    """No bridge can carry this message; the message says why in a sentence."""


def default_routes() -> dict[str, tuple[str, ...]]:
    """The embedded default's route table (no config): local providers first, then others."""
    routes: dict[str, tuple[str, ...]] = {
        "250": ("dsc", "routemobile"),  # Rwanda: DSC is a Rwandan aggregator
        "380": ("smsclub", "bsg"),  # Ukraine: SMS Club is Ukrainian
    }
    for europe_and_near in ("44", "49", "33", "39", "34", "48", "40", "7"):
        routes[europe_and_near] = ("bsg", "routemobile")
    for south_asia_africa_americas in ("91", "92", "880", "234", "254", "27", "1"):
        routes[south_asia_africa_americas] = ("routemobile", "bsg")
    return routes


DEFAULT_FALLBACK_ROUTE: tuple[str, ...] = ("routemobile", "bsg")


class Router:
    """Destination number → ordered bridge names, by longest matching digit prefix."""

    __slots__ = ("_bridges", "_default", "_longest_prefix", "_routes")

    def __init__(
        self,
        routes: Mapping[str, Sequence[str]],
        default: Sequence[str] | None,
        bridges: Collection[str],
    ) -> None:
        known = frozenset(bridges)
        unknown: set[str] = set()
        for prefix, route in routes.items():
            if not prefix.isdigit() or not prefix.isascii():
                raise ValueError(f"route prefix {prefix!r} must be digits only (no '+')")
            self._check_route(f"route {prefix!r}", route)
            unknown.update(name for name in route if name not in known)
        if default is not None:
            self._check_route("the default route", default)
            unknown.update(name for name in default if name not in known)
        if unknown:
            raise ValueError(
                f"routes name bridges that are not configured: {', '.join(sorted(unknown))} "
                f"(configured: {', '.join(sorted(known)) or 'none'})"
            )
        self._bridges = known
        self._routes = {prefix: tuple(route) for prefix, route in routes.items()}
        self._default = tuple(default) if default is not None else None
        self._longest_prefix = max(map(len, self._routes), default=0)

    @staticmethod
    def _check_route(what: str, route: Sequence[str]) -> None:
        if isinstance(route, str):
            raise ValueError(f"{what} must be a list of bridge names, not the string {route!r}")
        if not route:
            raise ValueError(f"{what} names no bridge")
        if len(set(route)) != len(route):
            raise ValueError(f"{what} names a bridge twice: {', '.join(route)}")

    @property
    def prefix_length(self) -> int:
        """How much of an E.164 number (`+` included) its route depends on: numbers that
        share their first `prefix_length` characters share their route."""
        return self._longest_prefix + 1

    def route(self, to: str, requested: str | None = None) -> tuple[str, ...]:
        """The bridges to try for `to` (E.164), in order; `requested` pins one bridge."""
        if requested is not None:
            if requested not in self._bridges:
                configured = ", ".join(sorted(self._bridges)) or "none"
                raise UnknownRoute(
                    f"route {requested!r} is not a configured bridge (configured: {configured})"
                )
            return (requested,)
        digits = to.removeprefix("+")
        if not digits.isdigit() or not digits.isascii():
            raise UnknownRoute(f"{to!r} is not an E.164 number, so it cannot be routed")
        for length in range(min(self._longest_prefix, len(digits)), 0, -1):
            route = self._routes.get(digits[:length])
            if route is not None:
                return route
        if self._default is not None:
            return self._default
        raise UnknownRoute(f"no route matches {to!r} and no default route is configured")


EMBEDDED_BRIDGES: tuple[str, ...] = ("dsc", "routemobile", "bsg", "smsclub")


def default_router() -> Router:
    """The embedded default's router: `default_routes()` over the four simulated bridges."""
    return Router(default_routes(), DEFAULT_FALLBACK_ROUTE, EMBEDDED_BRIDGES)
