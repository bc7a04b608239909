"""ReceiptHandler: matching, orphans, and grouping concurrent callbacks into one commit.
serve_poller: the providers' polling rules on a virtual clock (batches of 100 ids, BSG's
one-minute floor, backoff while pending, one request limiter shared with the sends)."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import anyio
import anyio.lowlevel
import msgspec
import pytest

from bridges.base import BridgeSettings, HttpCall, HttpReply, Receipt
from bridges.bsg import BsgDriver
from bridges.smsclub import SmsClubDriver
from engine.bridge_limits import LocalGate
from engine.dlr import (
    ORPHAN_KEEP_S,
    ORPHANS_REMEMBERED,
    PollPolicy,
    ReceiptHandler,
    plan_polls,
    poll_policy,
    serve_poller,
)
from engine.feed import AppendEvents
from engine.journal import (
    Change,
    JournalError,
    MarkCharged,
    MarkFinal,
    MarkPolled,
    PollDue,
    SchedulePolls,
    StoreOrphanReceipt,
)
from engine.lifecycle import Charge
from engine.models import Event, Message
from engine.ratelimit import RequestLimiter, TokenBucket
from tests.engine.test_ratelimit import busiest_window

pytestmark = pytest.mark.anyio

# A bridge without a messages/s limit: these tests are about requests.
UNLIMITED = TokenBucket(0.0, 1.0)

R = TypeVar("R")


def message(msg_id: str, provider_id: str) -> Message:
    return Message(
        msg_id=msg_id,
        reference=f"r{msg_id}",
        origin="tcp:1",
        client_ref=None,
        to="+250788000000",
        sender=None,
        text="t",
        encoding="GSM-7",
        segments=1,
        cost=0.0,
        currency="RWF",
        bridges=("dsc",),
        accepted_at=0.0,
        due_at=0.0,
        state="submitted",
        provider_id=provider_id,
    )


class FakeJournal:
    def __init__(self, messages: Sequence[Message], fail: bool = False) -> None:
        self.by_pid = {m.provider_id: m for m in messages if m.provider_id}
        self.lookups = 0
        self.commits: list[list[Change]] = []
        self.fail = fail
        self.orphans: list[StoreOrphanReceipt] = []
        self.takes: list[list[str]] = []  # the provider ids of each take_orphan_receipts
        self.take_fails = False
        # Run while a report is looked for by recipient (what else commits meanwhile).
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    async def find_by_provider_id(self, bridge: str, ids: Sequence[str]) -> dict[str, Message]:
        self.lookups += 1
        return {pid: self.by_pid[pid] for pid in ids if pid in self.by_pid}

    async def find_and_record(
        self,
        bridge: str,
        ids: Sequence[str],
        decide: Callable[[dict[str, Message]], tuple[Sequence[Change], R]],
    ) -> R:
        # Like the SQLite journal: one turn, the lookup inside the write.
        found = await self.find_by_provider_id(bridge, ids)
        changes, result = decide(found)
        if changes:
            await self.record(changes)
        return result

    async def find_by_reference(self, references: Sequence[str]) -> dict[str, Message]:
        return {}

    async def unconfirmed(self, bridge: str) -> list[Message]:
        await anyio.lowlevel.checkpoint()
        if self.meanwhile is not None:
            await self.meanwhile()
        return []

    async def record(self, changes: Sequence[Change]) -> None:
        await anyio.lowlevel.checkpoint()
        if self.fail:
            raise OSError("disk full")
        self.commits.append(list(changes))
        self.orphans += [c for c in changes if isinstance(c, StoreOrphanReceipt)]

    async def orphan_receipt_ids(self) -> list[tuple[str, str, float]]:
        first: dict[tuple[str, str], float] = {}
        for orphan in self.orphans:
            first.setdefault((orphan.bridge, orphan.provider_id), orphan.at)
        return [(bridge, pid, at) for (bridge, pid), at in first.items()]

    async def take_orphan_receipts(self, bridge: str, ids: Sequence[str]) -> list[bytes]:
        await anyio.lowlevel.checkpoint()
        if self.take_fails:
            raise JournalError("The journal could not be written: disk I/O error.")
        self.takes.append(list(ids))
        taken = [o for o in self.orphans if o.bridge == bridge and o.provider_id in ids]
        self.orphans = [o for o in self.orphans if o not in taken]
        return [o.receipt for o in taken]


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    def emit(self, origin: str, event: Event) -> None:
        self.events.append((origin, event))


def receipt(pid: str, state: str = "DELIVRD") -> Receipt:
    return Receipt(provider_id=pid, state=state, provider_status="D", final=True)  # type: ignore[arg-type]


async def test_concurrent_callbacks_share_one_lookup_and_one_commit() -> None:
    journal = FakeJournal([message(str(n), f"p{n}") for n in range(50)])
    events = Collector()
    handler = ReceiptHandler(journal, events)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(handler.handle, "dsc", [receipt(f"p{n}")])
    assert journal.lookups == 1
    assert len(journal.commits) == 1
    assert sorted(c.msg_id for c in journal.commits[0] if isinstance(c, MarkFinal)) == sorted(
        str(n) for n in range(50)
    )
    assert len(events.events) == 50


async def test_a_callback_repeated_within_one_group_ends_its_message_once() -> None:
    """A provider that calls back twice for one report (it retries a callback it thinks
    was lost), both handed in in the same turn: one final state and one `dlr`, as when the
    repeat comes after the first was journaled. A report after the final one in the same
    group (here an intermediate one) changes nothing either: final means final."""
    journal = FakeJournal([message("1", "p1"), message("2", "p2")])
    events = Collector()
    handler = ReceiptHandler(journal, events)  # type: ignore[arg-type]
    pending = Receipt(provider_id="p2", state="ENROUTE", provider_status="E", final=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(handler.handle, "dsc", [receipt("p1")])
        tg.start_soon(handler.handle, "dsc", [receipt("p1")])
        tg.start_soon(handler.handle, "dsc", [receipt("p2"), pending])
    [commit] = journal.commits
    finals = [c.msg_id for c in commit if isinstance(c, MarkFinal)]
    assert finals == ["1", "2"]
    assert [c for c in commit if not isinstance(c, (MarkFinal, AppendEvents))] == []
    assert [(e.msg_id, e.state) for _, e in events.events] == [("1", "DELIVRD"), ("2", "DELIVRD")]  # type: ignore[union-attr]


async def test_a_charge_stated_in_a_report_is_journaled_then_counted() -> None:
    """Route Mobile states its charge in the report: kept before the final state, in the
    same commit, and told (for septet_cost_total{source="provider"}) only after it."""
    journal = FakeJournal([message("1", "p1"), message("2", "p2")])
    told: list[tuple[str, list[Charge], int]] = []

    def on_charge(bridge: str, charges: Sequence[Charge]) -> None:
        told.append((bridge, list(charges), len(journal.commits)))

    handler = ReceiptHandler(journal, Collector(), clock=lambda: 5.0, on_charge=on_charge)  # type: ignore[arg-type]
    charged = msgspec.structs.replace(receipt("p1"), cost=2.0, currency="INR")
    await handler.handle("routemobile", [charged, receipt("p2")])
    [commit] = journal.commits
    assert [change for change in commit if not isinstance(change, AppendEvents)] == [
        MarkCharged(msg_id="1", cost=2.0, currency="INR"),
        MarkFinal(msg_id="1", outcome="DELIVRD", code=None, error=None, at=5.0),
        MarkFinal(msg_id="2", outcome="DELIVRD", code=None, error=None, at=5.0),
    ]
    # Each report's dlr event is journaled for the feed in the same commit.
    feed = [change for change in commit if isinstance(change, AppendEvents)]
    assert [(c.msg_id, [e.msg_id for e in c.events]) for c in feed] == [("1", ["1"]), ("2", ["2"])]
    assert told == [("routemobile", [Charge(2.0, "INR")], 1)]
    # The same report again: the message is final already, nothing is kept or counted twice.
    journal.by_pid["p1"] = msgspec.structs.replace(journal.by_pid["p1"], state="final")
    await handler.handle("routemobile", [charged])
    assert len(told) == 1


async def test_every_caller_of_a_group_sees_a_failed_commit() -> None:
    journal = FakeJournal([message("1", "p1"), message("2", "p2")], fail=True)
    handler = ReceiptHandler(journal, Collector())  # type: ignore[arg-type]
    failures = 0

    async def one(pid: str) -> None:
        nonlocal failures
        try:
            await handler.handle("dsc", [receipt(pid)])
        except OSError:
            failures += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "p1")
        tg.start_soon(one, "p2")
    assert failures == 2  # neither callback may be answered 200


async def test_a_report_before_its_submit_is_kept_as_an_orphan() -> None:
    journal = FakeJournal([])
    events = Collector()
    handler = ReceiptHandler(journal, events)  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt("early")])
    assert isinstance(journal.commits[0][0], StoreOrphanReceipt)
    assert handler.has_orphans("dsc")
    assert events.events == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_early_report_is_replayed_when_its_submit_is_journaled() -> None:
    journal = FakeJournal([])
    events = Collector()
    handler = ReceiptHandler(journal, events)  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt("p1")])
    journal.by_pid["p1"] = message("1", "p1")  # the submit is journaled now
    await handler.match_orphans("dsc", ["p1", "p2"])
    assert journal.takes == [["p1"]]
    assert [(e.msg_id, e.state) for _, e in events.events] == [("1", "DELIVRD")]  # type: ignore[union-attr]
    assert not handler.has_orphans("dsc")
    assert journal.orphans == []


@pytest.mark.parametrize("other_orphan", [False, True])
async def test_a_report_whose_submit_is_journaled_while_it_is_matched_is_replayed(
    other_orphan: bool,
) -> None:
    """Not found by provider id, the report is looked for by recipient; meanwhile its
    submit is journaled, and the submit's look for early reports (the daemon's hook,
    _SubmitHooks.submitted) runs before this report is stored as an orphan. It is still
    reported once, not kept as an orphan until it is dropped. Found in a callgrind run of
    the pipeline bench: one message of 440 stayed submitted, its report kept as an orphan."""
    journal = FakeJournal([])
    events = Collector()
    handler = ReceiptHandler(journal, events)  # type: ignore[arg-type]
    if other_orphan:  # then the hook does look, but not for this id
        await handler.handle("dsc", [receipt("other")])

    async def submit_journaled() -> None:
        journal.meanwhile = None
        journal.by_pid["p1"] = message("1", "p1")
        if handler.has_orphans("dsc"):
            await handler.match_orphans("dsc", ["p1"])

    journal.meanwhile = submit_journaled
    early = msgspec.structs.replace(receipt("p1"), recipient="+250788000000")
    await handler.handle("dsc", [early])
    assert [(e.msg_id, e.state) for _, e in events.events] == [("1", "DELIVRD")]  # type: ignore[union-attr]
    assert [o.provider_id for o in journal.orphans] == (["other"] if other_orphan else [])
    assert handler.has_orphans("dsc") is other_orphan


async def test_submits_without_an_early_report_do_not_look_for_one() -> None:
    journal = FakeJournal([])
    handler = ReceiptHandler(journal, Collector())  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt("p1")])
    for batch in range(3):
        await handler.match_orphans("dsc", [f"other-{batch}-{n}" for n in range(100)])
    await handler.match_orphans("bsg", ["p1"])  # the same id on another bridge
    assert journal.takes == []
    assert handler.has_orphans("dsc")


async def test_a_report_nobody_claims_is_dropped_after_the_keep_time() -> None:
    # For instance a provider reporting on a message sent with dlr=0: the journal does
    # not look those up by provider id, so the report waits as an orphan, then goes.
    clock = FakeClock()
    journal = FakeJournal([])
    handler = ReceiptHandler(journal, Collector(), clock=clock)  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt("stray")])
    clock.now += ORPHAN_KEEP_S / 2
    await handler.handle("dsc", [receipt("early")])
    await handler.match_orphans("dsc", ["unrelated"])
    assert journal.takes == []
    clock.now += ORPHAN_KEEP_S / 2 + 1
    await handler.match_orphans("dsc", ["unrelated"])
    assert journal.takes == [["stray"]]
    assert [o.provider_id for o in journal.orphans] == ["early"]
    assert handler.has_orphans("dsc")
    clock.now += ORPHAN_KEEP_S
    await handler.match_orphans("dsc", ["unrelated"])
    assert not handler.has_orphans("dsc")
    assert journal.orphans == []


async def test_past_the_limit_the_oldest_orphans_are_dropped() -> None:
    journal = FakeJournal([])
    handler = ReceiptHandler(journal, Collector())  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt(f"p{n}") for n in range(ORPHANS_REMEMBERED + 2)])
    assert journal.takes == [["p0", "p1"]]
    assert len(journal.orphans) == ORPHANS_REMEMBERED


async def test_stale_orphans_stay_while_the_journal_cannot_drop_them() -> None:
    clock = FakeClock()
    journal = FakeJournal([])
    handler = ReceiptHandler(journal, Collector(), clock=clock)  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt("stray")])
    clock.now += ORPHAN_KEEP_S + 1
    journal.take_fails = True
    await handler.match_orphans("dsc", ["unrelated"])
    assert handler.has_orphans("dsc")
    journal.take_fails = False
    await handler.match_orphans("dsc", ["unrelated"])
    assert not handler.has_orphans("dsc")
    assert journal.orphans == []


async def test_a_restart_matches_orphans_whose_submit_was_journaled_before_it() -> None:
    # Killed between a submit's commit and its orphan match: the report waits in the
    # journal, its message is there too, and the next run pairs them at start-up, even
    # after a downtime longer than the orphans' keep time.
    clock = FakeClock()
    journal = FakeJournal([])
    first_run = ReceiptHandler(journal, Collector(), clock=clock)  # type: ignore[arg-type]
    await first_run.handle("dsc", [receipt("p1"), receipt("p2")])
    journal.by_pid["p1"] = message("1", "p1")  # p1's submit committed, then the kill
    clock.now += ORPHAN_KEEP_S * 3
    events = Collector()
    second_run = ReceiptHandler(journal, events, clock=clock)  # type: ignore[arg-type]
    assert await second_run.recover_orphans() == 2
    assert [e.msg_id for _, e in events.events] == ["1"]
    assert [o.provider_id for o in journal.orphans] == ["p2"]
    # p2 is remembered: its submit, when it is journaled, finds the report.
    assert second_run.has_orphans("dsc")
    journal.by_pid["p2"] = message("2", "p2")
    await second_run.match_orphans("dsc", ["p2"])
    assert [e.msg_id for _, e in events.events] == ["1", "2"]
    assert journal.orphans == []


async def test_a_late_submit_finds_its_report_before_stale_orphans_are_dropped() -> None:
    clock = FakeClock()
    journal = FakeJournal([])
    events = Collector()
    handler = ReceiptHandler(journal, events, clock=clock)  # type: ignore[arg-type]
    await handler.handle("dsc", [receipt("slow"), receipt("stray")])
    clock.now += ORPHAN_KEEP_S + 1
    journal.by_pid["slow"] = message("7", "slow")
    await handler.match_orphans("dsc", ["slow"])
    assert [e.msg_id for _, e in events.events] == ["7"]
    assert journal.orphans == []  # "stray" dropped as stale after the match
    assert not handler.has_orphans("dsc")


# ── serve_poller: the provider's rules on a virtual clock ──────────────────────────


class TimeUp(Exception):  # noqa: N818 - names what happened
    """The virtual clock reached the end of a test's run."""


