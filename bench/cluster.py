"""Messages/s and CPU per message of 1, 2 and 3 septet nodes on one PostgreSQL, beside SQLite.

Issue 20 ("What it must show", third point). Each run starts the provider simulators
and N `septet run` processes on one fresh PostgreSQL database (cluster mode), or one
process on its own SQLite file (the single node, in the same run for comparison), then
feeds the same NDJSON lines split over the nodes: each node gets a contiguous share over
its own TCP listener, and the events come back on that connection (from whichever node
sent the message). It reports:

- messages/s: messages ÷ wall time from the first byte sent to the last message final
  (its `submitted` event: the lines ask for no report, so a sent message is final);
- engine CPU per message: the sum of every node's CPU (utime + stime of its process
  tree, /proc) over the run ÷ messages;
- database CPU per message: the PostgreSQL server's CPU (the postmaster and every
  backend and helper process under it, alive or ended, /proc) ÷ messages.

Before the load it measures for 2 s (`--idle`) what the nodes and the database spend with
nothing to do (heartbeats, leases, polls): a cost per second, included in the run's
figures, that weighs less per message the busier the cluster. After each run it checks
at the journal that every message is final (state `final`) and at the simulators that
each was taken once, and stops every process it started.

What carries over: on this 2-core machine every node and the database server share one
core (the simulators and the load generator have the other), so more nodes cannot be
faster here and messages/s does not carry over; the CPU per message of the engine (per
message a node handles) and of the database (per message of the whole cluster) does, so
a bigger machine's rate is about its cores for nodes ÷ the engine's CPU per message, as
long as the database's cores ÷ its CPU per message is higher.

The scenarios are bench.pipeline's `unbatched` (1 recipient a line, distinct texts) and
`batched` (100 recipients a line sharing a text), 0 ms provider latency, no delivery
reports, bridges unlimited: no rate limit to share, so no Redis (the shared gate's cost
per request is bench.cluster_rates's figure). The PostgreSQL server is durable by
default (fsync and synchronous_commit on, as in production; `--no-fsync` takes the
tests' settings) and runs on the engine's core.

    python -m bench.cluster [--quick] [--out FILE] [--repeat N] [--nodes 1,2,3]
        [--scenario unbatched|batched ...] [-n N] [--no-sqlite] [--no-fsync]
        [--idle SECONDS] [--wait-quiet SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from bench.common import base_parser, format_table, write_results
from bench.loadgen import Goal, Tally, build_lines, chunk_lines, feed_and_collect
from bench.pipeline import (
    DAEMON_CORE,
    HOST,
    LOADGEN_CORE,
    Scenario,
    _aggregate,
    _can_pin,
    _free_port,
    _http_json,
    _latencies_ms,
    _scenarios,
    _spread,
    daemon_config,
    machine_busy_seconds,
    mean_batch,
    render_toml,
    start_daemon,
    start_simulators,
    stop_process,
    wait_for_quiet,
    wait_healthy,
)
from bench.postgres import SERVER_SETTINGS, PostgresUnavailableError, TemporaryPostgres

NAME: Final = "cluster"
SCENARIOS: Final = ("unbatched", "batched")
DEFAULT_NODES: Final = (1, 2, 3)
# The journal's phase of a message nothing more will happen to (engine.journal.interface).
FINAL_STATE: Final = 3
FINAL_WAIT_S: Final = 10.0
# Gives up on a run after this long (several nodes and the database on one busy core are
# slow): the messages never final are reported as lost.
DEADLINE_BASE_S: Final = 60.0
# Seconds of idle CPU measured once the nodes answer, before the load.
IDLE_S: Final = 2.0
DEADLINE_MESSAGES_PER_S: Final = 100.0
# A production server: every commit durable before septet says `accepted`.
DURABLE_SETTINGS: Final = {
    **SERVER_SETTINGS,
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
CARRIES_OVER: Final = (
    "On this 2-core machine every node and the database server share one core (the"
    " simulators and the load generator have the other), so more nodes cannot be faster"
    " here and messages/s does not carry over; the CPU per message of the engine (per"
    " message a node handles) and of the database (per message of the whole cluster)"
    " does, so a bigger machine's rate is about its cores for nodes ÷ the engine's CPU"
    " per message, as long as the database's cores ÷ its CPU per message is higher."
)
Backend = Literal["sqlite", "postgresql"]


class Setup(msgspec.Struct, frozen=True):
    """Which journal, and how many nodes share it."""

    backend: Backend
    nodes: int

    @property
    def label(self) -> str:
        return f"{self.backend} ×{self.nodes}"


class Share(msgspec.Struct, frozen=True):
    """One node's part of the load: its writes and when its part is done."""

    chunks: list[bytes]
    goal: Goal


