"""bench.postgres: a throwaway PostgreSQL on 127.0.0.1 only, a database per test, gone when
stopped (the tests' fixture tests/servers/postgres.py stands on it)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from bench import postgres
from bench.postgres import TemporaryPostgres


def test_the_session_server_listens_on_loopback_only_and_runs_unprivileged(
    postgres_server: TemporaryPostgres,
) -> None:
    assert postgres_server.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    assert postgres_server.psql("SHOW fsync").strip() == "off"
    socket_directory = postgres_server.psql("SHOW unix_socket_directories").strip()
    assert socket_directory == str(postgres_server.root)
    owner = pwd.getpwuid(os.stat(postgres_server.root / "data").st_uid).pw_name
    assert owner == (postgres.SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())[0])


def test_each_test_gets_a_database_of_its_own(
    postgres_server: TemporaryPostgres, postgres_dsn: str
) -> None:
    other = postgres_server.create_database()
    assert other != postgres_dsn
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE mine (n INTEGER)")
    with psycopg.connect(other, autocommit=True) as connection:
        found = connection.execute("SELECT to_regclass('mine')").fetchone()
    assert found == (None,)


def test_stopping_ends_the_server_and_removes_its_directory() -> None:
    server = TemporaryPostgres.start()
    dsn = server.create_database()
    server.stop()
    assert server.process.poll() is not None
    assert not server.root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)


def test_the_check_says_in_one_line_that_postgresql_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert postgres.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("PostgreSQL 15")


def test_a_missing_installation_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    # No pg_config on PATH and no Debian directory to fall back on.
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(postgres, "DEBIAN_BINARIES", Path("/nonexistent"))
    with pytest.raises(postgres.PostgresUnavailableError, match="apt-get install -y postgresql-15"):
        postgres.binaries_directory()


STARTER = """
import sys, time
from bench.postgres import TemporaryPostgres
server = TemporaryPostgres.start()
print(server.process.pid, server.root, flush=True)
time.sleep(60)
"""


def test_a_server_whose_starter_was_killed_is_stopped_and_removed() -> None:
    # The starter dies by kill -9: no finally, no finalizer; the watchdog stops the server.
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    assert starter.stdout is not None
    pid, root = starter.stdout.readline().decode().split()
    server = psutil.Process(int(pid))
    starter.kill()
    starter.wait()
    gone, _ = psutil.wait_procs([server], timeout=20)
    assert gone == [server]
    for _ in range(200):  # the directory goes right after the server: a bounded wait
        if not Path(root).exists():
            break
        time.sleep(0.05)
    assert not Path(root).exists()
