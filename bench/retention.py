"""A busy day compressed: messages through one daemon with a keep of minutes; journal size and RSS.

Starts `septet simulate` and `septet run` (as bench.pipeline does: simulators on core 0,
the daemon on core 1) with `[journal] keep_days` and `[events] keep_s` set to `--keep-s`,
then feeds `--messages` one-recipient lines at `--rate` a second on one TCP connection,
reading their events back (every message is reported DELIVRD by the simulators, so each
ends and becomes prunable). Every `--sample-s` it samples the journal's size on disk
(file + write-ahead log), the daemon's RSS, and the rows its retention deleted
(septet_journal_pruned_rows_total); after the feed it goes on sampling for `--settle-s`.
It prints one row a minute and writes bench/results/retention.json. With pruning working
the journal and RSS level off once the first keep has passed, instead of growing with
every message.

    python -m bench.retention [--quick] [--messages N] [--rate R] [--keep-s K]
        [--sample-s S] [--settle-s T] [--out FILE]

The default, 400,000 messages at 1,000 a second and a keep of 60 s, is 400 s of feed and
the settling after it: under 10 minutes, at a rate one daemon core keeps up with while it
reports and prunes. The rate must be one the daemon sustains for the figure to mean
anything: at 2,500 a second on the project's machine the reports fell behind the sends
(the table's `reported` column), unfinished messages piled up unprunable, and the journal
grew with them (README, Reliability).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench import pipeline
from bench.common import base_parser, format_table, write_results
from bench.loadgen import LoadShape, Tally, build_lines
from engine.metrics import journal_size_bytes
from engine.retention import SECONDS_PER_DAY

BRIDGES = ("dsc", "routemobile")
MIB = 1 << 20


@dataclass
class Fed:
    """Lines written to the daemon so far."""

    sent: int = 0


class Point(msgspec.Struct, array_like=True):
    """One sample: seconds since the feed began, lines sent, reports read, journal bytes
    (file and write-ahead log), daemon RSS (KiB), messages pruned so far, and the
    write-ahead log's bytes alone."""

    at_s: float
    sent: int
    reported: int
    journal_bytes: int
    rss_kib: int
    pruned: int
    wal_bytes: int


def pruned_messages(http_port: int) -> int:
    url = f"http://{pipeline.HOST}:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith('septet_journal_pruned_rows_total{table="messages"}'):
            return int(float(line.split()[-1]))
    return 0


async def drive(
    port: int, lines: list[bytes], rate: float, tally: Tally, fed: Fed, until: float
) -> float:
    """Feed `lines` at `rate` a second while reading events, until every report came back or
    `until` (monotonic) passed; returns when the feed ended (monotonic)."""
    reader, writer = await asyncio.open_connection(pipeline.HOST, port, limit=1 << 22)
    per_tick = max(1, int(rate / 20))
    fed_at = time.monotonic()

    async def feed() -> None:
        nonlocal fed_at
        start = time.monotonic()
        for index in range(0, len(lines), per_tick):
            writer.write(b"".join(lines[index : index + per_tick]))
            await writer.drain()
            fed.sent = min(len(lines), index + per_tick)
            due = start + (index + per_tick) / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        fed_at = time.monotonic()

    async def collect() -> None:
        tail = b""
        while tally.dlr + tally.failed < len(lines) and time.monotonic() < until:
            data = await reader.read(1 << 20)
            if not data:
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                tail += data
                continue
            tally.add(tail + data[: cut + 1])
            tail = data[cut + 1 :]

    feeder = asyncio.ensure_future(feed())
    try:
        # Past the deadline the run is cut short: the tallies so far are its result (the
        # table's `reported` column shows what was missing).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), timeout=max(1.0, until - time.monotonic()))
    finally:
        feeder.cancel()
        writer.close()
    return fed_at