class Node(msgspec.Struct, frozen=True):
    """A running `septet run` and where it listens."""

    process: subprocess.Popen[bytes]
    tcp_port: int
    http_port: int
    log_path: Path


class CpuSnapshot(msgspec.Struct, frozen=True):
    """CPU seconds used so far by each part of a run."""

    nodes: list[float]
    database: float
    simulators: float
    loadgen: float
    machine: float


# ── CPU of a process tree ──────────────────────────────────────────────────────────


def _process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and of the children it reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked: its time is now its parent's
        # After the name: state, ppid, …, utime, stime, cutime, cstime (fields 14-17).
        table[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)
    return table


def _tree(table: Mapping[int, tuple[int, float]], root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _) in table.items():
        children[parent].append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children[pid])
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and every descendant, alive or ended: the user and system time
    of each live one and of the children each has reaped (PostgreSQL's backends end with
    their connections, and their time moves to the postmaster's reaped children)."""
    table = _process_table()
    return sum(table[pid][1] for pid in _tree(table, root))


def pin_tree(root: int, core: int) -> None:
    """Move a process and its descendants to one core; those it starts later follow."""
    if not _can_pin():
        return
    for pid in _tree(_process_table(), root):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, {core})


# ── load ───────────────────────────────────────────────────────────────────────────


def split_load(scenario: Scenario, messages: int, nodes: int) -> list[Share]:
    """The lines bench.pipeline would send one daemon, cut into `nodes` contiguous parts
    (each keeps the bridges' rotation), each with the count of messages it carries."""
    shape = scenario.shape
    lines = build_lines(shape, messages)
    per_line = shape.recipients_per_line
    shares: list[Share] = []
    for index in range(nodes):
        start, end = len(lines) * index // nodes, len(lines) * (index + 1) // nodes
        count = sum(min(per_line, messages - line * per_line) for line in range(start, end))
        goal = Goal(messages=count, recipients_per_line=per_line, until=scenario.until)
        shares.append(Share(chunks=chunk_lines(lines[start:end]), goal=goal))
    return shares


def node_config(
    workdir: Path,
    scenario: Scenario,
    *,
    tcp_port: int,
    http_port: int,
    index: int,
    sim_url: str,
    dsn: str | None,
) -> str:
    """bench.pipeline's daemon config; on PostgreSQL with the shared journal and a node name."""
    document = daemon_config(
        workdir,
        sim_url=sim_url,
        tcp_port=tcp_port,
        http_port=http_port,
        bridges=sorted(set(scenario.shape.bridges)),
        pool=scenario.pool,
        overrides=scenario.bridge_overrides,
    )
    if dsn is not None:
        document["journal"] = {
            "backend": "postgresql",
            "dsn": dsn,
            "path": str(workdir / "journal.db"),
        }
        document["cluster"] = {"node": f"node-{index}"}
    return render_toml(document)


# ── one run ────────────────────────────────────────────────────────────────────────


def _snapshot(nodes: Sequence[Node], database_pid: int | None, sims_pid: int) -> CpuSnapshot:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        nodes=[tree_cpu_seconds(node.process.pid) for node in nodes],
        database=tree_cpu_seconds(database_pid) if database_pid is not None else 0.0,
        simulators=tree_cpu_seconds(sims_pid),
        loadgen=own.ru_utime + own.ru_stime,
        machine=machine_busy_seconds(),
    )


