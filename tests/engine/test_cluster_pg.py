"""Cluster behaviour on a real PostgreSQL, several journals on one database as several nodes
(each with its own connection and writer thread): a dead node's claims taken over by the
live ones under the crash-recovery rules, never both by two survivors and never from a
live node; a name a live node holds refused; events kept by one node reaching a client
connected to another at once through LISTEN/NOTIFY. Time is injected into the membership
(leases expire by the clock given, not by waiting)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest

from bridges.registry import build_driver
from engine.cluster import ClusterSettings
from engine.config import default_settings, driver_settings
from engine.ingress.events import EventRouter, EventSink
from engine.ingress.outbox import KeptWake, Outbox, serve_kept_for_live
from engine.journal import StoreEvents
from engine.journal.postgres import PostgresJournal, open_postgres_journal
from engine.membership import Membership, NameInUseError, Recover
from engine.models import Event, Message, StatusEvent
from engine.recovery import recover_claims
from engine.retry import RetryPolicy
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio

LEASE = ClusterSettings(heartbeat_s=1.0, lease_s=3.0)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Emitted:
    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    def emit(self, origin: str, event: Event) -> None:
        self.events.append((origin, event))


@pytest.fixture
async def three(postgres_dsn: str) -> AsyncIterator[list[PostgresJournal]]:
    async with (
        open_postgres_journal(postgres_dsn) as a,
        open_postgres_journal(postgres_dsn) as b,
        open_postgres_journal(postgres_dsn) as c,
    ):
        yield [a, b, c]


async def accept_on(
    journal: PostgresJournal, prefix: str, count: int, bridge: str
) -> list[Message]:
    """`count` messages to numbers `prefix` + 5 digits, routed to `bridge` alone."""
    groups = await journal.accept(
        [[make_message(f"{prefix}{n:05d}", bridges=(bridge,))] for n in range(count)]
    )
    return [group[0] for group in groups if isinstance(group, list)]


def recoverer(journal: PostgresJournal, clock: Clock, emitted: Emitted) -> Recover:
    """The daemon's recovery of taken claims, with the embedded default's drivers."""
    settings = default_settings()
    drivers = {
        name: build_driver(bridge.driver, driver_settings(name, bridge, settings, "http://x"))
        for name, bridge in settings.bridges.items()
    }

    async def recover(claims: Sequence[Message]) -> dict[str, int]:
        return await recover_claims(
            journal,
            claims,
            drivers,
            emitted,
            policy=RetryPolicy(),
            price=lambda message, bridge: (message.cost, message.currency),
            report_timeout_s=3600.0,
            now=clock(),
        )

    return recover


async def test_a_dead_nodes_claims_are_finished_by_the_survivors_each_once(
    three: list[PostgresJournal],
) -> None:
    clock = Clock()
    a, b, c = three
    nodes = [
        Membership(journal, name, f"run-{name}", LEASE, clock=clock)
        for journal, name in zip(three, ("node-a", "node-b", "node-c"), strict=True)
    ]
    for node in nodes:
        await node.join()
    # node-a claims 300 messages (dsc: no safe resend) and dies with them in flight.
    accepted = await accept_on(a, "+2507825", 300, "dsc")
    assert len(await a.claim(accepted, 0, clock())) == 300
    # node-b also holds claims of its own: a live node's are never taken.
    [own] = await accept_on(b, "+2507826", 1, "dsc")
    assert await b.claim([own], 0, clock()) == [own]

    clock.now += 2.0  # within the lease: nothing is taken
    for node in nodes[1:]:
        await node.beat()
    emitted = Emitted()
    assert await nodes[1].take_over(recoverer(b, clock, emitted)) == {}

    clock.now += 2.0  # node-a's heartbeat is 4 s old now, past its 3 s lease
    for node in nodes[1:]:
        await node.beat()
    tallies: list[dict[str, int]] = []

    async def survivor(index: int) -> None:
        journal = three[index]
        tallies.append(await nodes[index].take_over(recoverer(journal, clock, emitted)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(survivor, 1)
        tg.start_soon(survivor, 2)
    # Every claim was recovered by exactly one survivor: DSC does not deduplicate, so each
    # message that may have reached it is now unconfirmed, none sent again.
    assert sum(sum(tally.values()) for tally in tallies) == 300
    assert {state for tally in tallies for state in tally} == {"unconfirmed"}
    stored = await c.get([m.msg_id for m in accepted])
    assert {message.state for message in stored.values()} == {"submitted"}
    assert all(message.maybe_sent for message in stored.values())
    # The dead node's row is forgotten; node-b's own claim is still its own, in flight.
    records = {record.node: record for record in await c.nodes()}
    assert set(records) == {"node-b", "node-c"}
    assert records["node-b"].claims == 1
    assert [m.msg_id for m in await b.inflight()] == [own.msg_id]
    # Each client is told once that its message's outcome is unknown for now (a status
    # event, not final): the report will say.
    statuses = [event for _, event in emitted.events if isinstance(event, StatusEvent)]
    assert len(statuses) == len(emitted.events)
    assert sorted(event.msg_id for event in statuses) == sorted(m.msg_id for m in accepted)
    assert not any(event.final for event in statuses)


async def test_claims_that_never_left_are_sent_again_once(three: list[PostgresJournal]) -> None:
    """BSG deduplicates by reference: a message a dead node held is queued to be sent
    again (accepted), not made unconfirmed."""
    clock = Clock()
    a, b, _ = three
    dead = Membership(a, "node-a", "run-a", LEASE, clock=clock)
    live = Membership(b, "node-b", "run-b", LEASE, clock=clock)
    await dead.join()
    await live.join()
    accepted = await accept_on(a, "+4477009", 10, "bsg")
    await a.claim(accepted, 0, clock())
    clock.now += 10
    await live.beat()
    tally = await live.take_over(recoverer(b, clock, Emitted()))
    assert sum(tally.values()) == 10
    assert set(tally) <= {"accepted", "scheduled"}
    stored = await b.get([m.msg_id for m in accepted])
    assert {message.state for message in stored.values()} == {"accepted"}


async def test_a_name_a_live_node_holds_is_refused_and_a_dead_ones_is_taken(
    three: list[PostgresJournal],
) -> None:
    clock = Clock()
    a, b, _ = three
    await Membership(a, "edge-1", "run-1", LEASE, clock=clock).join()
    with pytest.raises(NameInUseError) as refused:
        await Membership(b, "edge-1", "run-2", LEASE, clock=clock).join()
    assert refused.value.sentence.startswith("The node name 'edge-1' is in use by a running")
    clock.now += 5  # run-1 stopped beating: its name (and its claims) are the new run's
    await Membership(b, "edge-1", "run-2", LEASE, clock=clock).join()
    [record] = await a.nodes()
    assert (record.node, record.run) == ("edge-1", "run-2")


async def test_events_kept_by_one_node_reach_a_client_connected_to_another_at_once(
    three: list[PostgresJournal],
) -> None:
    here, elsewhere, _ = three
    outbox = Outbox()
    router = EventRouter(outbox.spill)
    written = anyio.Event()
    received: list[bytes] = []

    async def write(data: bytes) -> None:
        received.append(data)
        written.set()

    sink = EventSink("session:s1", write)
    router.register(sink)
    wake = KeptWake()
    here.on_kept_events = wake.set
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.serve, router.emit_lines)
        tg.start_soon(here.serve_notifications)
        # A poll an hour away: only the notification brings the line within the test.
        tg.start_soon(lambda: serve_kept_for_live(router, here, wake, poll_s=3600))
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(10):
            # The first wake-up (after LISTEN) may come before the line: store until seen.
            while not written.is_set():
                await elsewhere.record([StoreEvents(origin="session:s1", events=[b"dlr\n"])])
                with anyio.move_on_after(1):
                    await written.wait()
        tg.cancel_scope.cancel()
    assert received[0] == b"dlr\n"
