"""ReceiptHandler: matching, orphans, and grouping concurrent callbacks into one commit."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from bridges.base import Receipt
from engine.dlr import ReceiptHandler
from engine.journal import Change, MarkFinal, StoreOrphanReceipt
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
