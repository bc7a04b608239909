"""Journal microbench: the thread hand-off, accept (groups of 1 and 100), state writes, and
due() over a large backlog, each on a fresh SQLite file in a temporary directory.

    python -m bench.journal [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import msgspec

from bench.common import base_parser, format_table, write_results
from engine.journal import MarkFinal, MarkSubmitted
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import Message

NAME = "journal"


def make_message(index: int, *, priority: int = 0, due_at: float = 1.0) -> Message:
    return Message(
        msg_id="",
        reference="",
        origin="bench",
        client_ref=f"line-{index}",
        to=f"+2507825{index % 100000:05d}",
        sender="ACME",
        text="Your code is 123456. It expires in 10 minutes.",
        encoding="GSM-7",
        segments=1,
        cost=0.0123,
        currency="USD",
        bridges=("dsc", "bsg"),
        priority=priority,
        accepted_at=due_at,
        due_at=due_at,
    )


async def run_concurrently(workers: int, job: Callable[[int], Coroutine[Any, Any, None]]) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for worker in range(workers):
            tg.start_soon(job, worker)
    return time.perf_counter() - started


def noop(connection: sqlite3.Connection | None = None) -> None:
    return None


async def bench_handoff(journal: SqliteJournal, calls: int) -> list[dict[str, Any]]:
    """One caller's round trip to another thread and back: the price of each await."""
    started = time.perf_counter()
    for _ in range(calls):
        await journal._execute(noop, write=False)
    queue_seconds = time.perf_counter() - started
    limiter = anyio.CapacityLimiter(1)
    started = time.perf_counter()
    for _ in range(calls):
        await anyio.to_thread.run_sync(noop, limiter=limiter)
    to_thread_seconds = time.perf_counter() - started
    return [
        {"case": "hand-off: queue + call_soon_threadsafe", "per_s": calls / queue_seconds},
        {"case": "hand-off: anyio.to_thread.run_sync", "per_s": calls / to_thread_seconds},
    ]


async def bench_accept(
    journal: SqliteJournal, total: int, group_size: int, workers: int
) -> dict[str, Any]:
    calls_per_worker = total // (group_size * workers)
    commits_before = journal.commits

    async def job(worker: int) -> None:
        for call in range(calls_per_worker):
            base = (worker * calls_per_worker + call) * group_size
            group = [make_message(base + offset) for offset in range(group_size)]
            for message in group:
                message.client_ref = f"w{worker}-c{call}-g{group_size}"
            await journal.accept([group])

    seconds = await run_concurrently(workers, job)
    messages = calls_per_worker * workers * group_size
    commits = journal.commits - commits_before
    return {
        "case": f"accept, groups of {group_size}, {workers} concurrent callers",
        "per_s": messages / seconds,
        "messages": messages,
        "calls_per_commit": calls_per_worker * workers / max(commits, 1),
    }


async def bench_state_writes(journal: SqliteJournal, batch: int, workers: int) -> dict[str, Any]:
    """What dispatch and delivery reports do per message: claim, submitted, final. Pages
    through the waiting messages as the feeder does, so RAM holds one page at a time."""
    now = time.time()
    messages = 0

    async def job(chunk: list[Message]) -> None:
        claimed = await journal.claim(chunk, 0, 2.0)
        await journal.record(
            [
                MarkSubmitted(
                    msg_id=m.msg_id, provider_id=f"P{m.msg_id}", cost=None, currency=None, at=3.0
                )
                for m in claimed
            ]
        )
        await journal.record(
            [
                MarkFinal(msg_id=m.msg_id, outcome="DELIVRD", code=None, error=None, at=4.0)
                for m in claimed
            ]
        )

    started = time.perf_counter()
    while page := await journal.due(now, batch * workers):
        async with anyio.create_task_group() as tg:
            for start in range(0, len(page), batch):
                tg.start_soon(job, page[start : start + batch])
        messages += len(page)
    seconds = time.perf_counter() - started
    return {
        "case": f"claim + submitted + final, batches of {batch}, {workers} at once",
        "per_s": messages * 3 / seconds,
        "messages": messages,
        "messages_per_s": messages / seconds,
    }


async def bench_due(journal: SqliteJournal, backlog: int) -> list[dict[str, Any]]:
    """due() over a backlog of `backlog` waiting messages, as the feeder calls it."""
    chunk = 10_000
    for start in range(0, backlog, chunk):
        await journal.accept(
            [[make_message(start + i, priority=(start + i) % 3)] for i in range(chunk)]
        )
    rows: list[dict[str, Any]] = []
    now = time.time()
    cases: list[tuple[str, set[str] | None]] = [("nothing held", set()), ("5,000 held", None)]
    for label, held in cases:
        exclude = held if held is not None else {m.msg_id for m in await journal.due(now, 5000)}
        started = time.perf_counter()
        rounds = 5
        for _ in range(rounds):
            got = await journal.due(now, 5000, exclude=exclude)
        seconds = (time.perf_counter() - started) / rounds
        rows.append(
            {
                "case": f"due(limit=5000) over {backlog:,} waiting, {label}",
                "per_s": len(got) / seconds,
                "ms_per_call": seconds * 1000,
            }
        )
    started = time.perf_counter()
    await journal.next_due_at(after=now)
    rows.append(
        {
            "case": "next_due_at",
            "per_s": float("nan"),
            "ms_per_call": (time.perf_counter() - started) * 1000,
        }
    )
    started = time.perf_counter()
    await journal.counts()
    rows.append(
        {
            "case": "counts",
            "per_s": float("nan"),
            "ms_per_call": (time.perf_counter() - started) * 1000,
        }
    )
    return rows


class Sizes(msgspec.Struct, frozen=True):
    handoff_calls: int
    single_messages: int
    batched_messages: int
    backlog: int


FULL: Final = Sizes(20_000, 100_000, 300_000, 1_000_000)
QUICK: Final = Sizes(5_000, 20_000, 50_000, 100_000)


async def run_all(sizes: Sizes, directory: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with open_sqlite_journal(directory / "backlog.db") as journal:
        results += await bench_due(journal, sizes.backlog)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.append(
        {
            "case": f"peak RSS after a {sizes.backlog:,} backlog (MiB)",
            "per_s": float("nan"),
            "mib": peak_mib,
        }
    )
    async with open_sqlite_journal(directory / "flow.db") as journal:
        results += await bench_handoff(journal, sizes.handoff_calls)
        results.append(await bench_accept(journal, sizes.single_messages, 1, 64))
        results.append(await bench_accept(journal, sizes.batched_messages, 100, 8))
        results.append(await bench_state_writes(journal, 100, 8))
    return results


def main(argv: list[str] | None = None, *, sizes: Sizes | None = None) -> int:
    parser: argparse.ArgumentParser = base_parser(
        NAME, __doc__.splitlines()[0] if __doc__ else NAME
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="septet-bench-") as directory:
        results = anyio.run(
            run_all,
            sizes or (QUICK if args.quick else FULL),
            Path(directory),
            backend="asyncio",
            backend_options={"use_uvloop": True},
        )
    rows = [
        [
            row["case"],
            row["per_s"],
            row.get("ms_per_call", float("nan")),
            row.get("calls_per_commit", row.get("mib", float("nan"))),
        ]
        for row in results
    ]
    print(format_table(["case", "per second", "ms/call", "calls/commit | MiB"], rows))
    path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
