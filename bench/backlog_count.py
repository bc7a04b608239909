"""What one scrape's backlog count and journal size cost on a big journal (engine.observe).

Fills a fresh journal with N waiting messages (all accepted: the index a count walks is
as large as it gets), then times `Journal.counts()` and the size stat() a scrape makes.

    python -m bench.backlog_count [--quick] [--messages N] [--out FILE]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from bench.common import base_parser, format_table, write_results
from bench.journal import make_message
from engine.journal.sqlite import open_sqlite_journal
from engine.metrics import journal_size_bytes

NAME = "backlog_count"
GROUP = 1000
REPEATS = 5


async def measure(messages: int, directory: Path) -> dict[str, float]:
    path = directory / "septet.db"
    async with open_sqlite_journal(path) as journal:
        for start in range(0, messages, GROUP):
            batch = [make_message(i, due_at=4e9) for i in range(start, start + GROUP)]
            await journal.accept([[message] for message in batch])
        timings = []
        counts: dict[str, int] = {}
        for _ in range(REPEATS):
            started = time.perf_counter()
            counts = await journal.counts()
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        size = journal_size_bytes([path, path.with_name(path.name + "-wal")])
        stat_s = time.perf_counter() - started
    return {
        "messages": messages,
        "accepted_counted": counts["accepted"],
        "count_ms_min": min(timings) * 1000,
        "count_ms_max": max(timings) * 1000,
        "size_stat_ms": stat_s * 1000,
        "journal_mib": size / (1 << 20),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__ or "")
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    messages = min(args.messages, 20_000) if args.quick else args.messages
    with tempfile.TemporaryDirectory() as directory:
        result = anyio.run(measure, messages, Path(directory))
    print(format_table(list(result), [list(result.values())]))
    write_results(NAME, [result], quick=args.quick, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
