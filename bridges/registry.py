"""Driver name -> driver class and its limits, in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bridges import bsg, dsc, routemobile, smsclub
from bridges.base import BridgeDriver, BridgeSettings, Limits
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

# Driver name -> its limits for a bridge's options (the driver's `limits`, known without
# building it: engine.config checks each bridge's default_sender against them).
DRIVER_LIMITS: dict[str, Callable[[Mapping[str, str]], Limits]] = {
    "dsc": dsc.bridge_limits,
    "routemobile": routemobile.bridge_limits,
    "bsg": bsg.bridge_limits,
    "smsclub": smsclub.bridge_limits,
}


def build_driver(driver: str, settings: BridgeSettings) -> BridgeDriver:
    try:
        cls = DRIVER_CLASSES[driver]
    except KeyError:
        known = ", ".join(sorted(DRIVER_CLASSES))
        raise ValueError(f"unknown driver {driver!r}; known drivers: {known}") from None
    return cls(settings)
