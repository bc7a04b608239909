"""Measure which PostgreSQL client library the PostgreSQL journal should use: time and CPU.

Compared on the journal's hot operations, against a throwaway local server (bench.postgres,
fsync off so the client's share is what shows): accept a group of 100 messages in one
commit, claim 100 with a compare-and-set, record outcomes for 100 (each a transaction of its
own), and the single-message version of each. Clients:

- psycopg 3 (its C extension, binary parameters), a sync connection as the journal's writer
  thread would hold it;
- asyncpg on uvloop;

each in two ways: "rows", a statement per message (executemany for a group: psycopg runs it
in pipeline mode, asyncpg pipelines it too), and "arrays", one statement per group over
unnest()ed arrays. The table holds 50,000 final messages and has its statistics, as a
running journal's would; the claim's compare-and-set names no partial index's predicate,
so it reaches rows by primary key whatever the statistics say (bench output shows why:
with statistics saying "nothing is waiting", a claim written `state = 0` scanned the
whole waiting index for each message).

Per case the figure is the median over repeats of: wall time per operation, the client
process's CPU per operation (time.process_time), and the server's CPU per operation (the
postgres processes' user+system time, psutil). CPU per operation is what carries over to a
busier machine; the wall time also holds the round trips.

    python -m bench.pg_clients [--quick] [--out FILE] [--repeats N] [--operations N]
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import asyncpg
import psutil
import psycopg
import uvloop

from bench.common import base_parser, format_table, median, write_results
from bench.postgres import PostgresUnavailableError, TemporaryPostgres

NAME: Final = "pg_clients"
GROUP: Final = 100
# A journaled message's blob is a msgpack Message: a few hundred bytes.
BODY: Final = os.urandom(320)

TABLE: Final = """
CREATE TABLE messages (
    msg_id BIGINT PRIMARY KEY, state SMALLINT NOT NULL, due_at DOUBLE PRECISION NOT NULL,
    priority SMALLINT NOT NULL, bridges TEXT NOT NULL, bridge_index SMALLINT NOT NULL,
    bridge TEXT, attempt INTEGER NOT NULL, client_ref TEXT, dlr BOOLEAN NOT NULL,
    provider_id TEXT, inflight_at DOUBLE PRECISION, submitted_at DOUBLE PRECISION,
    claimed_by TEXT, lease_until DOUBLE PRECISION, status TEXT,
    account TEXT NOT NULL DEFAULT '', body BYTEA NOT NULL);
CREATE INDEX messages_due ON messages (priority, due_at) WHERE state = 0;
CREATE INDEX messages_inflight ON messages (bridge_index) WHERE state = 1;
CREATE UNIQUE INDEX messages_client_ref ON messages (account, client_ref)
    WHERE client_ref IS NOT NULL;
"""

# A journal that has been running: final messages kept for their reports and the feed, and
# the planner's statistics as autovacuum keeps them (a fresh table has none, and its
# guesses make the partial indexes look more selective than they are).
PREFILL: Final = """
INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge, attempt,
    client_ref, dlr, status, account, body)
SELECT -n, 3, 0, 5, '["dsc"]', 0, 'dsc', 0, 'old-' || n, true, 'delivered', 'acme',
    decode(repeat('ab', 320), 'hex')
