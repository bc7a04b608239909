"""`septet journal migrate`: a journal of an older schema brought to this septet's as a step
of its own (the CLI in a process, on real files), `--check` saying where it stands, and a
sentence for a journal it must not touch."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from engine.journal.sqlite import open_sqlite_journal
from engine.journal.sqlite_schema import SCHEMA_VERSION
from engine.journal_lock import lock_journal
from tests.engine.commands.test_admin_commands import cli_config, septet
from tests.engine.test_journal_accounts import accept, of
from tests.engine.test_journal_sqlite import UNDO_VERSION_8

pytestmark = pytest.mark.anyio


def schema_of(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])


async def test_an_older_journal_is_migrated_once_and_then_is_current(tmp_path: Path) -> None:
    config = cli_config(tmp_path)
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        await accept(journal, of("", "order-1"))
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(UNDO_VERSION_8 + "PRAGMA user_version = 7;")

    check = await septet(config, "journal", "migrate", "--check")
    assert (check.code, check.out.strip()) == (
        1,
        f"journal {path} is at schema 7: migrate brings it to schema {SCHEMA_VERSION}",
    )
    assert schema_of(path) == 7  # --check changes nothing

    migrated = await septet(config, "journal", "migrate")
    assert (migrated.code, migrated.out.strip(), migrated.err) == (
        0,
        f"journal {path} migrated from schema 7 to schema {SCHEMA_VERSION}",
        "",
    )
    assert schema_of(path) == SCHEMA_VERSION
    async with open_sqlite_journal(path) as journal:
        assert [listed.message.client_ref for listed in await journal.messages_of("")] == [
            "order-1"
        ]

    again = await septet(config, "journal", "migrate", "--check")
    assert (again.code, again.out.strip()) == (
        0,
        f"journal {path} is at schema {SCHEMA_VERSION}, this septet's: nothing to migrate",
    )


async def test_a_missing_journal_is_created_at_the_current_schema(tmp_path: Path) -> None:
    config = cli_config(tmp_path)
    path = tmp_path / "septet.db"
    created = await septet(config, "journal", "migrate")
    assert (created.code, created.out.strip()) == (
        0,
        f"journal {path} created to schema {SCHEMA_VERSION}",
    )
    assert schema_of(path) == SCHEMA_VERSION


async def test_a_journal_held_newer_or_not_a_journal_is_one_sentence(tmp_path: Path) -> None:
    config = cli_config(tmp_path)
    path = tmp_path / "septet.db"
    async with open_sqlite_journal(path) as journal:
        assert await journal.pending_count() == 0
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(UNDO_VERSION_8 + "PRAGMA user_version = 7;")
    with lock_journal(path) as held:
        assert held
        busy = await septet(config, "journal", "migrate")
    assert (busy.code, busy.err.strip()) == (
        1,
        f"septet journal: The journal {path} is in use by a running daemon: stop it to migrate.",
    )
    assert schema_of(path) == 7

    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer = await septet(config, "journal", "migrate")
    assert (newer.code, newer.err.strip()) == (
        1,
        f"septet journal: The journal {path} is at schema {SCHEMA_VERSION + 1}, newer than"
        f" this septet's ({SCHEMA_VERSION}): run the septet that wrote it.",
    )

    path.unlink()
    path.write_bytes(b"this is not a database" * 100)
    garbage = await septet(config, "journal", "migrate")
    assert garbage.code == 1
    assert garbage.err.startswith(f"septet journal: The journal {path} cannot be read:")
    assert "Traceback" not in garbage.err