async def _drive(
    shares: Sequence[Share],
    tallies: Sequence[Tally],
    nodes: Sequence[Node],
    *,
    database_pid: int | None,
    sims_pid: int,
    deadline_s: float,
    idle_s: float,
) -> dict[str, Any]:
    # What the nodes and the database spend with nothing to do (heartbeats, leases,
    # polls): a cost per second, not per message, which the run's figures include.
    idle_from = _snapshot(nodes, database_pid, sims_pid)
    await asyncio.sleep(idle_s)
    before = _snapshot(nodes, database_pid, sims_pid)
    started_at = time.time()
    done = await asyncio.gather(
        *(
            feed_and_collect(
                HOST, node.tcp_port, share.chunks, tally, share.goal, deadline_s=deadline_s
            )
            for node, share, tally in zip(nodes, shares, tallies, strict=True)
        )
    )
    ended_at = time.time()
    after = _snapshot(nodes, database_pid, sims_pid)
    finished = [t.finished_at for t in tallies if t.finished_at is not None]
    return {
        "complete": all(done),
        "seconds": (max(finished) if all(done) and finished else ended_at) - started_at,
        "node_cpu_s": [b - a for a, b in zip(before.nodes, after.nodes, strict=True)],
        "database_cpu_s": after.database - before.database,
        "simulators_cpu_s": after.simulators - before.simulators,
        "loadgen_cpu_s": after.loadgen - before.loadgen,
        "machine_cpu_s": after.machine - before.machine,
        "idle_s": idle_s,
        "idle_engine_cpu_s": sum(before.nodes) - sum(idle_from.nodes),
        "idle_database_cpu_s": before.database - idle_from.database,
    }


def count_final(setup: Setup, workdir: Path, server: TemporaryPostgres | None, db: str) -> int:
    """Messages the journal holds as final."""
    sql = f"SELECT count(*) FROM messages WHERE state = {FINAL_STATE}"  # noqa: S608 - a constant
    if setup.backend == "postgresql":
        assert server is not None
        return int(server.psql(sql, db).strip())
    uri = f"file:{workdir / 'node-0' / 'journal.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as connection:
        row = connection.execute(sql).fetchone()
    return int(row[0])


def wait_final(
    setup: Setup, workdir: Path, server: TemporaryPostgres | None, db: str, messages: int
) -> int:
    """The journal's final count, once it reaches `messages` or FINAL_WAIT_S has passed."""
    deadline = time.monotonic() + FINAL_WAIT_S
    while True:
        final = count_final(setup, workdir, server, db)
        if final >= messages or time.monotonic() >= deadline:
            return final
        time.sleep(0.1)


def node_submitted(node: Node) -> int:
    """Messages this node sent, from its own /metrics (septet_messages_total, outcome
    `submitted`): how the sending spread over the nodes, whoever accepted them."""
    url = f"http://{HOST}:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5.0) as reply:
        text = reply.read().decode()
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("septet_messages_total{") and 'outcome="submitted"' in line
        )
    )


def simulator_accepted(sim_url: str, bridges: Sequence[str]) -> int:
    """Messages the simulators took, all bridges together (each message once: = messages)."""
    counters = _http_json(f"{sim_url}/_sim/counters")
    return sum(int(counters[name]["accepted_total"]) for name in bridges)


@contextlib.contextmanager
def database_for(setup: Setup, server: TemporaryPostgres | None) -> Iterator[tuple[str, str]]:
    """A fresh database for a PostgreSQL run (its DSN and name), dropped afterwards."""
    if setup.backend == "sqlite":
        yield "", ""
        return
    assert server is not None
    dsn = server.create_database("cluster")
    name = dsn.rsplit("dbname=", 1)[1]
    try:
        yield dsn, name
    finally:
        server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_nodes(
    nodes: list[Node],
    workdir: Path,
    scenario: Scenario,
    setup: Setup,
    *,
    sim_url: str,
    ports: Sequence[tuple[int, int]],
    dsn: str,
) -> None:
    """Start every node (appending each to `nodes` as it starts, so a failure stops
    those already running), then wait until each answers /healthz."""
    for index, (tcp_port, http_port) in enumerate(ports):
        directory = workdir / f"node-{index}"
        directory.mkdir()
        config_path = directory / "septet.toml"
        log_path = directory / "daemon.log"
        config_path.write_text(
            node_config(
                directory,
                scenario,
                tcp_port=tcp_port,
                http_port=http_port,
                index=index,
                sim_url=sim_url,
                dsn=dsn or None,
            )
        )
        process = start_daemon(config_path, log_path)
        nodes.append(Node(process, tcp_port, http_port, log_path))
    for node in nodes:
        wait_healthy(node.process, node.http_port, node.log_path, also=(node.tcp_port,))