class VirtualTime:
    """A clock and a sleep for the poller: vt moves only when every task is blocked,
    straight to the earliest wake-up. No thread runs in these tests (the journal and the
    provider are fakes), so "every task blocked" means every task waits for vt."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        woken = anyio.Event()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), woken))
        await woken.wait()

    async def run_until(self, end: float) -> None:
        while True:
            await anyio.wait_all_tasks_blocked()
            if not self._sleepers or self._sleepers[0][0] > end:
                self.now = end
                return
            wake_at, _, woken = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake_at)
            woken.set()


@dataclass
class Awaiting:
    """One message awaiting its report, as the fake journal keeps it."""

    message: Message
    polls: int = 0
    next_poll_at: float = 0.0
    final: bool = False


class PollJournal:
    """The journal's poll bookkeeping (engine.journal's awaiting_poll, SchedulePolls,
    MarkPolled), in memory."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.rows = {m.msg_id: Awaiting(m) for m in messages}

    async def awaiting_poll(self, bridge: str, now: float, limit: int) -> list[PollDue]:
        due = [
            row
            for row in self.rows.values()
            if not row.final and row.message.bridge == bridge and row.next_poll_at <= now
        ]
        due.sort(key=lambda row: (row.next_poll_at, int(row.message.msg_id)))
        return [PollDue(row.message, row.polls, row.next_poll_at) for row in due[:limit]]

    async def record(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if isinstance(change, SchedulePolls):
                for msg_id in change.msg_ids:
                    row = self.rows[msg_id]
                    if row.next_poll_at == 0:
                        row.next_poll_at = change.at
            elif isinstance(change, MarkPolled):
                for msg_id in change.msg_ids:
                    row = self.rows[msg_id]
                    if not row.final:
                        row.polls += 1
                        row.next_poll_at = change.next_at
            else:
                raise AssertionError(f"the poller recorded {change!r}")


class FinalOnly:
    """The receipt handler's part the poller relies on: a final report ends the message."""

    def __init__(self, journal: PollJournal) -> None:
        self.journal = journal
        self.receipts: list[Receipt] = []

    async def handle(self, bridge: str, receipts: Sequence[Receipt]) -> None:
        self.receipts.extend(receipts)
        by_provider_id = {row.message.provider_id: row for row in self.journal.rows.values()}
        by_reference = {row.message.reference: row for row in self.journal.rows.values()}
        for item in receipts:
            row = by_provider_id.get(item.provider_id) or by_reference.get(item.reference or "")
            if row is not None and item.final:
                row.final = True


@dataclass
class Asked:
    """One status request the fake provider got: when, and about which messages."""

    at: float
    keys: list[str]


class FakeProvider:
    """BSG's and SMS Club's status calls (docs/providers.md), answered from a table: a message
    is pending until `final_at`, then delivered. Every request is noted with its vt."""

    def __init__(self, clock: VirtualTime, final_at: dict[str, float]) -> None:
        self.clock = clock
        self.final_at = final_at  # provider id or reference -> when it is delivered
        self.asked: list[Asked] = []
        self.throttle_next = 0  # how many of the next requests get a 429

    def status_of(self, key: str) -> bool:
        return self.clock.now >= self.final_at.get(key, math.inf)

    async def request(self, call: HttpCall) -> HttpReply:
        await anyio.lowlevel.checkpoint()
        if self.throttle_next:
            self.throttle_next -= 1
            self.asked.append(Asked(self.clock.now, []))
            return HttpReply(status=429, body=b"{}", headers={"retry-after": "30"})
        if call.path == "/rest/sms/getStatus":
            ids = [str(i) for i in msgspec.json.decode(call.body)["ids"]]
            self.asked.append(Asked(self.clock.now, ids))
            items = [
                {
                    "id": i,
                    "external_id": f"r{i}",
                    "status": "delivered" if self.status_of(i) else "unknown",
                }
                for i in ids
            ]
            return HttpReply(status=200, body=msgspec.json.encode({"result": items}))
        if call.path.startswith("/rest/sms/reference/"):
            reference = call.path.rsplit("/", 1)[1]
            self.asked.append(Asked(self.clock.now, [reference]))
            status = "delivered" if self.status_of(reference) else "unknown"
            document = {"error": 0, "id": "9" + reference, "reference": reference, "status": status}
            return HttpReply(status=200, body=msgspec.json.encode(document))
        if call.path == "/sms/status":
            ids = msgspec.json.decode(call.body)["id_sms"]
            self.asked.append(Asked(self.clock.now, ids))
            info = {i: "DELIVRD" if self.status_of(i) else "ENROUTE" for i in ids}
            body = msgspec.json.encode({"success_request": {"info": info}})
            return HttpReply(status=200, body=body)
        raise AssertionError(f"unexpected call {call.method} {call.path}")


def awaiting(count: int, bridge: str, *, first: int = 1, with_id: bool = True) -> list[Message]:
    """`count` submitted messages on `bridge`, msg_id n with provider id n (or none)."""
    messages = []
    for n in range(first, first + count):
        item = message(str(n), str(n) if with_id else "")
        item.provider_id = str(n) if with_id else None
        item.bridges = (bridge,)
        messages.append(item)
    return messages


def bsg_driver() -> BsgDriver:
    return BsgDriver(BridgeSettings(base_url="http://bsg", credentials={"api_key": "test_k"}))


def smsclub_driver() -> SmsClubDriver:
    return SmsClubDriver(BridgeSettings(base_url="http://club", credentials={"token": "t"}))


async def run_poller(
    vt: VirtualTime,
    driver: BsgDriver | SmsClubDriver,
    journal: PollJournal,
    provider: FakeProvider,
    policy: PollPolicy,
    until: float,
    limiter: LocalGate | None = None,
) -> FinalOnly:
    handler = FinalOnly(journal)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            partial(
                serve_poller,
                bridge=driver.name,
                driver=driver,
                client=provider,
                journal=journal,  # type: ignore[arg-type]
                handler=handler,  # type: ignore[arg-type]
                limiter=limiter or LocalGate(RequestLimiter(1_000.0, 1_000.0), UNLIMITED, vt),
                policy=policy,
                clock=vt,
                sleep=vt.sleep,
            )
        )
        await vt.run_until(until)
        tg.cancel_scope.cancel()
    return handler


