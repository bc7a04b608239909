"""Messages per second and daemon CPU per message through septet's HTTP API, to the providers.

One `septet simulate` process (core 0) and one `septet run --config` daemon (core 1) with
the HTTP API on; this process (core 0) POSTs to /v1/messages over `--concurrency` keep-alive
connections, in three modes:

  single     one message per request (the Kannel sendsms shape)
  batch      100 messages per request ({"messages": [...]}), each with its own text: the
             provider gets one request per message (Route Mobile batches only a shared text)
  campaign   100 messages per request sharing one text: the provider gets them in batches,
             the shape of bench.pipeline's batched scenario over NDJSON

Every message goes to the Route Mobile simulator with a distinct recipient and asks for no
delivery report (`"dlr": false`, as bench.pipeline's batched scenario and bench.kannel's
lines: final once the provider took it), unless `--reports` or `--webhooks` (whose events
include each report). A run lasts from the first request sent until the simulator has
accepted every message, so it is measured through the whole daemon to the provider; the
daemon's CPU (user + system, from psutil) is divided by the messages. `daemon busy` is
the daemon's CPU seconds over the run's seconds: near 1.0 the daemon's core was the limit,
well under it something else was (the load generator, the simulator, a wait, or other
processes on the machine). Messages of a request that failed or was not answered 200, and
lines not accepted, are counted as errors (and not waited for).

With `--webhooks`, each mode runs twice in the same sitting: without webhooks, then with
the account's `default_url` on a local receiver (bench.webhook_receiver, on the load
generator's core) that gets every event of every message (accepted, submitted, dlr) as a
signed POST. In both rows the daemon's CPU is read once it took every delivery report
(and, with webhooks, once every event arrived), so it covers whole lives alike. The row
with webhooks also says how many events arrived, the rate they arrived at while the
messages were sent (`events_per_s`: from the first request, plus the simulator's report
delay, until the provider took the last message), how long after that the last one came
(`drain_s`: about the report delay when the webhook worker kept up), and its send rate
over the row without (`send_ratio`).

With `--rate R`, requests are paced to R messages a second (the issue's webhook figure is
5,000 events a second: `--webhooks --rate 1667`, 3 events a message), so `send_ratio`
says whether webhooks at that rate lower the send rate.

    python -m bench.api [--quick] [--out FILE] [-n N] [--mode single|batch|campaign ...]
        [--concurrency C] [--latency-ms M] [--reports] [--webhooks] [--rate R]

The figures need a quiet machine: this bench says nothing about one that is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
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
    LOADGEN_CORE,
    _can_pin,
    _pin,
    _read_line,
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
MODES: Final = ("single", "batch", "campaign")
DEADLINE_S: Final = 600.0
WEBHOOK_SECRET: Final = "bench-webhook-secret"  # noqa: S105 - a bench's own receiver
# The simulator's delay from taking a message to its report.
DLR_DELAY_S: Final = 0.2
# Every message's events before its report: accepted, submitted (then one dlr per report).
EVENTS_BEFORE_REPORT: Final = 2


class _Results(msgspec.Struct):
    results: list[dict[str, Any]]


_results_decoder: Final = msgspec.json.Decoder(_Results)


def message(index: int, text: str | None = None, *, reports: bool = False) -> dict[str, Any]:
    """A distinct recipient (Route Mobile's prefix 91, as bench.kannel) and a distinct text,
    or the `text` given; with `reports`, it asks for its delivery report (the default of
    the API), else not."""
    line: dict[str, Any] = {"to": f"+91981{index:07d}", "text": text or f"bench api {index}"}
    if not reports:
        line["dlr"] = False
    return line


def request_bodies(count: int, mode: str, *, reports: bool = False) -> list[bytes]:
    """The encoded bodies: one message each, or batches of BATCH (a campaign: one text)."""
    if mode == "single":
        return [msgspec.json.encode(message(i, reports=reports)) for i in range(count)]
    text = "bench api campaign" if mode == "campaign" else None
    return [
        msgspec.json.encode(
            {
                "messages": [
                    message(i, text, reports=reports)
                    for i in range(start, min(start + BATCH, count))
                ]
            }
        )
        for start in range(0, count, BATCH)
    ]


def api_config(
    workdir: Path, sim_url: str, api_port: int, http_port: int, webhook_url: str | None = None
) -> dict[str, Any]:
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
    if webhook_url is not None:
        document["accounts"]["bench"]["webhooks"] = {
            "default_url": webhook_url,
            "allowed_hosts": [HOST],  # loopback is refused unless listed (docs/webhooks.md)
            "secret": WEBHOOK_SECRET,
        }
    return document


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    """bench.webhook_receiver on the load generator's core: (process, its base URL)."""
    command = [sys.executable, "-m", "bench.webhook_receiver", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=_pin(LOADGEN_CORE))
    line = _read_line(process, 20.0)
    match = re.fullmatch(r"port (\d+)\n", line)
    if match is None:
        stop_process(process)
        raise RuntimeError(f"the webhook receiver did not start: {line!r}")
    return process, f"http://{HOST}:{match[1]}"


class ReceiverCount(msgspec.Struct):
    events: int
    requests: int
    first_at: float | None
    last_at: float | None
    tenths: list[tuple[int, int]] = []  # (int(arrival × 10), new events then)


_count_decoder: Final = msgspec.json.Decoder(ReceiverCount)


class _Reports(msgspec.Struct):
    dlr_ok: int  # reports the daemon took
    dlr_failed: int  # reports the simulator gave up on after its retries


_reports_decoder: Final = msgspec.json.Decoder(dict[str, _Reports])


async def wait_for_reports(sim_url: str, expected: int) -> int:
    """Poll the simulator until `expected` of its delivery reports were taken by the daemon
    or given up (bounded by the caller): a row's CPU then covers every message's whole
    life, reports included. Returns how many the daemon took."""
    url = f"{sim_url}/_sim/counters?provider=routemobile"
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as reply:
                reports = _reports_decoder.decode(await reply.read())["routemobile"]
            if reports.dlr_ok + reports.dlr_failed >= expected:
                return reports.dlr_ok
            await asyncio.sleep(0.05)


def event_rates(received: ReceiverCount, started: float, ended: float) -> dict[str, float]:
    """`events_per_s`: the events that arrived while the messages were sent (from the first
    request and the report delay, when every kind of event flows, until the provider took
    the last message) over that time: the rate the receiver was fed at while the send path
    ran (the last reports come DLR_DELAY_S after it); `drain_s`: from then until the last
    event came (a webhook worker that fell behind ends late)."""
    first, last = int((started + DLR_DELAY_S) * 10), int(ended * 10)
    during = sum(count for tenth, count in received.tenths if first <= tenth < last)
    return {
        "events_per_s": round(during / max((last - first) / 10, 0.1), 1),
        "drain_s": round((received.last_at or ended) - ended, 3),
    }


async def wait_for_events(receiver_url: str, expected: int) -> ReceiverCount:
    """Poll the receiver until `expected` distinct events came (bounded by the caller)."""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{receiver_url}/count") as reply:
                count = _count_decoder.decode(await reply.read())
            if count.events >= expected:
                return count
            await asyncio.sleep(0.05)


async def post_all(
    api_url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    errors: Counter[str],
    interval_s: float | None = None,
) -> None:
    """Every body, `concurrency` requests in flight on keep-alive connections; with
    `interval_s`, request k starts no sooner than k × `interval_s` after the first."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    queue = iter(enumerate(bodies))
    loop = asyncio.get_running_loop()
    first_at = loop.time()
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for index, body in queue:
                if interval_s is not None:
                    await asyncio.sleep(first_at + index * interval_s - loop.time())
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
    api_url: str,
    sim_url: str,
    bodies: Sequence[bytes],
    messages: int,
    concurrency: int,
    interval_s: float | None = None,
) -> tuple[float, float, Counter[str]]:
    """Send, and wait for the provider: (start, end, errors)."""
    errors: Counter[str] = Counter()
    started = time.time()
    sending = asyncio.ensure_future(post_all(api_url, bodies, concurrency, errors, interval_s))
    async with aiohttp.ClientSession() as session:
        try:
            reached_at, _ = await wait_for_provider(
                session, sim_url, lambda: messages - sum(errors.values()), started, sending
            )
            await sending
        finally:
            sending.cancel()
    return started, reached_at, errors


async def wait_for_api(api_url: str) -> None:
    """Until the API's listener answers (it may open after /healthz does; bounded by the
    caller): a request sent before would fail to connect."""
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):  # not listening yet
                async with session.get(f"{api_url}/v1/openapi.json") as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.05)


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_mode(
    mode: str,
    messages: int,
    *,
    concurrency: int,
    latency_ms: float,
    webhooks: bool = False,
    compared: bool = False,
    reports: bool = False,
    rate: float | None = None,
) -> dict[str, Any]:
    """One row. `compared` (both rows of `--webhooks`): the CPU is read once the daemon
    took every delivery report, and with `webhooks` once every event reached the receiver.
    `reports`: every message asks for its delivery report (so does every one of
    `compared`). `rate`: messages per second to send at (paced by request), else as fast
    as answered."""
    bodies = request_bodies(messages, mode, reports=reports or compared)
    interval_s = None if rate is None else (1 if mode == "single" else BATCH) / rate
    receiver: subprocess.Popen[bytes] | None = None
    received: ReceiverCount | None = None
    with tempfile.TemporaryDirectory(prefix="septet-bench-api-") as tmp:
        workdir = Path(tmp)
        api_port, http_port = free_port(), free_port()
        simulators, sim_url = start_simulators(
            latency_ms, DLR_DELAY_S, f"http://{HOST}:{http_port}/dlr/routemobile"
        )
        try:
            webhook_url = None
            if webhooks:
                receiver, receiver_url = start_receiver()
                webhook_url = f"{receiver_url}/events"
            document = api_config(workdir, sim_url, api_port, http_port, webhook_url)
            config_path = workdir / "septet.toml"
            config_path.write_text(render_toml(document))
            log_path = workdir / "daemon.log"
            daemon = start_daemon(config_path, log_path)
            try:
                wait_healthy(daemon, http_port, log_path)
                api_url = f"http://{HOST}:{api_port}"
                asyncio.run(asyncio.wait_for(wait_for_api(api_url), 20.0))
                process = psutil.Process(daemon.pid)
                cpu_before = cpu_s(process)
                started, ended, errors = asyncio.run(
                    asyncio.wait_for(
                        drive(api_url, sim_url, bodies, messages, concurrency, interval_s),
                        DEADLINE_S,
                    )
                )
                cpu_sending = cpu_s(process) - cpu_before
                if compared:  # the CPU of whole lives, with webhooks or without alike
                    sent = messages - sum(errors.values())
                    reports_taken = asyncio.run(
                        asyncio.wait_for(wait_for_reports(sim_url, sent), DEADLINE_S)
                    )
                if webhooks:
                    expected = EVENTS_BEFORE_REPORT * sent + reports_taken
                    received = asyncio.run(
                        asyncio.wait_for(wait_for_events(receiver_url, expected), DEADLINE_S)
                    )
                cpu_used = cpu_s(process) - cpu_before
            finally:
                stop_process(daemon)
        finally:
            stop_process(simulators)
            if receiver is not None:
                stop_process(receiver)
    seconds = max(ended - started, 1e-9)
    row = {
        "mode": mode,
        "webhooks": webhooks,
        "messages": messages,
        "requests": len(bodies),
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "rate": rate,
        "reports": reports or compared,
        "seconds": round(seconds, 3),
        "msg_per_s": round(messages / seconds, 1),
        "cpu_us_per_msg": round(cpu_used / messages * 1e6, 1),
        "daemon_busy": round(cpu_sending / seconds, 2),
        "errors": dict(errors),
    }
    if received is not None and received.last_at is not None:
        row.update(event_rates(received, started, ended))
        row["events"] = received.events
        row["webhook_requests"] = received.requests
    return row


def compare_webhooks(rows: list[dict[str, Any]]) -> None:
    """Each row with webhooks gets `send_ratio`: its send rate over the row without."""
    without = {row["mode"]: row for row in rows if not row["webhooks"]}
    for row in rows:
        base = without.get(row["mode"])
        if row["webhooks"] and base is not None:
            row["send_ratio"] = round(row["msg_per_s"] / base["msg_per_s"], 3)


def table(rows: Sequence[dict[str, Any]]) -> str:
    return format_table(
        [
            *("mode", "webhooks", "messages", "requests", "msg/s", "CPU µs/msg", "daemon busy"),
            "errors",
            *("events", "events/s", "drain s", "send ratio"),
        ],
        [
            [
                row["mode"],
                "on" if row["webhooks"] else "off",
                row["messages"],
                row["requests"],
                row["msg_per_s"],
                row["cpu_us_per_msg"],
                row["daemon_busy"],
                sum(row["errors"].values()),
                row.get("events", "-"),
                row.get("events_per_s", "-"),
                row.get("drain_s", "-"),
                row.get("send_ratio", "-"),
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
    parser.add_argument(
        "--reports",
        action="store_true",
        help="every message asks for its delivery report (the daemon takes one per message)",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="each mode without, then with, webhooks (messages ask for reports)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="messages per second to send at (default: as fast as the daemon answers);"
        " with --webhooks, 1,667 is 5,000 events a second",
    )
    args = parser.parse_args(argv)
    messages = args.messages or (2000 if args.quick else 50_000)
    if _can_pin():  # the docstring's layout: this process beside the simulator
        os.sched_setaffinity(0, {LOADGEN_CORE})
    rows = [
        run_mode(
            mode,
            messages,
            concurrency=args.concurrency,
            latency_ms=args.latency_ms,
            webhooks=webhooks,
            compared=args.webhooks,
            reports=args.reports,
            rate=args.rate,
        )
        for mode in args.mode or MODES
        for webhooks in ((False, True) if args.webhooks else (False,))
    ]
    compare_webhooks(rows)
    print(table(rows))
    path = write_results(NAME, rows, quick=args.quick, out=args.out)
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
