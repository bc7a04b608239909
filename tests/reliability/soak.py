"""Crash soak: kill -9 the daemon at drawn points of a long run, restart it, and count.

Issue #8: every accepted message must end submitted exactly once (the simulators'
per-recipient counters say so) or reported failed with outcome unknown; none missing,
none sent twice, and SQLite's integrity check passes. Each kill is drawn from a seeded
RNG and aimed at a named phase, recognised from what the daemon shows from outside:

  ingress    the client is still feeding lines: killed once a drawn share of this
             round's lines were accepted, while the rest are unanswered
  mid-batch  provider requests in flight: killed the moment the journal holds inflight
             rows (claimed, request sent, outcome not yet journaled)
  mid-commit right after a burst of group commits (septet_journal_commit_seconds_count
             on /metrics rose by a drawn amount between two scrapes)
  dlr:<b>    delivery reports arriving for bridge b (dsc, routemobile: callbacks; bsg,
             smsclub: status polling), killed after a drawn number of `dlr` events

Every message goes to its own recipient, so a recipient's accept count is its message's.
Lines a kill left unanswered are sent again in the next round: their ids make the
resend idempotent (a `duplicate id` answer), which is checked too.

By hand: `.venv/bin/python -m tests.reliability.soak --messages 50000 --kills 10 [--seed N]`.
The CI test (test_crash_soak.py) runs `soak` with small numbers.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec

from bench.common import format_table
from tests.reliability.harness import (
    BRIDGES,
    PROVIDER_PREFIXES,
    DaemonConfig,
    configure_simulators,
    count_inflight,
    count_unsent,
    integrity_check,
    is_outcome_unknown,
    read_journal,
    recipients_reached,
    simulators,
    start_daemon,
    write_config,
)

PHASES: tuple[str, ...] = ("ingress", "mid-batch", "mid-commit", "dlr")

# A fault mix with "the provider took it but the reply was lost" on every provider, so
# the outcome-unknown and dedupe paths run too (PROVIDERS.md "What every simulator
# offers"); rates stay low so that give-ups after several faults in a row are rare.
FAULTS: dict[str, dict[str, Any]] = {
    "dsc": {"fail_rate": 0.01, "faults": {"timeout_after": 1.0, "reset_before": 1.0}},
    "routemobile": {"fail_rate": 0.01, "faults": {"reset_after": 1.0, "5xx": 1.0}},
    "bsg": {"fail_rate": 0.02, "faults": {"timeout_after": 1.0, "reset_after": 1.0}},
    "smsclub": {"fail_rate": 0.02, "faults": {"reset_after": 1.0, "5xx": 1.0}},
}
# Texts shared by many recipients: the batcher groups them, so one kill mid-batch or
# one lost reply concerns a whole request, as in production.
DISTINCT_TEXTS = 25
SIMULATOR_LATENCY_MS = 20.0
DLR_DELAY_S = 0.3

commit_count_prefix = b"septet_journal_commit_seconds_count"


@dataclass
class Kill:
    phase: str
    landed: bool
    detail: str


@dataclass
class SoakReport:
    seed: int
    messages: int
    kills: list[Kill]
    journaled: int
    submitted_once: int
    unknown: int
    failed_otherwise: list[str]
    missing: list[str]
    doubles: list[str]
    misreported: list[str]
    unsent: int
    unexpected_rejections: list[str]
    integrity: str
    drain_exit_code: int | None
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.journaled == self.messages
            and not self.missing
            and not self.doubles
            and not self.misreported
            and not self.unexpected_rejections
            and self.unsent == 0
            and self.integrity == "ok"
            and self.drain_exit_code == 0
            and not self.failed_otherwise
            and self.submitted_once + self.unknown == self.messages
        )

    def summary(self) -> str:
        rows: list[tuple[str, object]] = [
            ("seed", self.seed),
            ("messages", self.messages),
            ("kills", len(self.kills)),
        ]
        rows += [
            (f"kill {n}", f"{k.phase} ({'landed' if k.landed else 'MISSED'}: {k.detail})")
            for n, k in enumerate(self.kills, 1)
        ]
        rows += [
            ("journaled", self.journaled),
            ("submitted once", self.submitted_once),
            ("unknown (reported failed)", self.unknown),
            ("failed otherwise", len(self.failed_otherwise)),
            ("missing", len(self.missing)),
            ("doubles", len(self.doubles)),
            ("misreported", len(self.misreported)),
            ("left unsent", self.unsent),
            ("unexpected rejections", len(self.unexpected_rejections)),
            ("integrity", self.integrity),
            ("drain exit code", self.drain_exit_code),
            ("seconds", round(self.seconds, 1)),
        ]
        return format_table(("what", "value"), rows)


def build_lines(messages: int) -> dict[str, bytes]:
    """client ref -> NDJSON line; every message to its own recipient, providers in turn."""
    prefixes = [PROVIDER_PREFIXES[b] for b in BRIDGES]
    return {
        f"c{n}": msgspec.json.encode(
            {
                "id": f"c{n}",
                "to": f"{prefixes[n % len(prefixes)]}{n:05d}",
                "text": f"soak text {n % DISTINCT_TEXTS}",
            }
        )
        for n in range(messages)
    }


@dataclass
class Round:
    """What one connection to one daemon run saw."""

    sent_refs: list[str]
    accepted_ids: set[str] = field(default_factory=set)
    answered_refs: set[str] = field(default_factory=set)
    accepted: int = 0
    submitted: int = 0
    dlr_by_bridge: dict[str, int] = field(default_factory=dict)
    rejections: list[str] = field(default_factory=list)
    sending_done: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)

    def take(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "accepted":
            self.accepted += 1
            self.accepted_ids.add(event["msg_id"])
            self.answered_refs.add(event["id"])
        elif kind == "rejected":
            if str(event.get("error", "")).startswith("duplicate id"):
                self.answered_refs.add(event["id"])
            else:
                self.rejections.append(f"{event.get('id')}: {event.get('error')}")
        elif kind == "submitted":
            self.submitted += 1
        elif kind == "dlr":
            bridge = event["bridge"]
            self.dlr_by_bridge[bridge] = self.dlr_by_bridge.get(bridge, 0) + 1


async def wait_until(round_: Round, predicate: Any, timeout_s: float) -> bool:
    """Wait (bounded) until `predicate()` holds, woken by every batch of events."""
    with anyio.move_on_after(timeout_s):
        while not predicate():
            changed = round_.changed
            await changed.wait()
        return True
    return bool(predicate())


async def serve_client(
    tcp_port: int, lines: list[bytes], round_: Round, connected: anyio.Event
) -> None:
    """Feed `lines` and collect every event until the daemon goes (or we are cancelled)."""
    stream = await anyio.connect_tcp("127.0.0.1", tcp_port)
    connected.set()

    async def feed() -> None:
        for start in range(0, len(lines), 200):
            await stream.send(b"".join(line + b"\n" for line in lines[start : start + 200]))
        round_.sending_done = True

    async with stream, anyio.create_task_group() as tg:
        tg.start_soon(feed)
        buffer = b""
        try:
            while True:
                buffer += await stream.receive(65536)
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    if raw:
                        round_.take(msgspec.json.decode(raw))
                round_.changed.set()
                round_.changed = anyio.Event()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the daemon was killed: this round's connection is over
        finally:
            round_.changed.set()
            tg.cancel_scope.cancel()


async def commit_count(client: httpx.AsyncClient, http_port: int) -> float | None:
    try:
        reply = await client.get(f"http://127.0.0.1:{http_port}/metrics")
    except httpx.HTTPError:
        return None
    for line in reply.content.splitlines():
        if line.startswith(commit_count_prefix):
            return float(line.split()[-1])
    return None


async def aim_kill(
    phase: str, config: DaemonConfig, round_: Round, rng: random.Random, new_lines: int
) -> Kill:
    """Wait for the drawn moment of `phase`; return (without killing) what was seen."""
    if phase == "ingress":
        target = rng.randint(max(1, new_lines // 10), max(1, new_lines * 6 // 10))
        reached = await wait_until(round_, lambda: round_.accepted >= target, 60)
        unanswered = len(round_.sent_refs) - len(round_.answered_refs)
        return Kill(
            phase,
            reached and unanswered > 0,
            f"{round_.accepted} accepted, {unanswered} lines unanswered",
        )
    if phase == "mid-batch":
        target = rng.randint(max(1, new_lines // 20), max(1, new_lines // 2))
        await wait_until(round_, lambda: round_.submitted >= target, 60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            inflight = await anyio.to_thread.run_sync(count_inflight, config.journal)
            if inflight:
                return Kill(phase, True, f"{inflight} messages in flight")
            await anyio.sleep(0.002)  # a poll of journal state, not a synchronisation
        return Kill(phase, False, "no request seen in flight")
    if phase == "mid-commit":
        # Group commit folds many writes into few commits (a dispatcher's outcomes ride
        # with its next claim): 1-2 in one 10 ms scrape interval is a busy journal. Let a
        # drawn number of such bursts pass first.
        burst = rng.randint(1, 2)
        skip = rng.randint(0, 5)
        async with httpx.AsyncClient(timeout=5) as client:
            last = await commit_count(client, config.http_port)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = await commit_count(client, config.http_port)
                if now is not None and last is not None and now - last >= burst:
                    if skip == 0:
                        return Kill(phase, True, f"{now - last:.0f} commits since the last scrape")
                    skip -= 1
                last = now if now is not None else last
                await anyio.sleep(0.01)  # the scrape interval
        return Kill(phase, False, f"no burst of {burst} commits")
    bridge = rng.choice(BRIDGES)
    target = rng.randint(3, max(4, new_lines // 12))
    reached = await wait_until(round_, lambda: round_.dlr_by_bridge.get(bridge, 0) >= target, 60)
    seen = round_.dlr_by_bridge.get(bridge, 0)
    return Kill(f"dlr:{bridge}", reached, f"{seen} reports from {bridge}")


async def run_round(
    config: DaemonConfig,
    workdir: Path,
    number: int,
    lines: dict[str, bytes],
    refs: list[str],
    *,
    phase: str | None,
    rng: random.Random,
    new_lines: int,
) -> tuple[Round, Kill | None, int | None]:
    """One daemon run: feed `refs`, then kill -9 it at `phase` (or, with phase None, wait
    until every line is answered and nothing is unsent, and stop it with SIGTERM)."""
    daemon = await anyio.to_thread.run_sync(
        lambda: start_daemon(config, workdir / f"daemon-{number}.log")
    )
    round_ = Round(sent_refs=refs)
    kill: Kill | None = None
    exit_code: int | None = None
    try:
        async with anyio.create_task_group() as tg:
            connected = anyio.Event()
            tg.start_soon(
                serve_client, config.tcp_port, [lines[r] for r in refs], round_, connected
            )
            await connected.wait()
            if phase is not None:
                kill = await aim_kill(phase, config, round_, rng, new_lines)
                daemon.send_signal(signal.SIGKILL)
                await anyio.to_thread.run_sync(daemon.wait, 10)
            else:
                await wait_until(round_, lambda: len(round_.answered_refs) >= len(refs), 300)
                await wait_for_nothing_unsent(config.journal, 600)
                daemon.send_signal(signal.SIGTERM)
                exit_code = await anyio.to_thread.run_sync(daemon.wait, 60)
            tg.cancel_scope.cancel()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    return round_, kill, exit_code


async def wait_for_nothing_unsent(journal: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await anyio.to_thread.run_sync(count_unsent, journal):
        if time.monotonic() > deadline:
            return  # the final check reports what was left unsent
        await anyio.sleep(0.2)  # a poll of journal state


def draw_phases(kills: int, rng: random.Random) -> list[str]:
    """Every phase once per cycle of four, in a drawn order."""
    phases: list[str] = []
    while len(phases) < kills:
        cycle = list(PHASES)
        rng.shuffle(cycle)
        phases += cycle
    return phases[:kills]


async def soak(workdir: Path, *, messages: int, kills: int, seed: int) -> SoakReport:
    """Run `messages` through `kills` kill -9s and a final drain; check every message."""
    started = time.monotonic()
    rng = random.Random(seed)
    lines = build_lines(messages)
    all_refs = list(lines)
    phases = draw_phases(kills, rng)
    slices = [
        all_refs[i * messages // (kills + 1) : (i + 1) * messages // (kills + 1)]
        for i in range(kills + 1)
    ]
    acknowledged: set[str] = set()  # msg_ids of every `accepted` event seen
    answered: set[str] = set()  # client refs answered (accepted or duplicate)
    rejections: list[str] = []
    done_kills: list[Kill] = []
    exit_code: int | None = None
    with simulators(workdir) as sim_url:
        config = write_config(workdir, sim_url)
        configure_simulators(
            sim_url,
            {
                "latency_ms": SIMULATOR_LATENCY_MS,
                "dlr_delay_s": DLR_DELAY_S,
                "smsclub_rate_limit": None,
                "routemobile_dlr_url": f"http://127.0.0.1:{config.http_port}/dlr/routemobile",
                "seed": seed,
            },
        )
        for provider, faults in FAULTS.items():
            configure_simulators(sim_url, faults, provider)
        for number, new_refs in enumerate(slices, 1):
            # Lines a kill left unanswered go again, before this round's new ones.
            previous = [r for s in slices[: number - 1] for r in s if r not in answered]
            refs = previous + new_refs
            phase = phases[number - 1] if number <= kills else None
            round_, kill, code = await run_round(
                config, workdir, number, lines, refs, phase=phase, rng=rng, new_lines=len(new_refs)
            )
            acknowledged |= round_.accepted_ids
            answered |= round_.answered_refs
            rejections += round_.rejections
            if kill is not None:
                done_kills.append(kill)
            exit_code = code
        reached = recipients_reached(sim_url)
    rows = read_journal(config.journal)
    by_id = {row.msg_id: row for row in rows}
    submitted_once = unknown = 0
    failed_otherwise: list[str] = []
    doubles: list[str] = []
    misreported: list[str] = []
    for row in rows:
        times = reached.get(row.to.lstrip("+"), 0)
        if times > 1:
            doubles.append(f"{row.to} sent {times} times")
        elif is_outcome_unknown(row):
            unknown += 1
        elif row.submitted and times == 1:
            submitted_once += 1
        elif row.state == 3 and not row.submitted and times == 0:
            # Never sent, and said so; but nothing in this mix makes a provider refuse a
            # message for good, so it is an engine fault all the same.
            failed_otherwise.append(f"{row.to}: {row.outcome} {row.code}: {row.error}")
        else:
            misreported.append(
                f"{row.to}: state {row.state}, outcome {row.outcome}, error {row.error!r},"
                f" submitted {row.submitted}, provider accepts {times}"
            )
    missing = sorted(acknowledged - set(by_id))
    missing += sorted(f"line {ref} never answered" for ref in set(all_refs) - answered)
    journaled_refs = {row.client_ref for row in rows}
    missing += sorted(f"line {ref} not journaled" for ref in set(all_refs) - journaled_refs)
    return SoakReport(
        seed=seed,
        messages=messages,
        kills=done_kills,
        journaled=len(rows),
        submitted_once=submitted_once,
        unknown=unknown,
        failed_otherwise=failed_otherwise,
        missing=missing,
        doubles=doubles,
        misreported=misreported,
        unsent=sum(1 for row in rows if row.state < 2),
        unexpected_rejections=rejections,
        integrity=integrity_check(config.journal),
        drain_exit_code=exit_code,
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and journal here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed}: {args.messages} messages, {args.kills} kills", flush=True)

    async def run(workdir: Path) -> SoakReport:
        return await soak(workdir, messages=args.messages, kills=args.kills, seed=seed)

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = anyio.run(run, args.workdir, backend_options={"use_uvloop": True})
    else:
        with tempfile.TemporaryDirectory(prefix="septet-soak-") as tmp:
            report = anyio.run(run, Path(tmp), backend_options={"use_uvloop": True})
    print(report.summary())
    for title, problems in (
        ("missing", report.missing),
        ("doubles", report.doubles),
        ("misreported", report.misreported),
        ("failed otherwise", report.failed_otherwise),
        ("unexpected rejections", report.unexpected_rejections),
    ):
        for problem in problems[:20]:
            print(f"{title}: {problem}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
