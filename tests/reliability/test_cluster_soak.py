"""Cluster soak, CI size: three nodes on one PostgreSQL journal, a node killed with -9 while
it holds claims in flight in each round and restarted as a new node, and every message
counted at the simulators: none lost, none sent twice, each one true final outcome, and
what each killed node held finished by another node's takeover.

The same `cluster_soak` the long run uses (`python -m tests.reliability.cluster_soak`),
with small numbers. SEPTET_SOAK_SEED replays a run; the seed is in every failure message.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.reliability.cluster_soak import cluster_soak
from tests.reliability.harness import Fate

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.mark.timeout(400)
async def test_nodes_killed_mid_send_lose_nothing_and_send_nothing_twice(
    tmp_path: Path, postgres_dsn: str
) -> None:
    seed = int(os.environ.get("SEPTET_SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
    report = await cluster_soak(tmp_path, postgres_dsn, nodes=3, messages=2000, kills=3, seed=seed)
    problems = "\n".join(report.problems())
    where = f"seed {seed} (replay: SEPTET_SOAK_SEED={seed})\n{report.summary()}\n{problems}"

    # Every node accepted lines, and each kill caught its node with claims in flight.
    assert len(report.accepted_by_node) >= 3, where
    assert all(kill.claims > 0 for kill in report.kills), where
    # What each killed node held was taken over by a live node (a restarted node is a
    # new one: nothing else could have finished it).
    assert {kill.node for kill in report.kills} <= set(report.taken_over), where
    assert report.journaled == report.messages, where
    assert report.missing == [], where
    assert report.count(Fate.DOUBLE) == 0, where
    assert report.count(Fate.MISREPORTED) == 0, where
    assert report.count(Fate.WAITING) == 0, where
    assert report.count(Fate.FAILED) == 0, where
    assert report.count(Fate.REPORT_LOST) == 0, where
    assert report.count(*Fate) == report.messages, where
    assert report.unexpected_rejections == [], where
    assert report.exit_codes == [0, 0, 0], where
    # The dead nodes' rows are forgotten once taken over; the stopped ones say they left
    # (their rows stay until a live node forgets them: none is left to).
    assert not {kill.node for kill in report.kills} & set(report.rows_left), where
    assert report.ok, where