FROM generate_series(1, 50000) AS n;
ANALYZE messages;
"""

# Each statement is written once, with psycopg's %s placeholders in order (a value used
# twice is passed twice); asyncpg gets the same text with $1, $2, ... (`numbered`).
INSERT_ROW: Final = (
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, client_ref, dlr, status, account, body)"
    " VALUES (%s, 0, %s, 5, '[\"dsc\"]', 0, 'dsc', 0, %s, true, 'accepted', 'acme', %s)"
)
INSERT_ARRAYS: Final = (
    "INSERT INTO messages (msg_id, state, due_at, priority, bridges, bridge_index, bridge,"
    " attempt, client_ref, dlr, status, account, body)"
    " SELECT id, 0, due, 5, '[\"dsc\"]', 0, 'dsc', 0, ref, true, 'accepted', 'acme', body"
    " FROM unnest(%s::bigint[], %s::float8[], %s::text[], %s::bytea[]) AS r(id, due, ref, body)"
)
CLAIM_ROW: Final = (
    "UPDATE messages SET state = 1, status = 'inflight', inflight_at = %s,"
    " claimed_by = 'node-a', lease_until = %s"
    " WHERE msg_id = %s AND state < 1 AND bridge_index = 0 AND attempt = %s"
)
CLAIM_ARRAYS: Final = (
    "UPDATE messages AS m SET state = 1, status = 'inflight', inflight_at = %s,"
    " claimed_by = 'node-a', lease_until = %s"
    " FROM unnest(%s::bigint[], %s::int[]) AS c(id, attempt)"
    " WHERE m.msg_id = c.id AND m.state < 1"
    " AND m.bridge_index = 0 AND m.attempt = c.attempt"
    " RETURNING m.msg_id"
)
RECORD_ROW: Final = (
    "UPDATE messages SET state = 2, provider_id = %s, submitted_at = %s, status = 'submitted',"
    " due_at = %s, claimed_by = NULL, lease_until = NULL WHERE msg_id = %s AND state < 3"
)
RECORD_ARRAYS: Final = (
    "UPDATE messages AS m SET state = 2, provider_id = r.provider_id, submitted_at = %s,"
    " status = 'submitted', due_at = %s, claimed_by = NULL, lease_until = NULL"
    " FROM unnest(%s::bigint[], %s::text[]) AS r(id, provider_id)"
    " WHERE m.msg_id = r.id AND m.state < 3"
)
LEASE_S: Final = 60.0
REPORT_WAIT_S: Final = 259_200.0


def numbered(sql: str) -> str:
    """psycopg's %s placeholders as asyncpg's $1, $2, ... in order."""
    pieces = sql.split("%s")
    out = [pieces[0]]
    for number, piece in enumerate(pieces[1:], start=1):
        out.append(f"${number}{piece}")
    return "".join(out)


# ── psycopg 3: a sync connection, as the journal's writer thread would hold it ───────


class PsycopgClient:
    """Batches: executemany (psycopg runs it in pipeline mode) or one array statement."""

    def __init__(self, dsn: str, *, arrays: bool) -> None:
        self.connection = psycopg.connect(dsn, autocommit=False)
        self.arrays = arrays
        self.name = f"psycopg {psycopg.__version__}, {'arrays' if arrays else 'rows'}"

    def close(self) -> None:
        self.connection.close()

    def accept(self, ids: Sequence[int], now: float) -> int:
        with self.connection.cursor() as cursor:
            if self.arrays:
                refs = [f"ref-{i}" for i in ids]
                cursor.execute(
                    PSYCOPG_INSERT_ARRAYS, (list(ids), [now] * len(ids), refs, [BODY] * len(ids))
                )
            elif len(ids) == 1:
                cursor.execute(PSYCOPG_INSERT_ROW, (ids[0], now, f"ref-{ids[0]}", BODY))
            else:
                cursor.executemany(PSYCOPG_INSERT_ROW, [(i, now, f"ref-{i}", BODY) for i in ids])
        self.connection.commit()
        return len(ids)

    def claim(self, ids: Sequence[int], now: float) -> int:
        """The compare-and-set's answer is per message: which ones this call won."""
        lease = now + LEASE_S
        with self.connection.cursor() as cursor:
            if self.arrays:
                cursor.execute(PSYCOPG_CLAIM_ARRAYS, (now, lease, list(ids), [0] * len(ids)))
                won = len(cursor.fetchall())
            elif len(ids) == 1:
                cursor.execute(PSYCOPG_CLAIM_ROW, (now, lease, ids[0], 0))
                won = cursor.rowcount
            else:
                # One statement per message; rowcount adds up the rows they changed.
                cursor.executemany(PSYCOPG_CLAIM_ROW, [(now, lease, i, 0) for i in ids])
                won = cursor.rowcount
        self.connection.commit()
        return won

    def record(self, ids: Sequence[int], now: float) -> int:
        report_by = now + REPORT_WAIT_S
        with self.connection.cursor() as cursor:
            if self.arrays:
                providers = [f"p{i}" for i in ids]
                cursor.execute(PSYCOPG_RECORD_ARRAYS, (now, report_by, list(ids), providers))
            elif len(ids) == 1:
                cursor.execute(PSYCOPG_RECORD_ROW, (f"p{ids[0]}", now, report_by, ids[0]))
            else:
                cursor.executemany(PSYCOPG_RECORD_ROW, [(f"p{i}", now, report_by, i) for i in ids])
        self.connection.commit()
        return len(ids)


