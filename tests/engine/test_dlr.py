"""ReceiptHandler: matching, orphans, and grouping concurrent callbacks into one commit."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from bridges.base import Receipt
from engine.dlr import ORPHAN_KEEP_S, ORPHANS_REMEMBERED, ReceiptHandler
from engine.journal import Change, JournalError, MarkFinal, StoreOrphanReceipt
from engine.models import Event, Message

pytestmark = pytest.mark.anyio


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

    async def find_by_provider_id(self, bridge: str, ids: Sequence[str]) -> dict[str, Message]:
        self.lookups += 1
        return {pid: self.by_pid[pid] for pid in ids if pid in self.by_pid}

    async def find_by_reference(self, references: Sequence[str]) -> dict[str, Message]:
        return {}

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