def run_once(
    scenario: Scenario,
    messages: int,
    setup: Setup,
    server: TemporaryPostgres | None,
    *,
    idle_s: float = 0.0,
) -> dict[str, Any]:
    """Fresh simulators, database and nodes; push `messages` through; the figures."""
    shares = split_load(scenario, messages, setup.nodes)
    tallies = [Tally(track=True) for _ in shares]
    bridges = sorted(set(scenario.shape.bridges))
    with tempfile.TemporaryDirectory(prefix="septet-bench-cluster-") as tmp:
        workdir = Path(tmp)
        ports = [(_free_port(), _free_port()) for _ in range(setup.nodes)]
        sims, sim_url = start_simulators(0.0, 0.0, f"http://{HOST}:{ports[0][1]}/dlr/routemobile")
        nodes: list[Node] = []
        try:
            with database_for(setup, server) as (dsn, db):
                try:
                    start_nodes(
                        nodes, workdir, scenario, setup, sim_url=sim_url, ports=ports, dsn=dsn
                    )
                    measured = asyncio.run(
                        _drive(
                            shares,
                            tallies,
                            nodes,
                            database_pid=server.process.pid if dsn and server else None,
                            sims_pid=sims.pid,
                            deadline_s=DEADLINE_BASE_S + messages / DEADLINE_MESSAGES_PER_S,
                            idle_s=idle_s,
                        )
                    )
                    measured["journal_final"] = wait_final(setup, workdir, server, db, messages)
                    measured["simulator_accepted"] = simulator_accepted(sim_url, bridges)
                    measured["mean_batch"] = mean_batch(sim_url, bridges)
                    measured["per_node_sent"] = [node_submitted(node) for node in nodes]
                finally:
                    for node in nodes:
                        stop_process(node.process)
            logs = [node.log_path.read_text(errors="replace") for node in nodes]
        finally:
            stop_process(sims)
    errors_logged = sum(
        1 for log in logs for line in log.splitlines() if '"level": "error"' in line
    )
    return figures(scenario, setup, messages, tallies, measured, errors_logged)


# ── figures ────────────────────────────────────────────────────────────────────────


def _per_message_us(seconds: float, messages: int) -> float:
    return round(seconds / messages * 1e6, 1) if messages else 0.0


def _percent_of_core(seconds: float, over_s: float) -> float | None:
    return round(seconds / over_s * 100.0, 1) if over_s > 0 else None


