"""`septet cluster status` (the CLI in a process of its own) on the SQLite journal: through
a running daemon, its one node live with its claims and the backlog; on the file when no
daemon runs, no node; and a journal it cannot read is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cluster import ClusterSettings
from tests.engine.commands.test_admin_commands import cli_config, septet
from tests.engine.daemon_harness import connected, daemon_settings, iso_in, running_daemon

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_cluster_status_through_the_daemon_then_on_the_file(tmp_path: Path) -> None:
    config = cli_config(tmp_path)
    settings = daemon_settings(tmp_path, cluster=ClusterSettings(node="solo-1"))
    async with running_daemon(settings) as daemon:
        admin = f"http://127.0.0.1:{daemon.http_port}"
        async with connected(daemon) as client:
            later = iso_in(3600)
            await client.send(
                {"id": "later-1", "to": "+250788100002", "text": "Hi", "schedule_at": later},
                {"id": "later-2", "to": "+250788100003", "text": "Hi", "schedule_at": later},
            )
            await client.wait_for(lambda _: len(client.of("accepted")) == 2)
        shown = await septet(config, "cluster", "status", admin=admin)
        assert shown.code == 0, shown.err
        lines = shown.out.splitlines()
        assert lines[0].split() == ["node", "state", "heartbeat", "started", "claims"]
        assert lines[1].split()[:2] == ["solo-1", "live"]
        assert lines[1].split()[-1] == "0"
        assert lines[2] == "live nodes   1 of 1 (lease 15 s)"
        assert lines[3] == "backlog      accepted 2, inflight 0, submitted 0"
        as_json = await septet(config, "cluster", "status", "--json", admin=admin)
        document = json.loads(as_json.out)
        assert [node["node"] for node in document["nodes"]] == ["solo-1"]
        assert document["nodes"][0]["heartbeat_age_s"] < 15
    on_file = await septet(config, "cluster", "status")
    assert on_file.code == 0, on_file.err
    assert on_file.out.splitlines() == [
        "no node has joined: none is running on this journal",
        "live nodes   0 of 0 (lease 15 s)",
        "backlog      accepted 2, inflight 0, submitted 0",
    ]


async def test_cluster_status_of_no_journal_or_a_broken_one_is_one_sentence(
    tmp_path: Path,
) -> None:
    config = cli_config(tmp_path)
    missing = await septet(config, "cluster", "status")
    assert (missing.code, missing.err.strip()) == (
        1,
        f"septet cluster: No journal at {tmp_path / 'septet.db'} ([journal] path): nothing"
        " to read.",
    )
    (tmp_path / "septet.db").write_bytes(b"not a database" * 300)
    broken = await septet(config, "cluster", "status")
    assert broken.code == 1
    assert broken.err.startswith("septet cluster: ")
    assert "Traceback" not in broken.err
    assert len(broken.err.strip().splitlines()) == 1
