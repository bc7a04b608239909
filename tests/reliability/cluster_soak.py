"""Cluster soak: several `septet run` nodes on one PostgreSQL journal, nodes killed with -9
and restarted, and every message counted at the simulators.

Issue 20 ("a node that dies loses nothing"): every accepted message ends with exactly one
true final outcome (tests.reliability.harness.Fate, as in the single-process soak),
whichever node accepted it, claimed it, took its report or died holding it. The nodes run
as a user starts them (`python -m engine run --config FILE`), each on ports of its own,
with the default node name (the host's with a suffix drawn per start): a restarted node is
a new node, so what a killed node held in flight can only be finished by another node's
takeover (engine.membership) — which the run counts from the nodes' logs.

Each round feeds a slice of the lines to every node at once (one NDJSON connection each),
kills one drawn node with -9 the moment the journal shows claims of that node in flight
(its requests at the providers: the takeover case), and restarts it at the next round on
the same ports (the simulators call back there). Lines the killed node left unanswered go
again to the next round, to any node: their ids are unique across the cluster, so a line
already accepted is answered as a duplicate. The last round kills nothing, waits until
every message is final, and stops every node with SIGTERM.

By hand: `.venv/bin/python -m tests.reliability.cluster_soak --messages 50000 --kills 10`
(a throwaway PostgreSQL is started for the run). The CI test (test_cluster_soak.py) runs
`cluster_soak` with small numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import psycopg

from bench.common import format_table
from bench.postgres import TemporaryPostgres
from tests.reliability.harness import (
    CREDENTIALS,
    LABELS,
    REPORT_SWEEP_S,
    SQL_JOURNAL_ROWS,
    Fate,
    JournalRow,
    configure_simulators,
    free_port,
    journal_rows,
    recipients_reached,
    simulators,
)
from tests.reliability.soak import (
    CALLBACK_RETRIES,
    DLR_DELAY_S,
    FAULTS,
    FAULTY_FATES,
    SIMULATOR_LATENCY_MS,
    UNKNOWN_FATES,
    Round,
    build_lines,
    serve_client,
    tally_fates,
    wait_until,
)

# `[reports] timeout_s`: long against the slowest report of a run, short enough that a
# message whose request never reached its provider (no report will come) ends in the run.
# Three nodes feed the one simulator process three times as fast as one daemon does: in the
# 50,000-message form on two shared cores its reports fell more than 60 s behind, and
# messages the providers had taken ended UNKNOWN for want of a report; the long form waits
# 300 s (`--report-timeout`), the CI form (2,000 messages) 15: there a report came at most
# 2.3-7.5 s after its send in 5 runs on this shared machine (polled ones wait for a killed
# leader's lease to pass, 5 s), and a callback due while its node was down is retried for
# 11 s at most (soak.CALLBACK_RETRIES).
REPORT_TIMEOUT_S = 15.0
LONG_REPORT_TIMEOUT_S = 300.0
FINAL_WAIT_S = 600.0
# Leases far shorter than the default (15 s), so that a killed node's claims are taken over
# within the round, yet long enough that a node slowed by the load (three nodes, the
# database and the simulators on two cores) keeps its own: 2 s was not (a starting node
# was taken for dead).
HEARTBEAT_S = 1.0
LEASE_S = 5.0


@dataclass(frozen=True)
class NodeConfig:
    number: int
    path: Path
    tcp_port: int
    http_port: int
    smpp_port: int | None = None


def write_node_config(
    workdir: Path,
    number: int,
    sim_url: str,
    dsn: str,
    *,
    smpp: bool = False,
    report_timeout_s: float = REPORT_TIMEOUT_S,
) -> NodeConfig:
    """Node `number`'s config: the shared journal, its own fixed ports (a restart comes
    back on them), the four bridges against the simulators, short leases. The files a
    node keeps beside its journal path (the admin token) are its own, in
    `workdir`. `smpp`: an SMPP listener too (the demo login)."""
    tcp_port, http_port = free_port(), free_port()
    smpp_port = free_port() if smpp else None
    smpp_listen = f"127.0.0.1:{smpp_port}" if smpp_port else ""
    text = [
        f'[journal]\nbackend = "postgresql"\ndsn = "{dsn}"\npath = "{workdir}/node-{number}.db"\n',
        f'[ingress]\ntcp = "127.0.0.1:{tcp_port}"\nunix = ""\n',
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n',
        f'[smpp]\nlisten = "{smpp_listen}"\n',
        "[retry]\nbase_s = 0.05\nmax_delay_s = 1.0\njitter = 0.1\n",
        f"[reports]\ntimeout_s = {report_timeout_s}\nsweep_s = {REPORT_SWEEP_S}\n",
        f"[cluster]\nheartbeat_s = {HEARTBEAT_S}\nlease_s = {LEASE_S}\n",
        '[log]\nlevel = "info"\n',
    ]
    for name, credentials in CREDENTIALS.items():
        text.append(
            f'[bridges.{name}]\ndriver = "{name}"\nbase_url = "{sim_url}"\n{credentials}\n'
            'default_sender = "SEPTET"\npool = 10\npoll_interval_s = 0.5\n'
            "poll_floor_s = 0.5\ntimeout_s = 2.0\nconnect_timeout_s = 2.0\n"
            "requests_per_s = 10000.0\nrequests_burst = 10000.0\n"
        )
    path = workdir / f"node-{number}.toml"
    path.write_text("".join(text))
    return NodeConfig(
        number=number, path=path, tcp_port=tcp_port, http_port=http_port, smpp_port=smpp_port
    )


@dataclass
class Node:
    config: NodeConfig
    process: subprocess.Popen[bytes]
    name: str
    log: Path


def start_node(config: NodeConfig, workdir: Path, start: int, timeout_s: float = 30) -> Node:
    """Start node `config` and return once its NDJSON port takes connections and /readyz
    names it (the HTTP listener answers from early in the start, ingress opens last)."""
    log = workdir / f"node-{config.number}-{start}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--config", str(config.path)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"node {config.number} exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", config.tcp_port), timeout=0.5).close()
            reply = httpx.get(f"http://127.0.0.1:{config.http_port}/readyz", timeout=1)
            name = reply.json()["node"]["name"]
        except (OSError, httpx.HTTPError, ValueError, KeyError):
            time.sleep(0.05)  # a poll of the port, bounded by the deadline
            continue
        return Node(config=config, process=process, name=str(name), log=log)
    process.kill()
    process.wait(10)
    raise AssertionError(f"node {config.number} did not become ready: {log.read_text()[-2000:]}")


# ── the journal, read from outside ────────────────────────────────────────────────


def read_rows(dsn: str) -> list[JournalRow]:
    with psycopg.connect(dsn) as connection:
        return journal_rows(connection.execute(SQL_JOURNAL_ROWS).fetchall())


def claims_of(dsn: str, node: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT count(*) FROM messages WHERE state = 1 AND claimed_by = %s", (node,)
        ).fetchone()
    return int(row[0]) if row is not None else 0


def count_not_final(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT count(*) FROM messages WHERE state < 3").fetchone()
    return int(row[0]) if row is not None else 0


def node_rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as connection:
        return [str(row[0]) for row in connection.execute("SELECT node FROM nodes ORDER BY node")]


def taken_over(logs: list[Path]) -> dict[str, int]:
    """Dead node -> claims taken over from it, from every node's `node_taken_over` lines."""
    found: Counter[str] = Counter()
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if '"node_taken_over"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            found[str(entry.get("dead"))] += int(entry.get("claims", 0))
    return dict(found)


