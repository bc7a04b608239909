"""`septet simulate PROVIDER...`: serve provider simulators standalone on one port.

Prints `listening on http://HOST:PORT` once the socket listens, runs on uvloop until
SIGINT or SIGTERM, then exits 0. An unknown provider is a one-line error and exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import anyio
import msgspec

from bridges.sim.core import SimulatorConfig, updated_config
from bridges.sim.runner import PROVIDERS, SimulatorHandle, resolve_providers, serve_simulators


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "providers",
        nargs="+",
        metavar="PROVIDER",
        help=f"providers to serve: {', '.join(PROVIDERS)}, or all",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed reply latency")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="extra uniform latency")
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of send requests hit by a fault"
    )
    parser.add_argument(
        "--faults",
        default=None,
        metavar="KIND=WEIGHT,...",
        help="fault mix, kinds: 5xx, timeout_before, timeout_after, reset_before, "
        "reset_after, slow, 429, garbage (default 5xx=1)",
    )
    parser.add_argument(
        "--dlr-delay", type=float, default=None, help="seconds before a delivery report"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed every random choice")
    parser.add_argument(
        "--routemobile-dlr-url", default=None, help="where Route Mobile POSTs delivery reports"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="any SimulatorConfig field, e.g. --set smsclub_rate_limit=null (repeatable)",
    )


def _parse_faults(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for item in text.split(","):
        kind, _, weight = item.partition("=")
        mix[kind.strip()] = float(weight) if weight.strip() else 1.0
    return mix


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """The config the flags describe; ValueError for a value no simulator accepts."""
    changes: dict[str, Any] = {
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "fail_rate": args.fail_rate,
    }
    if args.faults is not None:
        changes["faults"] = _parse_faults(args.faults)
    if args.dlr_delay is not None:
        changes["dlr_delay_s"] = args.dlr_delay
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.routemobile_dlr_url is not None:
        changes["routemobile_dlr_url"] = args.routemobile_dlr_url
    for item in args.set:
        field, separator, raw = item.partition("=")
        if not separator:
            raise ValueError(f"--set expects FIELD=JSON, got {item!r}")
        try:
            changes[field.strip()] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            changes[field.strip()] = raw  # a bare word is a string
    return updated_config(SimulatorConfig(), changes)


async def _serve(providers: list[str], host: str, port: int, config: SimulatorConfig) -> None:
    async with anyio.create_task_group() as task_group:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            handle: SimulatorHandle = await task_group.start(
                lambda task_status: serve_simulators(
                    providers, host=host, port=port, config=config, task_status=task_status
                )
            )
            print(f"listening on {handle.url}", flush=True)
            async for _ in signals:
                break
        task_group.cancel_scope.cancel()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    try:
        providers = resolve_providers(args.providers)
        config = build_config(args)
    except ValueError as error:
        print(f"septet simulate: {error}", file=sys.stderr)
        return 2
    anyio.run(
        _serve,
        providers,
        args.host,
        args.port,
        config,
        backend="asyncio",
        backend_options={"use_uvloop": True},
    )
    return 0
