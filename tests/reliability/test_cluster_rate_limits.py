"""Issue 20, point 4: a bridge's limits hold for the whole cluster. Three separate OS
processes, each with its own Redis client and shared gate (engine.cluster_limits) on one
real redis-server, ask for turns as fast as they can for 10 s on two bridges: one limited
to 200 requests/s, one to 2,000 messages/s (batches of 5 to 25). Counted on the Redis
server's clock: each total is within 2% of limit × 10 s (not three times it), and no
one-second window holds more than the limit."""

from __future__ import annotations

import pytest

from bench.cluster_rates import run_rates
from bench.redis_server import RedisServer

PROCESSES = 3
SECONDS = 10.0
REQUESTS_PER_S = 200.0
MESSAGES_PER_S = 2000.0


@pytest.mark.slow
def test_three_processes_together_keep_each_bridges_limit_in_every_second(
    redis_server: RedisServer,
) -> None:
    plan, held, per_process = run_rates(
        redis_server,
        processes=PROCESSES,
        seconds=SECONDS,
        requests_per_s=REQUESTS_PER_S,
        messages_per_s=MESSAGES_PER_S,
        concurrency=20,
    )
    figures = {h.bridge: h for h in held}
    assert set(figures) == {"requests", "messages"}
    for bridge, limit in (("requests", REQUESTS_PER_S), ("messages", MESSAGES_PER_S)):
        h = figures[bridge]
        assert h.limit == limit
        assert h.expected == round(limit * SECONDS)
        assert abs(h.total_error) <= 0.02, (bridge, h.total, h.per_second)
        assert h.busiest_window <= limit, (bridge, h.busiest_window, h.per_second)
    # Every process had its share: the limit was shared, not one process's alone.
    total = sum(per_process)
    assert len(per_process) == PROCESSES
    assert all(grants >= total / (2 * PROCESSES) for grants in per_process), per_process
    assert plan.seconds == SECONDS
