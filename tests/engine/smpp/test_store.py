"""The SMPP store: ids never given twice, receipts made atomically, state kept across opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.smpp.store import GivenId, PendingReceipt, open_store, store_path_for

pytestmark = pytest.mark.anyio


def given(value: int, msg_id: str | None, **fields: object) -> GivenId:
    return GivenId(
        id=value,
        system_id="demo",
        msg_id=msg_id,
        registered_delivery=1,
        submitted_at=0.0,
        source_addr="ACME",
        destination_addr="250788123456",
        text_head="hi",
        **fields,  # type: ignore[arg-type]
    )


def receipt(row: GivenId) -> PendingReceipt:
    return PendingReceipt(
        id=row.id,
        system_id=row.system_id,
        source_addr=row.destination_addr,
        destination_addr=row.source_addr,
        text=f"id:{row.id}",
        state="DELIVRD",
        message_state=2,
    )


def test_store_path_sits_beside_the_journal() -> None:
    assert store_path_for("data/septet.db") == Path("data/septet.smpp.db")


async def test_ids_are_never_reused_after_their_rows_are_gone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_store(path) as store:
        first, second = store.allocate_id(), store.allocate_id()
        await store.add_ids([given(first, "10"), given(second, "10")])
        made, matched = await store.settle_messages(["10", "11"], receipt)
        assert sorted(r.id for r in made) == [first, second]
        assert matched == {"10"}
        await store.delete_receipts([first, second])
        assert await store.counts() == {"message_ids": 0, "receipts": 0}
    async with open_store(path) as store:
        assert store.allocate_id() > second


async def test_waiting_parts_and_receipts_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_store(path) as store:
        part = given(
            store.allocate_id(), None, part_key=("demo", "A", "B", 7, 2), part_octets=b"half"
        )
        linked = given(store.allocate_id(), "5")
        await store.add_ids([part, linked])
        await store.settle_messages(["5"], receipt)
    async with open_store(path) as store:
        (waiting,) = await store.waiting_parts()
        assert waiting.part_key == ("demo", "A", "B", 7, 2)
        assert waiting.part_octets == b"half"
        (pending,) = await store.pending_receipts()
        assert pending.id == linked.id
        await store.link([waiting.id], "6", [given(waiting.id, "6")])
        assert await store.waiting_parts() == []
