"""The daemon end to end on the PostgreSQL journal: real sockets, a real PostgreSQL server,
real HTTP to the in-process simulators."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from bench.postgres import TemporaryPostgres
from engine.config import JournalSettings
from tests.engine.daemon_harness import connected, daemon_settings, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def on_postgres(tmp_path: Path, dsn: str) -> JournalSettings:
    # The admin token still sits beside `path` (the SMPP store is in the database).
    return JournalSettings(backend="postgresql", dsn=dsn, path=str(tmp_path / "septet.db"))


async def test_every_provider_and_report_path_on_postgresql(
    tmp_path: Path, postgres_dsn: str
) -> None:
    settings = daemon_settings(tmp_path, journal=on_postgres(tmp_path, postgres_dsn))
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        async with connected(daemon) as client:
            await client.send(
                {"id": "dsc", "to": "+250788100001", "text": "callback by GET"},
                {"id": "rm", "to": "+919812300001", "text": "callback by POST"},
                {"id": "bsg", "to": "+447700900001", "text": "polled by id"},
                {"id": "club", "to": "+380501000001", "text": "polled in batches"},
                {"id": "dsc", "to": "+250788100002", "text": "the same id again"},
            )
            await client.wait_for(lambda events: len(client.final_reports()) == 4)
        reports = {e["id"]: e["state"] for e in client.final_reports().values()}
        assert reports == dict.fromkeys(("dsc", "rm", "bsg", "club"), "DELIVRD")
        [original] = [e for e in client.of("accepted") if e["id"] == "dsc"]
        [duplicate] = client.of("rejected")
        assert "duplicate id 'dsc'" in duplicate["error"]
        assert original["msg_id"] in duplicate["error"]
    # The journal is the database: every message there, delivered; no SQLite file.
    assert not (tmp_path / "septet.db").exists()
    with psycopg.connect(postgres_dsn) as connection:
        rows = connection.execute("SELECT client_ref, status FROM messages").fetchall()
    assert sorted(rows) == [(ref, "delivered") for ref in ("bsg", "club", "dsc", "rm")]


async def test_a_line_is_answered_with_a_sentence_when_the_database_goes_away(
    tmp_path: Path,
) -> None:
    with TemporaryPostgres.started() as server:
        dsn = server.create_database()
        settings = daemon_settings(tmp_path, journal=on_postgres(tmp_path, dsn))
        async with running_daemon(settings) as daemon, connected(daemon) as client:
            await client.send({"id": "before", "to": "+250788100001", "text": "kept"})
            await client.wait_for(lambda events: bool(client.of("accepted")))
            server.stop()
            await client.send({"id": "after", "to": "+250788100002", "text": "no database"})
            with anyio.fail_after(30):  # a sentence within the connect timeout, no hang
                await client.wait_for(lambda events: bool(client.of("rejected")), 30)
            # The daemon runs on, and says it is not ready because of the journal.
            async with httpx.AsyncClient() as http:
                reply = await http.get(f"http://127.0.0.1:{daemon.http_port}/readyz")
    assert reply.status_code == 503
    assert reply.json()["journal"]["writable"] is False
    [rejected] = client.of("rejected")
    assert rejected["id"] == "after"
    assert rejected["error"].startswith("not accepted, send it again later: The journal at")
    assert "could not be written" in rejected["error"]
    assert "\n" not in rejected["error"]
