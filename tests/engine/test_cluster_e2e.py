"""Two or three `septet run` processes on one PostgreSQL journal, with the simulators in a
process of their own: messages submitted to any node are sent once (counted at the
simulators) and each client gets its events on its own connection wherever they were made
(the leader polls BSG and SMS Club, so their reports are made on it, not on the node the
client is connected to); `septet cluster status` shows the nodes; a node killed with -9
holding claims has them finished by another; readiness fails when the database goes; an
SMPP receipt reaches the account's receiving bind on any node, once, even when the node
that accepted the message was killed before its report."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx
import psycopg
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
        # leader), so every message ends with its report, none waits for a deadline. SMS
        # Club's 9 requests a second are lifted (sends and polls queued behind them for
        # seconds after the takeover; the limit is tested on its own elsewhere).
        configure_simulators(sim_url, {"latency_ms": 300.0, "smsclub_rate_limit": None})
        survivor, victim = nodes
        sent = lines("+4477009", 0, 60) + lines("+3805012", 0, 60)
        async with client_of(victim) as client:
            await client.send(*sent)
            await client.wait_for(lambda _: len(client.of("accepted")) == len(sent))
            assert await wait_for_claims(victim, postgres_dsn, 30) > 0
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        # The survivor takes the claims over once the lease (LEASE_S) has passed, and the
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


def count_of(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(sql).fetchone()
    return int(row[0]) if row is not None else 0


async def wait_for_count(dsn: str, sql: str, wanted: int, timeout_s: float = 30) -> None:
    """Until `sql` counts `wanted` rows (AssertionError at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while (found := await anyio.to_thread.run_sync(count_of, dsn, sql)) != wanted:
        assert time.monotonic() < deadline, f"{sql}: {found}, not {wanted}"
        await anyio.sleep(0.05)  # a poll of the database's state


RECEIPTS_OWED = "SELECT count(*) FROM smpp_receipts"


async def receive_once(esme: SmppClient, dsn: str, count: int) -> list[dict[str, str]]:
    """The `count` receipts `esme` is owed; once they are acknowledged (none owed in the
    store, so no node can claim one again), an enquire_link round trip shows that
    nothing came after them."""
    with anyio.fail_after(30):
        receipts = await esme.receipts(count)
    await wait_for_count(dsn, RECEIPTS_OWED, 0)
    await esme.ping()
    assert len(esme.received) == count, [pdu.short_message for pdu in esme.received]
    return receipts


async def test_an_smpp_receipt_goes_to_the_receiver_bound_on_another_node_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    with cluster(tmp_path, postgres_dsn, 2, smpp=True) as (sim_url, nodes):
        configure_simulators(sim_url, {"dlr_mix": {"DELIVRD": 1.0}})
        # The ESME transmits to the leader and receives on the other node. BSG (+44)
        # reports by polling, which only the leader does: each receipt is made there.
        submitting, receiving = nodes
        assert receiving.config.smpp_port is not None
        assert submitting.config.smpp_port is not None
        receiver = SmppClient(receiving.config.smpp_port, bind="receiver")
        transmitter = SmppClient(submitting.config.smpp_port, bind="transmitter")
        await receiver.bind()
        await transmitter.bind()
        try:
            to = [f"+44770090{n:04d}" for n in range(3)]
            ids = await transmitter.submit(to, "to the other node")
            receipts = await receive_once(receiver, postgres_dsn, len(to))
        finally:
            await transmitter.close()
            await receiver.close()
        reached = recipients_reached(sim_url)
    assert sorted((r["id"], r["stat"]) for r in receipts) == sorted((i, "DELIVRD") for i in ids)
    assert [reached.get(number.lstrip("+"), 0) for number in to] == [1] * len(to)


async def test_an_smpp_receipt_owed_by_a_killed_node_is_delivered_by_another_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    with cluster(tmp_path, postgres_dsn, 2, smpp=True) as (sim_url, nodes):
        # BSG (+44) reports by polling, which only the leader (the survivor) does, a
        # second after the message reached it: after the kill.
        configure_simulators(sim_url, {"dlr_mix": {"DELIVRD": 1.0}, "dlr_delay_s": 1.0})
        survivor, victim = nodes
        assert survivor.config.smpp_port is not None
        assert victim.config.smpp_port is not None
        esme = SmppClient(victim.config.smpp_port)
        await esme.bind()
        (message_id,) = await esme.submit(["+447700900001"], "before the kill")
        await wait_for_count(postgres_dsn, "SELECT count(*) FROM messages WHERE state = 2", 1)
        victim.process.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(victim.process.wait, 10)
        with contextlib.suppress(OSError):
            esme.client.disconnect()
        again = SmppClient(survivor.config.smpp_port)
        await again.bind()
        try:
            (receipt,) = await receive_once(again, postgres_dsn, 1)
        finally:
            await again.close()
    assert (receipt["id"], receipt["stat"]) == (message_id, "DELIVRD")
