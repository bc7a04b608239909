"""Bridge rate limits shared by a cluster: held by N processes together, and what a turn costs.

Two parts, against a throwaway redis-server (bench.redis_server):

- **rates**: N separate OS processes (3 by default), each with its own Redis client and
  engine.cluster_limits.SharedGate, each asking for turns as fast as it can (`concurrency`
  tasks per process and bridge, each sleeping only until its turn) for `seconds` (10), on
  two bridges at once: "requests" (a requests/s limit, one message a request) and
  "messages" (a messages/s limit that binds first: batches of 5 to 25 messages under a
  requests/s limit they never reach). Every grant is counted on the Redis server's clock:
  the total in [start, start + seconds) against limit × seconds, and the busiest
  one-second window (checked from every grant) against the limit. The time each turn was
  actually taken (after the sleep, on the process's clock) is counted too, for the jitter
  a provider would see.
- **cost**: one turn of the shared gate against the local one (engine.bridge_limits.LocalGate):
  the round trip (median of single calls) and the CPU per turn of the client process
  (time.process_time over a run) and of redis-server (psutil), medians over repeats.
- **backlog**: 100 askers in one process on an 8/s bridge for 5 s (a dispatch pool on
  SMS Club with a backlog): turns given, script calls Redis ran (its commandstats) and
  the client's CPU; the gate's line keeps the calls near the turns.

    python -m bench.cluster_rates [--quick] [--out FILE] [--processes N] [--seconds S]
        [--requests-per-s R] [--messages-per-s M] [--concurrency C] [--calls K] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import psutil
import uvloop
from redis.asyncio import Redis

from bench.common import base_parser, format_table, median, write_results
from bench.redis_server import RedisServer
from engine.bridge_limits import BridgeGate, Hold, LocalGate
from engine.cluster_limits import US, Grant, SharedGate, open_client
from engine.ratelimit import RequestLimiter, TokenBucket

NAME: Final = "cluster_rates"
# Batches on the "messages" bridge: small beside a second's messages, as a provider's 100
# recipients are beside thousands a second.
BATCH_SIZES: Final = (5, 25)
# From every worker process saying it is ready (Python started, modules imported, Redis
# connected) to the run's start: the time the start takes to reach them. The bridges give
# no turn before it.
START_DELAY_S: Final = 1.0
# How long the worker processes may take to get ready.
READY_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What every worker process runs."""

    url: str
    start_us: int
    seconds: float
    requests_per_s: float
    messages_per_s: float
    concurrency: int
    requests_burst: float = 1.0
    messages_burst: float = 100.0


def bridge_limits(plan: Plan) -> dict[str, dict[str, float]]:
    """The two bridges' settings, as SharedGate takes them."""
    return {
        "requests": {
            "requests_per_s": plan.requests_per_s,
            "requests_burst": plan.requests_burst,
            "messages_per_s": 0.0,
            "messages_burst": 1.0,
        },
        "messages": {
            "requests_per_s": plan.requests_per_s,
            "requests_burst": plan.requests_burst,
            "messages_per_s": plan.messages_per_s,
            "messages_burst": plan.messages_burst,
        },
    }


def shared_gate(client: Redis, bridge: str, limits: dict[str, float]) -> SharedGate:
    return SharedGate(
        client,
        bridge,
        requests_per_s=limits["requests_per_s"],
        requests_burst=limits["requests_burst"],
        messages_per_s=limits["messages_per_s"],
        messages_burst=limits["messages_burst"],
    )


# ── a worker process ──────────────────────────────────────────────────────────────────


async def run_worker(plan: Plan, seed: int) -> dict[str, Any]:
    """Connect, say "ready" on stdout, read the start (server clock, µs) from stdin, then
    ask for turns on both bridges until `seconds` after it; every turn granted before the
    end, with when it was taken on this process's clock, and when the process had the
    start (server clock: it must be before the start)."""
    client = open_client(plan.url)
    seconds, micros = await client.time()
    offset_us = seconds * US + micros - time.time_ns() // 1000  # server - local
    print("ready", flush=True)  # the parent's signal to fix the start
    plan = dataclasses.replace(plan, start_us=int(await asyncio.to_thread(sys.stdin.readline)))
    end_us = plan.start_us + round(plan.seconds * US)
    taken: list[dict[str, Any]] = []
    draw = random.Random(seed)

    async def serve_asker(bridge: str, gate: SharedGate) -> None:
        while True:
            count = draw.randint(*BATCH_SIZES) if bridge == "messages" else 1
            answer = await gate.grant(1, count)
            if isinstance(answer, Hold):
                await asyncio.sleep(answer.retry_s)
                continue
            if answer.at_us >= end_us:
                return
            await asyncio.sleep(answer.wait_s)
            taken.append(
                {
                    "bridge": bridge,
                    "at_us": answer.at_us,
                    "messages": count,
                    "taken_us": time.time_ns() // 1000 + offset_us,
                }
            )

    gates = {
        name: shared_gate(client, name, limits) for name, limits in bridge_limits(plan).items()
    }
    ready_us = time.time_ns() // 1000 + offset_us
    async with asyncio.TaskGroup() as group:
        for name, gate in gates.items():
            for _ in range(plan.concurrency):
                group.create_task(serve_asker(name, gate))
    await client.aclose()
    return {"ready_us": ready_us, "taken": taken}