def figures(
    scenario: Scenario,
    setup: Setup,
    messages: int,
    tallies: Sequence[Tally],
    measured: Mapping[str, Any],
    errors_logged: int,
) -> dict[str, Any]:
    per_line = scenario.shape.recipients_per_line
    rejected = sum(t.rejected_lines for t in tallies) * per_line
    submitted = sum(t.submitted for t in tallies)
    failed = sum(t.failed for t in tallies)
    engine_cpu = sum(measured["node_cpu_s"])
    database_cpu = measured["database_cpu_s"]
    ours = engine_cpu + database_cpu + measured["simulators_cpu_s"] + measured["loadgen_cpu_s"]
    accepted_at = {k: v for t in tallies for k, v in t.accepted_at.items()}
    submitted_at = {k: v for t in tallies for k, v in t.submitted_at.items()}
    errors: dict[str, int] = {}
    for tally in tallies:
        for key, count in tally.errors.items():
            errors[key] = errors.get(key, 0) + count
    seconds = measured["seconds"]
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "setup": setup.label,
        "backend": setup.backend,
        "nodes": setup.nodes,
        "messages": messages,
        "per_node_accepted": [t.accepted for t in tallies],
        "per_node_sent": measured["per_node_sent"],
        "complete": measured["complete"],
        "pinned": _can_pin(),
        "accepted": sum(t.accepted for t in tallies),
        "submitted": submitted,
        "failed": failed,
        "rejected": rejected,
        "lost": max(0, messages - submitted - failed - rejected),
        "journal_final": measured["journal_final"],
        "simulator_accepted": measured["simulator_accepted"],
        "sent_twice": max(0, measured["simulator_accepted"] - submitted),
        "errors": errors,
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds, 1) if seconds > 0 else 0.0,
        "submit_latency_ms": _spread(_latencies_ms(accepted_at, submitted_at)),
        "engine_cpu_s": round(engine_cpu, 3),
        "node_cpu_s": [round(value, 3) for value in measured["node_cpu_s"]],
        "engine_cpu_us_per_message": _per_message_us(engine_cpu, messages),
        "database_cpu_s": round(database_cpu, 3),
        "database_cpu_us_per_message": _per_message_us(database_cpu, messages),
        "total_cpu_us_per_message": _per_message_us(engine_cpu + database_cpu, messages),
        "idle_s": measured["idle_s"],
        # Idle CPU as a share of one core, all nodes together and the database server.
        "idle_engine_cpu_pct": _percent_of_core(measured["idle_engine_cpu_s"], measured["idle_s"]),
        "idle_database_cpu_pct": _percent_of_core(
            measured["idle_database_cpu_s"], measured["idle_s"]
        ),
        "simulators_cpu_s": round(measured["simulators_cpu_s"], 3),
        "loadgen_cpu_s": round(measured["loadgen_cpu_s"], 3),
        # CPU other processes used meanwhile: well above zero means the run shared its
        # cores and its figures are pessimistic.
        "other_cpu_s": round(max(0.0, measured["machine_cpu_s"] - ours), 3),
        "mean_batch": measured["mean_batch"],
        "daemon_log_errors": errors_logged,
    }


def _table(results: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "scenario",
        "setup",
        "messages",
        "msg/s",
        "engine µs/msg",
        "db µs/msg",
        "total µs/msg",
        "submit p50 ms",
        "p99",
        "lost",
        "twice",
        "not final",
        "sent per node",
        "idle %",
        "other cpu s",
    ]
    rows = [
        [
            r["scenario"],
            r["setup"],
            r["messages"],
            float(r["messages_per_s"]),
            float(r["engine_cpu_us_per_message"]),
            float(r["database_cpu_us_per_message"]) if r["backend"] == "postgresql" else "-",
            float(r["total_cpu_us_per_message"]),
            _or_dash(r["submit_latency_ms"]["p50"]),
            _or_dash(r["submit_latency_ms"]["p99"]),
            r["lost"],
            r["sent_twice"],
            max(0, r["messages"] - r["journal_final"]),
            "/".join(f"{count:,}" for count in r["per_node_sent"]),
            _idle_percent(r),
            float(r["other_cpu_s"]),
        ]
        for r in results
    ]
    return format_table(headers, rows)


def _idle_percent(result: Mapping[str, Any]) -> float | str:
    """The nodes' and the database's CPU together while idle, in % of one core."""
    engine, database = result["idle_engine_cpu_pct"], result["idle_database_cpu_pct"]
    return "-" if engine is None else float(engine + (database or 0.0))


def _or_dash(value: float | None) -> float | str:
    return "-" if value is None else float(value)


