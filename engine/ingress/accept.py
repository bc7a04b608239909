"""The one accept path of every front door: submissions of an account in, journaled messages out.

    submissions ─▶ prepare (engine.ingress.prepare) ─▶ the account's rules ─▶ queue room?
       ─▶ ONE journal.accept for the whole batch (group commit) ─▶ scheduler ─▶ counts

Calls made at the same time (one event-loop turn: many HTTP requests of one message each)
share that journal.accept (engine.ingress.coalesce).

NDJSON (engine.ingress.ndjson), SMPP (engine.smpp.server), the HTTP API and Kannel's
sendsms all call `Acceptor.accept`; each door only reads its own wire format, names the
account, and writes its answers. Nothing here knows which door called.

The account's rules, in this order, each a typed refusal (LineError.kind):

- "sender": `from` is not one of the account's `allowed_senders` (when it has any);
- "throttled": over the account's `messages_per_s`/`burst` token bucket, shared by every
  door (and with `[cluster] redis` by every node: engine.account_limits); one token per
  message (per recipient). `retry_after_s` says when it would fit.
  Once one submission of a batch is throttled, the later ones are too (they came later);
- "quota": the account's `daily_quota` of messages per UTC day would be exceeded;
  `retry_after_s` is the time to the next UTC midnight. The count is the journal's
  (`accepted_today`, written in the commit that accepts), so a restart keeps it. On a
  journal shared by a cluster it is read again every QUOTA_READ_S, so the quota holds for
  the whole cluster but for what the other nodes accept in that second.

A submission refused for any reason takes no token and no quota. A duplicate client id
(unique per account) is refused by the journal ("duplicate", `msg_ids`) and gives its
token and quota back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import structlog

from engine.accounts import Account
from engine.ingress.coalesce import CoalescingJournal
from engine.ingress.prepare import CONGESTED, BatchMemo, LineError, LinePreparer, RefusalKind
from engine.journal import Duplicate, JournalError
from engine.models import Message, Submission

log = structlog.get_logger("septet.ingress")

DAY_S = 86_400.0
# On a journal shared by a cluster, how long this node trusts the daily quota's count it
# read (plus its own accepts): the other nodes' accepts of that time may pass the quota.
QUOTA_READ_S = 1.0


class AcceptingJournal(Protocol):
    async def accept(
        self, groups: Sequence[Sequence[Message]]
    ) -> list[list[Message] | Duplicate]: ...

    async def accepted_today(self, account: str, day: int) -> int: ...


class Scheduler(Protocol):
    async def put_many(self, messages: Sequence[Message]) -> None: ...

    def wake_feeder(self) -> None: ...


class QueueRoom(Protocol):
    """engine.scheduler.Scheduler's reservations: one slot per bridge name given."""

    def reserve_nowait(self, bridges: Sequence[str]) -> bool: ...

    async def reserve(self, bridges: Sequence[str]) -> None: ...

    def put_reserved(self, messages: Sequence[Message]) -> None: ...

    def release(self, bridges: Sequence[str]) -> None: ...


Outcome = list[Message] | LineError