# ── the run: processes, then counting ─────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Held:
    """One bridge's figures of a run."""

    bridge: str
    unit: str
    limit: float
    expected: int
    total: int
    busiest_window: int
    busiest_window_taken: int
    per_second: list[int]

    @property
    def total_error(self) -> float:
        return (self.total - self.expected) / self.expected


def busiest_window(points: Sequence[tuple[int, int]], window_us: int = US) -> int:
    """The most units in any window [t, t + window) of (time µs, units) points."""
    ordered = sorted(points)
    most = inside = first = 0
    for at, units in ordered:
        inside += units
        while ordered[first][0] + window_us <= at:
            inside -= ordered[first][1]
            first += 1
        most = max(most, inside)
    return most


def count(plan: Plan, taken: Sequence[dict[str, Any]]) -> list[Held]:
    held: list[Held] = []
    for bridge, unit, limit in (
        ("requests", "requests", plan.requests_per_s),
        ("messages", "messages", plan.messages_per_s),
    ):
        end_us = plan.start_us + round(plan.seconds * US)
        mine = [t for t in taken if t["bridge"] == bridge and plan.start_us <= t["at_us"] < end_us]
        units = [(t["at_us"], 1 if unit == "requests" else t["messages"]) for t in mine]
        actual = [(t["taken_us"], n) for t, (_, n) in zip(mine, units, strict=True)]
        seconds = round(plan.seconds)
        per_second = [0] * seconds
        for at, n in units:
            per_second[min(seconds - 1, (at - plan.start_us) // US)] += n  # at ≥ start
        held.append(
            Held(
                bridge=bridge,
                unit=unit,
                limit=limit,
                expected=round(limit * plan.seconds),
                total=sum(n for _, n in units),
                busiest_window=busiest_window(units),
                busiest_window_taken=busiest_window(actual),
                per_second=per_second,
            )
        )
    return held


def run_rates(
    server: RedisServer,
    *,
    processes: int,
    seconds: float,
    requests_per_s: float,
    messages_per_s: float,
    concurrency: int,
    requests_burst: float = 1.0,
    messages_burst: float = 100.0,
) -> tuple[Plan, list[Held], list[int]]:
    """Start `processes` workers on `server`, wait for them, count their grants. Returns
    the plan, each bridge's figures, and the grants each process had."""
    plan = Plan(
        url=server.url,
        start_us=0,
        seconds=seconds,
        requests_per_s=requests_per_s,
        messages_per_s=messages_per_s,
        concurrency=concurrency,
        requests_burst=requests_burst,
        messages_burst=messages_burst,
    )
    taken: list[dict[str, Any]] = []
    per_process: list[int] = []
    with tempfile.TemporaryDirectory() as directory:
        outputs = [Path(directory) / f"worker-{n}.json" for n in range(processes)]
        # Each worker writes its grants to a file of its own (not a pipe the parent would
        # read one worker at a time).
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.cluster_rates",
                    "--worker",
                    json.dumps(asdict(plan)),
                    str(output),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for output in outputs
        ]
        try:
            start_us = _start_when_ready(workers, plan)
            for worker in workers:
                if worker.wait(timeout=seconds + 60) != 0:
                    raise RuntimeError(f"a worker process failed (exit {worker.returncode})")
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        plan = dataclasses.replace(plan, start_us=start_us)
        for output in outputs:
            answer = json.loads(output.read_text())
            if answer["ready_us"] > start_us:
                late = (answer["ready_us"] - start_us) / US
                raise RuntimeError(f"a worker process was ready {late:.3f} s after the start")
            per_process.append(len(answer["taken"]))
            taken += answer["taken"]
    return plan, count(plan, taken), per_process


def _start_when_ready(workers: Sequence[subprocess.Popen[bytes]], plan: Plan) -> int:
    """Once every worker has said "ready", fix the start and send it to each of them."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for worker in workers:
        assert worker.stdout is not None
        left = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([worker.stdout], [], [], left)
        if not readable or worker.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"a worker process was not ready in {READY_TIMEOUT_S:g} s")
    start_us = asyncio.run(_prepare(plan))
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"%d\n" % start_us)
        worker.stdin.close()
    return start_us


async def _prepare(plan: Plan) -> int:
    """Create both bridges' state with nothing granted before the start (the Redis
    server's now + START_DELAY_S, the gate's own first-use hold), and return the start.
    Every worker is ready by then (`_start_when_ready`) and asks as soon as it has the
    start: the gate holds it until the start is within its horizon, then gives turns
    from the start on, so the first second is not short of the processes' start-up."""
    client = open_client(plan.url)
    starts: set[int] = set()
    for name, limits in bridge_limits(plan).items():
        gate = SharedGate(
            client,
            name,
            requests_per_s=limits["requests_per_s"],
            requests_burst=limits["requests_burst"],
            messages_per_s=limits["messages_per_s"],
            messages_burst=limits["messages_burst"],
            horizon_s=2 * START_DELAY_S,
            fresh_hold_s=START_DELAY_S,
        )
        answer = await gate.grant(0, 0)
        if not isinstance(answer, Grant):
            raise RuntimeError(f"Redis did not answer: {answer}")
        starts.add(answer.at_us)
    await client.aclose()
    return max(starts)


