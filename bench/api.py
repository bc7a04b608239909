"""Messages per second and daemon CPU per message through septet's HTTP API, to the providers.

One `septet simulate` process (core 0) and one `septet run --config` daemon (core 1) with
the HTTP API on; this process (core 0) POSTs to /v1/messages over `--concurrency` keep-alive
connections, in two modes:

  single   one message per request (the Kannel sendsms shape)
  batch    100 messages per request ({"messages": [...]})

Every message goes to the Route Mobile simulator with a distinct recipient. A run lasts
from the first request sent until the simulator has accepted every message, so it is
measured through the whole daemon to the provider; the daemon's CPU (user + system, from
psutil) is divided by the messages. Messages of a request that failed or was not answered
200, and lines not accepted, are counted as errors (and not waited for).

    python -m bench.api [--quick] [--out FILE] [-n N] [--mode single|batch ...]
        [--concurrency C] [--latency-ms M]

The figures need a quiet machine: this bench says nothing about one that is busy.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec
import psutil

from bench.common import base_parser, format_table, write_results
from bench.kannel import free_port, wait_for_provider
from bench.pipeline import (
    HOST,
    daemon_config,
    render_toml,
    start_daemon,
    start_simulators,
    stop_process,
    wait_healthy,
)

NAME: Final = "api"
API_KEY: Final = "bench-api-key"
BATCH: Final = 100
MODES: Final = ("single", "batch")
DEADLINE_S: Final = 600.0


class _Results(msgspec.Struct):
    results: list[dict[str, Any]]


_results_decoder: Final = msgspec.json.Decoder(_Results)


def message(index: int) -> dict[str, str]:
    """A distinct recipient (Route Mobile's prefix 91, as bench.kannel) and text."""
    return {"to": f"+91981{index:07d}", "text": f"bench api {index}"}


def request_bodies(count: int, mode: str) -> list[bytes]:
    """The encoded bodies: one message each, or batches of BATCH."""
    if mode == "single":
        return [msgspec.json.encode(message(index)) for index in range(count)]
    return [
        msgspec.json.encode(
            {"messages": [message(i) for i in range(start, min(start + BATCH, count))]}
        )
        for start in range(0, count, BATCH)
    ]


def api_config(workdir: Path, sim_url: str, api_port: int, http_port: int) -> dict[str, Any]:
    document = daemon_config(
        workdir,
        sim_url=sim_url,
        tcp_port=free_port(),
        http_port=http_port,
        bridges=["routemobile"],
        pool=100,
        overrides={},
    )
    document["api"] = {"listen": f"{HOST}:{api_port}"}
    document["accounts"] = {"bench": {"api_key": API_KEY}}
    return document


async def post_all(
    api_url: str, bodies: Sequence[bytes], concurrency: int, errors: Counter[str]
) -> None:
    """Every body, `concurrency` requests in flight on keep-alive connections."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    queue = iter(bodies)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for body in queue:
                try:
                    async with session.post(f"{api_url}/v1/messages", data=body) as reply:
                        answer = await reply.read()
                except aiohttp.ClientError as error:
                    errors[type(error).__name__] += body.count(b'"to"')  # its messages
                    continue
                if reply.status != 200:
                    errors[f"HTTP {reply.status}"] += body.count(b'"to"')
                    continue
                for result in _results_decoder.decode(answer).results:
                    if result["result"] != "accepted":
                        errors[str(result.get("kind"))] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def drive(
    api_url: str, sim_url: str, bodies: Sequence[bytes], messages: int, concurrency: int
) -> tuple[float, float, Counter[str]]:
    """Send, and wait for the provider: (start, end, errors)."""
    errors: Counter[str] = Counter()
    started = time.time()
    sending = asyncio.ensure_future(post_all(api_url, bodies, concurrency, errors))
    async with aiohttp.ClientSession() as session:
        try:
            reached_at, _ = await wait_for_provider(
                session, sim_url, lambda: messages - sum(errors.values()), started
            )
            await sending
        finally:
            sending.cancel()
    return started, reached_at, errors


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_mode(mode: str, messages: int, *, concurrency: int, latency_ms: float) -> dict[str, Any]:
    bodies = request_bodies(messages, mode)
    with tempfile.TemporaryDirectory(prefix="septet-bench-api-") as tmp:
        workdir = Path(tmp)
        api_port, http_port = free_port(), free_port()
        simulators, sim_url = start_simulators(
            latency_ms, 0.2, f"http://{HOST}:{http_port}/dlr/routemobile"
        )
        try:
            config_path = workdir / "septet.toml"
            config_path.write_text(render_toml(api_config(workdir, sim_url, api_port, http_port)))
            log_path = workdir / "daemon.log"
            daemon = start_daemon(config_path, log_path)
            try:
                wait_healthy(daemon, http_port, log_path)
                process = psutil.Process(daemon.pid)
                cpu_before = cpu_s(process)
                started, ended, errors = asyncio.run(
                    asyncio.wait_for(
                        drive(f"http://{HOST}:{api_port}", sim_url, bodies, messages, concurrency),
                        DEADLINE_S,
                    )
                )
                cpu_used = cpu_s(process) - cpu_before
            finally:
                stop_process(daemon)
        finally:
            stop_process(simulators)
    seconds = max(ended - started, 1e-9)
    return {
        "mode": mode,
        "messages": messages,
        "requests": len(bodies),
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "seconds": round(seconds, 3),
        "msg_per_s": round(messages / seconds, 1),
        "cpu_us_per_msg": round(cpu_used / messages * 1e6, 1),
        "errors": dict(errors),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    return format_table(
        ["mode", "messages", "requests", "msg/s", "CPU µs/msg", "errors"],
        [
            [
                row["mode"],
                row["messages"],
                row["requests"],
                row["msg_per_s"],
                row["cpu_us_per_msg"],
                sum(row["errors"].values()),
            ]
            for row in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("-n", "--messages", type=int, default=None)
    parser.add_argument("--mode", action="append", choices=MODES, default=None)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    messages = args.messages or (2000 if args.quick else 50_000)
    rows = [
        run_mode(mode, messages, concurrency=args.concurrency, latency_ms=args.latency_ms)
        for mode in args.mode or MODES
    ]
    print(table(rows))
    path = write_results(NAME, rows, quick=args.quick, out=args.out)
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