# ── asyncpg on uvloop ────────────────────────────────────────────────────────────────


class AsyncpgClient:
    """Batches: executemany (asyncpg pipelines it) or one array statement."""

    def __init__(self, connection: asyncpg.Connection, *, arrays: bool) -> None:
        self.connection = connection
        self.arrays = arrays
        self.name = f"asyncpg {asyncpg.__version__}, {'arrays' if arrays else 'rows'}"

    async def accept(self, ids: Sequence[int], now: float) -> int:
        async with self.connection.transaction():
            if self.arrays:
                refs = [f"ref-{i}" for i in ids]
                await self.connection.execute(
                    ASYNCPG_INSERT_ARRAYS, list(ids), [now] * len(ids), refs, [BODY] * len(ids)
                )
            elif len(ids) == 1:
                await self.connection.execute(
                    ASYNCPG_INSERT_ROW, ids[0], now, f"ref-{ids[0]}", BODY
                )
            else:
                await self.connection.executemany(
                    ASYNCPG_INSERT_ROW, [(i, now, f"ref-{i}", BODY) for i in ids]
                )
        return len(ids)

    async def claim(self, ids: Sequence[int], now: float) -> int:
        lease = now + LEASE_S
        async with self.connection.transaction():
            if self.arrays:
                rows = await self.connection.fetch(
                    ASYNCPG_CLAIM_ARRAYS, now, lease, list(ids), [0] * len(ids)
                )
                return len(rows)
            if len(ids) == 1:
                status = await self.connection.execute(ASYNCPG_CLAIM_ROW, now, lease, ids[0], 0)
                return int(status.rsplit(" ", 1)[1])
            # asyncpg's executemany answers nothing per row: the claim's winners are unknown.
            await self.connection.executemany(ASYNCPG_CLAIM_ROW, [(now, lease, i, 0) for i in ids])
            return len(ids)

    async def record(self, ids: Sequence[int], now: float) -> int:
        report_by = now + REPORT_WAIT_S
        async with self.connection.transaction():
            if self.arrays:
                providers = [f"p{i}" for i in ids]
                await self.connection.execute(
                    ASYNCPG_RECORD_ARRAYS, now, report_by, list(ids), providers
                )
            elif len(ids) == 1:
                await self.connection.execute(
                    ASYNCPG_RECORD_ROW, f"p{ids[0]}", now, report_by, ids[0]
                )
            else:
                await self.connection.executemany(
                    ASYNCPG_RECORD_ROW, [(f"p{i}", now, report_by, i) for i in ids]
                )
        return len(ids)


# psycopg sends parameters as text unless told %b (binary): an array of bytea as text is
# every byte escaped, four times the CPU of the binary form (measured while writing this).
PSYCOPG_INSERT_ROW: Final = INSERT_ROW.replace("%s", "%b")
PSYCOPG_INSERT_ARRAYS: Final = INSERT_ARRAYS.replace("%s", "%b")
PSYCOPG_CLAIM_ROW: Final = CLAIM_ROW.replace("%s", "%b")
PSYCOPG_CLAIM_ARRAYS: Final = CLAIM_ARRAYS.replace("%s", "%b")
PSYCOPG_RECORD_ROW: Final = RECORD_ROW.replace("%s", "%b")
PSYCOPG_RECORD_ARRAYS: Final = RECORD_ARRAYS.replace("%s", "%b")
ASYNCPG_INSERT_ROW: Final = numbered(INSERT_ROW)
ASYNCPG_INSERT_ARRAYS: Final = numbered(INSERT_ARRAYS)
ASYNCPG_CLAIM_ROW: Final = numbered(CLAIM_ROW)
ASYNCPG_CLAIM_ARRAYS: Final = numbered(CLAIM_ARRAYS)
ASYNCPG_RECORD_ROW: Final = numbered(RECORD_ROW)
ASYNCPG_RECORD_ARRAYS: Final = numbered(RECORD_ARRAYS)

