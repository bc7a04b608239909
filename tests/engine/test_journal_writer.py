"""engine.journal.writer, the group-commit writer every store shares, on a real SQLite file.

The store here is the smallest WriterBackend: a table of unique names, and a count of the
names written kept in memory and saved in the group's transaction (as the journal keeps
its counters). The tests park the writer thread so that calls pile up into one group,
then check what each caller got and what the file holds afterwards.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio
import anyio.abc
import pytest

from engine.journal.sqlite_transactions import SqliteTransactions
from engine.journal.writer import GroupCommitWriter

pytestmark = pytest.mark.anyio


class StoreFailedError(Exception):
    """What a caller gets for an error of the driver (the store's own error)."""


class NamesStore(SqliteTransactions):
    """A WriterBackend on one SQLite file: `names` (unique), and `written`, the names
    written so far, kept in memory and saved in `meta` before each commit that changed it."""

    def __init__(self, path: Path, *, refuse_to_open: bool = False) -> None:
        self.path = path
        self.refuse_to_open = refuse_to_open
        self.written = 0
        self.commits_seen: list[bool] = []  # after_commit's `careful`, one per commit
        self.runs: dict[str, int] = {}  # how often each name's work ran

    def open_connection(self) -> sqlite3.Connection:
        if self.refuse_to_open:
            raise StoreFailedError(f"Cannot open {self.path}: refused.")
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY)")
        connection.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
        return connection

    def close_connection(self, connection: sqlite3.Connection) -> None:
        connection.close()

    def failure(self, error: BaseException) -> BaseException:
        if isinstance(error, sqlite3.Error):
            return StoreFailedError(f"{self.path} could not be written: {error}.")
        return error

    def snapshot(self) -> int:
        return self.written

    def restore(self, snapshot: int) -> None:
        self.written = snapshot

    def before_commit(self, connection: sqlite3.Connection, snapshot: int) -> None:
        if self.written != snapshot:
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('written', ?)", (self.written,))

    def after_commit(self, *, careful: bool) -> None:
        self.commits_seen.append(careful)

    def insert(self, name: str) -> Callable[[sqlite3.Connection], str]:
        def work(connection: sqlite3.Connection) -> str:
            self.runs[name] = self.runs.get(name, 0) + 1
            connection.execute("INSERT INTO names VALUES (?)", (name,))
            self.written += 1
            return name

        return work


def stored(path: Path) -> tuple[list[str], int | None]:
    """The names in the file and the count saved with them, read on a connection of ours."""
    with sqlite3.connect(path) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM names ORDER BY name")]
        row = connection.execute("SELECT value FROM meta WHERE key = 'written'").fetchone()
    connection.close()
    return names, None if row is None else int(row[0])


def make_writer(
    store: NamesStore, *, optimistic: bool = True
) -> GroupCommitWriter[sqlite3.Connection, int]:
    return GroupCommitWriter(
        store,
        thread_name="test-writer",
        closed=lambda: StoreFailedError(f"{store.path} is closed."),
        optimistic=optimistic,
    )


@pytest.fixture
async def store(tmp_path: Path) -> NamesStore:
    return NamesStore(tmp_path / "names.db")


@pytest.fixture
async def writer(store: NamesStore) -> AsyncIterator[GroupCommitWriter[sqlite3.Connection, int]]:
    opened = make_writer(store)
    await opened.start()
    try:
        yield opened
    finally:
        with anyio.CancelScope(shield=True):
            await opened.close()


async def park(
    writer: GroupCommitWriter[sqlite3.Connection, int], tg: anyio.abc.TaskGroup
) -> threading.Event:
    """Hold the writer thread until the returned event is set: what is submitted meanwhile
    is handed over together and runs as the next group."""
    holding, release = threading.Event(), threading.Event()

    def hold(connection: sqlite3.Connection) -> None:
        holding.set()
        release.wait(timeout=10)

    async def run() -> None:
        await writer.execute(hold, write=False)

    tg.start_soon(run)
    assert await anyio.to_thread.run_sync(holding.wait, 10)
    return release


async def run_group(
    writer: GroupCommitWriter[sqlite3.Connection, int],
    calls: Sequence[tuple[str, Callable[[sqlite3.Connection], object], bool]],
) -> dict[str, object]:
    """Submit `calls` (name, work, write) while the writer is parked: one group. Each
    caller's value, or the exception it got."""
    got: dict[str, object] = {}

    async def call(name: str, work: Callable[[sqlite3.Connection], object], write: bool) -> None:
        try:
            got[name] = await writer.execute(work, write=write)
        except Exception as error:
            got[name] = error

    async with anyio.create_task_group() as tg:
        release = await park(writer, tg)
        for name, work, write in calls:
            tg.start_soon(functools.partial(call, name, work, write))
        await anyio.wait_all_tasks_blocked()
        release.set()
    return got


