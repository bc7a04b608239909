"""Storage faults at daemon level: a read-only journal directory and a journal that fills.

Issue #8: "A full disk and a read-only journal directory give a clear error and no
acceptance." A read-only directory stops `septet run` at start with one line naming it.
A journal at its size cap (`[journal] max_size_mb`, SQLite's max_page_count: the same
SQLITE_FULL a full disk gives, without privileges) answers new lines `rejected` saying
the journal is full, acknowledges none of them, keeps serving, still sends what it had
accepted, and takes everything again after a restart with a larger cap.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from engine.accounts import Account, AccountSettings
from engine.config import JournalSettings, Settings
from engine.ingress.accept import Acceptor
from engine.ingress.prepare import LineError, LinePreparer
from engine.journal import Duplicate, JournalError
from engine.journal.sqlite import open_sqlite_journal
from engine.models import Message, Submission
from engine.pricing import default_price_tables
from engine.routing import Router
from tests.engine.daemon_harness import Client, connected, daemon_settings, running_daemon
from tests.reliability.harness import integrity_check

pytestmark = pytest.mark.anyio

FULL_CAP_MB = 1.0  # 256 pages of 4 KiB: room for some 1,500 of these messages
LINES = 2500
CHUNK = 100  # lines sent together are journaled (or refused) together


@contextmanager
def read_only_directory(directory: Path) -> Iterator[None]:
    """Make `directory` read-only for the daemon. Root ignores permission bits, so as
    root the directory becomes a read-only mount (a tmpfs remounted read-only) instead."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=True)