def polls_of(provider: FakeProvider, key: str) -> list[float]:
    return [asked.at for asked in provider.asked if key in asked.keys]


def gaps(times: Sequence[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_the_policy_doubles_the_wait_up_to_the_cap_and_never_below_the_floor() -> None:
    policy = PollPolicy(interval_s=10.0, max_interval_s=60.0, floor_s=5.0)
    assert [policy.wait_after(polls) for polls in range(6)] == [10, 10, 20, 40, 60, 60]
    assert policy.wait_after(10_000) == 60.0


def test_bsg_polls_are_raised_to_its_one_minute_floor_unless_configured() -> None:
    bsg = bsg_driver().capabilities
    assert poll_policy("bsg", bsg, interval_s=1.0, max_interval_s=600.0).interval_s == 60.0
    lowered = poll_policy("bsg", bsg, interval_s=1.0, max_interval_s=600.0, floor_s=0.5)
    assert (lowered.interval_s, lowered.floor_s) == (1.0, 0.5)
    club = smsclub_driver().capabilities
    assert poll_policy("smsclub", club, interval_s=1.0, max_interval_s=600.0).interval_s == 1.0


@pytest.mark.parametrize(
    ("pending", "max_ids", "sizes"),
    [(250, 100, [100, 100, 50]), (100, 100, [100]), (3, 1, [1, 1, 1])],
)
def test_messages_with_an_id_are_asked_about_max_ids_at_a_time(
    pending: int, max_ids: int, sizes: list[int]
) -> None:
    due = [PollDue(m, 0, 1.0) for m in awaiting(pending, "bsg")]
    without_id = [PollDue(m, 0, 1.0) for m in awaiting(2, "bsg", first=900, with_id=False)]
    plan = plan_polls(due + without_id, max_ids)
    assert [len(request) for request in plan] == [*sizes, 1, 1]
    assert [item.message.msg_id for item in plan[-1]] == ["901"]


async def test_bsg_is_polled_in_batches_of_100_never_twice_a_minute_and_backs_off() -> None:
    vt = VirtualTime()
    messages = awaiting(250, "bsg")
    journal = PollJournal(messages)
    # Pending for 20 minutes, except one delivered after 5.
    provider = FakeProvider(
        vt, {m.msg_id: vt.now + 1_200.0 for m in messages} | {"7": vt.now + 300.0}
    )
    driver = bsg_driver()
    policy = poll_policy("bsg", driver.capabilities, interval_s=1.0, max_interval_s=600.0)
    await run_poller(vt, driver, journal, provider, policy, until=vt.now + 1_800.0)
    assert [len(asked.keys) for asked in provider.asked[:3]] == [100, 100, 50]
    assert max(len(asked.keys) for asked in provider.asked) == 100
    start = 1_000.0
    for item in messages:
        polled = polls_of(provider, item.msg_id)
        assert polled[0] >= start + 60.0
        assert min(gaps(polled)) >= 60.0
    # 60, then doubling: 60, 120, 240, 480, capped at 600.
    assert gaps(polls_of(provider, "1"))[:5] == pytest.approx(
        [60.0, 120.0, 240.0, 480.0, 600.0], abs=1.0
    )
    # Delivered after 5 minutes: the poll at 8 minutes is its last.
    assert polls_of(provider, "7")[-1] == pytest.approx(start + 480.0, abs=1.0)
    assert journal.rows["7"].final


async def test_a_message_without_an_id_is_asked_about_by_reference_alone() -> None:
    vt = VirtualTime()
    lost = awaiting(1, "bsg", first=500, with_id=False)
    journal = PollJournal([*awaiting(3, "bsg"), *lost])
    provider = FakeProvider(vt, {"r500": vt.now + 100.0})
    driver = bsg_driver()
    policy = poll_policy("bsg", driver.capabilities, interval_s=60.0, max_interval_s=600.0)
    handler = await run_poller(vt, driver, journal, provider, policy, until=vt.now + 200.0)
    assert [asked.keys for asked in provider.asked[:2]] == [["1", "2", "3"], ["r500"]]
    assert journal.rows["500"].final
    assert [r.reference for r in handler.receipts if r.final] == ["r500"]


async def test_sms_club_is_polled_100_ids_a_call_backing_off_while_pending() -> None:
    vt = VirtualTime()
    messages = awaiting(230, "smsclub")
    journal = PollJournal(messages)
    provider = FakeProvider(vt, {m.msg_id: vt.now + 30.0 for m in messages})
    driver = smsclub_driver()
    policy = poll_policy("smsclub", driver.capabilities, interval_s=1.0, max_interval_s=60.0)
    await run_poller(vt, driver, journal, provider, policy, until=vt.now + 120.0)
    assert [len(asked.keys) for asked in provider.asked[:3]] == [100, 100, 30]
    # 1 s after submit, then 1, 2, 4, 8, 16: delivered by the poll at 32 s, none after.
    assert gaps(polls_of(provider, "1")) == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0], abs=1.0)
    assert all(row.final for row in journal.rows.values())


