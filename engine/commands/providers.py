"""`septet providers balance|senders`: ask each bridge's provider account, one line per bridge.

The calls are the drivers' own (engine.provider_accounts), made through the bridge's
HTTP client with its base URL and timeouts, straight from this process: the daemon need
not run. Exit 0 when every provider that has the call answered, 1 when one did not
(its line says why), 2 for a config or a bridge name that cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

import anyio

from bridges.base import BridgeDriver
from bridges.registry import build_driver
from engine.config import ConfigError, Settings, bridge_base_url, driver_settings, load_config
from engine.credentials import BalanceDriver
from engine.http_io import BridgeClient
from engine.provider_accounts import (
    NoSenderCall,
    SenderIdDriver,
    SenderIds,
    balance_failed,
    describe_balance,
    describe_senders,
    fetch_balance,
    fetch_senders,
)

# One question to one bridge: its line for people, and whether asking failed.
Ask = Callable[[str, BridgeDriver, BridgeClient], Awaitable[tuple[str, bool]]]


async def ask_balance(name: str, driver: BridgeDriver, client: BridgeClient) -> tuple[str, bool]:
    check = await fetch_balance(name, driver, client)
    return describe_balance(check), balance_failed(check)


async def ask_senders(name: str, driver: BridgeDriver, client: BridgeClient) -> tuple[str, bool]:
    answer = await fetch_senders(name, driver, client)
    failed = not isinstance(answer, SenderIds | NoSenderCall)
    return describe_senders(answer), failed


def has_balance_call(driver: BridgeDriver) -> bool:
    return isinstance(driver, BalanceDriver)


def has_senders_call(driver: BridgeDriver) -> bool:
    return isinstance(driver, SenderIdDriver)


# question -> (how to ask it, whether a driver has the call)
QUESTIONS: dict[str, tuple[Ask, Callable[[BridgeDriver], bool]]] = {
    "balance": (ask_balance, has_balance_call),
    "senders": (ask_senders, has_senders_call),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", choices=list(QUESTIONS), help="what to ask the providers")
    parser.add_argument(
        "bridges", nargs="*", metavar="BRIDGE", help="bridges to ask (default: all)"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings (default: embedded)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    try:
        settings = load_config(args.config).settings
    except ConfigError as error:
        for sentence in error.sentences:
            print(f"septet providers: {sentence}", file=sys.stderr)
        return 2
    unknown = [name for name in args.bridges if name not in settings.bridges]
    if unknown:
        known = ", ".join(settings.bridges) or "none"
        print(
            f"septet providers: no bridge named {', '.join(unknown)} (configured: {known})",
            file=sys.stderr,
        )
        return 2
    names = list(args.bridges) or list(settings.bridges)
    ask, has_call = QUESTIONS[args.question]
    lines = anyio.run(ask_all, settings, names, ask, has_call)
    failed = False
    for line, line_failed in lines:
        print(line)
        failed = failed or line_failed
    return 1 if failed else 0


async def ask_all(
    settings: Settings, names: list[str], ask: Ask, has_call: Callable[[BridgeDriver], bool]
) -> list[tuple[str, bool]]:
    """Each bridge asked in turn (a handful of requests: no need to overlap them)."""
    lines: list[tuple[str, bool]] = []
    for name in names:
        bridge = settings.bridges[name]
        base_url = bridge_base_url(bridge, settings.simulators.enabled)
        driver = build_driver(
            bridge.driver, driver_settings(name, bridge, settings, base_url or "")
        )
        if base_url is None and has_call(driver):
            line = (
                f"{name}: not asked: its requests go to the simulators inside the daemon"
                f" (set bridges.{name}.base_url to ask a provider)"
            )
            lines.append((line, True))
            continue
        async with BridgeClient(
            base_url or "",
            max_connections=1,
            connect_timeout_s=bridge.connect_timeout_s,
            timeout_s=bridge.timeout_s,
        ) as client:
            lines.append(await ask(name, driver, client))
    return lines
