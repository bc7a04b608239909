"""Crash soak: kill -9 the daemon at drawn points of a long run, restart it, and count.

Issues #8 and #16: every accepted message ends with exactly one final outcome, and a
true one, as the journal and the simulators' per-recipient accept counters tell
together (harness.Fate). A message the provider took once ends by its own report; one
whose request may have reached the provider without a reply saying so (a kill
mid-request, a lost reply) is "outcome unknown": `unconfirmed` while its report may
still come (engine.lifecycle), resolved by that report when it does (matched by id,
reference or recipient), else ended UNKNOWN at its report deadline. None is missing,
none sent twice, none left waiting or polled at the end, and SQLite's integrity check
passes. Each kill is drawn from a seeded RNG and aimed at a named phase, recognised
from what the daemon shows from outside:

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
resend idempotent (a `duplicate id` answer), which is checked too. The daemon's report
deadline is short (REPORT_TIMEOUT_S), so a report that never comes ends its message
within the run; the last round waits until every message is final, then watches the providers for
a while: no status poll (nor any other request) may follow.

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
from collections import Counter
from collections.abc import Callable
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
    LABELS,
    PROVIDER_PREFIXES,
    DaemonConfig,
    Fate,
    JournalRow,
    classify,
    configure_simulators,
    count_inflight,
    count_not_final,
    describe_row,
    integrity_check,
    provider_requests,
    read_journal,
    recipients_reached,
    simulators,
    start_daemon,
    write_config,
)

PHASES: tuple[str, ...] = ("ingress", "mid-batch", "mid-commit", "dlr")

# A fault mix with "the provider took it but the reply was lost" on every provider, so
# the outcome-unknown and dedupe paths run too (docs/providers.md "What every simulator
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
# Report callbacks (dsc, Route Mobile) are retried 10 times, 0.2 s more apart each time:
# 11 s, longer than a restart takes. Real providers retry for hours; with the
# simulators' default (3 retries, 1.2 s) a report due while the daemon is down is lost
# at the provider, and its message ends UNKNOWN through no fault of septet's.
CALLBACK_RETRIES = 10
# `[reports] timeout_s`: a message whose final report has not come 60 s after its send
# ends UNKNOWN ("no_report"), within the run. Long against the slowest report of a run
# (up to about 20 s in the 50,000-message form on two shared cores, where callbacks are
# retried across restarts and the pollers fall behind a flood of new lines; 20 s was
# too short there) and short enough that every message left waiting ends in the run.
REPORT_TIMEOUT_S = 60.0
# The last round: how long it may take for every message to be final (bounded: the
# report then counts whatever is left waiting), and how long the providers are then
# watched for requests that should no longer come (an idle daemon's pollers look every
# second at most).
FINAL_WAIT_S = 300.0
QUIET_WATCH_S = 3.0

# Outcome unknown at some point, and not settled by a resend: the exception, not the rule.
UNKNOWN_FATES = (Fate.RESOLVED, Fate.NO_REPORT_UNSENT, Fate.NO_REPORT_TAKEN, Fate.NO_ID)
# Fates that are a fault of septet's. FAILED too: nothing in this mix makes a provider
# refuse a message for good. NO_REPORT_TAKEN is listed with them but does not fail the
# run: the provider took the message and its report did not match (or never came),
# which whoever reads the figures has to explain.
FAULTY_FATES = (Fate.REPORT_LOST, Fate.FAILED, Fate.DOUBLE, Fate.WAITING, Fate.MISREPORTED)
EXAMPLES_KEPT = 20

commit_count_prefix = b"septet_journal_commit_seconds_count"


@dataclass
class Kill:
    phase: str
    landed: bool
    detail: str


@dataclass
class Drain:
    """The last round: how it ended."""

    exit_code: int | None
    final_wait_s: float  # from every line answered to every message final
    requests_after_final: dict[str, int]  # provider requests made once all were final


@dataclass
class SoakReport:
    seed: int
    messages: int
    report_timeout_s: float
    kills: list[Kill]
    journaled: int
    fates: dict[Fate, Counter[str]]  # fate -> bridge -> messages
    examples: dict[Fate, list[str]]  # the first rows of each fate but REPORTED
    missing: list[str]
    unexpected_rejections: list[str]
    integrity: str
    drain: Drain
    seconds: float

    def count(self, *fates: Fate) -> int:
        return sum(self.fates[fate].total() for fate in fates)

    @property
    def unknown(self) -> int:
        """Messages whose outcome was unknown and not settled by a resend."""
        return self.count(*UNKNOWN_FATES)

    @property
    def ok(self) -> bool:
        return (
            self.journaled == self.messages
            and self.count(*Fate) == self.messages
            and not self.missing
            and self.count(*FAULTY_FATES) == 0
            and not self.unexpected_rejections
            and not self.drain.requests_after_final
            and self.integrity == "ok"
            and self.drain.exit_code == 0
        )

    def summary(self) -> str:
        rows: list[tuple[str, object]] = [
            ("seed", str(self.seed)),  # as given to --seed, without thousands separators
            ("messages", self.messages),
            ("report deadline (s)", round(self.report_timeout_s)),
            ("kills", len(self.kills)),
        ]
        rows += [
            (f"kill {n}", f"{k.phase} ({'landed' if k.landed else 'MISSED'}: {k.detail})")
            for n, k in enumerate(self.kills, 1)
        ]
        rows.append(("journaled", self.journaled))
        for fate in Fate:
            by_bridge = self.fates[fate]
            total = by_bridge.total()
            split = ", ".join(f"{b} {n:,}" for b, n in sorted(by_bridge.items()))
            value = f"{total:,} ({split})" if total and fate is not Fate.REPORTED else total
            rows.append((LABELS[fate], value))
        share = self.unknown / self.messages if self.messages else 0.0
        rows += [
            ("outcome unknown, all kinds", f"{self.unknown:,} ({share:.1%})"),
            ("missing", len(self.missing)),
            ("unexpected rejections", len(self.unexpected_rejections)),
            (
                "provider requests after all were final",
                sum(self.drain.requests_after_final.values()),
            ),
            ("integrity", self.integrity),
            ("drain exit code", self.drain.exit_code),
            ("seconds until all were final", round(self.drain.final_wait_s, 1)),
            ("seconds", round(self.seconds, 1)),
        ]
        return format_table(("what", "value"), rows)

    def problems(self) -> list[str]:
        """Lines naming what is not as it should be (and the rows to explain)."""
        lines = [f"missing: {m}" for m in self.missing[:EXAMPLES_KEPT]]
        lines += [f"unexpected rejection: {r}" for r in self.unexpected_rejections[:EXAMPLES_KEPT]]
        lines += [
            f"provider request after all were final: {label} x{n}"
            for label, n in self.drain.requests_after_final.items()
        ]
        for fate in (*FAULTY_FATES, Fate.NO_REPORT_TAKEN):
            lines += [f"{LABELS[fate]}: {row}" for row in self.examples[fate]]
        return lines


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
    sim_url: str,
    workdir: Path,
    number: int,
    lines: dict[str, bytes],
    refs: list[str],
    *,
    phase: str | None,
    rng: random.Random,
    new_lines: int,
) -> tuple[Round, Kill | None, Drain | None]:
    """One daemon run: feed `refs`, then kill -9 it at `phase` (or, with phase None, wait
    until every line is answered and every message final, and stop it with SIGTERM)."""
    daemon = await anyio.to_thread.run_sync(
        lambda: start_daemon(config, workdir / f"daemon-{number}.log")
    )
    round_ = Round(sent_refs=refs)
    kill: Kill | None = None
    drain: Drain | None = None
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
                started = time.monotonic()
                await wait_for_all_final(config.journal, FINAL_WAIT_S)
                waited = time.monotonic() - started
                requests = await requests_while_idle(sim_url, QUIET_WATCH_S)
                daemon.send_signal(signal.SIGTERM)
                exit_code = await anyio.to_thread.run_sync(daemon.wait, 60)
                drain = Drain(exit_code, waited, requests)
            tg.cancel_scope.cancel()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    return round_, kill, drain


async def wait_for_all_final(journal: Path, timeout_s: float) -> None:
    """Until no message is unsent, in flight or awaiting a report (bounded: the report
    then counts whatever was left waiting)."""
    deadline = time.monotonic() + timeout_s
    while await anyio.to_thread.run_sync(count_not_final, journal):
        if time.monotonic() > deadline:
            return
        await anyio.sleep(0.2)  # a poll of journal state


async def requests_while_idle(sim_url: str, watch_s: float) -> dict[str, int]:
    """The provider requests made during `watch_s` of a daemon with nothing left to send
    or ask about (a status poll here is a message still polled), by provider and path."""
    before = await anyio.to_thread.run_sync(provider_requests, sim_url)
    await anyio.sleep(watch_s)  # an observation window: requests that come, come in it
    after = await anyio.to_thread.run_sync(provider_requests, sim_url)
    return {
        label: n - before.get(label, 0) for label, n in after.items() if n > before.get(label, 0)
    }


def draw_phases(kills: int, rng: random.Random) -> list[str]:
    """Every phase once per cycle of four, in a drawn order."""
    phases: list[str] = []
    while len(phases) < kills:
        cycle = list(PHASES)
        rng.shuffle(cycle)
        phases += cycle
    return phases[:kills]


async def soak(
    workdir: Path,
    *,
    messages: int,
    kills: int,
    seed: int,
    report_timeout_s: float = REPORT_TIMEOUT_S,
) -> SoakReport:
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
    drain = Drain(None, 0.0, {})
    with simulators(workdir) as sim_url:
        config = write_config(workdir, sim_url, report_timeout_s=report_timeout_s)
        configure_simulators(
            sim_url,
            {
                "latency_ms": SIMULATOR_LATENCY_MS,
                "dlr_delay_s": DLR_DELAY_S,
                "dlr_retries": CALLBACK_RETRIES,
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
            round_, kill, last = await run_round(
                config,
                sim_url,
                workdir,
                number,
                lines,
                refs,
                phase=phase,
                rng=rng,
                new_lines=len(new_refs),
            )
            acknowledged |= round_.accepted_ids
            answered |= round_.answered_refs
            rejections += round_.rejections
            if kill is not None:
                done_kills.append(kill)
            if last is not None:
                drain = last
        reached = recipients_reached(sim_url)
    rows = read_journal(config.journal)
    fates, examples = tally_fates(rows, lambda row: reached.get(row.to.lstrip("+"), 0))
    missing = sorted(acknowledged - {row.msg_id for row in rows})
    missing += sorted(f"line {ref} never answered" for ref in set(all_refs) - answered)
    journaled_refs = Counter(row.client_ref for row in rows)
    missing += sorted(f"line {ref} not journaled" for ref in set(all_refs) - set(journaled_refs))
    missing += sorted(
        f"line {ref} journaled {n} times" for ref, n in journaled_refs.items() if n > 1
    )
    return SoakReport(
        seed=seed,
        messages=messages,
        report_timeout_s=report_timeout_s,
        kills=done_kills,
        journaled=len(rows),
        fates=fates,
        examples=examples,
        missing=missing,
        unexpected_rejections=rejections,
        integrity=integrity_check(config.journal),
        drain=drain,
        seconds=time.monotonic() - started,
    )


def tally_fates(
    rows: list[JournalRow], accepts: Callable[[JournalRow], int]
) -> tuple[dict[Fate, Counter[str]], dict[Fate, list[str]]]:
    """Every row's fate counted by bridge, with the first rows of each unusual fate."""
    fates: dict[Fate, Counter[str]] = {fate: Counter() for fate in Fate}
    examples: dict[Fate, list[str]] = {fate: [] for fate in Fate}
    for row in rows:
        times = accepts(row)
        fate = classify(row, times)
        fates[fate][row.bridge or "?"] += 1
        if fate is not Fate.REPORTED and len(examples[fate]) < EXAMPLES_KEPT:
            examples[fate].append(describe_row(row, times))
    return fates, examples


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
    for line in report.problems():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
