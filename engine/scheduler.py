"""Per-bridge bounded queues with priorities and batching, and the feeder that refills them.

A `BridgeQueue` holds messages ready to send on one bridge, in priority lanes; inside a
lane, messages that can share a provider request sit together under one batch key,
oldest key first. `put` waits while the queue is full: that wait is what pushes back on
ingress. `take_batch` hands a dispatcher up to the driver's recipient limit of one key,
lingering a moment for more when the batch is small and the queue is otherwise idle.

A batch never holds what its provider would refuse together (issue 17, docs/providers.md):

- one destination twice: BSG refuses the whole request (error 31), SMS Club too (453 for
  a repeated phone and text), and dsc and Route Mobile match their per-recipient replies
  by number. A repeat stays at the front of its key for the next batch; finding it costs
  at most one look per message of the batch (`take_distinct`).
- different values of what the request carries once (`batch_key`): the text, sender,
  encoding and flash flag (one `message`, `sender`/`src_addr`/`source` and `type` per
  request, except BSG's individual mode), the report flag, and the validity: BSG takes
  one `validity` and SMS Club one `lifetime` per request, so a line's 1-hour validity
  must not shorten a 72-hour one. Validity is keyed by the message's `expires_at` in
  slots of `VALIDITY_SLOT_S`: dispatch turns `expires_at` into seconds left at send time
  and the driver sends the batch's shortest, so members of one slot differ by less than
  the slot, below SMS Club's one-minute unit and BSG's one-hour one.
- a resend with anything else: a message on its second or later attempt travels alone.
  A provider that refuses a whole request because of one member (BSG 31, SMS Club 453,
  dsc 400) is answered with a retry for every member (nothing was sent), and alone each
  then gets its own answer; a resend mixed with first attempts would also let BSG's
  "reference exists" (23) or SMS Club's 453 for it speak for messages never sent.

A client that must not wait after its journal commit (an SMPP submit, whose answer may
only follow the commit and may not be a refusal after it) first `reserve`s its slots,
in the same line as the waiting puts, then journals, then fills them with
`put_reserved`, which never waits; or gives them back with `release`.

The `Feeder` is the only reader of waiting work from the journal: scheduled messages
when their time comes, retries when their backoff ends, and everything left over after
a restart. RAM holds at most the queues' capacity; a million waiting messages stay on
disk. A message may reach a queue by both paths (ingress hands fresh messages over
directly); the queue drops an id it already holds, and the journal's claim
(accepted -> inflight, compare-and-set) makes a stale second copy harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import anyio
import structlog

from bridges.base import Capabilities
from engine.models import Message

log = structlog.get_logger("septet.scheduler")

# (text, sender, encoding, flash, dlr, validity slot, msg_id of a resend); see batch_key.
BatchKey = tuple[str, str | None, str, bool, bool, int | None, int | None]
# How many messages one turn of a waiting put may add (BridgeQueue.put_many): a batch.
TURN_MESSAGES = 100
# Messages whose `expires_at` falls in one slot this long may share a request's validity.
VALIDITY_SLOT_S = 60.0


def tick_deadline(seconds: float) -> float:
    """`anyio.current_time() + seconds` rounded up to a whole millisecond, for a cancel
    scope that is expected to expire (a linger, an idle wait).

    uvloop's clock (loop.time()) moves in whole milliseconds and its timers fire on them.
    A scope whose deadline falls between two ticks finds it not yet reached when its timer
    fires, and re-arms the timer on every loop iteration until the next tick: a busy wait
    of up to a millisecond at each expiry (about 46 re-arms and twice the CPU of the wait
    itself for a 2 ms linger, measured). A deadline on a tick ends at the first firing.
    """
    return math.ceil(round((anyio.current_time() + seconds) * 1000.0, 6)) / 1000.0


def _wake_lingering(arrival: asyncio.Future[None]) -> None:
    if not arrival.done():
        arrival.set_result(None)


def batch_key(
    message: Message, distinct_texts: bool, validity_slot_s: float | None = VALIDITY_SLOT_S
) -> BatchKey:
    """Messages with equal keys may travel in one request (module docstring).

    `distinct_texts`: the provider takes a text and sender per recipient (BSG's individual
    mode), so they are not part of the key. `validity_slot_s`: the width of a validity
    class, or None where the provider's request carries no validity. A message on its
    second or later attempt has a key of its own.
    """
    alone = int(message.msg_id) if message.attempt > 0 else None
    expires_at = message.expires_at
    validity = (
        None
        if expires_at is None or validity_slot_s is None
        else int(expires_at // validity_slot_s)
    )
    if distinct_texts:
        return ("", None, "", message.flash, message.dlr, validity, alone)
    return (
        message.text,
        message.sender,
        message.encoding,
        message.flash,
        message.dlr,
        validity,
        alone,
    )


def take_distinct(
    bucket: deque[Message], limit: int, batch: list[Message], destinations: set[str]
) -> None:
    """Move messages from the front of `bucket` into `batch` until it holds `limit`,
    skipping any whose destination is in `destinations` (which it extends).

    A skipped repeat goes back to the front of `bucket`, in order, for the next batch.
    At most `limit` repeats are looked at, so a long run of one number costs O(limit),
    not O(bucket); the batch is then smaller than it could be, never wrong.
    """
    skipped: list[Message] = []
    while bucket and len(batch) < limit and len(skipped) < limit:
        message = bucket.popleft()
        if message.to in destinations:
            skipped.append(message)
            continue
        destinations.add(message.to)
        batch.append(message)
    if skipped:
        bucket.extendleft(reversed(skipped))


class BridgeQueue:
    """Messages ready to send on one bridge. Not thread-safe; one event loop.

    `distinct_texts` and `validity_slot_s` shape the batch key (`batch_key`); by default
    every message is keyed by its validity, which is right for every provider and costs
    batching only where the request carries no validity (`for_capabilities` knows).
    `isolate_resends` is accepted from callers written before every resend travelled
    alone, and changes nothing.
    """

    def __init__(
        self,
        name: str,
        capacity: int,
        *,
        distinct_texts: bool = False,
        validity_slot_s: float | None = VALIDITY_SLOT_S,
        isolate_resends: bool = True,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._distinct = distinct_texts
        self._validity_slot = validity_slot_s
        # priority -> batch key -> messages (FIFO)
        self._lanes: dict[int, OrderedDict[BatchKey, deque[Message]]] = {}
        self._ids: set[str] = set()
        self._size = 0
        # Idle takers (dispatch workers) waiting for work, oldest first. A put wakes one,
        # not the whole pool: a woken taker that leaves work behind wakes the next
        # (`_call_taker`), so one message costs one wake-up, not one per idle worker.
        # asyncio's Events, not anyio's: one is made per wait, and an anyio Event costs
        # about 13k instructions to make against 3k (callgrind); the daemon runs on asyncio.
        self._takers: deque[asyncio.Event] = deque()
        self._called = 0  # takers woken that have not looked at the queue yet
        # Takers lingering for companions of a small batch: the next put wakes them all.
        self._lingering: list[asyncio.Future[None]] = []
        # Puts waiting for room, oldest first; each is granted one slot in turn, so a
        # client putting one message (an SMPP submit) is not starved by one putting
        # thousands (a socket client's chunk of lines).
        self._waiters: deque[asyncio.Event] = deque()
        self._reserved = 0  # slots granted to waiters that have not filled them yet

    @classmethod
    def for_capabilities(cls, name: str, capacity: int, capabilities: Capabilities) -> BridgeQueue:
        """The queue a driver with `capabilities` needs."""
        return cls(
            name,
            capacity,
            distinct_texts=capabilities.distinct_texts,
            validity_slot_s=VALIDITY_SLOT_S if capabilities.validity_per_request else None,
        )

    def __len__(self) -> int:
        return self._size

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    @property
    def ids(self) -> Collection[str]:
        return self._ids

    def room(self) -> int:
        return max(0, self.capacity - self._size - self._reserved)

    def put_nowait(self, message: Message) -> bool:
        """Add unless already held; returns False for a duplicate. Ignores capacity (the
        feeder sizes its reads by `room()`)."""
        return self._add((message,)) == 1

    def put_all_nowait(self, messages: Sequence[Message]) -> bool:
        """Add every one of `messages` now, as `put_many` would without a wait, when they
        all fit and nobody waits for room; False (nothing added) otherwise."""
        if self._waiters or self._size + self._reserved + len(messages) > self.capacity:
            return False
        self._add(messages)
        return True

    def _add(self, messages: Sequence[Message]) -> int:
        """Add each of `messages` not already held, ignoring capacity; how many were. The
        taker and lingering batches are woken once, after the loop (none of them runs
        before this returns)."""
        ids, lanes, distinct, slot = self._ids, self._lanes, self._distinct, self._validity_slot
        added = 0
        for message in messages:
            if message.msg_id in ids:
                continue
            lane = lanes.get(message.priority)
            if lane is None:
                lane = lanes[message.priority] = OrderedDict()
            key = batch_key(message, distinct, slot)
            bucket = lane.get(key)
            if bucket is None:
                bucket = lane[key] = deque()
            bucket.append(message)
            ids.add(message.msg_id)
            added += 1
        if added:
            self._size += added
            if not self._called:
                self._call_taker()
            if self._lingering:
                for lingering in self._lingering:
                    _wake_lingering(lingering)
                self._lingering.clear()
        return added

    async def put(self, message: Message) -> None:
        """Add `message`, waiting for room; waiters get room in the order they came."""
        await self.put_many([message])

    async def put_many(self, messages: Sequence[Message]) -> None:
        """Add `messages` in order, waiting for room. Waiting puts take turns, oldest
        first: a turn is one granted slot plus up to `TURN_MESSAGES - 1` more of the room
        nobody else is waiting for, so a client with thousands of lines shares the room
        with one that has a single message, at little cost per message."""
        index, count = 0, len(messages)
        while index < count:
            if self._waiters or self._size + self._reserved >= self.capacity:
                await self._wait_turn()
                self._reserved -= 1
                self.put_nowait(messages[index])
                index += 1
                limit = index + TURN_MESSAGES - 1
            else:
                limit = count
            while index < min(count, limit) and self._size + self._reserved < self.capacity:
                self.put_nowait(messages[index])
                index += 1
            self._grant()  # a duplicate leaves its slot free

    async def _wait_turn(self) -> None:
        """Wait, FIFO, until one slot is reserved for this caller."""
        granted = asyncio.Event()
        self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self._reserved -= 1  # pass the slot on
            else:
                self._waiters.remove(granted)
            self._grant()
            raise

    @property
    def waiting(self) -> int:
        """Puts and reservations waiting in line for room."""
        return len(self._waiters)

    def can_reserve(self, count: int) -> bool:
        """Whether `count` slots are free and nobody is in line for them."""
        return not self._waiters and self._size + self._reserved + count <= self.capacity

    def reserve_nowait(self, count: int) -> bool:
        """Hold `count` slots at once if `can_reserve`; never jumps the line."""
        if not self.can_reserve(count):
            return False
        self._reserved += count
        return True

    async def reserve(self, count: int) -> None:
        """Hold `count` slots, waiting in line with the puts (one slot per turn). Cancelled,
        it gives back every slot it held, so a timeout costs the others nothing."""
        held = 0
        try:
            while held < count:
                if self._waiters or self._size + self._reserved >= self.capacity:
                    await self._wait_turn()  # its slot is counted in _reserved already
                else:
                    self._reserved += 1
                held += 1
        except BaseException:
            self.release(held)
            raise

    def put_reserved(self, messages: Sequence[Message]) -> None:
        """Add `messages` into as many slots held by `reserve`; never waits."""
        for message in messages:
            self._reserved -= 1
            self.put_nowait(message)
        self._grant()  # a duplicate leaves its slot free

    def release(self, count: int) -> None:
        """Give back `count` held slots that no message will fill."""
        self._reserved -= count
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._size + self._reserved < self.capacity:
            self._reserved += 1
            self._waiters.popleft().set()

    def discard(self, message: Message) -> bool:
        """Take `message` (by msg_id, found under its own batch key) out of the queue, if it
        is there: a message its owner cancelled. False when it is not queued."""
        if message.msg_id not in self._ids:
            return False
        lane = self._lanes.get(message.priority)
        key = batch_key(message, self._distinct, self._validity_slot)
        bucket = lane.get(key) if lane is not None else None
        if lane is None or bucket is None:
            return False
        for queued in bucket:
            if queued.msg_id == message.msg_id:
                bucket.remove(queued)
                break
        else:
            return False
        if not bucket:
            del lane[key]
        if not lane:
            del self._lanes[message.priority]
        self._taken([queued])
        return True

    def _pop(self, limit: int) -> list[Message]:
        for priority in sorted(self._lanes, reverse=True):
            lane = self._lanes[priority]
            if not lane:
                continue
            key, bucket = next(iter(lane.items()))
            batch: list[Message] = []
            take_distinct(bucket, limit, batch, set())
            if not bucket:
                del lane[key]
            elif len(lane) > 1:
                lane.move_to_end(key)  # fairness between keys of one priority
            if not lane:
                del self._lanes[priority]
            self._taken(batch)
            return batch
        return []

    async def take_batch(self, limit: int, linger_s: float = 0.0) -> list[Message]:
        while self._size == 0:
            await self._wait_for_work()
        batch = self._pop(limit)
        self._call_taker()  # work left behind: the next idle taker's turn
        if linger_s > 0 and len(batch) < limit and self._size == 0:
            # A small batch on an idle queue: wait briefly for companions.
            await self._linger(linger_s)
            if self._size:
                self._pop_matching(batch, limit)
                self._call_taker()
        return batch

    async def _linger(self, seconds: float) -> None:
        """Wait until the next put, for `seconds` at most (to a whole millisecond of the
        loop's clock: tick_deadline). A future and a loop timer, not a cancel scope: a
        linger usually runs out, and a cancel scope that expires delivers a cancellation,
        raised and caught, which cost about 130k instructions a message when messages come
        one at a time (callgrind, one message at a time to its report: bench.pipeline's
        unbatched-dlr shape). The daemon runs on asyncio (engine.commands.run)."""
        loop = asyncio.get_running_loop()
        arrival: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(tick_deadline(seconds), _wake_lingering, arrival)
        self._lingering.append(arrival)
        try:
            await arrival
        finally:
            timer.cancel()
            # Still listed unless a put woke it (it ran out, or was cancelled).
            with contextlib.suppress(ValueError):
                self._lingering.remove(arrival)

    async def _wait_for_work(self) -> None:
        """Wait, FIFO among idle takers, until a put or a taker before us calls us."""
        called = asyncio.Event()
        self._takers.append(called)
        try:
            await called.wait()
        except BaseException:
            if called.is_set():
                self._called -= 1
                self._call_taker()  # pass the call on: the work must not wait for a put
            else:
                self._takers.remove(called)
            raise
        self._called -= 1

    def _call_taker(self) -> None:
        """Wake the oldest idle taker if there is work and no woken taker is on its way."""
        if self._size and self._takers and not self._called:
            self._called += 1
            self._takers.popleft().set()

    def _pop_matching(self, batch: list[Message], limit: int) -> None:
        """Fill `batch` up to `limit` with messages of its key to other destinations."""
        like = batch[0]
        lane = self._lanes.get(like.priority)
        if not lane:
            return
        key = batch_key(like, self._distinct, self._validity_slot)
        bucket = lane.get(key)
        if not bucket:
            return
        had = len(batch)
        take_distinct(bucket, limit, batch, {message.to for message in batch})
        if not bucket:
            del lane[key]
        if not lane:
            del self._lanes[like.priority]
        self._taken(batch[had:])

    def _taken(self, messages: list[Message]) -> None:
        """Account for `messages` having left the queue."""
        for message in messages:
            self._ids.discard(message.msg_id)
        self._size -= len(messages)
        self._grant()


def _counts(bridges: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for bridge in bridges:
        counts[bridge] = counts.get(bridge, 0) + 1
    return counts


class DueSource(Protocol):
    async def due(
        self,
        now: float,
        limit: int,
        *,
        exclude: Collection[str] = (),
        since: float | None = None,
    ) -> list[Message]: ...

    async def next_due_at(self, *, after: float) -> float | None: ...


class Scheduler:
    """All bridge queues, plus the feeder loop."""

    def __init__(
        self,
        queues: dict[str, BridgeQueue],
        journal: DueSource,
        *,
        clock: Callable[[], float] = time.time,
        idle_poll_s: float = 1.0,
        full_scan_s: float = 30.0,
    ) -> None:
        self.queues = queues
        self._journal = journal
        self._clock = clock
        self._idle_poll = idle_poll_s
        self._full_scan = full_scan_s
        self._wake = anyio.Event()
        # Ids handed to dispatch but not yet claimed: the feeder must not load them again.
        self.in_hand: set[str] = set()

    def wake_feeder(self) -> None:
        self._wake.set()

    async def put_many(self, messages: Sequence[Message]) -> None:
        """Queue fresh messages, waiting for room. Until queued they count as in hand, so
        a journal scan meanwhile does not load a second copy of them."""
        by_bridge: dict[str, list[Message]] = {}
        for message in messages:
            by_bridge.setdefault(message.bridges[message.bridge_index], []).append(message)
        if len(by_bridge) == 1:
            [(bridge, queued)] = by_bridge.items()
            if self.queues[bridge].put_all_nowait(queued):
                return  # queued without a wait: no scan could run meanwhile
        in_hand = self.in_hand
        ids = [message.msg_id for message in messages]
        in_hand.update(ids)
        try:
            if len(by_bridge) == 1:
                # One bridge, as a line's messages mostly are: the finally takes them out.
                [(bridge, queued)] = by_bridge.items()
                await self.queues[bridge].put_many(queued)
                return
            for bridge, queued in by_bridge.items():
                await self.queues[bridge].put_many(queued)
                in_hand.difference_update([message.msg_id for message in queued])
        finally:
            in_hand.difference_update(ids)

    def discard(self, message: Message) -> bool:
        """Take a cancelled message out of its bridge queue, if it sits there (the journal
        has it final already: a copy that stayed would only lose its claim)."""
        queue = self.queues.get(message.bridge)
        return queue.discard(message) if queue is not None else False

    def reserve_nowait(self, bridges: Sequence[str]) -> bool:
        """One slot per entry of `bridges` (a bridge name per message), all at once or none."""
        counts = _counts(bridges)
        queues = self.queues
        if not all(queues[bridge].can_reserve(count) for bridge, count in counts.items()):
            return False
        for bridge, count in counts.items():
            queues[bridge].reserve_nowait(count)
        return True

    async def reserve(self, bridges: Sequence[str]) -> None:
        """One slot per entry of `bridges`, waiting in each queue's line; cancelled, it
        gives back whatever it held."""
        held: list[tuple[BridgeQueue, int]] = []
        try:
            for bridge, count in _counts(bridges).items():
                queue = self.queues[bridge]
                await queue.reserve(count)
                held.append((queue, count))
        except BaseException:
            for queue, count in held:
                queue.release(count)
            raise

    def put_reserved(self, messages: Sequence[Message]) -> None:
        """Queue fresh messages into the slots `reserve` held for them; never waits."""
        by_bridge: dict[str, list[Message]] = {}
        for message in messages:
            by_bridge.setdefault(message.bridge, []).append(message)
        for bridge, queued in by_bridge.items():
            self.queues[bridge].put_reserved(queued)

    def release(self, bridges: Sequence[str]) -> None:
        """Give back the slots `reserve` held for messages that will not come (refused by
        the journal, a duplicate, or cancelled)."""
        for bridge, count in _counts(bridges).items():
            self.queues[bridge].release(count)

    def _held(self) -> set[str]:
        held: set[str] = set(self.in_hand)
        for queue in self.queues.values():
            held.update(queue.ids)
        return held

    def _load(self, batch: Sequence[Message]) -> int:
        """Queue messages read from the journal; returns how many were not held already."""
        loaded = 0
        for message in batch:
            # Expired messages are queued too: dispatch checks validity before sending and
            # fails them with EXPIRED, journaled like any outcome.
            queue = self.queues.get(message.bridge)
            if queue is None:
                log.error("message_on_unknown_bridge", msg_id=message.msg_id)
                continue
            if queue.put_nowait(message):
                loaded += 1
        return loaded

    async def serve_feeder(self) -> None:
        """Move due messages from the journal into queues, forever.

        Fresh messages reach the queues straight from ingress, so the journal is scanned
        only when something else may have become due: at start (messages left from the
        last run), when woken (a retry or schedule was just committed), when the last
        scan left work behind, when the earliest future due time seen at the last look
        has passed, and every `full_scan_s` as a safety net. Scanning on every idle poll,
        or whenever a fresh message's due time passes, would walk every queued row.
        """
        must_scan = True
        last_full_scan = -math.inf
        # The earliest scheduled or retry time in the future at the last look. Fresh
        # messages are due at once and are queued by ingress, so only this time (and a
        # wake-up when a new schedule or retry is committed) makes a scan worthwhile.
        next_known: float | None = None
        while True:
            room = min(queue.room() for queue in self.queues.values()) if self.queues else 0
            now = self._clock()
            if not must_scan and now - last_full_scan >= self._full_scan:
                must_scan = True
            if not must_scan and next_known is not None and next_known <= now:
                must_scan = True
            scanned = must_scan and room > 0
            limit = min(room, 5000)
            if scanned:
                batch = await self._journal.due(now, limit, exclude=self._held())
                if now - last_full_scan >= self._full_scan:
                    last_full_scan = now
                loaded = self._load(batch)
                # A full page means more may be waiting: read again before sleeping.
                must_scan = len(batch) >= limit
                if must_scan and loaded:
                    continue
            delay = self._idle_poll
            if room <= 0:
                # Full queues: look again soon. A scan owed from before stays owed; full
                # queues alone owe none (what ingress holds is in hand, not due).
                delay = 0.05
            else:
                later = self._clock()
                if scanned or (next_known is not None and next_known <= later):
                    # A retry or schedule whose time came while this turn ran (the scan
                    # takes milliseconds under load) is neither in the scan, which read
                    # up to `now`, nor after `later`, where the look ahead starts: read
                    # that window now. It holds only messages accepted in it, not every
                    # queued row. (Elsewhere the last look ahead proves it empty, and a
                    # retry or schedule committed since has set the wake-up.)
                    missed = await self._journal.due(later, limit, exclude=self._held(), since=now)
                    self._load(missed)
                    must_scan = must_scan or len(missed) >= limit
                # Sleep until the next future due time (a schedule or a retry), a wake-up
                # from ingress or dispatch, or the idle poll, whichever comes first.
                next_known = await self._journal.next_due_at(after=later)
                if next_known is not None:
                    delay = min(delay, max(0.0, next_known - later))
            if not math.isfinite(delay):
                delay = self._idle_poll
            with anyio.CancelScope(deadline=tick_deadline(max(delay, 0.005))):
                await self._wake.wait()
            if self._wake.is_set():
                must_scan = True
            self._wake = anyio.Event()
