"""What the running daemon says about itself: /readyz's readiness and /metrics' live state."""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio
import structlog

from engine.dispatch import BridgeDispatcher
from engine.journal import Journal
from engine.membership import Membership
from engine.metrics import LiveState
from engine.scheduler import BridgeQueue

# The daemon's logger: these lines are the daemon's, wherever the code that writes them lives.
log = structlog.get_logger("septet.daemon")

# How long /readyz waits for the journal (a database that went away) before it says no.
READINESS_JOURNAL_S = 2.0


class DaemonHealth:
    """Readiness and live state over the bridges' dispatchers and queues, which are filled
    once the bridges are built: /readyz and /metrics may be asked before."""

    def __init__(
        self,
        journal: Journal,
        membership: Membership,
        node: str,
        dispatchers: Mapping[str, BridgeDispatcher],
        queues: Mapping[str, BridgeQueue],
    ) -> None:
        self._journal = journal
        self._membership = membership
        self._node = node
        self._dispatchers = dispatchers
        self._queues = queues
        # The front doors (NDJSON, SMPP, HTTP API) listen: set once they all do, cleared
        # when the drain closes them. /healthz answers earlier (the HTTP listener starts
        # first), but a client or load balancer routed here then would be refused.
        self.serving = False

    async def readiness(self) -> dict[str, object]:
        """The /readyz report: the front doors, the journal, this node's lease, each
        bridge's circuit."""
        dispatchers = self._dispatchers
        circuits = {name: d.circuit.state(time.time()) for name, d in dispatchers.items()}
        pending, writable = await self._journal_answer()
        # A bridge whose circuit is open is not ready, with the reason when it is the
        # provider refusing the account. The daemon as a whole stays ready while one
        # bridge can send (the others fail over to it) and the journal is writable.
        # An account fault keeps the bridge unready until a request goes through
        # (the circuit closes), not only while it is open: half-open is still a guess.
        unready = {
            name: d.circuit.reason or "the provider keeps failing (circuit open)"
            for name, d in dispatchers.items()
            if circuits[name] == "open"
            or (circuits[name] != "closed" and d.circuit.reason is not None)
        }
        # A bridge whose shared rate limits cannot be reached sends nothing (cluster).
        unready.update((name, d.limits.fault) for name, d in dispatchers.items() if d.limits.fault)
        # A node whose heartbeat the journal has not taken within its lease may be
        # taken for dead by the others (docs/cluster.md): not ready.
        now = time.time()
        leased = self._membership.holds_lease(now)
        age = self._membership.heartbeat_age(now)
        sending = not dispatchers or len(unready) < len(dispatchers)
        return {
            "ready": self.serving and writable and leased and sending,
            "serving": self.serving,
            "node": {
                "name": self._node,
                "heartbeat_age_s": None if age is None else round(age, 1),
                "holds_lease": leased,
            },
            "journal": {"writable": writable, "pending": pending},
            "bridges": circuits,
            "unready_bridges": unready,
        }

    async def _journal_answer(self) -> tuple[int, bool]:
        """(pending messages, writable); a database that does not answer makes the probe
        fail, not hang."""
        try:
            with anyio.fail_after(READINESS_JOURNAL_S):
                pending = await self._journal.pending_count()
        except TimeoutError:
            log.error("journal_unready", error=f"no answer within {READINESS_JOURNAL_S} s")
            return -1, False
        except Exception as error:
            log.error("journal_unready", error=str(error))
            return -1, False
        return pending, True

    def live_state(self) -> LiveState:
        """The gauges /metrics reads at each scrape: queues, requests in flight, circuits."""
        now = time.time()
        dispatchers = self._dispatchers
        return LiveState(
            queue_depth={name: len(queue) for name, queue in self._queues.items()},
            in_flight={name: d.in_flight for name, d in dispatchers.items()},
            circuit={name: d.circuit.state(now) for name, d in dispatchers.items()},
            rate_limits_reachable={name: d.limits.fault is None for name, d in dispatchers.items()},
        )
