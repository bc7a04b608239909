"""`septet journal migrate` and `septet cluster status` on a real PostgreSQL journal (the CLI
in a process of its own, as an operator runs it beside the nodes): the schema created once
and then current, the nodes and their claims read from the database with no daemon, and a
database that cannot be reached or holds no journal is one sentence."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.postgres import free_port
from engine.journal.postgres import open_postgres_journal
from engine.journal.postgres_schema import SCHEMA_VERSION
from tests.engine.commands.test_admin_commands import septet
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio


def pg_config(tmp_path: Path, dsn: str) -> Path:
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[journal]\nbackend = "postgresql"\ndsn = "{dsn}"\n[cluster]\nlease_s = 15\n'
    )
    return config


async def test_migrate_creates_the_schema_once_then_it_is_current(
    tmp_path: Path, postgres_dsn: str
) -> None:
    config = pg_config(tmp_path, postgres_dsn)
    check = await septet(config, "journal", "migrate", "--check")
    assert check.code == 1, check.err
    assert check.out.strip().endswith(
        f"would be created: migrate brings it to schema {SCHEMA_VERSION}"
    )
    created = await septet(config, "journal", "migrate")
    assert created.code == 0, created.err
    assert created.out.strip().endswith(f"created to schema {SCHEMA_VERSION}")
    again = await septet(config, "journal", "migrate", "--check")
    assert (again.code, again.out.strip().endswith("this septet's: nothing to migrate")) == (
        0,
        True,
    )


async def test_cluster_status_reads_the_nodes_from_the_database(
    tmp_path: Path, postgres_dsn: str
) -> None:
    config = pg_config(tmp_path, postgres_dsn)
    empty = await septet(config, "cluster", "status")
    assert empty.code == 1
    assert "No journal in the database at" in empty.err
    assert empty.err.strip().endswith("no node has started on it.")
    now = time.time()
    async with (
        open_postgres_journal(postgres_dsn) as live,
        open_postgres_journal(postgres_dsn) as dead,
    ):
        await live.join("edge-1", "run-1", now)
        await dead.join("edge-2", "run-2", now - 60)  # its heartbeat a minute old
        groups = await dead.accept([[make_message(f"+2507825{n:05d}")] for n in range(3)])
        await dead.claim([g[0] for g in groups if isinstance(g, list)], 0, now - 60)
        await live.accept([[make_message("+250782599999")]])
    shown = await septet(config, "cluster", "status")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[1].split()[:2] == ["edge-1", "live"]
    assert lines[1].split()[-1] == "0"
    assert lines[2].split()[:2] == ["edge-2", "expired"]
    assert lines[2].split()[-1] == "3"
    assert lines[3] == "live nodes   1 of 2 (lease 15 s)"
    assert lines[4] == "backlog      accepted 1, inflight 3, submitted 0"


async def test_an_unreachable_database_is_one_sentence(tmp_path: Path) -> None:
    config = pg_config(tmp_path, f"postgresql://septet@127.0.0.1:{free_port()}/none")
    for command in (("cluster", "status"), ("journal", "migrate")):
        ran = await septet(config, *command)
        assert ran.code == 1, ran
        [line] = ran.err.strip().splitlines()
        assert "127.0.0.1" in line
        assert "Traceback" not in ran.err