async def test_sms_club_messages_without_an_id_back_off_without_a_request() -> None:
    vt = VirtualTime()
    journal = PollJournal(awaiting(2, "smsclub", with_id=False))
    provider = FakeProvider(vt, {})
    driver = smsclub_driver()
    policy = poll_policy("smsclub", driver.capabilities, interval_s=1.0, max_interval_s=60.0)
    await run_poller(vt, driver, journal, provider, policy, until=vt.now + 100.0)
    assert provider.asked == []
    # Asked about at 1, 2, 4, 8, 16, 32 and 64 s, as if polled: their deadline ends them.
    assert {row.polls for row in journal.rows.values()} == {7}


async def test_a_throttled_poll_waits_for_retry_after() -> None:
    vt = VirtualTime()
    journal = PollJournal([*awaiting(100, "smsclub"), *awaiting(50, "smsclub", first=101)])
    provider = FakeProvider(vt, {})
    provider.throttle_next = 1
    driver = smsclub_driver()
    policy = poll_policy("smsclub", driver.capabilities, interval_s=1.0, max_interval_s=60.0)
    await run_poller(vt, driver, journal, provider, policy, until=vt.now + 40.0)
    throttled, after = provider.asked[0], provider.asked[1]
    assert throttled.keys == []
    assert after.at - throttled.at == pytest.approx(30.0)  # Retry-After: 30


