"""Tests for engine.retention: the pure pass over time marks, the pruning of a real journal
file (what goes, what stays), its metric, the background loop, and private file modes."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest

from engine import retention
from engine.journal import (
    JournalFullError,
    MarkFinal,
    MarkSubmitted,
    StoreEvents,
    StoreOrphanReceipt,
)
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.metrics import Metrics
from engine.retention import Mark, Marks, Pruned, PrunePass, purge, serve_pruning
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio

DAY = retention.SECONDS_PER_DAY


def pruned(last: int | None, next_msg_id: int, next_outbox_id: int = 1) -> Pruned:
    return Pruned(
        deleted={"messages": 0},
        last_msg_id=last,
        next_msg_id=next_msg_id,
        next_outbox_id=next_outbox_id,
    )


def test_marks_bound_the_scan_to_ids_handed_out_before_the_cut() -> None:
    marks = Marks(keep_s=512.0)  # a mark a second at most
    for second in range(10):
        marks.add(Mark(1000.0 + second, next_msg_id=100 * second + 1, next_outbox_id=second + 1))
    marks.add(Mark(1009.5, next_msg_id=999, next_outbox_id=99))  # too soon after the last
    assert len(marks) == 10
    # Ids from 401 on were handed out after 1004: nothing of theirs ended before it.
    assert marks.first_after(1003.5) == Mark(1004.0, 401, 5)
    # Outbox rows below 4 were stored before 1003.5.
    assert marks.last_before(1003.5) == Mark(1003.0, 301, 4)
    assert marks.first_after(2000.0) is None
    assert marks.last_before(999.0) is None
    marks.forget_before(1003.5)
    assert len(marks) == 7
    assert marks.last_before(1003.5) == Mark(1003.0, 301, 4)


def test_a_pass_walks_window_by_window_and_starts_over_at_its_end() -> None:
    prune_pass = PrunePass(keep_s=100.0, limit=500)
    first = prune_pass.plan(now=1000.0)
    # No marks yet (a fresh start): the pass reads to the end, outbox lines wait.
    assert (first.cut, first.after, first.below, first.outbox_below) == (900.0, 0, None, 0)
    assert not prune_pass.done(1000.0, pruned(last=500, next_msg_id=5001, next_outbox_id=7))
    second = prune_pass.plan(now=1000.5)
    assert (second.after, second.below) == (500, 5001)
    assert prune_pass.done(1000.5, pruned(last=None, next_msg_id=5001, next_outbox_id=9))
    # 150 s later the cut (1050) is past both marks: outbox rows below 9 are older.
    later = prune_pass.plan(now=1150.0)
    assert (later.after, later.below, later.outbox_below) == (0, None, 9)


def test_a_pass_is_not_done_while_another_table_filled_its_batch() -> None:
    prune_pass = PrunePass(keep_s=100.0, limit=10)
    full = Pruned(
        deleted={"messages": 0, "orphan_receipts": 10},
        last_msg_id=None,
        next_msg_id=1,
        next_outbox_id=1,
    )
    assert not prune_pass.done(0.0, full)


async def final(journal: SqliteJournal, msg_ids: list[str], at: float) -> None:
    await journal.record(
        [
            MarkFinal(msg_id=msg_id, outcome="DELIVRD", code=None, error=None, at=at)
            for msg_id in msg_ids
        ]
    )


async def accept(journal: SqliteJournal, count: int) -> list[str]:
    groups = await journal.accept([[make_message()] for _ in range(count)])
    return [group[0].msg_id for group in groups if isinstance(group, list)]


def row_count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


async def test_purge_deletes_what_ended_before_the_cut_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        old = await accept(journal, 1200)
        recent = await accept(journal, 3)
        waiting = await accept(journal, 2)
        awaiting = await accept(journal, 1)
        await final(journal, old, at=1000.0)
        await final(journal, recent, at=5000.0)
        await journal.record(
            [
                MarkSubmitted(
                    msg_id=awaiting[0], provider_id="p1", cost=None, currency=None, at=900.0
                )
            ]
        )
        await journal.record(
            [StoreOrphanReceipt(bridge="dsc", provider_id="x", receipt=b"r", at=1000.0)]
        )
        await journal.record(
            [StoreOrphanReceipt(bridge="dsc", provider_id="y", receipt=b"r", at=5000.0)]
        )
        deleted = await purge(journal, older_than_s=1000.0, clock=lambda: 5500.0)
        assert deleted["messages"] == 1200
        assert deleted["orphan_receipts"] == 1
        left = await journal.get([*old[:3], *recent, *waiting, *awaiting])
        assert sorted(left) == sorted([*recent, *waiting, *awaiting])
        counts = await journal.counts()
        assert counts["final"] == 3
        assert counts["accepted"] == 2
        assert counts["submitted"] == 1
        # Ids are never reused after a prune.
        assert int((await accept(journal, 1))[0]) == int(awaiting[0]) + 1
    assert row_count(path, "orphan_receipts") == 1


async def test_the_loop_prunes_in_the_background_and_counts_it(tmp_path: Path) -> None:
    metrics = Metrics(["dsc"])
    all_gone = anyio.Event()
    now = [10 * DAY]
    messages = [0]

    def on_pruned(deleted: Mapping[str, int]) -> None:
        metrics.operations.journal_pruned_rows(deleted)
        messages[0] += deleted.get("messages", 0)
        if messages[0] >= 30:
            all_gone.set()

    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        ended = await accept(journal, 30)
        await final(journal, ended, at=now[0] - 2 * DAY)
        await journal.record([StoreEvents(origin="gone", events=[b"{}\n"] * 5)])
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_pruning(
                    journal, DAY, on_pruned=on_pruned, clock=lambda: now[0], limit=10
                )
            )
            with anyio.fail_after(10):
                await all_gone.wait()
            tg.cancel_scope.cancel()
        assert await journal.get(ended) == {}
    value = metrics.registry.get_sample_value(
        "septet_journal_pruned_rows_total", {"table": "messages"}
    )
    assert value == 30
    # The outbox lines carry no time: the loop has not seen their ids a keep ago yet.
    assert row_count(tmp_path / "septet.db", "outbox") == 5


async def test_outbox_lines_go_once_a_keep_has_passed_since_the_loop_saw_them(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        await journal.record([StoreEvents(origin="gone", events=[b"{}\n"] * 5)])
        prune_pass = PrunePass(keep_s=100.0)
        counted: dict[str, int] = {}

        def add(deleted: Mapping[str, int]) -> None:
            for table, rows in deleted.items():
                counted[table] = counted.get(table, 0) + rows

        assert await retention.prune_once(journal, prune_pass, lambda: 1000.0, add)
        await journal.record([StoreEvents(origin="gone", events=[b"{}\n"] * 2)])
        assert await retention.prune_once(journal, prune_pass, lambda: 1101.0, add)
        assert counted.get("outbox") == 5
    assert row_count(tmp_path / "septet.db", "outbox") == 2


async def test_journal_files_are_private_and_a_new_one_gives_free_pages_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        await accept(journal, 1)
        for name in ("septet.db", "septet.db-wal", "septet.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL


async def sweep_all_events(journal: SqliteJournal) -> int:
    """Sweep the event feed empty (every event is older than 1e12), 2,000 rows a turn."""
    swept = 0
    while deleted := await journal.sweep_events(1e12, 2000):
        swept += deleted
    return swept


async def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    async with open_sqlite_journal(path) as journal:
        assert await journal.pending_count() == 0  # opened (and schema written) as it was
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


async def test_a_pruned_journal_file_stops_growing(tmp_path: Path) -> None:
    """Rows pruned free their pages; the next rows reuse them (or the file gives them back).
    The feed's events go by their own sweep ([events] keep_s), run here as the daemon does."""
    path = tmp_path / "septet.db"
    text = "x" * 150
    async with open_sqlite_journal(path) as journal:
        sizes = []
        for round_number in range(4):
            groups = await journal.accept([[make_message(text=text)] for _ in range(3000)])
            ids = [group[0].msg_id for group in groups if isinstance(group, list)]
            await final(journal, ids, at=1000.0 * round_number)
            await purge(journal, older_than_s=0.0, clock=lambda: 1e9)
            await sweep_all_events(journal)
            with sqlite3.connect(path) as connection:
                sizes.append(int(connection.execute("PRAGMA page_count").fetchone()[0]))
        assert sizes[-1] <= sizes[0] + 8, sizes


