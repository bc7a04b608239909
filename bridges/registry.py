"""Driver name -> driver class, its limits, credentials, base URL and report path, in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from bridges import bsg, dsc, routemobile, smsclub
from bridges.base import BridgeDriver, BridgeSettings, DeliveryPath, Limits
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

# Driver name -> the credentials keys a bridge needs, given whether septet takes its
# reports by callback (each driver's `required_credentials`, which its constructor uses).
DRIVER_CREDENTIALS: dict[str, Callable[[bool], tuple[str, ...]]] = {
    "dsc": dsc.required_credentials,
    "routemobile": routemobile.required_credentials,
    "bsg": bsg.required_credentials,
    "smsclub": smsclub.required_credentials,
}

# Driver name -> the provider's production base URL where its document names one; None
# where each account has its own (the bridge's `base_url` is then required).
DRIVER_BASE_URLS: dict[str, str | None] = {
    "dsc": dsc.PRODUCTION_BASE_URL,
    "routemobile": routemobile.PRODUCTION_BASE_URL,
    "bsg": bsg.PRODUCTION_BASE_URL,
    "smsclub": smsclub.PRODUCTION_BASE_URL,
}

# Driver name -> how its delivery reports come back: "callback" needs the HTTP listener
# reachable by the provider, "poll" does not.
DRIVER_DELIVERY: dict[str, DeliveryPath] = {
    "dsc": DscDriver.capabilities.delivery,
    "routemobile": RouteMobileDriver.capabilities.delivery,
    "bsg": BsgDriver.capabilities.delivery,
    "smsclub": SmsClubDriver.capabilities.delivery,
}

# Driver name -> what the operator does for its reports: "with_each_message" (septet
# sends its callback URL with every send: dsc's dlrurl), "on_the_account" (the URL is
# configured on the provider's account: Route Mobile's DLR push), "polled" (nothing).
CallbackSetup = Literal["with_each_message", "on_the_account", "polled"]
DRIVER_CALLBACK_SETUP: dict[str, CallbackSetup] = {
    "dsc": "with_each_message",
    "routemobile": "on_the_account",
    "bsg": "polled",
    "smsclub": "polled",
}


def build_driver(driver: str, settings: BridgeSettings) -> BridgeDriver:
    try:
        cls = DRIVER_CLASSES[driver]
    except KeyError:
        known = ", ".join(sorted(DRIVER_CLASSES))
        raise ValueError(f"unknown driver {driver!r}; known drivers: {known}") from None
    return cls(settings)