def utc_day(now: float) -> int:
    """The UTC day number of a Unix time (days since 1970-01-01): the quota's day."""
    return int(now // DAY_S)


class Acceptor:
    """Prepares, checks, journals and schedules the submissions of every front door."""

    def __init__(
        self,
        preparer: LinePreparer,
        journal: AcceptingJournal,
        scheduler: Scheduler,
        *,
        room: QueueRoom | None = None,
        clock: Callable[[], float] = time.time,
        on_lines: Callable[[str, int], None] | None = None,
        shared_quota: bool = False,
    ) -> None:
        """`on_lines(result, count)` is told how many submissions ended "accepted",
        "rejected" or "duplicate", once per result per `accept` call. `room` (the
        scheduler again, in the daemon) lets a call with `room_wait_s` reserve queue room
        before its commit. `shared_quota`: other processes accept into the same journal
        (a cluster), so the daily quota's count is read again every QUOTA_READ_S."""
        self._preparer = preparer
        self._journal = journal
        # Concurrent calls' journal accepts of one event-loop turn go as one (coalesce).
        # A caller cancelled meanwhile leaves its committed messages to the feeder's scan:
        # woken, it looks at once.
        self._accepting = CoalescingJournal(journal, on_abandoned=scheduler.wake_feeder)
        self._scheduler = scheduler
        self._room = room
        self._clock = clock
        self._on_lines = on_lines
        # account name -> (UTC day, messages accepted that day durable + in flight, when
        # the count was read from the journal).
        self._used: dict[str, tuple[int, int, float]] = {}
        self._shared_quota = shared_quota

    async def accept(
        self,
        account: Account,
        origin: str,
        submissions: Sequence[Submission | bytes],
        *,
        room_wait_s: float | None = None,
        turn: anyio.Lock | None = None,
        on_commit: Callable[[list[Outcome]], None] | None = None,
    ) -> list[Outcome]:
        """Accept a batch of one account's submissions; one outcome per submission, in order.

        `account`: who sends (engine.accounts.Accounts names it). `origin`: where the
        events of the accepted messages go (engine.ingress.events: a connection's or
        session's identity, "smpp:<system_id>", or a door's own); it is stored with each
        message. `submissions`: decoded Submissions, or NDJSON lines as bytes (one JSON
        object each, without the newline; decoded here, a bad one refused "invalid").

        Each outcome is either
        - `list[Message]`: the submission was journaled (committed before this returns),
          one Message per recipient, each with its `msg_id`, `account` and `origin`; or
        - `LineError`: refused, nothing of it journaled. `.kind` (prepare.RefusalKind) is
          what a door maps to its own code; `.error` the sentence for people;
          `.client_ref` the submission's `id` when it was read; `.msg_ids` for a
          "duplicate" (what the id was accepted as before); `.retry_after_s` for
          "throttled" and "quota" (seconds until it would fit), and "congested"/"journal"
          mean send it again later.

        The whole batch goes to the journal in one commit; a journal failure refuses
        every submission that reached it ("journal"). Accepted messages due now are then
        put on their bridge queues: without `room_wait_s` this call waits there for room
        (backpressure, the NDJSON and HTTP way). With `room_wait_s` (SMPP), one slot per
        message due now is reserved before the commit, at once when free, else in line
        with the waiting puts, holding `turn` meanwhile (one place in the line per client
        however many calls it has in flight); past `room_wait_s` every submission that
        would have been journaled is refused "congested", nothing journaled. Scheduled
        messages wake the scheduler's feeder instead. `on_commit(outcomes)`, when given,
        is called with the same outcomes as soon as they are final (after the commit),
        before this call waits for queue room: a door answers its client then, and feels
        the backpressure after (NDJSON).

        Never raises for bad input; cancellation is re-raised (what was committed stays).
        """
        now = self._clock()
        outcomes: list[Outcome | None] = [None] * len(submissions)
        positions: list[int] = []
        groups: list[list[Message]] = []
        self._prepare(account, origin, now, submissions, outcomes, positions, groups)
        if groups and (account.settings.daily_quota is not None or not account.limit.unlimited):
            await self._limit(account, now, positions, groups, outcomes)
        fresh: list[Message] = []
        if groups:
            fresh = await self._commit(account, now, positions, groups, outcomes, room_wait_s, turn)
        results = [outcome for outcome in outcomes if outcome is not None]
        self._tally(results)
        if on_commit is not None:
            on_commit(results)
        if fresh:
            await self._scheduler.put_many(fresh)
        return results

    def _prepare(
        self,
        account: Account,
        origin: str,
        now: float,
        submissions: Sequence[Submission | bytes],
        outcomes: list[Outcome | None],
        positions: list[int],
        groups: list[list[Message]],
    ) -> None:
        """Decode, check and prepare each submission: a refusal goes into `outcomes` at its
        index; a prepared one's Messages (stamped with the account) are appended to `groups`
        and its index to `positions`."""
        decode, prepare = self._preparer.decode, self._preparer.prepare_submission
        memo = BatchMemo()
        name = account.name
        for index, item in enumerate(submissions):
            sub = decode(item) if isinstance(item, bytes) else item
            if isinstance(sub, LineError):
                outcomes[index] = sub
                continue
            if account.allowed_senders and not account.sender_allowed(sub.sender):
                outcomes[index] = _sender_refused(account, sub)
                continue
            prepared = prepare(sub, origin, now, account.webhooks, memo)
            if isinstance(prepared, LineError):
                outcomes[index] = prepared
                continue
            for message in prepared:
                message.account = name
            positions.append(index)
            groups.append(prepared)

    async def _limit(
        self,
        account: Account,
        now: float,
        positions: list[int],
        groups: list[list[Message]],
        outcomes: list[Outcome | None],
    ) -> None:
        """Throughput, then the daily quota (of an account that has either); refused groups
        leave `positions`/`groups`."""
        limit = account.limit
        quota = account.settings.daily_quota
        used = await self._used_today(account, now) if quota is not None else 0
        kept = 0
        limited = not limit.unlimited
        prepaid = await self._prepay(account, groups, now) if limited else 0
        throttled_after: float | None = None
        for position, group in zip(list(positions), list(groups), strict=True):
            count = len(group)
            ref = group[0].client_ref
            if quota is not None and used + count > quota:
                outcomes[position] = _quota_refused(account, ref, used, count, now)
                continue
            if throttled_after is None and limited and not prepaid:
                wait = await limit.take(count, now)
                if wait > 0:
                    throttled_after = wait
            if throttled_after is not None:
                outcomes[position] = _throttled(account, ref, throttled_after)
                continue
            used += count
            positions[kept], groups[kept] = position, group
            kept += 1
        del positions[kept:], groups[kept:]
        if prepaid:  # what the groups refused by the quota took
            await limit.give(prepaid - sum(len(group) for group in groups), now)
        if quota is not None:
            self._used[account.name] = (utc_day(now), used, self._read_at(account, now))

    async def _prepay(
        self, account: Account, groups: Sequence[Sequence[Message]], now: float
    ) -> int:
        """A bucket shared by the cluster costs a Redis round trip a take: a batch's tokens
        are asked for at once (0 when they do not all fit, and each group is then asked
        for in turn); how many were taken."""
        if account.limit.shared is None or len(groups) < 2:
            return 0
        total = sum(len(group) for group in groups)
        return total if await account.limit.take(total, now) == 0.0 else 0

    async def _used_today(self, account: Account, now: float) -> int:
        day = utc_day(now)
        known = self._fresh_count(account, day, now)
        if known is not None:
            return known
        used = await self._journal.accepted_today(account.name, day)
        known = self._fresh_count(account, day, now)  # another call may have loaded it
        if known is not None:
            return known
        self._used[account.name] = (day, used, now)
        return used

    def _fresh_count(self, account: Account, day: int, now: float) -> int | None:
        """The account's count for `day` as this process knows it, if it may be trusted:
        alone on the journal, always (every accept goes through here); on a shared one,
        for QUOTA_READ_S after it was read (other nodes accept too)."""
        known = self._used.get(account.name)
        if known is None or known[0] != day:
            return None
        if self._shared_quota and now - known[2] >= QUOTA_READ_S:
            return None
        return known[1]

    def _read_at(self, account: Account, now: float) -> float:
        known = self._used.get(account.name)
        return known[2] if known is not None else now

    async def _give_back(
        self, account: Account, groups: Sequence[Sequence[Message]], now: float
    ) -> None:
        """Tokens and quota of groups that were not journaled after all."""
        count = sum(len(group) for group in groups)
        if not count:
            return
        await account.limit.give(count, now)
        known = self._used.get(account.name)
        if known is not None and known[0] == utc_day(now):
            self._used[account.name] = (known[0], max(0, known[1] - count), known[2])

    async def _commit(
        self,
        account: Account,
        now: float,
        positions: list[int],
        groups: list[list[Message]],
        outcomes: list[Outcome | None],
        room_wait_s: float | None,
        turn: anyio.Lock | None,
    ) -> list[Message]:
        """Journal the groups; the messages due now that still need queue room (none when
        room was reserved: they are on their queues already)."""
        room = self._room
        held: list[str] = []  # one bridge name per reserved slot not yet filled
        if room is not None and room_wait_s is not None:
            bridges = [m.bridge for group in groups for m in group if m.due_at <= now]
            if bridges and not await _reserve(room, bridges, room_wait_s, turn):
                log.debug("submissions_congested", origin=groups[0][0].origin, bridges=bridges)
                await self._refuse_all(
                    account, now, positions, groups, outcomes, CONGESTED, "congested"
                )
                return []
            held = bridges
        try:
            try:
                results = await self._accepting.accept(groups)
            except JournalError as error:
                log.error(
                    "journal_refused",
                    origin=groups[0][0].origin,
                    count=len(groups),
                    error=str(error),
                )
                sentence = f"not accepted, send it again later: {error}"
                await self._refuse_all(
                    account, now, positions, groups, outcomes, sentence, "journal"
                )
                return []
            fresh, scheduled, duplicates = _sort_results(now, positions, groups, results, outcomes)
            if duplicates:
                await self._give_back(account, duplicates, now)
            if scheduled:
                self._scheduler.wake_feeder()
            if held and room is not None:
                room.put_reserved(fresh)
                # Slots of duplicates are given back in `finally`, one per bridge name.
                unfilled = Counter(held)
                unfilled.subtract(message.bridge for message in fresh)
                held = list(unfilled.elements())
                return []
            return fresh
        finally:
            if held and room is not None:
                room.release(held)  # refused, duplicates, or cancelled: nothing to fill

    async def _refuse_all(
        self,
        account: Account,
        now: float,
        positions: list[int],
        groups: list[list[Message]],
        outcomes: list[Outcome | None],
        sentence: str,
        kind: RefusalKind,
    ) -> None:
        """Every group refused for the engine's state (congested queues, the journal):
        its tokens and quota given back, its outcome the sentence."""
        await self._give_back(account, groups, now)
        for position, group in zip(positions, groups, strict=True):
            outcomes[position] = LineError(sentence, group[0].client_ref, kind)

    def _tally(self, results: Sequence[Outcome]) -> None:
        on_lines = self._on_lines
        if on_lines is None:
            return
        accepted = duplicate = 0
        for outcome in results:
            if not isinstance(outcome, LineError):
                accepted += 1
            elif outcome.kind == "duplicate":
                duplicate += 1
        rejected = len(results) - accepted - duplicate
        if accepted:
            on_lines("accepted", accepted)
        if rejected:
            on_lines("rejected", rejected)
        if duplicate:
            on_lines("duplicate", duplicate)


def _sender_refused(account: Account, sub: Submission) -> LineError:
    return LineError(
        f"from {sub.sender!r} is not one of the senders account {account.name!r} may use",
        sub.id,
        "sender",
    )


def _throttled(account: Account, ref: str | None, wait: float) -> LineError:
    settings = account.settings
    return LineError(
        f"account {account.name!r} is over its {settings.messages_per_s:g} messages per second:"
        f" send it again in {wait:.3g} s",
        ref,
        "throttled",
        retry_after_s=wait,
    )


def _quota_refused(
    account: Account, ref: str | None, used: int, count: int, now: float
) -> LineError:
    wait = (utc_day(now) + 1) * DAY_S - now
    return LineError(
        f"account {account.name!r} has used {used} of its daily quota of"
        f" {account.settings.daily_quota} messages and this is {count} more;"
        " the quota starts again at 00:00 UTC",
        ref,
        "quota",
        retry_after_s=wait,
    )


def _sort_results(
    now: float,
    positions: list[int],
    groups: list[list[Message]],
    results: Sequence[list[Message] | Duplicate],
    outcomes: list[Outcome | None],
) -> tuple[list[Message], bool, list[list[Message]]]:
    """Each group's outcome set from the journal's result; returns the messages due now,
    whether any is scheduled for later, and the groups that were duplicates."""
    fresh: list[Message] = []
    scheduled = False
    duplicates: list[list[Message]] = []
    for position, group, result in zip(positions, groups, results, strict=True):
        if isinstance(result, Duplicate):
            duplicates.append(group)
            outcomes[position] = _duplicate(result)
            continue
        outcomes[position] = result
        for message in result:
            if message.due_at <= now:
                fresh.append(message)
            else:
                scheduled = True
    return fresh, scheduled, duplicates


def _duplicate(result: Duplicate) -> LineError:
    return LineError(
        f"duplicate id {result.client_ref!r}: already accepted as msg_id "
        + ", ".join(result.msg_ids),
        result.client_ref,
        "duplicate",
        tuple(result.msg_ids),
    )


async def _reserve(
    room: QueueRoom, bridges: Sequence[str], wait_s: float, turn: anyio.Lock | None
) -> bool:
    """Reserve one slot per bridge name within `wait_s`; False if the time ran out (then
    nothing is held: a cancelled reservation gives its slots back, or on to the next)."""
    if room.reserve_nowait(bridges):
        return True
    with anyio.move_on_after(wait_s):
        if turn is None:
            await room.reserve(bridges)
        else:
            async with turn:
                await room.reserve(bridges)
        return True
    return False