async def fill(journal: SqliteJournal) -> list[str]:
    """Accept messages until the journal refuses one as full; their msg_ids."""
    accepted: list[str] = []
    for _ in range(100_000):  # bounded: 1 MiB holds far fewer
        try:
            [group] = await journal.accept([[make_message(text="x" * 150)]])
        except JournalFullError:
            return accepted
        assert isinstance(group, list)
        accepted.append(group[0].msg_id)
    raise AssertionError("the journal never filled")


async def test_a_capped_journal_takes_new_messages_again_once_old_ones_are_pruned(
    tmp_path: Path,
) -> None:
    """Issue 19: with max_size_mb set, a journal that never deleted ended up refusing all
    traffic. Pruned, the space of finished messages (and their feed events) is taken again."""
    async with open_sqlite_journal(tmp_path / "septet.db", max_size_bytes=1 << 20) as journal:
        first = await fill(journal)
        await final(journal, first, at=1000.0)
        # Ended, they free only the room kept for their changes: fewer fit each time.
        second = await fill(journal)
        await final(journal, second, at=1000.0)
        assert len(second) < len(first) * 3 // 4, (len(first), len(second))
        deleted = await purge(journal, older_than_s=60.0, clock=lambda: 2000.0)
        assert deleted["messages"] == len(first) + len(second)
        await sweep_all_events(journal)
        # Their space is taken again: about as many as the first time fit.
        again = await fill(journal)
        assert len(again) > len(first) * 3 // 4, (len(first), len(again))
        assert await journal.integrity_check() == "ok"
