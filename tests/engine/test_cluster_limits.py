"""Tests for engine.cluster_limits against a real redis-server (tests/conftest.py starts one
per test): the shared GCRA gives the local RequestLimiter's grants, no one-second window
holds more than the limit (requests, and messages in batches), two clients share one
limit, a turn beyond the horizon is a Hold, a Redis that lost its data holds the bridge,
and an unreachable Redis holds every turn (named once in the log) until it is back. And
an account's bucket shared by the nodes (SharedAccountBucket, engine.account_limits)."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis

from bench.redis_server import RedisServer
from engine.account_limits import AccountLimit
from engine.bridge_limits import Hold, HoldCause
from engine.cluster_limits import (
    GCRA_SCRIPT,
    HORIZON_S,
    WINDOW_S,
    Grant,
    SharedAccountBucket,
    SharedGate,
    account_key,
    keys_of,
    location,
    open_client,
)
from engine.ratelimit import RequestLimiter

pytestmark = pytest.mark.anyio

US = 1_000_000
# A horizon long enough to reserve a whole test's grants at once (no real waiting).
LONG_HORIZON_S = 600.0


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis = open_client(redis_server.url)
    yield redis
    await redis.aclose()


def gate(client: Redis, bridge: str = "b", where: str = "Redis", **limits: float) -> SharedGate:
    rates = {
        "requests_per_s": 0.0,
        "requests_burst": 1.0,
        "messages_per_s": 0.0,
        "messages_burst": 1.0,
        "horizon_s": LONG_HORIZON_S,
        "fresh_hold_s": 0.0,
    }
    rates.update(limits)
    return SharedGate(client, bridge, where=where, **rates)


async def grants(gate: SharedGate, asks: list[tuple[int, int]]) -> list[Grant]:
    given: list[Grant] = []
    for requests, messages in asks:
        answer = await gate.grant(requests, messages)
        assert isinstance(answer, Grant), answer
        given.append(answer)
    return given


def busiest_window(weighted: list[tuple[int, int]], window_us: int = US) -> int:
    """The most units in any window [t, t + window) of (time µs, units) grants: checked
    from every grant, where the busiest window of a finite set can always start."""
    ordered = sorted(weighted)
    return max(
        sum(units for at, units in ordered if start <= at < start + window_us)
        for start, _ in ordered
    )


async def test_requests_match_the_local_limiter(client: Redis) -> None:
    local = RequestLimiter(10.0, 3.0)
    expected = [local.take(1, 0.0) for _ in range(20)]
    given = await grants(gate(client, requests_per_s=10.0, requests_burst=3.0), [(1, 0)] * 20)
    first = given[0].asked_us
    # The asks are microseconds apart on the server's clock, not all at one instant.
    offsets = [(g.at_us - first) / US for g in given]
    assert offsets == [pytest.approx(e, abs=0.005) for e in expected]
    assert busiest_window([(g.at_us, 1) for g in given]) == 10


async def test_no_one_second_window_holds_more_messages_than_the_limit(client: Redis) -> None:
    shared = gate(
        client, requests_per_s=40.0, requests_burst=40.0, messages_per_s=200.0, messages_burst=50.0
    )
    draw = random.Random(20)
    asks = [(1, draw.randint(1, 50)) for _ in range(400)]
    given = await grants(shared, asks)
    messages = [(g.at_us, n) for g, (_, n) in zip(given, asks, strict=True)]
    requests = [(g.at_us, 1) for g in given]
    assert busiest_window(messages) <= 200
    assert busiest_window(requests) <= 40
    # And the limit is used, not just kept: a batch waits only until enough of the oldest
    # grants left the window, so batches of up to a quarter of the limit still leave
    # most of it used (docs/design.md, "Cluster mode", has the figures).
    span_s = (given[-1].at_us - given[0].at_us) / US
    assert 0.85 * 200 <= sum(n for _, n in asks[:-1]) / span_s <= 200


async def test_a_batch_larger_than_a_second_of_messages_goes_alone(client: Redis) -> None:
    shared = gate(client, messages_per_s=10.0, messages_burst=10.0)
    small, large, after = await grants(shared, [(0, 4), (0, 25), (0, 1)])
    assert large.at_us - small.at_us >= WINDOW_S * US  # the window emptied first
    assert after.at_us - large.at_us >= WINDOW_S * US


async def test_two_clients_share_one_limit(redis_server: RedisServer) -> None:
    nodes = [open_client(redis_server.url) for _ in range(2)]
    try:
        gates = [gate(node, requests_per_s=20.0, requests_burst=5.0) for node in nodes]
        given: list[Grant] = []
        for turn in range(60):
            given += await grants(gates[turn % 2], [(1, 0)])
        assert busiest_window([(g.at_us, 1) for g in given]) == 20
        span_s = (given[-1].at_us - given[0].at_us) / US
        assert 59 / span_s == pytest.approx(20.0, rel=0.1)
        # Other bridges have limits of their own.
        other = gate(nodes[0], bridge="other", requests_per_s=20.0, requests_burst=5.0)
        assert (await grants(other, [(1, 0)]))[0].wait_s < 0.05
    finally:
        for node in nodes:
            await node.aclose()


async def test_a_turn_beyond_the_horizon_is_a_hold_and_takes_nothing(client: Redis) -> None:
    shared = gate(client, requests_per_s=10.0, requests_burst=1.0, horizon_s=0.5)
    given = await grants(shared, [(1, 0)] * 6)  # 0, 0.1 … 0.5 s ahead
    held = await shared.grant(1, 0)
    assert isinstance(held, Hold)
    assert held.cause is HoldCause.AHEAD
    assert held.retry_s == pytest.approx(0.1, abs=0.02)
    state = await client.hgetall(keys_of("b")[0])
    assert int(state[b"last"]) == given[-1].at_us  # the hold reserved nothing


async def test_missing_state_holds_the_bridge_until_earlier_grants_left_their_window(
    redis_server: RedisServer, client: Redis
) -> None:
    # Grants reserved up to the horizon ahead (no hold on this first use, to have some).
    before = gate(client, requests_per_s=10.0, requests_burst=10.0, horizon_s=HORIZON_S)
    given: list[Grant] = []
    while isinstance(answer := await before.grant(1, 0), Grant):
        given.append(answer)
    assert given[-1].wait_s > 0.9 * HORIZON_S
    redis_server.restart()  # no persistence: the state is gone
    after = SharedGate(
        client,
        "b",
        requests_per_s=10.0,
        requests_burst=10.0,
        messages_per_s=0.0,
        messages_burst=1.0,
    )
    held = await after.grant(1, 0)
    while held == Hold(HoldCause.UNREACHABLE, 0.5):  # the client reconnects on its next call
        held = await after.grant(1, 0)
    # The hold is one horizon and one window; the part beyond the horizon is a Hold.
    assert isinstance(held, Hold)
    assert held.cause is HoldCause.AHEAD
    assert held.retry_s == pytest.approx(WINDOW_S, abs=0.05)
    floor = int((await client.hgetall(keys_of("b")[0]))[b"floor"])
    # No grant made before the loss shares a window with one made after it.
    assert floor >= given[-1].at_us + WINDOW_S * US


async def test_an_unreachable_redis_holds_every_turn_until_it_is_back(
    redis_server: RedisServer, client: Redis
) -> None:
    where = location(redis_server.url)
    shared = gate(client, where=where, requests_per_s=100.0, requests_burst=100.0)
    assert isinstance(await shared.grant(1, 1), Grant)
    assert shared.fault is None
    redis_server.stop()
    with structlog.testing.capture_logs() as logged:
        answers = [await shared.reserve(1, 1) for _ in range(3)]
    assert answers == [Hold(HoldCause.UNREACHABLE, 0.5)] * 3
    fault = shared.fault or ""
    assert fault.startswith(f"the cluster's rate limits ({where}) cannot be reached")
    assert "nothing is sent through bridge b" in fault
    # Said once, not at every turn.
    assert [e["event"] for e in logged] == ["cluster_limits_unreachable"]
    redis_server.start()
    with structlog.testing.capture_logs() as logged:
        answer = await shared.reserve(1, 1)
    assert isinstance(answer, float)
    assert shared.fault is None
    assert [e["event"] for e in logged] == ["cluster_limits_back"]


async def test_the_script_runs_on_the_server_clock(client: Redis) -> None:
    # Two gates whose callers' clocks would disagree still see one timeline: the grant
    # and ask times come from Redis's TIME.
    seconds, micros = await client.time()
    shared = gate(client, requests_per_s=5.0, requests_burst=1.0)
    given = await grants(shared, [(1, 0)])
    assert given[0].asked_us - (seconds * US + micros) < 0.5 * US
    assert GCRA_SCRIPT.count("redis.call('TIME')") == 1


def test_location_never_shows_a_password() -> None:
    assert location("redis://:s3cret@10.0.0.5:6380/2") == "Redis at redis://10.0.0.5:6380/2"
    assert location("redis://user:pw@host") == "Redis at redis://host:6379/0"
    assert location("unix:///run/redis.sock") == "Redis at /run/redis.sock"


async def test_a_unix_socket_url_reaches_the_same_limits(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", unix_socket=True)
    server.start()
    try:
        assert server.unix_url is not None
        assert location(server.unix_url) == f"Redis at {server.socket_path}"
        over_tcp, over_unix = open_client(server.url), open_client(server.unix_url)
        try:
            first = await grants(gate(over_tcp, requests_per_s=10.0), [(1, 0)])
            second = await grants(gate(over_unix, requests_per_s=10.0), [(1, 0)])
            # One bucket, whichever way it is reached: the second turn is 0.1 s after.
            assert second[0].at_us - first[0].at_us == pytest.approx(0.1 * US, abs=1000)
        finally:
            await over_tcp.aclose()
            await over_unix.aclose()
    finally:
        server.stop()


async def script_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def test_askers_beyond_the_horizon_wait_in_line_without_asking_redis(client: Redis) -> None:
    shared = gate(client, requests_per_s=10.0, requests_burst=1.0, horizon_s=0.5)
    assert all(
        isinstance(answer, float) for answer in [await shared.reserve(1, 0) for _ in range(6)]
    )
    first = await shared.reserve(1, 0)  # Redis: the next turn is beyond the horizon
    assert isinstance(first, Hold)
    assert first.cause is HoldCause.AHEAD
    asked = await script_calls(client)
    line = [await shared.reserve(1, 0) for _ in range(20)]
    # Not asked again: each is told to come back one turn (0.1 s) after the one before.
    assert await script_calls(client) == asked
    assert all(isinstance(h, Hold) and h.cause is HoldCause.AHEAD for h in line)
    waits = [h.retry_s for h in line if isinstance(h, Hold)]
    assert waits[0] == pytest.approx(first.retry_s + 0.1, abs=0.02)
    assert [later - earlier for earlier, later in itertools.pairwise(waits)] == [
        pytest.approx(0.1, abs=0.01)
    ] * 19


async def test_an_accounts_tokens_are_shared_by_every_node(redis_server: RedisServer) -> None:
    # One token a second, five at once: two nodes' takes come out of the same five.
    nodes = [open_client(redis_server.url) for _ in range(2)]
    try:
        one, two = (SharedAccountBucket(n, "acme", rate=1.0, burst=5.0) for n in nodes)
        assert await one.take(3) == 0.0
        assert await two.take(2) == 0.0
        wait = await two.take(1)  # nothing taken: it would fit in about a second
        assert wait is not None
        assert 0.9 < wait <= 1.0
        await one.give(2)  # two messages the journal did not accept after all
        assert await two.take(2) == 0.0
        assert (await one.take(1) or 0.0) > 0.9
        # Another account has a bucket of its own, and nothing outlives a full bucket.
        other = SharedAccountBucket(nodes[0], "other", rate=1.0, burst=5.0)
        assert await other.take(5) == 0.0
        ttl_ms = await nodes[0].pttl(account_key("acme"))
        assert 0 < ttl_ms <= 5_001
    finally:
        for node in nodes:
            await node.aclose()


async def test_a_refused_take_leaves_the_account_without_room_until_it_would_fit(
    client: Redis,
) -> None:
    limit = AccountLimit(rate=2.0, burst=1.0)
    limit.shared = SharedAccountBucket(client, "acme", rate=2.0, burst=1.0)
    now = 1_000.0
    assert limit.has_room(now)
    assert await limit.take(1, now) == 0.0
    wait = await limit.take(1, now)
    assert 0.4 < wait <= 0.5
    assert not limit.has_room(now)  # the SMPP server refuses at once, asking nobody
    assert limit.has_room(now + wait)


async def test_an_unreachable_redis_leaves_each_account_to_its_nodes_own_bucket(
    redis_server: RedisServer, client: Redis
) -> None:
    where = location(redis_server.url)
    limit = AccountLimit(rate=1.0, burst=2.0)
    limit.shared = SharedAccountBucket(client, "acme", rate=1.0, burst=2.0, where=where)
    redis_server.stop()
    now = 1_000.0
    with structlog.testing.capture_logs() as logged:
        answers = [await limit.take(1, now) for _ in range(3)]
    # This node's own bucket answers: two fit, the third waits a second.
    assert answers[:2] == [0.0, 0.0]
    assert answers[2] == pytest.approx(1.0)
    assert [e["event"] for e in logged] == ["account_limits_unreachable"]
    assert logged[0]["problem"].startswith(
        f"the cluster's account limits ({where}) cannot be reached"
    )
    redis_server.start()
    with structlog.testing.capture_logs() as logged:
        assert await limit.take(1, now) == 0.0  # the cluster's bucket again: a fresh one
    assert [e["event"] for e in logged] == ["account_limits_back"]
