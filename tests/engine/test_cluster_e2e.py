"""Two or three `septet run` processes on one PostgreSQL journal, with the simulators in a
process of their own: messages submitted to any node are sent once (counted at the
simulators) and each client gets its events on its own connection wherever they were made
(the leader polls BSG and SMS Club, so their reports are made on it, not on the node the
client is connected to); `septet cluster status` shows the nodes; a node killed with -9
holding claims has them finished by another; readiness fails when the database goes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from bench.postgres import TemporaryPostgres
from engine.cluster import ClusterSettings
from engine.config import JournalSettings
from tests.engine.daemon_harness import Client, daemon_settings, running_daemon
from tests.engine.outcomes_harness import SmppClient, readyz
from tests.reliability.cluster_soak import (
    Node,
    count_not_final,
    start_node,
    taken_over,
    wait_for_all_final,
    wait_for_claims,
    write_node_config,
)
from tests.reliability.harness import configure_simulators, recipients_reached, simulators

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@contextmanager
def cluster(
    tmp_path: Path, dsn: str, count: int, *, smpp: bool = False
) -> Iterator[tuple[str, list[Node]]]:
    """`count` nodes started one after the other (the first is the leader)."""
    with simulators(tmp_path) as sim_url:
        configure_simulators(sim_url, {"dlr_delay_s": 0.1})
        nodes: list[Node] = []
        try:
            for number in range(count):
                config = write_node_config(tmp_path, number, sim_url, dsn, smpp=smpp)
                nodes.append(start_node(config, tmp_path, 0))
            yield sim_url, nodes
        finally:
            for node in nodes:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGTERM)
            for node in nodes:
                try:
                    node.process.wait(30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(10)


@asynccontextmanager
async def client_of(node: Node) -> AsyncIterator[Client]:
    stream = await anyio.connect_tcp("127.0.0.1", node.config.tcp_port)
    client = Client(stream)
    async with stream, anyio.create_task_group() as tg:
        tg.start_soon(client.serve_reader)
        yield client
        tg.cancel_scope.cancel()


def lines(prefix: str, first: int, count: int) -> list[dict[str, str]]:
    return [
        {"id": f"{prefix}-{n}", "to": f"{prefix}{n:05d}", "text": f"cluster {n % 3}"}
        for n in range(first, first + count)
    ]


async def test_any_node_accepts_and_each_client_gets_its_events_where_it_is(
    tmp_path: Path, postgres_dsn: str
) -> None:
    with cluster(tmp_path, postgres_dsn, 2) as (sim_url, nodes):
        leader, other = nodes
        async with client_of(other) as on_other, client_of(leader) as on_leader:
            # BSG (+44) and SMS Club (+380) report by polling, which only the leader does.
            mine = lines("+4477009", 0, 40) + lines("+3805012", 0, 40)
            theirs = lines("+4477009", 100, 40) + lines("+2507881", 100, 40)
            await on_other.send(*mine)
            await on_leader.send(*theirs)
            await on_other.wait_for(lambda _: len(on_other.final_reports()) == 80, 60)
            await on_leader.wait_for(lambda _: len(on_leader.final_reports()) == 80, 60)
            # A line sent again to the other node is the same message, not a second one.
            await on_leader.send(mine[0])
            await on_leader.wait_for(lambda _: any(e["event"] == "rejected" for e in _))
        # Each client got its own messages' events only, each message one final report.
        assert {e["id"] for e in on_other.of("accepted")} == {line["id"] for line in mine}
        assert {e["id"] for e in on_leader.of("accepted")} == {line["id"] for line in theirs}
        [duplicate] = on_leader.of("rejected")
        assert duplicate["id"] == mine[0]["id"]
        assert "duplicate" in duplicate["error"]
        mine_ids = {e["msg_id"] for e in on_other.of("accepted")}
        assert {e["msg_id"] for e in on_other.of("dlr")} <= mine_ids
        assert len(on_other.of("dlr")) == 80
        # Sent once each, whichever node claimed them.
        reached = recipients_reached(sim_url)
        sent = [line["to"].lstrip("+") for line in mine + theirs]
        assert [reached.get(to, 0) for to in sent] == [1] * len(sent)
        status = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "engine",
                "cluster",
                "status",
                "--config",
                str(nodes[0].config.path),
            ],
            check=False,
        )
        assert status.returncode == 0, status.stderr
        shown = status.stdout.decode()
        assert f"{leader.name}" in shown
        assert f"{other.name}" in shown
        assert "live nodes   2 of 2" in shown


async def test_a_node_killed_holding_claims_has_them_finished_by_another(
    tmp_path: Path, postgres_dsn: str
) -> None:
    with cluster(tmp_path, postgres_dsn, 2) as (sim_url, nodes):
        # Slow provider answers: the victim's requests are in flight when it dies. BSG and
        # SMS Club deduplicate a resend and report by polling (done by the survivor, the
        # leader), so every message ends with its report, none waits for a deadline.
        configure_simulators(sim_url, {"latency_ms": 300.0})
        survivor, victim = nodes
        sent = lines("+4477009", 0, 60) + lines("+3805012", 0, 60)
        async with client_of(victim) as client:
            await client.send(*sent)
            await client.wait_for(lambda _: len(client.of("accepted")) == len(sent))
            assert await wait_for_claims(victim, postgres_dsn, 30) > 0
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        # The survivor takes the claims over once the lease (2 s) has passed, and the
        # rest of what the victim accepted is sent by it too.
        await wait_for_all_final(postgres_dsn, 90)
        assert await anyio.to_thread.run_sync(count_not_final, postgres_dsn) == 0
        async with httpx.AsyncClient() as http:
            ready = (await http.get(f"http://127.0.0.1:{survivor.config.http_port}/readyz")).json()
        assert ready["node"]["holds_lease"] is True
        reached = recipients_reached(sim_url)
    assert victim.name in taken_over([survivor.log])
    # Each message reached its provider exactly once: a resend of one the provider already
    # had was answered as its duplicate.
    assert [reached.get(line["to"].lstrip("+"), 0) for line in sent] == [1] * len(sent)


async def test_readiness_fails_with_the_database_and_says_why(tmp_path: Path) -> None:
    with TemporaryPostgres.started() as server:
        journal = JournalSettings(
            backend="postgresql", dsn=server.create_database(), path=str(tmp_path / "septet.db")
        )
        settings = daemon_settings(
            tmp_path, journal=journal, cluster=ClusterSettings(heartbeat_s=0.5, lease_s=1.5)
        )
        async with running_daemon(settings) as daemon:
            status, ready = await readyz(daemon)
            assert (status, ready["ready"], ready["journal"]["writable"]) == (200, True, True)
            server.stop()
            # Each probe answers within its bound (the journal's wait is 2 s), and once
            # the heartbeat is older than the lease the node says it holds none.
            with anyio.fail_after(30):
                while True:
                    with anyio.fail_after(5):
                        status, ready = await readyz(daemon)
                    if not ready["node"]["holds_lease"]:
                        break
                    await anyio.sleep(0.1)  # a probe's interval, as a load balancer's
    assert status == 503
    assert ready["ready"] is False
    assert ready["journal"]["writable"] is False


async def test_smpp_receipts_made_on_another_node_reach_the_bind(
    tmp_path: Path, postgres_dsn: str
) -> None:
    with cluster(tmp_path, postgres_dsn, 2, smpp=True) as (sim_url, nodes):
        other = nodes[1]  # nodes[0] leads
        assert other.config.smpp_port is not None
        esme = SmppClient(other.config.smpp_port)
        await esme.bind()
        try:
            # BSG reports by polling, which only the leader does: each receipt is made
            # there and must come back to this node's bind.
            ids = await esme.submit([f"+44770090{n:04d}" for n in range(5)], "cluster smpp")
            with anyio.fail_after(60):
                receipts = await esme.receipts(5)
        finally:
            await esme.close()
        reached = recipients_reached(sim_url)
    assert sorted(receipt["id"] for receipt in receipts) == sorted(ids)
    assert {receipt["stat"] for receipt in receipts} <= {"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD"}
    assert [reached.get(f"44770090{n:04d}", 0) for n in range(5)] == [1] * 5
