"""The daemon with `[cluster] redis` against a real redis-server: a bridge's rate limits
are kept in Redis; when Redis stops, nothing more is sent through the bridge and /readyz
names it with the reason (and septet_rate_limits_reachable is 0 for it); when Redis is
back, what waited goes out. An account's messages/s are taken from the same Redis, so
another node's accepts count against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bench.redis_server import RedisServer
from engine.accounts import AccountSettings
from engine.cluster import ClusterSettings
from engine.cluster_limits import SharedAccountBucket, keys_of, open_client
from tests.engine.daemon_harness import Daemon, connected, daemon_settings, running_daemon
from tests.engine.outcomes_harness import readyz

pytestmark = pytest.mark.anyio


def submitted(events: list[dict[str, Any]], client_id: str) -> bool:
    return any(e["event"] == "submitted" and e["id"] == client_id for e in events)


async def test_redis_down_pauses_the_bridge_and_readyz_says_so_until_it_is_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = daemon_settings(tmp_path, cluster=ClusterSettings(redis=redis_server.url))
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send({"id": "before", "to": "+250782589800", "text": "one"})
        await client.wait_for(lambda events: submitted(events, "before"))
        # The bridge's turns were taken in Redis, not in the process.
        assert await redis_keys(redis_server) >= set(keys_of("dsc"))
        sent_before = (await daemon.sim_counters())["dsc"]["accepted_total"]

        redis_server.stop()
        await client.send({"id": "during", "to": "+250782589801", "text": "two"})
        # /readyz is asked (a bounded number of times) until the dispatcher has met the
        # outage: the bridge's next turn is where it shows.
        for _ in range(200):
            report = (await readyz(daemon))[1]
            if "dsc" in report["unready_bridges"]:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail(f"/readyz never named bridge dsc with Redis stopped: {report}")
        reason = report["unready_bridges"]["dsc"]
        assert reason.startswith(
            f"the cluster's rate limits (Redis at redis://127.0.0.1:{redis_server.port}/0)"
            " cannot be reached"
        )
        assert reason.endswith("nothing is sent through bridge dsc until they answer")
        # The other bridges can still send: the daemon as a whole stays ready.
        assert report["ready"] is True
        assert await reachable(daemon) == {
            "dsc": 0.0,
            "routemobile": 1.0,
            "bsg": 1.0,
            "smsclub": 1.0,
        }
        # Accepted, but not sent while the limits cannot be asked.
        assert not submitted(client.events, "during")
        assert (await daemon.sim_counters())["dsc"]["accepted_total"] == sent_before

        redis_server.start()
        await client.wait_for(lambda events: submitted(events, "during"))
        assert "dsc" not in (await readyz(daemon))[1]["unready_bridges"]
        assert (await reachable(daemon))["dsc"] == 1.0
    assert [e["id"] for e in client.of("accepted")] == ["before", "during"]


async def reachable(daemon: Daemon) -> dict[str, float]:
    """septet_rate_limits_reachable by bridge, from the daemon's /metrics."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")
    return {
        sample.labels["bridge"]: sample.value
        for family in text_string_to_metric_families(reply.text)
        if family.name == "septet_rate_limits_reachable"
        for sample in family.samples
    }


async def redis_keys(server: RedisServer) -> set[str]:
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        return {str(key) for key in await client.keys("septet:limits:*")}
    finally:
        await client.aclose()


async def test_an_accounts_rate_is_shared_with_the_other_nodes_through_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Two messages at once, then one a thousand seconds. Another node (this test, with the
    # same bucket in Redis) took both tokens: the daemon's accept finds none left.
    accounts = {"acme": AccountSettings(messages_per_s=0.001, burst=2)}
    settings = daemon_settings(
        tmp_path, accounts=accounts, cluster=ClusterSettings(redis=redis_server.url)
    )
    other_node = open_client(redis_server.url)
    try:
        bucket = SharedAccountBucket(other_node, "acme", rate=0.001, burst=2)
        async with running_daemon(settings) as daemon, connected(daemon) as client:
            await client.send({"id": "first", "to": "+250782589800", "text": "one"})
            await client.wait_for(lambda events: bool(client.of("accepted")))
            assert await bucket.take(1) == 0.0  # the other node's message: the last token
            await client.send({"id": "second", "to": "+250782589801", "text": "two"})
            await client.wait_for(lambda events: bool(client.of("rejected")))
            (refused,) = client.of("rejected")
    finally:
        await other_node.aclose()
    assert refused["id"] == "second"
    assert refused["error"].startswith(
        "account 'acme' is over its 0.001 messages per second: send it again in"
    )