async def test_polls_and_sends_share_one_limiter_and_no_second_holds_more_than_its_limit() -> None:
    vt = VirtualTime()
    messages = awaiting(300, "smsclub")
    journal = PollJournal(messages)
    provider = FakeProvider(vt, {m.msg_id: vt.now + 15.0 for m in messages})
    driver = smsclub_driver()
    policy = poll_policy("smsclub", driver.capabilities, interval_s=1.0, max_interval_s=4.0)
    limiter = LocalGate(RequestLimiter(8.0, 1.0), UNLIMITED, vt)
    sends: list[float] = []

    async def send_forever() -> None:
        # engine.dispatch's gate: take a turn from the bridge's limits, sleep, send.
        while True:
            await vt.sleep(limiter.take(1, 1, vt()))
            sends.append(vt())

    async with anyio.create_task_group() as tg:
        tg.start_soon(send_forever)
        await run_poller(
            vt, driver, journal, provider, policy, until=vt.now + 30.0, limiter=limiter
        )
        tg.cancel_scope.cancel()
    polls = [asked.at for asked in provider.asked]
    assert len(polls) >= 15  # polls were not starved by the sends
    assert len(sends) >= 150
    assert busiest_window(sends + polls) == 8
    assert all(row.final for row in journal.rows.values())