# ── the run ─────────────────────────────────────────────────────────────────────


@dataclass
class Kill:
    node: str
    claims: int  # its claims in flight when it was killed (0: it missed the moment)


@dataclass
class ClusterReport:
    seed: int
    nodes: int
    messages: int
    report_timeout_s: float
    kills: list[Kill]
    journaled: int
    fates: dict[Fate, Counter[str]]
    examples: dict[Fate, list[str]]
    missing: list[str]
    unexpected_rejections: list[str]
    taken_over: dict[str, int]  # dead node -> claims another node took over
    rows_left: list[str]  # node rows at the end (only the nodes still running)
    exit_codes: list[int | None]
    accepted_by_node: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, *fates: Fate) -> int:
        return sum(self.fates[fate].total() for fate in fates)

    @property
    def ok(self) -> bool:
        return (
            self.journaled == self.messages
            and self.count(*Fate) == self.messages
            and not self.missing
            and self.count(*FAULTY_FATES) == 0
            and not self.unexpected_rejections
            and all(code == 0 for code in self.exit_codes)
        )

    def summary(self) -> str:
        rows: list[tuple[str, object]] = [
            ("seed", str(self.seed)),
            ("nodes", self.nodes),
            ("messages", self.messages),
            ("report deadline (s)", round(self.report_timeout_s)),
            ("accepted by node", ", ".join(f"{n} {c:,}" for n, c in self.accepted_by_node.items())),
            ("kills", len(self.kills)),
        ]
        rows += [
            (f"kill {n}", f"{kill.node} holding {kill.claims} claims in flight")
            for n, kill in enumerate(self.kills, 1)
        ]
        rows.append(
            ("claims taken over", ", ".join(f"{n} {c}" for n, c in self.taken_over.items()))
        )
        rows.append(("journaled", self.journaled))
        for fate in Fate:
            rows.append((LABELS[fate], self.fates[fate].total()))
        rows += [
            ("outcome unknown, all kinds", self.count(*UNKNOWN_FATES)),
            ("missing", len(self.missing)),
            ("unexpected rejections", len(self.unexpected_rejections)),
            ("node rows left", ", ".join(self.rows_left)),
            ("exit codes", ", ".join(str(code) for code in self.exit_codes)),
            ("seconds", round(self.seconds, 1)),
        ]
        return format_table(("what", "value"), rows)

    def problems(self) -> list[str]:
        lines = [f"missing: {m}" for m in self.missing[:20]]
        lines += [f"unexpected rejection: {r}" for r in self.unexpected_rejections[:20]]
        for fate in (*FAULTY_FATES, Fate.NO_REPORT_TAKEN):
            lines += [f"{LABELS[fate]}: {row}" for row in self.examples[fate]]
        return lines