async def test_writes_queued_together_share_one_commit_and_save_the_count_with_it(
    store: NamesStore, writer: GroupCommitWriter[sqlite3.Connection, int]
) -> None:
    before = writer.commits
    got = await run_group(writer, [(n, store.insert(n), True) for n in ("a", "b", "c")])
    assert got == {"a": "a", "b": "b", "c": "c"}
    assert writer.commits - before == 1
    assert store.commits_seen == [False]
    assert stored(store.path) == (["a", "b", "c"], 3)


async def test_a_write_that_fails_on_its_own_data_fails_alone_and_its_count_is_undone(
    store: NamesStore, writer: GroupCommitWriter[sqlite3.Connection, int]
) -> None:
    await writer.execute(store.insert("taken"), write=True)
    got = await run_group(
        writer,
        [
            ("a", store.insert("a"), True),
            ("again", store.insert("taken"), True),
            ("b", store.insert("b"), True),
        ],
    )
    assert (got["a"], got["b"]) == ("a", "b")
    assert isinstance(got["again"], sqlite3.IntegrityError)
    # The group ran once without savepoints, failed, and ran again with one per call.
    assert store.commits_seen == [False, True]
    assert store.written == 3
    assert stored(store.path) == (["a", "b", "taken"], 3)


async def test_a_storage_failure_fails_the_whole_group_and_the_next_group_commits(
    store: NamesStore, writer: GroupCommitWriter[sqlite3.Connection, int]
) -> None:
    def broken(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO gone VALUES (1)")  # OperationalError: no such table

    got = await run_group(
        writer,
        [("a", store.insert("a"), True), ("broken", broken, True), ("b", store.insert("b"), True)],
    )
    sentence = f"{store.path} could not be written: no such table: gone."
    assert {name: str(error) for name, error in got.items()} == dict.fromkeys(
        ("a", "broken", "b"), sentence
    )
    assert all(isinstance(error, StoreFailedError) for error in got.values())
    assert (store.written, store.commits_seen) == (0, [])
    assert await writer.execute(store.insert("c"), write=True) == "c"
    assert stored(store.path) == (["c"], 1)


async def test_reads_of_a_group_run_after_its_writes_and_see_them(
    store: NamesStore, writer: GroupCommitWriter[sqlite3.Connection, int]
) -> None:
    def count(connection: sqlite3.Connection) -> int:
        return int(connection.execute("SELECT count(*) FROM names").fetchone()[0])

    def bad_read(connection: sqlite3.Connection) -> int:
        return int(connection.execute("SELECT count(*) FROM gone").fetchone()[0])

    got = await run_group(
        writer,
        [
            ("count", count, False),
            ("bad", bad_read, False),
            ("a", store.insert("a"), True),
            ("b", store.insert("b"), True),
        ],
    )
    assert (got["count"], got["a"], got["b"]) == (2, "a", "b")
    assert str(got["bad"]) == f"{store.path} could not be written: no such table: gone."


async def test_without_the_optimistic_run_each_call_runs_once_per_group(tmp_path: Path) -> None:
    store = NamesStore(tmp_path / "names.db")
    writer = make_writer(store, optimistic=False)
    await writer.start()
    try:
        await writer.execute(store.insert("taken"), write=True)
        got = await run_group(
            writer, [("a", store.insert("a"), True), ("again", store.insert("taken"), True)]
        )
    finally:
        await writer.close()
    assert got["a"] == "a"
    assert isinstance(got["again"], sqlite3.IntegrityError)
    assert store.runs == {"taken": 2, "a": 1}
    assert store.commits_seen == [True, True]
    assert stored(store.path) == (["a", "taken"], 2)


async def test_closing_finishes_what_was_queued_and_a_closed_writer_says_so(
    store: NamesStore,
) -> None:
    writer = make_writer(store)
    await writer.start()
    got: dict[str, object] = {}

    async def insert(name: str) -> None:
        got[name] = await writer.execute(store.insert(name), write=True)

    async with anyio.create_task_group() as tg:
        release = await park(writer, tg)
        for name in ("a", "b"):
            tg.start_soon(insert, name)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(writer.close)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert got == {"a": "a", "b": "b"}
    assert stored(store.path) == (["a", "b"], 2)
    with pytest.raises(StoreFailedError, match="is closed"):
        await writer.execute(store.insert("c"), write=True)


async def test_a_store_that_cannot_open_fails_the_start_with_its_own_error(tmp_path: Path) -> None:
    writer = make_writer(NamesStore(tmp_path / "names.db", refuse_to_open=True))
    with pytest.raises(StoreFailedError, match="refused"):
        await writer.start()
    with pytest.raises(StoreFailedError, match="is closed"):
        await writer.execute(lambda connection: None, write=False)