# ── cost of a turn ────────────────────────────────────────────────────────────────────


async def measure_cost(server: RedisServer, calls: int, repeats: int) -> list[dict[str, Any]]:
    """Per turn: round trip (median of single calls), client CPU and redis-server CPU
    (per run, median over `repeats` runs), for the local gate and the shared one."""
    client = open_client(server.url)
    assert server.process is not None
    redis_process = psutil.Process(server.process.pid)
    # Limits far above what the run asks: every turn is granted at once, so only the cost
    # of asking shows (the window log still holds a second of grants).
    many = 1e9
    gates: dict[str, BridgeGate] = {
        "local": LocalGate(RequestLimiter(many, many), TokenBucket(many, many)),
        "redis": SharedGate(
            client,
            "cost",
            requests_per_s=many,
            requests_burst=many,
            messages_per_s=many,
            messages_burst=many,
            fresh_hold_s=0.0,
        ),
    }
    rows: list[dict[str, Any]] = []
    for name, gate in gates.items():
        trips: list[float] = []
        cpu: list[float] = []
        server_cpu: list[float] = []
        for _ in range(repeats):
            before = redis_process.cpu_times()
            started_cpu = time.process_time()
            for _ in range(calls):
                started = time.perf_counter()
                await gate.reserve(1, 10)
                trips.append(time.perf_counter() - started)
            cpu.append((time.process_time() - started_cpu) / calls)
            after = redis_process.cpu_times()
            spent = (after.user - before.user) + (after.system - before.system)
            server_cpu.append(spent / calls if name == "redis" else 0.0)
        rows.append(
            {
                "part": "cost",
                "gate": name,
                "calls": calls,
                "repeats": repeats,
                "round_trip_us": median(trips) * US,
                "client_cpu_us": median(cpu) * US,
                "server_cpu_us": median(server_cpu) * US,
            }
        )
    await client.aclose()
    return rows


# ── a backlog on a slow bridge ────────────────────────────────────────────────────────

# A bridge like SMS Club's (8/s) with a dispatch pool's worth of askers (100).
BACKLOG_RATE: Final = 8.0
BACKLOG_ASKERS: Final = 100


async def measure_backlog(server: RedisServer, seconds: float) -> dict[str, Any]:
    """`BACKLOG_ASKERS` askers in one process on a bridge of `BACKLOG_RATE` requests a
    second for `seconds`: how many turns they got, how many times Redis ran the script
    for them (its commandstats), and the process's CPU."""
    client = open_client(server.url)
    gate = SharedGate(
        client,
        "backlog",
        requests_per_s=BACKLOG_RATE,
        requests_burst=1.0,
        messages_per_s=0.0,
        messages_burst=1.0,
        fresh_hold_s=0.0,
    )
    end = time.monotonic() + seconds
    grants = 0

    async def serve_asker() -> None:
        nonlocal grants
        while time.monotonic() < end:
            answer = await gate.reserve(1, 1)
            if isinstance(answer, Hold):
                await asyncio.sleep(min(answer.retry_s, end - time.monotonic()))
                continue
            grants += 1
            # Until the turn (or back in the line), but not past the end: a turn given
            # for later is counted already, and an asker waking after the end would not
            # ask again, so waiting it out only lengthened the run (100 askers on 8/s
            # hold turns up to 12.5 s ahead).
            await asyncio.sleep(min(answer, end - time.monotonic()))

    before = await _script_calls(client)
    started_cpu = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(BACKLOG_ASKERS):
            group.create_task(serve_asker())
    cpu_s = time.process_time() - started_cpu
    calls = await _script_calls(client) - before
    await client.aclose()
    return {
        "part": "backlog",
        "rate": BACKLOG_RATE,
        "askers": BACKLOG_ASKERS,
        "seconds": seconds,
        "grants": grants,
        "script_calls": calls,
        "client_cpu_s": cpu_s,
    }


