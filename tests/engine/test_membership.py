"""A node's identity and membership on the SQLite journal (one node): its name in /readyz,
the metrics and the log, its heartbeat, and `septet cluster status`; behaviour with one
node is the single process's. The PostgreSQL side (several nodes, takeover) is
tests/engine/test_cluster_pg.py."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest
import structlog

from engine.cluster import ClusterSettings
from engine.journal.sqlite import open_sqlite_journal
from engine.membership import Membership
from engine.models import Message
from tests.engine.daemon_harness import daemon_settings, running_daemon
from tests.engine.outcomes_harness import readyz
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio


async def test_a_named_node_shows_its_name_in_readyz_metrics_and_logs(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path, cluster=ClusterSettings(node="edge-1"))
    output = io.StringIO()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    try:
        async with running_daemon(settings) as daemon:
            status, report = await readyz(daemon)
            async with httpx.AsyncClient() as client:
                exposition = (await client.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text
    finally:
        structlog.reset_defaults()
    assert status == 200
    assert report["ready"] is True
    assert report["node"]["name"] == "edge-1"
    assert report["node"]["holds_lease"] is True
    assert 0 <= report["node"]["heartbeat_age_s"] < 15
    assert 'septet_node_info{node="edge-1"} 1.0' in exposition
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    started = next(line for line in lines if line["event"] == "started")
    assert started["node"] == "edge-1"
    # Every line the daemon logs carries the node, not only the start line.
    assert all(line.get("node") == "edge-1" for line in lines)


async def test_an_unnamed_node_is_its_host_and_a_suffix_drawn_per_start(tmp_path: Path) -> None:
    names = []
    for _ in range(2):
        async with running_daemon(daemon_settings(tmp_path)) as daemon:
            names.append((await readyz(daemon))[1]["node"]["name"])
    first, second = names
    assert first != second
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0]


async def test_the_sqlite_journal_is_one_node_holding_every_claim(tmp_path: Path) -> None:
    now = 1_000_000.0
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        assert await journal.nodes() == []
        membership = Membership(
            journal, "solo", "run-1", ClusterSettings(heartbeat_s=1, lease_s=3), clock=lambda: now
        )
        await membership.join()
        [group] = await journal.accept([[make_message("a"), make_message("b")]])
        assert isinstance(group, list)
        await journal.claim(group[:1], 0, now)
        [record] = await journal.nodes()
        assert (record.node, record.run, record.claims, record.left_at) == (
            "solo",
            "run-1",
            1,
            None,
        )
        assert membership.holds_lease(now + 3)
        assert not membership.holds_lease(now + 3.1)
        now += 2
        assert await membership.beat()
        assert (await journal.nodes())[0].heartbeat_at == now
        # Nothing is ever taken over: the claim stays this node's, in flight.
        assert await membership.take_over(no_takeover) == {}
        assert [m.msg_id for m in await journal.inflight()] == [group[0].msg_id]
        await membership.leave()
        assert (await journal.nodes())[0].left_at == now
        assert msgspec.to_builtins(await journal.nodes())  # plain data for the admin API


async def test_what_runs_once_per_cluster_runs_while_this_node_leads(tmp_path: Path) -> None:
    now = 2_000_000.0
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        membership = Membership(
            journal, "solo", "run-1", ClusterSettings(heartbeat_s=1, lease_s=3), clock=lambda: now
        )
        assert not leads(membership)
        await membership.join()
        assert leads(membership)  # the only node leads
        runs: list[str] = []
        started = anyio.Event()

        async def duty() -> None:
            runs.append("started")
            started.set()
            try:
                await anyio.sleep_forever()
            finally:
                runs.append("stopped")

        async with anyio.create_task_group() as tg:
            tg.start_soon(membership.while_leading, duty)
            with anyio.fail_after(5):
                await started.wait()
            # No heartbeat for longer than the lease: this node may be taken for dead, so
            # it leads nothing and its duty stops.
            now += 3.5
            await membership.take_over(no_takeover)
            assert not leads(membership)
            await anyio.wait_all_tasks_blocked()
            assert runs == ["started", "stopped"]
            started = anyio.Event()
            assert await membership.beat()
            await membership.take_over(no_takeover)
            assert leads(membership)
            with anyio.fail_after(5):
                await started.wait()
            assert runs == ["started", "stopped", "started"]
            tg.cancel_scope.cancel()


async def no_takeover(claims: Sequence[Message]) -> dict[str, int]:
    raise AssertionError(f"nothing is taken over with one node: {claims}")


def leads(membership: Membership) -> bool:
    return membership.leading
