"""Driver name -> driver class, in one place."""

from __future__ import annotations

from collections.abc import Callable

from bridges.base import BridgeDriver, BridgeSettings
from bridges.bsg import BsgDriver
from bridges.dsc import DscDriver
from bridges.routemobile import RouteMobileDriver
from bridges.smsclub import SmsClubDriver

DRIVER_CLASSES: dict[str, Callable[[BridgeSettings], BridgeDriver]] = {
    "dsc": DscDriver,
    "routemobile": RouteMobileDriver,
    "bsg": BsgDriver,
    "smsclub": SmsClubDriver,
}


def build_driver(driver: str, settings: BridgeSettings) -> BridgeDriver:
    try:
        cls = DRIVER_CLASSES[driver]
    except KeyError:
        known = ", ".join(sorted(DRIVER_CLASSES))
        raise ValueError(f"unknown driver {driver!r}; known drivers: {known}") from None
    return cls(settings)
