"""Delivery reports: provider callbacks and status polling -> journaled, normalised `dlr` events.

Receipts arrive two ways. Providers that push (dsc, routemobile) call the daemon's HTTP
listener at `/dlr/<bridge>`; the bridge's driver checks credentials and parses the request.
Providers that must be asked (bsg, smsclub) are polled by `serve_poller`, in batches the
driver allows, through the bridge's request limiter (the one its sends go through: the
provider counts both), by the provider's rules (`PollPolicy`): a message is first asked
about one poll interval after it is submitted, then after waits that double while it
stays pending, never closer together than the provider's floor (BSG counts more than
about one poll a minute as abuse: docs/providers.md).

A receipt is matched to its message by provider id (or reference). Those found by
provider id, the common case, are looked up and their changes journaled in one turn of
the journal (Journal.find_and_record), not a read and then a write. One that arrives
before its submit is journaled (a fast provider can call back before septet has
recorded the reply) is stored as an orphan and matched when the submit is recorded.
The handler remembers which provider ids it stored, so a submit looks in the journal
only when one of its own ids is among them. An orphan still unmatched after
ORPHAN_KEEP_S is for a message that never asked for a report (the journal does not
index those: engine.journal) or that this journal never sent: it is dropped with a log
line instead of being looked for at every later submit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Protocol, TypeVar

import anyio
import anyio.lowlevel
import msgspec
import structlog

from bridges.base import (
    BridgeDriver,
    Capabilities,
    HttpCall,
    HttpReply,
    Receipt,
    StatusQuery,
    UnparseableReply,
    ascii_digits,
    retry_after_seconds,
)
from engine import lifecycle
from engine.bridge_limits import BridgeGate, wait_for_turn
from engine.http_errors import TransportError
from engine.journal import (
    Change,
    Decide,
    JournalError,
    MarkPolled,
    PollDue,
    SchedulePolls,
    StoreOrphanReceipt,
)
from engine.log import describe_call
from engine.models import Event, Message

log = structlog.get_logger("septet.dlr")
R = TypeVar("R")

# How long an orphan receipt waits for its submit to be journaled: normally milliseconds,
# but the dispatcher holds outcomes through journal write failures (retrying for up to
# 30 s between attempts), so this is generous.
ORPHAN_KEEP_S = 600.0
# At most this many orphans are remembered per bridge; past it the oldest are dropped
# early (a provider reporting on messages that asked for no report, in bulk).
ORPHANS_REMEMBERED = 10_000


receipt_encoder = msgspec.msgpack.Encoder()
receipt_decoder = msgspec.msgpack.Decoder(Receipt)


class ReceiptJournal(Protocol):
    async def find_by_provider_id(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> dict[str, Message]: ...

    async def find_and_record(
        self, bridge: str, provider_ids: Sequence[str], decide: Decide[R]
    ) -> R: ...

    async def find_by_reference(self, references: Sequence[str]) -> dict[str, Message]: ...

    async def take_orphan_receipts(
        self, bridge: str, provider_ids: Sequence[str]
    ) -> list[bytes]: ...

    async def orphan_receipt_ids(self) -> list[tuple[str, str, float]]: ...

    async def awaiting_poll(self, bridge: str, now: float, limit: int) -> list[PollDue]: ...

    async def unconfirmed(self, bridge: str) -> list[Message]: ...

    async def record(self, changes: Sequence[Change]) -> None: ...


class EventEmitter(Protocol):
    def emit(self, origin: str, event: Event) -> None: ...


class Requester(Protocol):
    async def request(self, call: HttpCall) -> HttpReply: ...


class _ReceiptGroup:
    """Receipts from several callbacks, journaled together."""

    def __init__(self, items: list[tuple[str, Sequence[Receipt]]]) -> None:
        self.items = items
        # asyncio's Event: one per group, and an anyio Event costs about 13k instructions
        # to make against 3k (callgrind); the daemon runs on asyncio.
        self.done = asyncio.Event()
        self.error: BaseException | None = None


class _Reported:
    """What a batch of reports comes to, told once its changes are committed: the events,
    the (state, seconds) of reports for metrics, the charges stated, which message each
    matched report was for; `rest`: the reports no message was found for by provider id;
    `ended`: the messages a final report of the batch ended (a later report of the same
    batch for one of them, a provider's repeated callback, counts for nothing)."""

    __slots__ = ("charges", "ended", "events", "matched", "rest", "told")

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []
        self.told: list[tuple[str, float | None]] = []
        self.charges: list[lifecycle.Charge] = []
        self.matched: list[tuple[str, Receipt]] = []
        self.rest: list[Receipt] = []
        self.ended: set[str] = set()


class ReceiptHandler:
    """Matches receipts to messages, journals final states, emits `dlr` events."""

    def __init__(
        self,
        journal: ReceiptJournal,
        events: EventEmitter,
        *,
        clock: Callable[[], float] = time.time,
        on_receipt: Callable[[str, str, float | None], None] | None = None,
        on_charge: Callable[[str, Sequence[lifecycle.Charge]], None] | None = None,
        report_timeout_s: float = lifecycle.DEFAULT_REPORT_TIMEOUT_S,
    ) -> None:
        """`on_receipt(bridge, state, seconds)` is told of every matched report; `seconds`
        runs from the submit request to a final report, None for an intermediate one.
        `on_charge(bridge, charges)`: the charges providers stated in reports, once journaled."""
        self._journal = journal
        self._events = events
        self._clock = clock
        self._on_receipt = on_receipt
        self._on_charge = on_charge
        self._report_timeout_s = report_timeout_s
        # bridge -> provider id -> when its orphan receipt was stored (oldest first), for
        # orphans stored this run and not yet matched or dropped.
        self._orphans: dict[str, dict[str, float]] = {}
        # bridge -> recipient's digits -> provider ids of this run's orphans sent there: a
        # report that came while its request was in flight, whose reply was then lost,
        # is matched by recipient once its message is unconfirmed (match_unconfirmed).
        self._orphan_recipients: dict[str, dict[str, list[str]]] = {}
        self._open_group: _ReceiptGroup | None = None

    async def handle(self, bridge: str, receipts: Sequence[Receipt]) -> None:
        """Journal and emit `receipts`; returns once they are durable.

        Callbacks arrive one HTTP request per report (DSC, Route Mobile). Reports handed in
        during the same turn of the event loop form one group: one lookup and one commit
        for all of them, and every caller returns after that shared commit (so a provider
        is answered 200 only for what is journaled).
        """
        if not receipts:
            return
        group = self._open_group
        if group is not None:
            group.items.append((bridge, receipts))
            await group.done.wait()
            if group.error is not None:
                raise group.error
            return
        group = self._open_group = _ReceiptGroup([(bridge, receipts)])
        try:
            await (
                anyio.lowlevel.checkpoint()
            )  # let callbacks already parsed this turn join the group
        finally:
            self._open_group = None
        try:
            by_bridge: dict[str, list[Receipt]] = {}
            for item_bridge, item_receipts in group.items:
                by_bridge.setdefault(item_bridge, []).extend(item_receipts)
            for item_bridge, item_receipts in by_bridge.items():
                await self._process(item_bridge, item_receipts)
        except BaseException as error:
            group.error = error
            raise
        finally:
            group.done.set()

    async def _process(self, bridge: str, receipts: Sequence[Receipt]) -> None:
        """The common case, reports whose message is found by provider id, in one journal
        turn (lookup and commit together); then the rest by every other key (`_process_rest`)."""
        now = self._clock()
        ids = [receipt.provider_id for receipt in receipts if receipt.provider_id]
        if ids:
            decide = functools.partial(self._decide, bridge, receipts, now)
            reported = await self._journal.find_and_record(bridge, ids, decide)
            self._tell(bridge, reported)
            rest = reported.rest
        else:
            rest = list(receipts)
        if rest:
            await self._process_rest(bridge, rest, now)
        await self._drop_stale_orphans(bridge, now)

    def _decide(
        self, bridge: str, receipts: Sequence[Receipt], now: float, found: dict[str, Message]
    ) -> tuple[list[Change], _Reported]:
        """The lifecycle's steps for the reports whose message was `found` by provider id.
        Pure (run on the journal's writer, perhaps twice): nothing is told or remembered."""
        changes: list[Change] = []
        reported = _Reported()
        for receipt in receipts:
            message = found.get(receipt.provider_id) if receipt.provider_id else None
            if message is None:
                reported.rest.append(receipt)
            else:
                self._take_report(bridge, message, receipt, now, changes, reported)
        return changes, reported

    def _take_report(
        self,
        bridge: str,
        message: Message,
        receipt: Receipt,
        now: float,
        changes: list[Change],
        reported: _Reported,
    ) -> None:
        if message.msg_id in reported.ended:
            return  # ended by a report earlier in this batch: `message` is as read before it
        step = lifecycle.on_report(message, receipt, bridge, now, self._report_timeout_s)
        if step is None:
            return  # final already (a repeated report: the first one counted)
        if receipt.final:
            reported.ended.add(message.msg_id)
        changes.extend(step.changes)
        reported.events.extend(step.events)
        reported.matched.append((message.msg_id, receipt))
        if step.report_state is not None:
            # The claim (inflight_at) is taken just before the submit request goes out.
            reported.told.append(
                (receipt.state, now - (message.inflight_at or message.accepted_at))
            )
        if step.charge is not None:
            reported.charges.append(step.charge)

    async def _process_rest(self, bridge: str, receipts: Sequence[Receipt], now: float) -> None:
        """Reports not found by provider id: matched by reference or recipient (`_match`),
        else kept as orphans for a submit not yet journaled."""
        matched = await self._match(bridge, receipts)
        changes: list[Change] = []
        reported = _Reported()
        stored: list[str] = []
        for receipt, message in zip(receipts, matched, strict=True):
            if message is not None:
                self._take_report(bridge, message, receipt, now, changes, reported)
            elif receipt.provider_id:
                stored.append(receipt.provider_id)
                changes.append(
                    StoreOrphanReceipt(
                        bridge=bridge,
                        provider_id=receipt.provider_id,
                        receipt=receipt_encoder.encode(receipt),
                        at=now,
                    )
                )
                self._orphans.setdefault(bridge, {}).setdefault(receipt.provider_id, now)
                if receipt.recipient:
                    self._orphan_recipients.setdefault(bridge, {}).setdefault(
                        ascii_digits(receipt.recipient), []
                    ).append(receipt.provider_id)
                log.debug("receipt_stored_early", bridge=bridge, provider_id=receipt.provider_id)
            else:
                log.warning("receipt_unmatched", bridge=bridge, reference=receipt.reference)
        if changes:
            await self._journal.record(changes)
        self._tell(bridge, reported)
        if stored:
            await self._match_submitted_meanwhile(bridge, stored)

    async def _match_submitted_meanwhile(self, bridge: str, stored: Sequence[str]) -> None:
        """Replay the orphans just stored whose submit was journaled after their lookup by
        provider id: that submit looked for early reports before these were remembered,
        so it found none (a report handed in while its request's reply was being recorded,
        then matched by other keys meanwhile). A submit journaled after this look finds
        them remembered (match_orphans); taking an orphan is atomic, so one replays it."""
        found = await self._journal.find_by_provider_id(bridge, stored)
        if found:
            await self._replay(bridge, list(found))

    def _tell(self, bridge: str, reported: _Reported) -> None:
        """Once the reports' changes are committed: metrics, charges, events."""
        if self._on_receipt is not None:
            for state, seconds in reported.told:
                self._on_receipt(bridge, state, seconds)
        if reported.charges and self._on_charge is not None:
            self._on_charge(bridge, reported.charges)
        for origin, event in reported.events:
            self._events.emit(origin, event)
        if reported.matched and log.is_enabled_for(logging.DEBUG):
            for msg_id, receipt in reported.matched:
                log.debug(
                    "message_report",
                    bridge=bridge,
                    msg_id=msg_id,
                    state=receipt.state,
                    final=receipt.final,
                )

    async def _match(self, bridge: str, receipts: Sequence[Receipt]) -> list[Message | None]:
        """Each receipt's message by every other key the provider gives (its id was looked
        for already): the reference septet sent (BSG, when the id was never learned or the
        report carries both); and, for a report whose id septet never learned because the
        reply was lost, the one unconfirmed message on this bridge to that recipient,
        oldest first."""
        references = [r.reference for r in receipts if r.reference]
        by_ref = await self._journal.find_by_reference(references) if references else {}
        found: list[Message | None] = []
        unmatched: list[int] = []
        for index, receipt in enumerate(receipts):
            message = by_ref.get(receipt.reference) if receipt.reference else None
            if message is None and receipt.recipient:
                unmatched.append(index)
            found.append(message)
        if unmatched:
            waiting = await self._journal.unconfirmed(bridge)
            by_recipient: dict[str, list[Message]] = {}
            for message in waiting:
                by_recipient.setdefault(ascii_digits(message.to), []).append(message)
            for index in unmatched:
                recipient = receipts[index].recipient
                candidates = by_recipient.get(ascii_digits(recipient or ""))
                if candidates:
                    found[index] = candidates.pop(0)
        return found

    async def recover_orphans(self) -> int:
        """At start-up: remember the orphans an earlier run stored, and match those whose
        submit was journaled before that run stopped (a kill between the submit's commit
        and its orphan match). Returns how many orphans were found. Their keep time
        starts again now: the time the daemon was down does not count against them."""
        stored = await self._journal.orphan_receipt_ids()
        now = self._clock()
        for bridge, provider_id, _ in stored:
            self._orphans.setdefault(bridge, {}).setdefault(provider_id, now)
        for bridge, remembered in list(self._orphans.items()):
            ids = list(remembered)
            found = await self._journal.find_by_provider_id(bridge, ids)
            if found:
                # Before any staleness check: the daemon may have been down for longer
                # than ORPHAN_KEEP_S, and these have their message now.
                await self._replay(bridge, list(found))
        return len(stored)

    async def match_recovered_unconfirmed(self) -> None:
        """At start-up, after crash recovery: replay the orphans an earlier run stored on a
        bridge that now has unconfirmed messages. A report that came while its request was
        in flight, before a kill, is matched by recipient to the message recovery made
        unconfirmed (an earlier run's orphans' recipients are not remembered)."""
        for bridge, remembered in list(self._orphans.items()):
            if remembered and await self._journal.unconfirmed(bridge):
                await self._replay(bridge, list(remembered))

    def has_orphans(self, bridge: str) -> bool:
        return bool(self._orphans.get(bridge))

    async def match_orphans(self, bridge: str, provider_ids: Sequence[str]) -> None:
        """Called after submits are journaled: replay receipts that came early."""
        remembered = self._orphans.get(bridge)
        if not remembered or not provider_ids:
            return
        early = [provider_id for provider_id in provider_ids if provider_id in remembered]
        if early:  # matched first: a late submit still finds its old report
            await self._replay(bridge, early)
        await self._drop_stale_orphans(bridge, self._clock())

    async def match_unconfirmed(self, bridge: str, messages: Sequence[Message]) -> None:
        """Called after `messages` became unconfirmed (their reply was lost, their ids never
        learned): replay the orphan reports that came meanwhile for their recipients;
        `_match` now finds each message by recipient."""
        by_recipient = self._orphan_recipients.get(bridge)
        remembered = self._orphans.get(bridge)
        if not by_recipient or not remembered:
            return
        early = [
            provider_id
            for message in messages
            for provider_id in by_recipient.pop(ascii_digits(message.to), ())
            if provider_id in remembered
        ]
        if early:
            await self._replay(bridge, early)

    async def _replay(self, bridge: str, early: Sequence[str]) -> None:
        """Take the orphans stored for `early` provider ids and handle them again."""
        stored = await self._journal.take_orphan_receipts(bridge, early)
        remembered = self._orphans.get(bridge, {})
        for provider_id in early:
            remembered.pop(provider_id, None)
        if stored:
            await self.handle(bridge, [receipt_decoder.decode(item) for item in stored])

    async def _drop_stale_orphans(self, bridge: str, now: float) -> None:
        """Drop orphans older than ORPHAN_KEEP_S (or past ORPHANS_REMEMBERED) from the
        journal and from memory. A journal that cannot be written keeps them for later."""
        remembered = self._orphans.get(bridge)
        if not remembered:
            return
        oldest = now - ORPHAN_KEEP_S
        excess = len(remembered) - ORPHANS_REMEMBERED
        stale: list[str] = []
        for provider_id, stored_at in remembered.items():
            if stored_at >= oldest and len(stale) >= excess:
                break
            stale.append(provider_id)
        if not stale:
            return
        try:
            dropped = await self._journal.take_orphan_receipts(bridge, stale)
        except JournalError as error:
            log.warning("orphan_receipts_kept", bridge=bridge, error=str(error))
            return
        for provider_id in stale:
            remembered.pop(provider_id, None)
        recipients = self._orphan_recipients.get(bridge)
        if recipients:
            for digits, provider_ids in list(recipients.items()):
                kept = [provider_id for provider_id in provider_ids if provider_id in remembered]
                if kept:
                    recipients[digits] = kept
                else:
                    del recipients[digits]
        log.warning(
            "receipts_unmatched",
            bridge=bridge,
            receipts=len(dropped),
            provider_ids=stale[:10],
            why="no submitted message that asked for a report has these provider ids",
        )


# ── Status polling ─────────────────────────────────────────────────────────────────

# Messages the poller reads from the journal per round.
POLL_FETCH = 1000
# The poller looks for messages that fell due at least this often (sooner where the poll
# interval is shorter).
POLL_TICK_S = 1.0
# How long the poller pauses after a 429 that names no Retry-After.
THROTTLED_PAUSE_S = 1.0
# Doublings past this many add nothing a cap would not cut (2^32 intervals).
_MOST_DOUBLINGS = 32


class PollPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a message awaiting its report is asked about.

    The first poll comes `interval_s` after the poller first sees the message submitted;
    after each poll that leaves it pending (or gets no answer) the wait doubles, up to
    `max_interval_s`; no wait is below `floor_s`, the provider's floor per message.

        submit ──interval──▶ poll 1 ──interval──▶ poll 2 ──2×──▶ poll 3 ──4×──▶ … ──max──▶
    """

    interval_s: float
    max_interval_s: float
    floor_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.floor_s >= 0:
            raise ValueError(f"a poll floor must be 0 or more, not {self.floor_s}")
        if not self.interval_s >= max(self.floor_s, 1e-9):
            raise ValueError(
                f"a poll interval ({self.interval_s}) must be positive and at least the"
                f" floor ({self.floor_s})"
            )
        if not self.max_interval_s >= self.interval_s:
            raise ValueError(
                f"a poll backoff cap ({self.max_interval_s}) must be at least the interval"
                f" ({self.interval_s})"
            )

    def wait_after(self, polls: int) -> float:
        """Seconds from a message's `polls`-th poll to its next; 0 polls: from its submit."""
        doublings = min(max(polls - 1, 0), _MOST_DOUBLINGS)
        return max(self.floor_s, min(self.max_interval_s, self.interval_s * 2.0**doublings))


def poll_policy(
    bridge: str,
    capabilities: Capabilities,
    *,
    interval_s: float,
    max_interval_s: float,
    floor_s: float | None = None,
) -> PollPolicy:
    """A bridge's policy from its config: `floor_s` None means the provider's own floor
    (`Capabilities.min_poll_interval_s`: BSG 60 s), and an interval below the floor is
    raised to it, with a log line saying so."""
    floor = capabilities.min_poll_interval_s if floor_s is None else floor_s
    interval = max(interval_s, floor)
    if interval > interval_s:
        log.warning(
            "poll_interval_raised",
            bridge=bridge,
            configured_s=interval_s,
            interval_s=interval,
            why="the provider counts polls of one message closer together as abuse",
        )
    return PollPolicy(
        interval_s=interval, max_interval_s=max(max_interval_s, interval), floor_s=floor
    )


def plan_polls(due: Sequence[PollDue], max_ids: int) -> list[list[PollDue]]:
    """One list per status request: messages with a provider id `max_ids` at a time, each
    message without one on its own (asked about by reference where the driver can)."""
    with_id = [item for item in due if item.message.provider_id]
    per_call = max(1, max_ids)
    requests = [with_id[start : start + per_call] for start in range(0, len(with_id), per_call)]
    requests.extend([item] for item in due if not item.message.provider_id)
    return requests


def polled(chunk: Sequence[PollDue], at: float, policy: PollPolicy) -> list[Change]:
    """The journal's note that `chunk` was asked about at `at`: each message's next poll
    after the wait its count of polls gives (one change per count)."""
    by_count = sorted(chunk, key=lambda item: item.polls)
    return [
        MarkPolled(
            msg_ids=[item.message.msg_id for item in items],
            at=at,
            next_at=at + policy.wait_after(polls + 1),
        )
        for polls, items in groupby(by_count, key=lambda item: item.polls)
    ]


async def serve_shared_orphans(handler: ReceiptHandler, *, interval_s: float) -> None:
    """Cluster mode (docs/cluster.md): a report that reached one node before another node
    journaled its submit is kept as an orphan in the shared journal, where the submitting
    node's own matching (kept in its memory) does not see it. Every `interval_s`, match
    the stored orphans whose message is now journaled. A journal that cannot be read is
    tried again at the next turn."""
    while True:
        await anyio.sleep(interval_s)
        try:
            await handler.recover_orphans()
        except JournalError as error:
            log.error("journal_read_failed", during="shared_orphans", error=str(error))


async def serve_poller(
    *,
    bridge: str,
    driver: BridgeDriver,
    client: Requester,
    journal: ReceiptJournal,
    handler: ReceiptHandler,
    limiter: BridgeGate,
    policy: PollPolicy,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    on_request: Callable[[float, str], None] | None = None,
) -> None:
    """Poll `bridge` for reports of submitted messages, forever. Each status request
    takes its turn from `limiter`, the bridge's rate limits, shared with its sends.
    `on_request(seconds, status)` is told how each status request went ("transport" when
    it got no reply)."""
    per_call = driver.capabilities.max_status_ids
    tick = min(policy.interval_s, POLL_TICK_S)
    while True:
        now = clock()
        due = await journal.awaiting_poll(bridge, now, POLL_FETCH)
        fresh = [item.message.msg_id for item in due if item.next_poll_at == 0]
        if fresh:
            # Just submitted: asked about one interval from now, not at once.
            await journal.record([SchedulePolls(msg_ids=fresh, at=now + policy.wait_after(0))])
        asked = [item for item in due if item.next_poll_at > 0]
        for chunk in plan_polls(asked, per_call):
            await _poll(bridge, driver, client, handler, limiter, chunk, sleep, on_request)
            await journal.record(polled(chunk, clock(), policy))
        if len(due) < POLL_FETCH:
            await sleep(tick)


async def _poll(
    bridge: str,
    driver: BridgeDriver,
    client: Requester,
    handler: ReceiptHandler,
    limiter: BridgeGate,
    chunk: Sequence[PollDue],
    sleep: Callable[[float], Awaitable[None]],
    on_request: Callable[[float, str], None] | None,
) -> None:
    """One status request for `chunk`, its receipts handled; after a 429, the pause the
    provider asked for (Retry-After) before the next one."""
    queries = [
        StatusQuery(provider_id=item.message.provider_id, reference=item.message.reference)
        for item in chunk
    ]
    call = driver.build_status(queries)
    if call is None:
        # None of these can be asked about (SMS Club without an id): their report
        # deadline ends them. Marked polled all the same, so they back off.
        return
    await wait_for_turn(limiter, 1, 0, sleep=sleep)
    if log.is_enabled_for(logging.DEBUG):
        log.debug("provider_request", bridge=bridge, call="status", **describe_call(call))
    receipts: Sequence[Receipt] = []
    pause = 0.0
    started = time.perf_counter()
    try:
        reply = await client.request(call)
    except TransportError as error:
        if on_request is not None:
            on_request(time.perf_counter() - started, "transport")
        log.warning("poll_failed", bridge=bridge, error=str(error))
    else:
        if on_request is not None:
            on_request(time.perf_counter() - started, str(reply.status))
        if reply.status == 429:
            pause = retry_after_seconds(reply.headers) or THROTTLED_PAUSE_S
            log.warning("poll_throttled", bridge=bridge, pause_s=pause)
        try:
            receipts = driver.parse_status(queries, reply)
        except UnparseableReply as error:
            log.warning("poll_failed", bridge=bridge, status=reply.status, error=str(error))
    await handler.handle(bridge, receipts)
    if pause > 0:
        await sleep(pause)
