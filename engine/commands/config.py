"""`septet config example|check`: an annotated configuration, and a check that binds nothing.

`check FILE` reads the file as `septet run --config FILE` would (engine.config.load_config)
and adds what only opening would find (the journal's and the log's directories), without
binding a port or calling a provider. Problems: one sentence each on stderr, exit 2.
Ready: the listeners and each bridge's address and report path on stdout — with the
callback URL a provider needs registering — exit 0.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import assert_never

from bridges.registry import DRIVER_CALLBACK_SETUP, build_driver
from engine.config import (
    ConfigError,
    Settings,
    bridge_base_url,
    driver_settings,
    load_config,
)

EXAMPLE = "septet.example.toml"


def example_text() -> str:
    """The annotated example configuration (engine/commands/septet.example.toml)."""
    return resources.files("engine.commands").joinpath(EXAMPLE).read_text(encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser(
        "example",
        help="print an annotated configuration for four accounts (it loads as it is)",
    )
    check = sub.add_parser(
        "check",
        help="check a configuration without starting anything; print the callback URLs",
    )
    check.add_argument("file", metavar="FILE", help="the TOML configuration")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    if args.action == "example":
        sys.stdout.write(example_text())
        return 0
    return check(args.file)


def check(file: str) -> int:
    try:
        loaded = load_config(file, strict=True)
    except ConfigError as error:
        for sentence in error.sentences:
            print(f"septet config check: {sentence}", file=sys.stderr)
        return 2
    if loaded.warnings:
        for sentence in loaded.warnings:
            print(f"septet config check: {sentence}", file=sys.stderr)
        return 2
    print(f"{file}: ready")
    for line in describe(loaded.settings):
        print(line)
    return 0


def describe(settings: Settings) -> list[str]:
    """What `septet run` would open, and what each provider must know of septet."""
    lines = ["listeners:"]
    places = {
        "http (callbacks, /healthz, /readyz, /metrics)": settings.http.listen,
        "metrics (/metrics, /healthz, /readyz)": settings.http.metrics_listen,
        "HTTP API and sendsms": settings.api.listen,
        "NDJSON over TCP": settings.ingress.tcp,
        "NDJSON over a Unix socket": settings.ingress.unix,
        "SMPP": settings.smpp.listen,
    }
    lines += [f"  {what}: {where}" for what, where in places.items() if where]
    lines.append("bridges:")
    for name, bridge in settings.bridges.items():
        base_url = bridge_base_url(bridge, settings.simulators.enabled) or "the simulators"
        lines.append(f"  {name} ({bridge.driver}) sends to {base_url}")
        lines.append(f"    reports: {_report_path(name, settings)}")
    return lines


def _report_path(name: str, settings: Settings) -> str:
    """How bridge `name`'s reports come back, with the URL the provider must be given."""
    bridge = settings.bridges[name]
    setup = DRIVER_CALLBACK_SETUP[bridge.driver]
    driver = build_driver(bridge.driver, driver_settings(name, bridge, settings, "http://x"))
    callback = driver_settings(name, bridge, settings, "").callback_url
    if setup != "polled" and callback is None:
        return "callback, but there is no HTTP listener: no report can come back"
    match setup:
        case "polled":
            return "polled; no callback URL"
        case "with_each_message":
            return (
                f"callback to {callback} (septet sends it, with the callback credentials, with"
                " every message: nothing to register, but the provider must reach it)"
            )
        case "on_the_account":
            registration = getattr(driver, "callback_registration_url", lambda: callback)()
            return f"callback: register {registration} on the provider's account"
        case _:
            assert_never(setup)