async def wait_for_claims(node: Node, dsn: str, timeout_s: float) -> int:
    """How many claims `node` holds in flight, as soon as it holds any (0 at the timeout)."""
    deadline = time.monotonic() + timeout_s
    claims = 0
    while time.monotonic() < deadline:
        claims = await anyio.to_thread.run_sync(claims_of, dsn, node.name)
        if claims:
            break
        await anyio.sleep(0.002)  # a poll of journal state, not a synchronisation
    return claims


async def kill_when_claiming(node: Node, dsn: str, timeout_s: float = 30) -> Kill:
    """kill -9 `node` the moment it holds claims in flight (or at the timeout)."""
    claims = await wait_for_claims(node, dsn, timeout_s)
    node.process.send_signal(signal.SIGKILL)
    await anyio.to_thread.run_sync(node.process.wait, 10)
    return Kill(node.name, claims)


async def run_round(
    nodes: list[Node],
    refs: list[str],
    lines: dict[str, bytes],
    *,
    victim: int | None,
    dsn: str,
) -> tuple[list[Round], Kill | None]:
    """Feed `refs` to the nodes in turn (one connection each); kill -9 node `victim` once it
    holds claims, else wait until every line is answered."""
    shares = [refs[i :: len(nodes)] for i in range(len(nodes))]
    rounds = [Round(sent_refs=share) for share in shares]
    kill: Kill | None = None
    async with anyio.create_task_group() as tg:
        for node, share, round_ in zip(nodes, shares, rounds, strict=True):
            connected = anyio.Event()
            tg.start_soon(
                serve_client, node.config.tcp_port, [lines[r] for r in share], round_, connected
            )
            await connected.wait()
        if victim is not None:
            kill = await kill_when_claiming(nodes[victim], dsn)
        survivors = [r for i, r in enumerate(rounds) if i != victim]
        for round_ in survivors:
            await wait_until(round_, lambda r=round_: len(r.answered_refs) >= len(r.sent_refs), 120)
        tg.cancel_scope.cancel()
    return rounds, kill