OPERATIONS: Final = ("accept", "claim", "record")
CASES: Final = tuple((operation, group) for group in (GROUP, 1) for operation in OPERATIONS)


@dataclasses.dataclass(frozen=True)
class Sizes:
    repeats: int = 7
    # Operations per sample, for the 100-message and the single-message cases.
    group_operations: int = 40
    single_operations: int = 200


@dataclasses.dataclass(frozen=True)
class Sample:
    """Per operation: wall seconds, the client's CPU seconds, the server's CPU seconds."""

    wall_s: float
    client_cpu_s: float
    server_cpu_s: float


class ServerCpu:
    """User+system CPU of every process of the server (postmaster and its backends)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def seconds(self) -> float:
        total = 0.0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue  # a backend that just exited
            total += times.user + times.system
        return total


Groups = list[list[int]]


@dataclasses.dataclass
class Variant:
    """One client under test; `run` carries out one operation on each group, in order."""

    name: str
    run: Callable[[str, Groups, float], None]
    next_id: int = 1
    # What each (operation, group size) left for the next operation to take.
    left: dict[tuple[str, int], Groups] = dataclasses.field(default_factory=dict)

    def groups_for(self, operation: str, group: int, operations: int) -> Groups:
        """The accept makes fresh ids; claim takes what the accept left, record the claim's."""
        if operation == "accept":
            first = self.next_id
            self.next_id += group * operations
            return [
                list(range(start, start + group))
                for start in range(first, first + group * operations, group)
            ]
        return self.left.pop((OPERATIONS[OPERATIONS.index(operation) - 1], group))


def psycopg_variant(dsn: str, *, arrays: bool) -> tuple[Variant, Callable[[], None]]:
    client = PsycopgClient(dsn, arrays=arrays)
    calls = {"accept": client.accept, "claim": client.claim, "record": client.record}

    def run(operation: str, groups: Groups, now: float) -> None:
        call = calls[operation]
        for ids in groups:
            done = call(ids, now)
            if done != len(ids):
                raise RuntimeError(f"{client.name}: {operation} did {done} of {len(ids)}")

    return Variant(client.name, run), client.close


def asyncpg_variant(
    dsn: str, loop: asyncio.AbstractEventLoop, *, arrays: bool
) -> tuple[Variant, Callable[[], None]]:
    connection = loop.run_until_complete(asyncpg.connect(dsn))
    client = AsyncpgClient(connection, arrays=arrays)
    calls = {"accept": client.accept, "claim": client.claim, "record": client.record}

    async def run_all(operation: str, groups: Groups, now: float) -> None:
        call = calls[operation]
        for ids in groups:
            done = await call(ids, now)
            if done != len(ids):
                raise RuntimeError(f"{client.name}: {operation} did {done} of {len(ids)}")

    def run(operation: str, groups: Groups, now: float) -> None:
        # One loop turn-over per sample, not per operation: the loop runs the whole sample.
        loop.run_until_complete(run_all(operation, groups, now))

    return Variant(client.name, run), lambda: loop.run_until_complete(connection.close())


def measure(
    variant: Variant, operation: str, group: int, operations: int, server: ServerCpu
) -> Sample:
    groups = variant.groups_for(operation, group, operations)
    now = time.time()
    server_before = server.seconds()
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    variant.run(operation, groups, now)
    wall = time.perf_counter() - wall_before
    cpu = time.process_time() - cpu_before
    server_cpu = server.seconds() - server_before
    variant.left[operation, group] = groups
    return Sample(wall / operations, cpu / operations, server_cpu / operations)


