"""BridgeQueue: priorities, batching by key, capacity and backpressure, dedup."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Collection

import anyio
import pytest

from bridges.base import Capabilities
from bridges.bsg import CAPABILITIES as BSG_CAPABILITIES
from bridges.dsc import DscDriver
from bridges.smsclub import CAPABILITIES as SMSCLUB_CAPABILITIES
from engine.models import Message
from engine.scheduler import VALIDITY_SLOT_S, BridgeQueue, Scheduler, take_distinct, tick_deadline

# A fresh destination for every message made without one, so only the tests about
# repeated destinations have any.
_numbers = itertools.count()


def make(
    msg_id: str,
    text: str = "hi",
    priority: int = 0,
    sender: str | None = "ACME",
    to: str | None = None,
) -> Message:
    return Message(
        msg_id=msg_id,
        reference=f"r-{msg_id}",
        origin="test",
        client_ref=None,
        to=to or f"+25078{next(_numbers):07d}",
        sender=sender,
        text=text,
        encoding="GSM-7",
        segments=1,
        cost=1.0,
        currency="RWF",
        bridges=("dsc",),
        priority=priority,
        accepted_at=0.0,
        due_at=0.0,
    )


@pytest.mark.anyio
async def test_batches_group_same_text_and_sender_up_to_the_limit() -> None:
    queue = BridgeQueue("dsc", 100)
    for i in range(5):
        queue.put_nowait(make(str(i), "a"))
    queue.put_nowait(make("x", "b"))
    for i in range(5, 8):
        queue.put_nowait(make(str(i), "a"))
    first = await queue.take_batch(4)
    assert [m.msg_id for m in first] == ["0", "1", "2", "3"]
    second = await queue.take_batch(100)
    # Keys rotate for fairness: the "b" batch comes before the rest of "a".
    assert [m.msg_id for m in second] == ["x"]
    third = await queue.take_batch(100)
    assert [m.msg_id for m in third] == ["4", "5", "6", "7"]
    assert len(queue) == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "queue",
    [
        BridgeQueue("smsclub", 100),
        BridgeQueue("bsg", 100, distinct_texts=True),
        BridgeQueue("dsc", 100),
        # A caller written before every resend travelled alone still gets that.
        BridgeQueue("dsc", 100, isolate_resends=False),
    ],
    ids=["smsclub", "bsg", "dsc", "dsc-old-caller"],
)
async def test_resends_travel_alone_on_every_bridge(queue: BridgeQueue) -> None:
    # A provider that refuses a whole request because of one member (BSG 31, SMS Club
    # 453, dsc 400) tells every member to retry; alone, each gets its own answer.
    first = [make(str(i)) for i in range(1, 4)]
    resends = [make(str(i)) for i in range(4, 6)]
    for message in resends:
        message.attempt = 1
    for message in [first[0], resends[0], first[1], resends[1], first[2]]:
        queue.put_nowait(message)
    batches = [[m.msg_id for m in await queue.take_batch(100)] for _ in range(3)]
    assert sorted(batches) == [["1", "2", "3"], ["4"], ["5"]]
    assert len(queue) == 0


# ── one destination once per batch ────────────────────────────────────────────────


async def batch_ids(queue: BridgeQueue, limit: int = 100) -> list[str]:
    return [message.msg_id for message in await queue.take_batch(limit)]


@pytest.mark.anyio
@pytest.mark.parametrize("distinct_texts", [False, True], ids=["one-text", "bsg-individual"])
async def test_a_destination_is_in_a_batch_once_and_its_repeat_waits_in_order(
    distinct_texts: bool,
) -> None:
    # BSG refuses a request naming one msisdn twice (31), SMS Club one with a phone and
    # text twice (453); dsc and Route Mobile answer per recipient, matched by number.
    queue = BridgeQueue("bsg", 100, distinct_texts=distinct_texts)
    x, y, z = "+447700900001", "+447700900002", "+447700900003"
    for msg_id, to in [("x1", x), ("y1", y), ("x2", x), ("y2", y), ("z1", z), ("x3", x)]:
        queue.put_nowait(make(msg_id, to=to))
    assert await batch_ids(queue) == ["x1", "y1", "z1"]
    assert await batch_ids(queue) == ["x2", "y2"]
    assert await batch_ids(queue) == ["x3"]
    assert len(queue) == 0
    assert queue.room() == queue.capacity


@pytest.mark.anyio
async def test_the_batch_limit_counts_distinct_destinations_and_later_ones_keep_their_place() -> (
    None
):
    queue = BridgeQueue("dsc", 100)
    x = "+250788000001"
    order = [("x1", x), ("a", None), ("x2", x), ("b", None), ("c", None), ("x3", x)]
    for msg_id, to in order:
        queue.put_nowait(make(msg_id, to=to))
    assert await batch_ids(queue, 2) == ["x1", "a"]
    assert await batch_ids(queue, 2) == ["x2", "b"]
    assert await batch_ids(queue, 2) == ["c", "x3"]


@pytest.mark.anyio
async def test_linger_companions_skip_a_destination_already_in_the_batch() -> None:
    queue = BridgeQueue("dsc", 100)
    x = "+250788000001"
    queue.put_nowait(make("x1", to=x))

    async def late() -> None:
        await anyio.wait_all_tasks_blocked()
        queue.put_nowait(make("x2", to=x))
        queue.put_nowait(make("y1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(late)
        batch = await queue.take_batch(10, linger_s=5.0)
    assert [m.msg_id for m in batch] == ["x1", "y1"]
    assert "x2" in queue
    assert await batch_ids(queue) == ["x2"]


class CountingDeque(deque[Message]):
    """A bucket that counts how many messages were taken off its front."""

    popped = 0

    def popleft(self) -> Message:
        self.popped += 1
        return super().popleft()


def test_a_long_run_of_one_destination_costs_in_proportion_to_the_batch() -> None:
    # 10,000 messages to one number ahead of others: each batch looks at no more than
    # twice its limit, however long the run.
    bucket = CountingDeque(make(str(i), to="+250788000001") for i in range(10_000))
    bucket.extend(make(f"other{i}") for i in range(5))
    batch: list[Message] = []
    take_distinct(bucket, 100, batch, set())
    assert [m.msg_id for m in batch] == ["0"]
    assert bucket.popped <= 2 * 100 + 1
    assert len(bucket) == 10_004
    assert [m.msg_id for m in itertools.islice(bucket, 3)] == ["1", "2", "3"]  # in order


# ── what the request carries once: sender, encoding, flash, validity ─────────────


@pytest.mark.anyio
async def test_sender_encoding_flash_and_report_flag_split_batches_of_one_text() -> None:
    queue = BridgeQueue("routemobile", 100)
    plain = make("plain")
    other_sender = make("sender", sender="OTHER")
    ucs2 = make("ucs2")
    ucs2.encoding = "UCS-2"
    flash = make("flash")
    flash.flash = True
    no_report = make("no-report")
    no_report.dlr = False
    for message in [plain, other_sender, ucs2, flash, no_report, make("plain2")]:
        queue.put_nowait(message)
    batches = sorted([await batch_ids(queue) for _ in range(5)])
    assert batches == [["flash"], ["no-report"], ["plain", "plain2"], ["sender"], ["ucs2"]]


@pytest.mark.anyio
async def test_bsg_individual_batches_mix_texts_and_senders_but_not_flash() -> None:
    queue = BridgeQueue.for_capabilities("bsg", 100, BSG_CAPABILITIES)
    flash = make("flash", "c")
    flash.flash = True
    for message in [make("1", "a", sender="X"), flash, make("2", "b", sender="Y")]:
        queue.put_nowait(message)
    assert await batch_ids(queue) == ["1", "2"]
    assert await batch_ids(queue) == ["flash"]


def with_validity(msg_id: str, expires_at: float | None) -> Message:
    message = make(msg_id)
    message.expires_at = expires_at
    return message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "capabilities", [BSG_CAPABILITIES, SMSCLUB_CAPABILITIES], ids=["bsg", "smsclub"]
)
async def test_one_validity_per_request_batches_by_validity(capabilities: Capabilities) -> None:
    # BSG takes one `validity`, SMS Club one `lifetime` per request, and the driver sends
    # the batch's shortest: a 1-hour line must not shorten a 72-hour one (issue 17).
    queue = BridgeQueue.for_capabilities("bridge", 100, capabilities)
    now = 1_000_020.0  # a slot starts at 1_000_020 (a multiple of 60)
    messages = [
        with_validity("none-1", None),
        with_validity("hour-1", now + 3600),
        with_validity("day-1", now + 86_400),
        with_validity("none-2", None),
        with_validity("hour-2", now + 3600 + VALIDITY_SLOT_S / 2),  # the same slot
        with_validity("hour-next-slot", now + 3600 + VALIDITY_SLOT_S),
    ]
    for message in messages:
        queue.put_nowait(message)
    batches = sorted([await batch_ids(queue) for _ in range(4)])
    assert batches == [["day-1"], ["hour-1", "hour-2"], ["hour-next-slot"], ["none-1", "none-2"]]


@pytest.mark.anyio
async def test_a_request_without_validity_batches_across_validities() -> None:
    queue = BridgeQueue.for_capabilities("dsc", 100, DscDriver.capabilities)
    for message in [
        with_validity("a", None),
        with_validity("b", 5000.0),
        with_validity("c", 90_000.0),
    ]:
        queue.put_nowait(message)
    assert await batch_ids(queue) == ["a", "b", "c"]


@pytest.mark.anyio
async def test_by_default_every_queue_batches_by_validity() -> None:
    # Without the driver's word (a caller that builds the queue by hand), validity is
    # keyed: right for every provider, a cost in batching only.
    queue = BridgeQueue("dsc", 100)
    for message in [with_validity("a", None), with_validity("b", 5000.0), with_validity("c", None)]:
        queue.put_nowait(message)
    assert await batch_ids(queue) == ["a", "c"]
    assert await batch_ids(queue) == ["b"]


@pytest.mark.anyio
async def test_higher_priority_goes_first() -> None:
    queue = BridgeQueue("dsc", 100)
    queue.put_nowait(make("low", "a", priority=0))
    queue.put_nowait(make("high", "b", priority=9))
    batch = await queue.take_batch(10)
    assert [m.msg_id for m in batch] == ["high"]


@pytest.mark.anyio
async def test_distinct_texts_share_a_batch_when_the_driver_allows() -> None:
    queue = BridgeQueue("bsg", 100, distinct_texts=True)
    queue.put_nowait(make("1", "a", sender="X"))
    queue.put_nowait(make("2", "b", sender="Y"))
    batch = await queue.take_batch(50)
    assert [m.msg_id for m in batch] == ["1", "2"]


@pytest.mark.anyio
async def test_an_id_already_held_is_not_queued_twice() -> None:
    queue = BridgeQueue("dsc", 100)
    assert queue.put_nowait(make("1"))
    assert not queue.put_nowait(make("1"))
    assert len(queue) == 1


def test_put_all_nowait_adds_all_or_nothing() -> None:
    queue = BridgeQueue("dsc", 3)
    assert queue.put_all_nowait([make("1"), make("2")])
    assert not queue.put_all_nowait([make("3"), make("4")])  # one would not fit
    assert len(queue) == 2
    assert queue.put_all_nowait([make("1")])  # a duplicate is skipped, as put_nowait does
    assert len(queue) == 2
    assert queue.put_all_nowait([make("3")])
    assert len(queue) == 3


@pytest.mark.anyio
async def test_put_all_nowait_never_jumps_a_waiting_put() -> None:
    queue = BridgeQueue("dsc", 1)
    await queue.put(make("1"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.put, make("2"))
        await anyio.wait_all_tasks_blocked()
        await queue.take_batch(1)  # room, granted to the waiting put
        assert not queue.put_all_nowait([make("3")])
    assert [message.msg_id for message in await queue.take_batch(5)] == ["2"]


@pytest.mark.anyio
async def test_put_waits_while_full_and_resumes_when_drained() -> None:
    queue = BridgeQueue("dsc", 2)
    await queue.put(make("1"))
    await queue.put(make("2"))
    done = anyio.Event()

    async def producer() -> None:
        await queue.put(make("3"))
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()  # backpressure: the third put waits
        await queue.take_batch(1)
        await done.wait()
    assert len(queue) == 2


@pytest.mark.anyio
async def test_linger_collects_companions_that_arrive_soon() -> None:
    queue = BridgeQueue("dsc", 100)
    queue.put_nowait(make("1"))

    async def late() -> None:
        await anyio.wait_all_tasks_blocked()
        queue.put_nowait(make("2"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(late)
        batch = await queue.take_batch(10, linger_s=5.0)
    assert [m.msg_id for m in batch] == ["1", "2"]


class FeederJournal:
    """Accepted messages by due time; counts how often the feeder scans (a read from the
    start, not a window). `scan_cost` moves `clock` on by that much per scan, as a scan of
    many queued rows takes time under load."""

    def __init__(
        self, messages: list[Message], clock: list[float] | None = None, scan_cost: float = 0.0
    ) -> None:
        self.messages = messages
        self.scans = 0
        self.polls = anyio.Event()
        self.poll_count = 0
        self._clock = clock
        self._scan_cost = scan_cost

    async def due(
        self,
        now: float,
        limit: int,
        *,
        exclude: Collection[str] = (),
        since: float | None = None,
    ) -> list[Message]:
        floor = -math.inf if since is None else since
        if since is None:
            self.scans += 1
            if self._clock is not None:
                self._clock[0] += self._scan_cost
        ready = [m for m in self.messages if floor < m.due_at <= now and m.msg_id not in exclude]
        return ready[:limit]

    async def next_due_at(self, *, after: float) -> float | None:
        self.poll_count += 1
        if self.poll_count % 5 == 0:
            self.polls.set()
        later = [m.due_at for m in self.messages if m.due_at > after]
        return min(later) if later else None


async def wait_polls(journal: FeederJournal, rounds: int) -> None:
    for _ in range(rounds):
        journal.polls = anyio.Event()
        with anyio.fail_after(5):
            await journal.polls.wait()


@pytest.mark.anyio
async def test_feeder_scans_at_start_then_only_when_something_becomes_due() -> None:
    now = [1000.0]
    due_now = make("1")
    due_now.due_at = 999.0
    later = make("2", "b")
    later.due_at = 1010.0
    journal = FeederJournal([due_now, later])
    queue = BridgeQueue("dsc", 100)
    scheduler = Scheduler({"dsc": queue}, journal, clock=lambda: now[0], idle_poll_s=0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve_feeder)
        await wait_polls(journal, 3)
        assert journal.scans == 1  # the start scan; idle polls did not rescan
        assert "1" in queue
        assert "2" not in queue
        now[0] = 1011.0  # the scheduled message's time has come
        await wait_polls(journal, 3)
        assert journal.scans == 2
        assert "2" in queue
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_retries_that_fall_due_during_a_slow_scan_are_not_left_for_the_full_scan() -> None:
    # Ten retries of one failed request, due within milliseconds of each other: the scan
    # that the first one's time starts reads up to that time but takes 50 ms, during which
    # the others fall due. Reading the look-ahead from after the scan skipped them until
    # the 30 s safety scan (a CI run of the dashboard test waited on six of them).
    now = [1000.0]
    retries = []
    for index in range(10):
        retry = make(str(index))
        retry.due_at = 1000.5 + index * 0.004
        retries.append(retry)
    journal = FeederJournal(retries, clock=now, scan_cost=0.05)
    queue = BridgeQueue("dsc", 100)
    scheduler = Scheduler({"dsc": queue}, journal, clock=lambda: now[0], idle_poll_s=0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve_feeder)
        await wait_polls(journal, 2)
        assert len(queue) == 0
        now[0] = 1000.5  # the first retry's time
        await wait_polls(journal, 3)
        assert sorted(int(m) for m in queue.ids) == list(range(10))
        assert journal.scans == 2  # the start scan and the one the first retry's time began
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_feeder_scans_when_woken() -> None:
    journal = FeederJournal([])
    queue = BridgeQueue("dsc", 100)
    scheduler = Scheduler({"dsc": queue}, journal, clock=lambda: 1000.0, idle_poll_s=0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve_feeder)
        await wait_polls(journal, 2)
        retried = make("3")
        retried.due_at = 1000.0  # e.g. a failover, due at once, committed just now
        journal.messages.append(retried)
        scheduler.wake_feeder()
        await wait_polls(journal, 2)
        assert "3" in queue
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_fresh_messages_and_full_queues_cause_no_scan() -> None:
    # Ingress queues fresh messages itself; they are due the moment they are accepted, so
    # their due times passing must not make the feeder read them back from the journal.
    now = [1000.0]
    journal = FeederJournal([])
    queue = BridgeQueue("dsc", 2)
    scheduler = Scheduler({"dsc": queue}, journal, clock=lambda: now[0], idle_poll_s=0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve_feeder)
        await wait_polls(journal, 2)
        assert journal.scans == 1
        for index in range(3):
            fresh = make(str(10 + index))
            fresh.due_at = now[0] + 0.5
            journal.messages.append(fresh)
        queue.put_nowait(make("20"))
        queue.put_nowait(make("21"))  # full
        now[0] += 1.0
        await wait_polls(journal, 2) if queue.room() else await anyio.sleep(0.05)
        queue._pop(2)  # room again
        await wait_polls(journal, 3)
        assert journal.scans == 1
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_waiting_puts_get_room_in_turn() -> None:
    # A client with one message (an SMPP submit) waits its turn behind a client with
    # many (a socket chunk), instead of being overtaken by every message of it.
    queue = BridgeQueue("dsc", 2)
    queue.put_nowait(make("1"))
    queue.put_nowait(make("2"))
    order: list[str] = []

    async def put_all(ids: list[str]) -> None:
        for msg_id in ids:
            await queue.put(make(msg_id))
            order.append(msg_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(put_all, ["b1", "b2", "b3", "b4"])
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(put_all, ["s1"])
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            queue._pop(1)
            await anyio.wait_all_tasks_blocked()
    assert order.index("s1") <= 1
    assert sorted(order) == ["b1", "b2", "b3", "b4", "s1"]


@pytest.mark.anyio
async def test_a_cancelled_put_passes_its_room_on() -> None:
    queue = BridgeQueue("dsc", 1)
    queue.put_nowait(make("1"))
    doomed = anyio.CancelScope()

    async def put_then_give_up() -> None:
        with doomed:
            await queue.put(make("2"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(put_then_give_up)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(queue.put, make("3"))
        await anyio.wait_all_tasks_blocked()
        doomed.cancel()  # the first waiter gives up before any room comes
        await anyio.wait_all_tasks_blocked()
        queue._pop(1)
        await anyio.wait_all_tasks_blocked()
    assert "2" not in queue
    assert "3" in queue
    assert queue.room() == 0


@pytest.mark.anyio
async def test_a_reservation_waits_in_line_with_the_puts() -> None:
    # An SMPP submit reserves its slot before its commit; it queues behind a socket
    # client's put already waiting, and ahead of one that came later.
    queue = BridgeQueue("dsc", 2)
    queue.put_nowait(make("1"))
    queue.put_nowait(make("2"))
    reserved = anyio.Event()

    async def reserve_one() -> None:
        await queue.reserve(1)
        reserved.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.put_many, [make("a1"), make("a2")])
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(reserve_one)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(queue.put_many, [make("c1")])
        await anyio.wait_all_tasks_blocked()
        assert queue.waiting == 3
        assert not queue.reserve_nowait(1)  # no jumping the line

        queue._pop(1)  # room for the first in line
        await anyio.wait_all_tasks_blocked()
        assert "a1" in queue
        assert not reserved.is_set()
        queue._pop(1)  # the reservation's turn
        await anyio.wait_all_tasks_blocked()
        assert reserved.is_set()
        assert queue.room() == 0
        assert "c1" not in queue
        queue.put_reserved([make("s1")])  # fills the slot without waiting
        assert "s1" in queue
        for _ in range(2):
            queue._pop(1)
            await anyio.wait_all_tasks_blocked()
    assert "c1" in queue  # the later put came after the reservation
    assert "a2" in queue  # and the first client's next turn after that
    assert queue.waiting == 0


@pytest.mark.anyio
async def test_a_reservation_that_times_out_waiting_leaves_the_line() -> None:
    queue = BridgeQueue("dsc", 1)
    queue.put_nowait(make("1"))
    gave_up = anyio.Event()

    async def reserve_with_no_time() -> None:
        with anyio.move_on_after(0):
            await queue.reserve(1)
        gave_up.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reserve_with_no_time)
        await gave_up.wait()
        assert queue.waiting == 0
        tg.start_soon(queue.put, make("2"))
        await anyio.wait_all_tasks_blocked()
        queue._pop(1)
        await anyio.wait_all_tasks_blocked()
    assert "2" in queue
    assert queue.room() == 0  # "2" holds the one slot; nothing is left reserved
    queue._pop(1)
    assert queue.room() == queue.capacity


@pytest.mark.anyio
async def test_a_reservation_cancelled_after_its_turn_came_passes_the_slot_on() -> None:
    queue = BridgeQueue("dsc", 1)
    queue.put_nowait(make("1"))
    doomed = anyio.CancelScope()

    async def reserve_then_give_up() -> None:
        with doomed:
            await queue.reserve(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reserve_then_give_up)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(queue.put, make("2"))
        await anyio.wait_all_tasks_blocked()
        doomed.cancel()  # the reservation is cancelled, and before it runs...
        queue._pop(1)  # ...the freed slot is granted to it, first in line
        assert queue.waiting == 1  # only the put is still in line
        await anyio.wait_all_tasks_blocked()
    assert "2" in queue
    assert queue.waiting == 0
    queue._pop(1)
    assert queue.room() == queue.capacity  # no slot leaked


@pytest.mark.anyio
async def test_reserved_slots_count_against_capacity_until_filled_or_released() -> None:
    queue = BridgeQueue("dsc", 3)
    assert queue.reserve_nowait(2)
    assert queue.room() == 1
    assert not queue.reserve_nowait(2)
    queue.put_reserved([make("1")])
    queue.release(1)  # the other message was refused by the journal
    assert len(queue) == 1
    assert queue.room() == 2
    # A duplicate id leaves its slot free instead of holding it.
    assert queue.reserve_nowait(1)
    queue.put_reserved([make("1")])
    assert queue.room() == 2


@pytest.mark.anyio
async def test_scheduler_reserves_per_bridge_and_gives_back_on_cancel() -> None:
    dsc, bsg = BridgeQueue("dsc", 2), BridgeQueue("bsg", 1)
    scheduler = Scheduler({"dsc": dsc, "bsg": bsg}, FeederJournal([]))
    bsg.put_nowait(make("full"))
    assert not scheduler.reserve_nowait(["dsc", "bsg"])  # all or nothing
    assert dsc.room() == 2
    with anyio.move_on_after(0):
        await scheduler.reserve(["dsc", "dsc", "bsg"])  # dsc's two held, bsg never comes
    assert dsc.room() == 2  # the dsc slots went back
    assert bsg.waiting == 0
    assert scheduler.reserve_nowait(["dsc", "dsc"])
    to_dsc = [make("1"), make("2")]
    scheduler.put_reserved(to_dsc)
    assert len(dsc) == 2
    assert dsc.room() == 0


@pytest.mark.anyio
async def test_a_discarded_message_leaves_its_queue_and_frees_its_slot() -> None:
    queue = BridgeQueue("dsc", 3)
    kept, cancelled, other = make("1", "a"), make("2", "a"), make("3", "b")
    for message in (kept, cancelled, other):
        queue.put_nowait(message)
    assert queue.room() == 0
    assert queue.discard(cancelled) is True
    assert queue.discard(cancelled) is False  # gone already
    assert "2" not in queue
    assert (len(queue), queue.room()) == (2, 1)
    assert queue.discard(other) is True  # the last of its key: the key goes too
    assert [m.msg_id for m in await queue.take_batch(10)] == ["1"]
    assert len(queue) == 0
    queue.put_nowait(kept)
    scheduler = Scheduler({"dsc": queue}, FeederJournal([]))
    assert scheduler.discard(make("9")) is False  # never queued
    assert scheduler.discard(kept) is True
    assert len(queue) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", [0.002, 0.005, 0.0015, 1.0, 0.0])
async def test_an_expiring_wait_ends_on_a_whole_millisecond_of_the_loop_clock(
    seconds: float,
) -> None:
    # uvloop's clock counts whole milliseconds: a deadline between two of them would make
    # the scope re-arm its timer on every loop iteration until the next one.
    now = anyio.current_time()
    deadline = tick_deadline(seconds)
    # A whole millisecond as a float: k / 1000 times 1000 is k only to within rounding.
    assert deadline * 1000 == pytest.approx(round(deadline * 1000), abs=1e-6)
    assert now + seconds - 1e-9 <= deadline < now + seconds + 0.001