def summary(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The sentence on what carries over, and per scenario what the CPU figures imply
    for a machine with more cores (derived from the figures, not run)."""
    lines = [CARRIES_OVER]
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        cluster = [r for r in results if r["scenario"] == scenario and r["backend"] != "sqlite"]
        if not cluster:
            continue
        largest = max(cluster, key=lambda r: r["nodes"])
        engine, database = (
            largest["engine_cpu_us_per_message"],
            largest["database_cpu_us_per_message"],
        )
        if engine <= 0 or database <= 0:
            continue
        lines.append(
            f"{scenario} ({largest['setup']}): {engine:,.1f} µs of engine CPU and"
            f" {database:,.1f} µs of database CPU a message; derived, not run: about"
            f" {1e6 / engine:,.0f} msg/s per node core, and about {1e6 / database:,.0f} msg/s"
            " for the whole cluster per database core."
        )
    return lines


# ── main ───────────────────────────────────────────────────────────────────────────


def _setups(nodes: Sequence[int], sqlite: bool) -> list[Setup]:
    setups = [Setup("sqlite", 1)] if sqlite else []
    return setups + [Setup("postgresql", count) for count in nodes]


def _parse_nodes(text: str) -> list[int] | None:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None
    return counts if counts and all(count >= 1 for count in counts) else None


def _parser() -> argparse.ArgumentParser:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help=f"run this scenario (repeatable; default: {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--nodes", default="1,2,3", help="node counts on PostgreSQL, comma-separated (1,2,3)"
    )
    parser.add_argument(
        "-n", "--messages", type=int, default=None, help="messages per run (default per scenario)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setup (medians)")
    parser.add_argument("--no-sqlite", action="store_true", help="leave out the SQLite node")
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="run PostgreSQL with fsync and synchronous_commit off (the tests' settings)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=IDLE_S,
        metavar="SECONDS",
        help=f"measure the nodes' and database's idle CPU this long before the load ({IDLE_S:g})",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for the machine to be idle (default 0)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    nodes = _parse_nodes(args.nodes)
    if nodes is None:
        parser.error(f"--nodes must be node counts of at least 1, like 1,2,3 (got {args.nodes!r})")
    if args.messages is not None and args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.idle < 0:
        parser.error("--idle must be 0 seconds or more")
    # A SIGTERM stops the run as Ctrl-C does: every node, simulator and server stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    if _can_pin():
        os.sched_setaffinity(0, {LOADGEN_CORE})
    setups = _setups(nodes, not args.no_sqlite)
    settings = SERVER_SETTINGS if args.no_fsync else DURABLE_SETTINGS
    try:
        with contextlib.ExitStack() as stack:
            server = None
            if any(setup.backend == "postgresql" for setup in setups):
                server = stack.enter_context(TemporaryPostgres.started(settings))
                pin_tree(server.process.pid, DAEMON_CORE)
            results = run_all(args, setups, server)
    except KeyboardInterrupt:
        print("bench.cluster: interrupted; every process it started has been stopped.")
        return 130
    except (PostgresUnavailableError, RuntimeError) as error:
        print(f"bench.cluster: {error}")
        return 1
    path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(title(args.quick, settings))
    print(_table(results))
    for line in summary(results):
        print(line)
    print(f"results written to {path}")
    return 0 if all(_sound(r) for r in results) else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_all(
    args: argparse.Namespace, setups: Sequence[Setup], server: TemporaryPostgres | None
) -> list[Any]:
    """Every scenario × setup, the setups taking turns within each repeat (so a busy
    spell of the machine falls on all of them), then the medians per setup."""
    scenarios = _scenarios()
    results: list[dict[str, Any]] = []
    for name in args.scenario or SCENARIOS:
        scenario = scenarios[name]
        messages = args.messages or (scenario.quick_messages if args.quick else scenario.messages)
        runs: dict[Setup, list[dict[str, Any]]] = {setup: [] for setup in setups}
        for _ in range(args.repeat):
            for setup in setups:
                busy = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                print(f"{name}: {setup.label}, {messages:,} messages", flush=True)
                result = run_once(scenario, messages, setup, server, idle_s=args.idle)
                result["machine_busy_before"] = busy
                runs[setup].append(result)
        results.extend(_medians(runs[setup]) for setup in setups)
    return results


def _medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """bench.pipeline's medians, with what must hold in every run taken from the worst."""
    merged = _aggregate(runs)
    merged["sent_twice"] = max(run["sent_twice"] for run in runs)
    merged["journal_final"] = min(run["journal_final"] for run in runs)
    return merged


def _sound(result: Mapping[str, Any]) -> bool:
    return bool(
        result["complete"]
        and result["lost"] == 0
        and result["sent_twice"] == 0
        and result["journal_final"] >= result["messages"]
    )


def title(quick: bool, settings: Mapping[str, str]) -> str:
    cores = (
        f"nodes and database on core {DAEMON_CORE}, simulators and load on core {LOADGEN_CORE}"
        if _can_pin()
        else "unpinned"
    )
    durable = "fsync on" if settings.get("fsync") == "on" else "fsync off"
    return f"septet cluster ({'quick, ' if quick else ''}{cores}; PostgreSQL {durable})"


if __name__ == "__main__":
    sys.exit(main())