async def sample_until(
    stop: asyncio.Event,
    points: list[Point],
    started: float,
    daemon: subprocess.Popen[bytes],
    journal: Path,
    http_port: int,
    tally: Tally,
    fed: Fed,
    every_s: float,
) -> None:
    paths = (journal, journal.with_name(journal.name + "-wal"))
    while not stop.is_set():
        pruned = await asyncio.to_thread(pruned_messages, http_port)
        points.append(
            Point(
                at_s=round(time.monotonic() - started, 2),
                sent=fed.sent,
                reported=tally.dlr + tally.failed,
                journal_bytes=journal_size_bytes(paths),
                rss_kib=pipeline.memory_kib(daemon.pid, "VmRSS"),
                pruned=pruned,
                wal_bytes=journal_size_bytes(paths[1:]),
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


def per_minute(points: list[Point]) -> list[dict[str, Any]]:
    """The last sample of each minute (and of the run)."""
    rows: dict[int, Point] = {}
    for point in points:
        rows[int(point.at_s // 60)] = point
    return [
        {
            "minute": minute + 1,
            "sent": point.sent,
            "reported": point.reported,
            "pruned": point.pruned,
            "journal_mib": round(point.journal_bytes / MIB, 1),
            "wal_mib": round(point.wal_bytes / MIB, 1),
            "rss_mib": round(point.rss_kib / 1024, 1),
        }
        for minute, point in sorted(rows.items())
    ]


def run(
    messages: int, rate: float, keep_s: float, sample_s: float, settle_s: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="septet-retention-") as tmp:
        workdir = Path(tmp)
        tcp_port, http_port = pipeline._free_port(), pipeline._free_port()
        sims, sim_url = pipeline.start_simulators(
            0.0, 0.05, f"http://{pipeline.HOST}:{http_port}/dlr/routemobile"
        )
        daemon: subprocess.Popen[bytes] | None = None
        try:
            document = pipeline.daemon_config(
                workdir,
                sim_url=sim_url,
                tcp_port=tcp_port,
                http_port=http_port,
                bridges=list(BRIDGES),
                pool=50,
                overrides={},
            )
            document["journal"]["keep_days"] = keep_s / SECONDS_PER_DAY
            document["events"] = {"keep_s": keep_s}
            config = workdir / "septet.toml"
            config.write_text(pipeline.render_toml(document))
            log_path = workdir / "daemon.log"
            daemon = pipeline.start_daemon(config, log_path)
            pipeline.wait_healthy(daemon, http_port, log_path)
            shape = LoadShape(bridges=BRIDGES, texts="distinct")
            lines = build_lines(shape, messages)
            points = asyncio.run(
                _measure(
                    daemon,
                    workdir / "journal.db",
                    tcp_port,
                    http_port,
                    lines,
                    rate,
                    sample_s,
                    settle_s,
                )
            )
        finally:
            if daemon is not None:
                pipeline.stop_process(daemon)
            pipeline.stop_process(sims)
        with sqlite3.connect(workdir / "journal.db") as connection:
            left = int(connection.execute("SELECT count(*) FROM messages").fetchone()[0])
    return {
        "messages": messages,
        "rate_per_s": rate,
        "keep_s": keep_s,
        "reported": points[-1].reported if points else 0,
        "pruned_messages": points[-1].pruned if points else 0,
        "messages_left_in_journal": left,
        "journal_mib_max": round(max(p.journal_bytes for p in points) / MIB, 1),
        "rss_mib_max": round(max(p.rss_kib for p in points) / 1024, 1),
        "minutes": per_minute(points),
        "samples": [msgspec.to_builtins(point) for point in points],
    }


async def _measure(
    daemon: subprocess.Popen[bytes],
    journal: Path,
    tcp_port: int,
    http_port: int,
    lines: list[bytes],
    rate: float,
    sample_s: float,
    settle_s: float,
) -> list[Point]:
    tally = Tally(track=False)
    fed = Fed()
    points: list[Point] = []
    stop = asyncio.Event()
    started = time.monotonic()
    sampler = asyncio.ensure_future(
        sample_until(stop, points, started, daemon, journal, http_port, tally, fed, sample_s)
    )
    deadline = started + len(lines) / rate * 3 + 60
    await drive(tcp_port, lines, rate, tally, fed, deadline)
    await asyncio.sleep(settle_s)
    stop.set()
    await sampler
    return points


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("retention", __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="lines a second")
    parser.add_argument("--keep-s", type=float, default=None, help="the journal's keep")
    parser.add_argument("--sample-s", type=float, default=None)
    parser.add_argument("--settle-s", type=float, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    messages = args.messages or (20_000 if quick else 400_000)
    rate = args.rate or 1000.0
    keep_s = args.keep_s or (5.0 if quick else 60.0)
    sample_s = args.sample_s or (1.0 if quick else 5.0)
    settle_s = args.settle_s if args.settle_s is not None else keep_s * 2 + 5
    result = run(messages, rate, keep_s, sample_s, settle_s)
    headers = ["minute", "sent", "reported", "pruned", "journal MiB", "of it WAL MiB", "RSS MiB"]
    print(format_table(headers, [list(row.values()) for row in result["minutes"]]))
    print(
        f"{result['messages']} messages at {rate:g}/s, keep {keep_s:g} s: pruned"
        f" {result['pruned_messages']}, {result['messages_left_in_journal']} left in the"
        f" journal; journal max {result['journal_mib_max']} MiB, RSS max"
        f" {result['rss_mib_max']} MiB"
    )
    path = write_results("retention", [result], quick=quick, out=args.out)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