@contextmanager
def journal_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory of its own (as root, a small tmpfs that can be remounted read-only)."""
    directory = tmp_path / "journal"
    directory.mkdir()
    if os.geteuid() != 0:
        yield directory
        return
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "septet-test", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def write_run_config(tmp_path: Path, journal: Path) -> Path:
    config = tmp_path / "septet.toml"
    config.write_text(
        f'[journal]\npath = "{journal}"\n'
        '[ingress]\ntcp = "127.0.0.1:0"\nunix = ""\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        '[smpp]\nlisten = ""\n'
        "[simulators]\nenabled = true\n"
        '[bridges.dsc]\ndriver = "dsc"\n'
        'credentials = { api_key = "demo", username = "demo", password = "demo",'
        ' callback_username = "septet", callback_password = "callback-secret" }\n'
    )
    return config


async def make_journal(path: Path) -> None:
    """Create a journal file, then close it (the "existing journal" case)."""
    async with open_sqlite_journal(path) as journal:
        assert await journal.pending_count() == 0


@pytest.mark.parametrize("existing", [False, True], ids=["new-journal", "existing-journal"])
def test_a_read_only_journal_directory_stops_the_daemon_with_one_line_naming_it(
    tmp_path: Path, existing: bool
) -> None:
    with journal_directory(tmp_path) as directory:
        journal = directory / "septet.db"
        if existing:
            anyio.run(make_journal, journal, backend="asyncio")
        before = sorted(path.name for path in directory.iterdir())
        config = write_run_config(tmp_path, journal)
        with read_only_directory(directory):
            result = subprocess.run(
                [sys.executable, "-m", "engine", "run", "--config", str(config)],
                capture_output=True,
                timeout=60,
            )
        assert sorted(path.name for path in directory.iterdir()) == before
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr  # it could not start
    [error] = [line for line in stderr.splitlines() if line.startswith("septet run:")]
    assert error.startswith(
        f"septet run: Cannot open the journal {journal}: the directory {directory} is not"
        " writable ("
    ), stderr
    assert error.endswith("SQLite needs to create the journal and its -wal and -shm files there.")
    assert "Traceback" not in stderr


def lines(numbers: range) -> list[dict[str, Any]]:
    # One text to one provider: the batcher fills requests, so sending stays fast.
    return [
        {"id": f"full-{n}", "to": f"+2507881{n:05d}", "text": "disk full test"} for n in numbers
    ]


def answered(client: Client, count: int) -> bool:
    return len(client.of("accepted")) + len(client.of("rejected")) >= count


async def send_in_chunks(client: Client, items: list[dict[str, Any]]) -> None:
    """Send CHUNK lines at a time, each chunk once the previous one is answered."""
    already = len(client.of("accepted")) + len(client.of("rejected"))
    for start in range(0, len(items), CHUNK):
        await client.send(*items[start : start + CHUNK])
        await wait_answered(client, already + min(start + CHUNK, len(items)))


async def wait_answered(client: Client, count: int) -> None:
    await client.wait_for(lambda _: answered(client, count))


def capped_settings(tmp_path: Path, max_size_mb: float) -> Settings:
    settings = daemon_settings(tmp_path)
    return msgspec.structs.replace(
        settings, journal=JournalSettings(path=settings.journal.path, max_size_mb=max_size_mb)
    )


async def test_a_full_journal_rejects_new_lines_keeps_serving_and_resumes_after_restart(
    tmp_path: Path,
) -> None:
    everything = lines(range(LINES))
    async with (
        running_daemon(capped_settings(tmp_path, FULL_CAP_MB)) as daemon,
        connected(daemon) as client,
    ):
        await send_in_chunks(client, everything)
        accepted = {event["id"]: event["msg_id"] for event in client.of("accepted")}
        refused = {event["id"]: event for event in client.of("rejected")}
        assert accepted
        assert refused
        assert not set(accepted) & set(refused)  # a line is never both
        for event in refused.values():
            assert event["error"].startswith("not accepted, send it again later: The journal")
            assert "is full" in event["error"]
            assert "journal.max_size_mb" in event["error"]
        # Messages accepted before the journal filled still go out.
        await client.wait_for(
            lambda _: {e["msg_id"] for e in client.of("submitted")} >= set(accepted.values()),
            timeout_s=60,
        )
        # Still serving after the refusals: every line is answered, and what the reports
        # made final frees its reserve, so some may be taken again.
        await client.wait_for(
            lambda _: set(client.final_reports()) >= set(accepted.values()), timeout_s=60
        )
        more = lines(range(LINES, LINES + CHUNK))
        await send_in_chunks(client, more)
        late = {e["id"] for e in client.of("accepted")} - set(accepted)
        for event in client.of("rejected")[len(refused) :]:
            assert "is full" in event["error"]
        everything += more

    journal = tmp_path / "septet.db"
    with sqlite3.connect(journal) as connection:
        journaled = {row[0] for row in connection.execute("SELECT client_ref FROM messages")}
    assert journaled == set(accepted) | late  # nothing refused was kept

    # A larger cap and a restart: everything is taken, nothing accepted twice.
    async with (
        running_daemon(capped_settings(tmp_path, 64)) as daemon,
        connected(daemon) as client,
    ):
        await send_in_chunks(client, everything)
        again = {event["id"] for event in client.of("accepted")}
        duplicates = {event["id"] for event in client.of("rejected")}
        assert again == {item["id"] for item in everything} - set(accepted) - late
        assert duplicates == set(accepted) | late
        assert all(e["error"].startswith("duplicate id") for e in client.of("rejected"))
        fresh = {event["msg_id"] for event in client.of("accepted")}
        await client.wait_for(
            lambda _: {e["msg_id"] for e in client.of("submitted")} >= fresh, timeout_s=60
        )
    with sqlite3.connect(journal) as connection:
        count = connection.execute("SELECT count(*), count(DISTINCT client_ref) FROM messages")
        assert count.fetchone() == (len(everything), len(everything))
        unsent = connection.execute("SELECT count(*) FROM messages WHERE state < 2").fetchone()
        assert unsent == (0,)
    assert integrity_check(journal) == "ok"


class FailingJournal:
    """A journal whose disk has gone: every accept fails as SqliteJournal reports it."""

    async def accept(self, groups: Sequence[Sequence[Message]]) -> list[list[Message] | Duplicate]:
        raise JournalError("The journal /data/septet.db could not be written: disk I/O error.")

    async def accepted_today(self, account: str, day: int) -> int:
        return 0


class NoScheduler:
    async def put_many(self, messages: Any) -> None:
        raise AssertionError("nothing may be scheduled when nothing was journaled")

    def wake_feeder(self) -> None:
        raise AssertionError("nothing may be scheduled when nothing was journaled")


async def test_an_smpp_submission_the_journal_cannot_take_is_refused_with_the_reason() -> None:
    acceptor = Acceptor(
        LinePreparer(
            router=Router({"250": ("dsc",)}, None, ["dsc"]),
            prices={"dsc": default_price_tables()["dsc"]},
            default_senders={"dsc": "SEPTET"},
            max_text_chars=1600,
            max_recipients=10,
            default_region=None,
        ),
        FailingJournal(),
        NoScheduler(),
    )
    (answer,) = await acceptor.accept(
        Account("demo", AccountSettings()), "smpp:1", [Submission(to="+250788100000", text="hello")]
    )
    assert isinstance(answer, LineError)
    assert answer.kind == "journal"
    assert answer.error == (
        "not accepted, send it again later: The journal /data/septet.db could not be"
        " written: disk I/O error."
    )
