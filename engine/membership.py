"""This node in the cluster: joining, its heartbeat, and the takeover of dead nodes' claims.

The rules are engine.cluster's (pure); this module carries them out on the journal:

- `join` at start: refuses a name a live process holds (one sentence), else writes this
  node's row. The start-up crash recovery then finds only this node's own claims.
- `serve_heartbeat`: the row's heartbeat every `[cluster] heartbeat_s`. A write that fails
  is logged and tried again; a row that another run took or a survivor forgot is written
  again (`lease_lost` in the log: this node was taken for dead meanwhile).
- `take_over`: for each node that holds no lease, take its claims in batches (the journal
  restamps them to this node first, so two survivors never both take one message, and a
  survivor that dies in the middle leaves them as its own claims for the next) and carry
  out the crash-recovery step on them (engine.recovery.recover_claims); then forget its row.
- `leave` at a clean stop: the row says so, and what it still holds is taken over at once.
- `while_leading`: what must run once per cluster (status polls, report deadlines, webhooks,
  retention; engine.cluster.leader) runs on the leader only, started when this node
  becomes the leader and cancelled when it stops being it (what it was doing stays in the
  journal, for the next leader).

With the SQLite journal (one node) every claim is this node's, and nothing is taken over.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import structlog

from engine.cluster import (
    ClusterSettings,
    Liveness,
    NodeRecord,
    Registration,
    leader,
    liveness,
    name_in_use_sentence,
    registration,
    takeover_targets,
)
from engine.journal import JournalError
from engine.models import Message

log = structlog.get_logger("septet.cluster")

# Claims taken over per journal round trip (each batch is one restamp, one recovery commit).
TAKEOVER_BATCH = 500

Recover = Callable[[Sequence[Message]], Awaitable[dict[str, int]]]


class MembershipJournal(Protocol):
    """The journal's side of membership (engine.journal's Journal protocol)."""

    async def node_record(self, node: str) -> NodeRecord | None: ...

    async def join(self, node: str, run: str, now: float) -> None: ...

    async def heartbeat(self, node: str, run: str, now: float) -> bool: ...

    async def leave(self, node: str, run: str, now: float) -> None: ...

    async def nodes(self) -> list[NodeRecord]: ...

    async def take_claims(self, dead: str, limit: int) -> list[Message]: ...

    async def forget_node(self, node: str, heartbeat_at: float) -> bool: ...


class NameInUseError(Exception):
    """Another live process runs under this node's name; `sentence` says so."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