async def wait_for_all_final(dsn: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await anyio.to_thread.run_sync(count_not_final, dsn):
        if time.monotonic() > deadline:
            return
        await anyio.sleep(0.2)  # a poll of journal state


@dataclass
class Seen:
    """What the clients and the nodes showed over every round."""

    acknowledged: set[str] = field(default_factory=set)  # msg_ids of `accepted` events
    answered: set[str] = field(default_factory=set)  # client refs accepted or duplicate
    rejections: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    accepted_by_node: Counter[str] = field(default_factory=Counter)
    exit_codes: list[int | None] = field(default_factory=list)

    def take(self, running: list[Node], rounds: list[Round]) -> None:
        for node, round_ in zip(running, rounds, strict=True):
            self.acknowledged |= round_.accepted_ids
            self.answered |= round_.answered_refs
            self.rejections += round_.rejections
            self.accepted_by_node[node.name] += round_.accepted


async def run_nodes(
    configs: list[NodeConfig],
    workdir: Path,
    dsn: str,
    lines: dict[str, bytes],
    slices: list[list[str]],
    rng: random.Random,
) -> Seen:
    """Start the nodes, run one round per slice (a kill and restart in all but the last),
    wait until every message is final, stop the nodes with SIGTERM."""
    seen = Seen()
    running: list[Node] = []
    try:
        for config in configs:
            running.append(await anyio.to_thread.run_sync(start_node, config, workdir, 0))
        seen.logs += [node.log for node in running]
        for number, new_refs in enumerate(slices, 1):
            previous = [r for s in slices[: number - 1] for r in s if r not in seen.answered]
            victim = rng.randrange(len(running)) if number < len(slices) else None
            rounds, kill = await run_round(
                running, previous + new_refs, lines, victim=victim, dsn=dsn
            )
            seen.take(running, rounds)
            if kill is not None and victim is not None:
                seen.kills.append(kill)
                restarted = await anyio.to_thread.run_sync(
                    start_node, running[victim].config, workdir, number
                )
                running[victim] = restarted
                seen.logs.append(restarted.log)
        await wait_for_all_final(dsn, FINAL_WAIT_S)
        for node in running:
            node.process.send_signal(signal.SIGTERM)
        for node in running:
            seen.exit_codes.append(await anyio.to_thread.run_sync(node.process.wait, 60))
    finally:
        for node in running:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait(10)
    return seen


def missing_lines(rows: list[JournalRow], refs: list[str], seen: Seen) -> list[str]:
    """What was acknowledged but is not journaled, lines never answered or not journaled,
    and lines journaled more than once."""
    missing = sorted(seen.acknowledged - {row.msg_id for row in rows})
    missing += sorted(f"line {ref} never answered" for ref in set(refs) - seen.answered)
    journaled_refs = Counter(row.client_ref for row in rows)
    missing += sorted(f"line {ref} not journaled" for ref in set(refs) - set(journaled_refs))
    missing += sorted(
        f"line {ref} journaled {n} times" for ref, n in journaled_refs.items() if n > 1
    )
    return missing


async def cluster_soak(
    workdir: Path,
    dsn: str,
    *,
    nodes: int,
    messages: int,
    kills: int,
    seed: int,
    report_timeout_s: float = REPORT_TIMEOUT_S,
) -> ClusterReport:
    started = time.monotonic()
    rng = random.Random(seed)
    lines = build_lines(messages)
    refs = list(lines)
    slices = [
        refs[i * messages // (kills + 1) : (i + 1) * messages // (kills + 1)]
        for i in range(kills + 1)
    ]
    with simulators(workdir) as sim_url:
        configs = [
            write_node_config(workdir, n, sim_url, dsn, report_timeout_s=report_timeout_s)
            for n in range(nodes)
        ]
        configure_simulators(
            sim_url,
            {
                "latency_ms": SIMULATOR_LATENCY_MS,
                "dlr_delay_s": DLR_DELAY_S,
                "dlr_retries": CALLBACK_RETRIES,
                "smsclub_rate_limit": None,
                # Route Mobile calls one URL (set at the provider): node 0's.
                "routemobile_dlr_url": f"http://127.0.0.1:{configs[0].http_port}/dlr/routemobile",
                "seed": seed,
            },
        )
        for provider, faults in FAULTS.items():
            configure_simulators(sim_url, faults, provider)
        seen = await run_nodes(configs, workdir, dsn, lines, slices, rng)
        reached = recipients_reached(sim_url)
    rows = read_rows(dsn)
    fates, examples = tally_fates(rows, lambda row: reached.get(row.to.lstrip("+"), 0))
    return ClusterReport(
        seed=seed,
        nodes=nodes,
        messages=messages,
        report_timeout_s=report_timeout_s,
        kills=seen.kills,
        journaled=len(rows),
        fates=fates,
        examples=examples,
        missing=missing_lines(rows, refs, seen),
        unexpected_rejections=seen.rejections,
        taken_over=taken_over(seen.logs),
        rows_left=node_rows(dsn),
        exit_codes=seen.exit_codes,
        accepted_by_node=dict(seen.accepted_by_node),
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.cluster_soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    parser.add_argument(
        "--report-timeout", type=float, default=LONG_REPORT_TIMEOUT_S, help="[reports] timeout_s"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the nodes' logs here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed}: {args.nodes} nodes, {args.messages} messages, {args.kills} kills")

    def run(workdir: Path) -> ClusterReport:
        with TemporaryPostgres.started() as server:
            dsn = server.create_database("soak")

            async def soak() -> ClusterReport:
                return await cluster_soak(
                    workdir,
                    dsn,
                    nodes=args.nodes,
                    messages=args.messages,
                    kills=args.kills,
                    seed=seed,
                    report_timeout_s=args.report_timeout,
                )

            return anyio.run(soak, backend_options={"use_uvloop": True})

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="septet-cluster-soak-") as tmp:
            report = run(Path(tmp))
    print(report.summary())
    for line in report.problems():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