def run_bench(server: TemporaryPostgres, sizes: Sizes) -> list[dict[str, Any]]:
    """Every variant on a database of its own; repeats interleave the variants, so a
    load that comes and goes on a shared machine falls on all of them alike."""
    loop = uvloop.new_event_loop()
    variants: list[Variant] = []
    closers: list[Callable[[], None]] = []
    try:
        makers: list[Callable[[str], tuple[Variant, Callable[[], None]]]] = [
            functools.partial(psycopg_variant, arrays=False),
            functools.partial(psycopg_variant, arrays=True),
            lambda dsn: asyncpg_variant(_url(dsn), loop, arrays=False),
            lambda dsn: asyncpg_variant(_url(dsn), loop, arrays=True),
        ]
        for make in makers:
            dsn = server.create_database("bench")
            server.psql(TABLE + PREFILL, database=dsn.rsplit("=", 1)[1])
            variant, close = make(dsn)
            variants.append(variant)
            closers.append(close)
        cpu = ServerCpu(server.process.pid)
        samples: dict[tuple[str, str, int], list[Sample]] = {}
        for repeat in range(sizes.repeats + 1):  # the first round warms up, uncounted
            for variant in variants:
                for operation, group in CASES:
                    count = sizes.group_operations if group > 1 else sizes.single_operations
                    sample = measure(variant, operation, group, count, cpu)
                    if repeat:
                        samples.setdefault((variant.name, operation, group), []).append(sample)
        return [_row(key, found) for key, found in samples.items()]
    finally:
        for close in closers:
            close()
        loop.close()


def _url(dsn: str) -> str:
    fields = dict(part.split("=", 1) for part in dsn.split())
    return f"postgresql://{fields['user']}@{fields['host']}:{fields['port']}/{fields['dbname']}"


def _row(key: tuple[str, str, int], samples: Sequence[Sample]) -> dict[str, Any]:
    client, operation, group = key
    client_cpu_us = median([s.client_cpu_s for s in samples]) * 1e6
    return {
        "case": f"{operation} {group}",
        "client": client,
        "messages_per_operation": group,
        "samples": len(samples),
        "ms_per_operation": median([s.wall_s for s in samples]) * 1e3,
        "client_cpu_us_per_operation": client_cpu_us,
        "client_cpu_us_per_message": client_cpu_us / group,
        # The kernel counts a process's CPU in 10 ms ticks: the mean over every sample.
        "server_cpu_us_per_operation": statistics.fmean([s.server_cpu_s for s in samples]) * 1e6,
    }


QUICK: Final = Sizes(repeats=5, group_operations=8, single_operations=30)


def main(argv: Sequence[str] | None = None, *, sizes: Sizes | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("--repeats", type=int, default=None, help="samples per case (median)")
    arguments = parser.parse_args(argv)
    chosen = sizes or (QUICK if arguments.quick else Sizes())
    if arguments.repeats is not None:
        chosen = dataclasses.replace(chosen, repeats=max(1, arguments.repeats))
    try:
        with TemporaryPostgres.started() as server:
            version = server.psql("SHOW server_version").split()[0]
            rows = run_bench(server, chosen)
    except PostgresUnavailableError as error:
        print(f"PostgreSQL cannot be started: {error}")
        return 1
    for row in rows:
        row["server"] = f"PostgreSQL {version}"
    rows.sort(key=lambda row: (-row["messages_per_operation"], row["case"], row["client"]))
    print(
        format_table(
            ["case", "client", "ms/op", "client µs CPU/op", "µs CPU/msg", "server µs CPU/op"],
            [
                (
                    row["case"],
                    row["client"],
                    row["ms_per_operation"],
                    row["client_cpu_us_per_operation"],
                    row["client_cpu_us_per_message"],
                    row["server_cpu_us_per_operation"],
                )
                for row in rows
            ],
        )
    )
    path = write_results(NAME, rows, quick=arguments.quick, out=arguments.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