class Membership:
    """This node: its name, its run, and when its heartbeat was last written."""

    def __init__(
        self,
        journal: MembershipJournal,
        node: str,
        run: str,
        settings: ClusterSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.node = node
        self.run = run
        self.settings = settings
        self._clock = clock
        self.started_at = clock()
        # When the journal last took this node's heartbeat (None: never yet).
        self.heartbeat_at: float | None = None
        # Called after a step that found dead nodes: what they accepted and never claimed
        # is waiting in the journal for a live node's scheduler (the daemon's feeder).
        self.on_takeover: Callable[[], None] = lambda: None
        # Whether this node runs the cluster's single duties, and a wake-up when that changes.
        self.leading = False
        self._leadership_changed = anyio.Event()

    async def join(self) -> Registration:
        """Write this node's row; NameInUseError when a live process of another run holds it."""
        now = self._clock()
        existing = await self.journal.node_record(self.node)
        decision = registration(existing, self.run, now, self.settings.lease_s)
        if decision is Registration.NAME_IN_USE:
            assert existing is not None  # registration says so only of a row
            raise NameInUseError(name_in_use_sentence(existing, now))
        await self.journal.join(self.node, self.run, now)
        self.heartbeat_at = now
        self._update_leadership(await self.journal.nodes(), now)
        return decision

    def _update_leadership(self, records: Sequence[NodeRecord], now: float) -> None:
        leads = self.holds_lease(now) and leader(records, now, self.settings.lease_s) == self.node
        if leads != self.leading:
            self.leading = leads
            log.info("leadership", node=self.node, leading=leads)
            self._leadership_changed.set()
            self._leadership_changed = anyio.Event()

    async def while_leading(self, factory: Callable[[], Awaitable[None]]) -> None:
        """Forever: run `factory()` while this node leads; cancelled when it stops leading,
        started again when it leads again."""
        while True:
            while not self.leading:
                await self._leadership_changed.wait()
            async with anyio.create_task_group() as tg:

                async def step_down() -> None:
                    while self.leading:
                        await self._leadership_changed.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(step_down)
                await factory()
                tg.cancel_scope.cancel()

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.heartbeat_at is None else max(0.0, now - self.heartbeat_at)

    def holds_lease(self, now: float) -> bool:
        """Whether the other nodes still take this one for live (its last heartbeat is
        within the lease): readiness fails when not."""
        # heartbeat_age's max(0, ...) left out: lease_s is positive (ClusterSettings), so
        # a clock that stepped back answers the same. Asked before every bridge request.
        at = self.heartbeat_at
        return at is not None and now - at <= self.settings.lease_s

    async def beat(self) -> bool:
        """One heartbeat; False when the journal could not take it."""
        now = self._clock()
        try:
            if not await self.journal.heartbeat(self.node, self.run, now):
                log.error("lease_lost", node=self.node, since_heartbeat_s=self.heartbeat_age(now))
                await self.journal.join(self.node, self.run, now)
        except JournalError as error:
            log.error("heartbeat_failed", node=self.node, error=str(error))
            if not self.holds_lease(self._clock()):
                self._update_leadership((), now)  # taken for dead by now: lead nothing
            return False
        self.heartbeat_at = now
        return True

    async def serve_heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            await self.beat()

    async def take_over(self, recover: Recover) -> dict[str, int]:
        """One takeover step: every dead node's claims, recovered; returns the tally."""
        tally: dict[str, int] = {}
        now = self._clock()
        records = await self.journal.nodes()
        self._update_leadership(records, now)
        targets = takeover_targets(records, self.node, now, self.settings.lease_s)
        for dead in targets:
            taken = await self._take_node(dead, recover, tally)
            forgotten = await self.journal.forget_node(dead.node, dead.heartbeat_at)
            if taken or forgotten:
                log.warning(
                    "node_taken_over",
                    dead=dead.node,
                    why=liveness(dead, now, self.settings.lease_s).value,
                    since_heartbeat_s=round(now - dead.heartbeat_at, 1),
                    claims=taken,
                    forgotten=forgotten,
                )
        if targets:
            self.on_takeover()
        return tally

    async def _take_node(self, dead: NodeRecord, recover: Recover, tally: dict[str, int]) -> int:
        taken = 0
        while claims := await self.journal.take_claims(dead.node, TAKEOVER_BATCH):
            taken += len(claims)
            for state, count in (await recover(claims)).items():
                tally[state] = tally.get(state, 0) + count
            if len(claims) < TAKEOVER_BATCH:
                break
        return taken

    async def serve_takeover(self, recover: Recover) -> None:
        """Forever, every heartbeat: take over the nodes that hold no lease. A journal
        that cannot be read or written is waited out (the claims stay where they are)."""
        while True:
            try:
                await self.take_over(recover)
            except JournalError as error:
                log.error("takeover_failed", node=self.node, error=str(error))
            await anyio.sleep(self.settings.heartbeat_s)

    async def leave(self) -> None:
        """At a clean stop: the row says this node left (its claims go at once)."""
        try:
            await self.journal.leave(self.node, self.run, self._clock())
        except JournalError as error:
            log.error("leave_failed", node=self.node, error=str(error))


def live_nodes(records: Sequence[NodeRecord], now: float, lease_s: float) -> int:
    return sum(1 for record in records if liveness(record, now, lease_s) is Liveness.LIVE)