async def _script_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    counts = [stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval")]
    return sum(int(count) for count in counts)


# ── the command ───────────────────────────────────────────────────────────────────────


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("--processes", type=int, default=3, help="worker processes (nodes)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the run")
    parser.add_argument("--requests-per-s", type=float, default=200.0)
    parser.add_argument("--messages-per-s", type=float, default=2000.0)
    parser.add_argument(
        "--requests-burst", type=float, default=1.0, help="1: spread evenly (most room for jitter)"
    )
    parser.add_argument("--messages-burst", type=float, default=100.0, help="a request's worth")
    parser.add_argument("--concurrency", type=int, default=20, help="askers per process and bridge")
    parser.add_argument("--calls", type=int, default=5000, help="turns per cost run")
    parser.add_argument("--repeats", type=int, default=5, help="cost runs (median)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.worker:
        plan = Plan(**json.loads(arguments.worker[0]))
        output = Path(arguments.worker[1])
        taken = uvloop.run(run_worker(plan, seed=sum(map(ord, output.name))))
        output.write_text(json.dumps(taken))
        return 0
    seconds = 2.0 if arguments.quick else arguments.seconds
    calls = 500 if arguments.quick else arguments.calls
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            plan, held, per_process = run_rates(
                server,
                processes=arguments.processes,
                seconds=seconds,
                requests_per_s=arguments.requests_per_s,
                messages_per_s=arguments.messages_per_s,
                concurrency=arguments.concurrency,
                requests_burst=arguments.requests_burst,
                messages_burst=arguments.messages_burst,
            )
            cost = uvloop.run(measure_cost(server, calls, arguments.repeats))
            backlog = uvloop.run(measure_backlog(server, min(seconds, 5.0)))
        finally:
            server.stop()
    print(report(plan, held, per_process, cost))
    print(
        f"\nbacklog: {backlog['askers']} askers on a {backlog['rate']:g}/s bridge for"
        f" {backlog['seconds']:g} s: {backlog['grants']} turns, {backlog['script_calls']}"
        f" script calls, {backlog['client_cpu_s']:.2f} s of client CPU"
    )
    rows = [
        {"part": "rates", "processes": arguments.processes, "seconds": seconds}
        | asdict(figures)
        | {"total_error": figures.total_error, "grants_per_process": per_process}
        for figures in held
    ]
    path = write_results(NAME, [*rows, *cost, backlog], quick=arguments.quick, out=arguments.out)
    print(f"\nresults: {path}")
    return 0


def report(
    plan: Plan, held: Sequence[Held], per_process: Sequence[int], cost: Sequence[dict[str, Any]]
) -> str:
    rates = format_table(
        ["bridge", "limit/s", "expected", "total", "error", "busiest 1 s", "busiest 1 s taken"],
        [
            (
                f"{h.bridge} ({h.unit})",
                h.limit,
                h.expected,
                h.total,
                f"{h.total_error:+.2%}",
                h.busiest_window,
                h.busiest_window_taken,
            )
            for h in held
        ],
    )
    seconds = "\n".join(f"  {h.bridge}: {h.per_second}" for h in held)
    turns = format_table(
        ["gate", "round trip µs", "client CPU µs/turn", "redis-server CPU µs/turn"],
        [(c["gate"], c["round_trip_us"], c["client_cpu_us"], c["server_cpu_us"]) for c in cost],
    )
    return (
        f"{len(per_process)} processes, {plan.seconds:g} s, {plan.concurrency} askers each per"
        f" bridge, bursts {plan.requests_burst:g} requests and {plan.messages_burst:g}"
        f" messages; grants per process {list(per_process)}\n{rates}\nper second:\n{seconds}\n\n"
        f"cost of one turn (medians):\n{turns}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
