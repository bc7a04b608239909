"""engine.daemon_health: /readyz says ready only while the daemon's front doors listen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.cluster import ClusterSettings
from engine.daemon_health import DaemonHealth
from engine.journal.sqlite import open_sqlite_journal
from engine.membership import Membership

pytestmark = pytest.mark.anyio
# Far longer than the test: the lease is held throughout, whatever the machine's load.
LEASE = ClusterSettings(heartbeat_s=30, lease_s=600)


async def test_not_ready_until_the_front_doors_listen_nor_once_the_drain_closes_them(
    tmp_path: Path,
) -> None:
    """bench.kannel once sent its load as soon as /healthz answered, before the NDJSON port
    listened, and the refused load waited out its deadline. /healthz answers from the
    start (the process lives); /readyz, which load balancers route by, says no until the
    daemon marks its front doors open, and again once the drain has begun."""
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        membership = Membership(journal, "solo", "run-1", LEASE, clock=time.time)
        await membership.join()
        health = DaemonHealth(journal, membership, "solo", {}, {})

        starting = await health.readiness()
        assert (starting["ready"], starting["serving"]) == (False, False)
        assert starting["journal"] == {"writable": True, "pending": 0}
        node = starting["node"]
        assert isinstance(node, dict)
        assert node["holds_lease"] is True

        health.serving = True
        serving = await health.readiness()
        assert (serving["ready"], serving["serving"]) == (True, True)

        health.serving = False
        draining = await health.readiness()
        assert (draining["ready"], draining["serving"]) == (False, False)
