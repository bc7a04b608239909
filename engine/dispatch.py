"""Per-bridge dispatch: batch -> claim -> driver.build_send -> http_io -> driver.parse_send.

`pool` workers per bridge each loop: take a batch from the bridge queue, pass the token
buckets (requests/s and messages/s) and the circuit breaker, claim the messages in the
journal (accepted -> inflight: after a crash these are the ones whose fate may be
unknown), make the call, and turn each message's outcome into a journal change and an
event. Retries go back to the journal with a due time (the feeder brings them back);
failover moves a message to the next bridge of its route.

What may have reached the provider is never silently resent: a lost reply is retried
only where the provider deduplicates (BSG by reference, SMS Club within its duplicate
window); elsewhere the message fails with "outcome unknown".
"""

from __future__ import annotations

import logging
import operator
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import msgspec
import structlog

from bridges.base import (
    BridgeDriver,
    HttpCall,
    HttpReply,
    OutboundMessage,
    Outcome,
    Rejected,
    RetryLater,
    Throttled,
    Unknown,
    UnparseableReply,
)
from engine import lifecycle
from engine.bridge_limits import BridgeGate, LocalGate, wait_for_turn
from engine.circuit import CircuitBreaker
from engine.http_errors import ConnectFailed, ReplyLost, ReplyTooLarge, TransportError
from engine.journal import Change, JournalError, MarkRetry
from engine.log import describe_call, redact_text
from engine.models import Event, Message
from engine.retry import RetryPolicy
from engine.scheduler import BridgeQueue, Scheduler

log = structlog.get_logger("septet.dispatch")


# A journal that cannot be written (disk full, I/O error) is retried after this long,
# doubling up to JOURNAL_RETRY_MAX_S: dispatch waits for it rather than stop the daemon.
JOURNAL_RETRY_S = 1.0
JOURNAL_RETRY_MAX_S = 30.0

# The `reason` of a retry or failure, as metrics count it (engine.metrics.REASONS): the
# kind of outcome or failure, never the provider's code or text (unbounded labels).
OUTCOME_REASONS: dict[type, str] = {
    Throttled: "throttled",
    RetryLater: "retry_later",
    Rejected: "rejected",
    Unknown: "unknown",
    ConnectFailed: "connect_failed",
    ReplyLost: "reply_lost",
    ReplyTooLarge: "reply_too_large",
    UnparseableReply: "unparseable",
}


def failure_reason(failure: object) -> str:
    """The metrics reason of an outcome or transport error."""
    return OUTCOME_REASONS.get(type(failure), "transport")


class Requester(Protocol):
    async def request(self, call: HttpCall) -> HttpReply: ...


class ClaimingJournal(Protocol):
    async def claim(
        self,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
        *,
        record: Sequence[Change] = (),
    ) -> list[Message]: ...

    async def record(self, changes: Sequence[Change]) -> None: ...


class EventEmitter(Protocol):
    def emit_all(self, events: Sequence[tuple[str, Event]]) -> None:
        """Announce each (origin, event), in order."""
        ...


class DispatchHooks(Protocol):
    """What dispatch tells the rest of the daemon (metrics, delivery-report matching)."""

    def submitted(self, bridge: str, messages: Sequence[tuple[Message, str | None]]) -> None: ...

    def charged(self, bridge: str, charges: Sequence[lifecycle.Charge]) -> None: ...

    def unconfirmed(self, bridge: str, messages: Sequence[Message]) -> None: ...

    def outcome(self, bridge: str, outcome: str, count: int, reason: str | None = None) -> None: ...

    def request_done(self, bridge: str, seconds: float, status: str) -> None: ...

    def bucket_wait(self, bridge: str, seconds: float) -> None: ...


_MSG_ID = operator.attrgetter("msg_id")


def _same_price(message: Message, bridge: str) -> tuple[float, str]:
    return message.cost, message.currency


def _takes_anything(message: Message, bridge: str, now: float) -> bool:
    return True


class Unsaved:
    """One request's outcomes on their way to the journal: the changes to commit, then the
    events to emit and the submits to announce once they are committed."""

    __slots__ = ("changes", "charges", "events", "requests", "retried", "submitted", "unconfirmed")

    def __init__(self, requests: int = 0) -> None:
        self.changes: list[Change] = []
        self.events: list[tuple[str, Event]] = []
        self.submitted: list[tuple[Message, str | None]] = []
        # What the provider said it charged (engine.lifecycle.Step.charge).
        self.charges: list[lifecycle.Charge] = []
        # Messages now awaiting a report under an id never learned (a lost reply).
        self.unconfirmed: list[Message] = []
        # Requests counted in BridgeDispatcher.in_flight until these are committed.
        self.requests = requests
        # Whether a change sends a message back to the journal to wait (MarkRetry).
        self.retried = False


class BridgeDispatcher:
    def __init__(
        self,
        *,
        name: str,
        driver: BridgeDriver,
        client: Requester,
        queue: BridgeQueue,
        scheduler: Scheduler,
        journal: ClaimingJournal,
        events: EventEmitter,
        hooks: DispatchHooks,
        policy: RetryPolicy,
        limits: BridgeGate,
        circuit: CircuitBreaker,
        pool: int,
        linger_s: float,
        max_recipients: int,
        attempts_per_bridge: int,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        redact: Callable[[str], str] = redact_text,
        price: Callable[[Message, str], tuple[float, str]] | None = None,
        takes: Callable[[Message, str, float], bool] | None = None,
        report_timeout_s: float = lifecycle.DEFAULT_REPORT_TIMEOUT_S,
        leased: Callable[[float], bool] = lambda now: True,
    ) -> None:
        """`leased(now)`: whether this node holds its cluster lease (engine.membership); a
        node that may be taken for dead claims nothing until it holds it again."""
        self.name = name
        self.driver = driver
        self._client = client
        self.queue = queue
        self._scheduler = scheduler
        self._journal = journal
        self._events = events
        self._hooks = hooks
        self._policy = policy
        # The bridge's requests/s and messages/s (engine.bridge_limits), shared with its
        # status poller, and with the other nodes of a cluster when the gate is shared.
        self.limits = limits
        # A gate of this process alone answers without I/O: asked directly, not awaited.
        self._local_gate = limits if isinstance(limits, LocalGate) else None
        self.circuit = circuit
        self._pool = pool
        self._linger = linger_s
        self._max = min(max_recipients, driver.capabilities.max_recipients)
        self._failover_policy = msgspec.structs.replace(
            policy, max_attempts=min(policy.max_attempts, attempts_per_bridge)
        )
        self._clock = clock
        self._jitter = jitter
        # Error texts go to clients' `failed` events: an HTTP client's error may quote the
        # request URL, credentials in its query string included.
        self._redact = redact
        # A failover's new cost estimate (engine.pricing); without tables, the old one.
        self._price = price or _same_price
        self._takes = takes or _takes_anything
        self._report_timeout_s = report_timeout_s
        self._leased = leased
        self._base_context = self._build_context()
        self.in_flight = 0
        # Set by the daemon's drain: finish what is in flight, start nothing new. What is
        # still queued stays accepted in the journal and resumes at the next start.
        self.draining = False

    async def serve(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self._pool):
                tg.start_soon(self._serve_worker)

    async def _serve_worker(self) -> None:
        unsaved: Unsaved | None = None
        try:
            while True:
                if unsaved is not None and (self.draining or not len(self.queue)):
                    # Nothing to claim with them right now: commit the outcomes alone.
                    await self._save(unsaved)
                    unsaved = None
                if self.draining:
                    await anyio.sleep_forever()  # holding nothing; the drain cancels us
                batch = await self.queue.take_batch(self._max, self._linger)
                if self.draining:
                    continue  # not claimed: still accepted in the journal
                # map, not a comprehension: no frame of its own (Python 3.11).
                ids = list(map(_MSG_ID, batch))
                self._scheduler.in_hand.update(ids)
                try:
                    unsaved = await self._send(batch, unsaved)
                finally:
                    self._scheduler.in_hand.difference_update(ids)
        finally:
            if unsaved is not None:
                # Cancelled (shutdown) with outcomes in hand: they must still be journaled.
                # Bounded: a journal that stays unwritable leaves them inflight, which the
                # next start resolves (resend where safe, else "outcome unknown").
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._save(unsaved)

    async def send_batch(self, batch: Sequence[Message]) -> None:
        """Send one batch and journal every outcome before returning."""
        unsaved = await self._send(batch, None)
        if unsaved is not None:
            await self._save(unsaved)

    async def _pass_gates(
        self, count: int, unsaved: Unsaved | None, now: float
    ) -> tuple[Unsaved | None, bool]:
        """Wait for the circuit breaker and the rate limits. Outcomes in hand are
        committed before any wait, so no event waits on a rate limit; returns what is
        still unsaved, and whether time passed here (False: `now` still holds)."""
        waited = False
        if not self.circuit.allow(now):
            if unsaved is not None:
                await self._save(unsaved)
                unsaved = None
            while not self.circuit.allow(now):
                await anyio.sleep(0.05)
                now = self._clock()
            waited = True
        local = self._local_gate
        if local is not None:
            wait = local.take_now(1, count)
            if wait <= 0:
                return unsaved, waited  # a turn at once
            await self._wait_turn(wait, count, unsaved)
            return None, True
        held = unsaved

        async def before_wait(seconds: float) -> None:
            nonlocal held
            await self._wait_turn(seconds, count, held, sleep=False)
            held = None

        await wait_for_turn(
            self.limits,
            1,
            count,
            before_wait=before_wait,
            sleep=anyio.sleep,
            stop=lambda: self.draining,
        )
        return held, True

    async def _wait_turn(
        self, seconds: float, count: int, unsaved: Unsaved | None, *, sleep: bool = True
    ) -> None:
        """Before a rate-limit wait: commit the outcomes in hand (no event waits on a rate
        limit), count the wait, and (`sleep`) wait for the turn a local gate reserved."""
        if unsaved is not None:
            await self._save(unsaved)
        self._hooks.bucket_wait(self.name, seconds)
        log.debug("rate_limited", bridge=self.name, messages=count, wait_s=round(seconds, 6))
        if sleep:
            await anyio.sleep(seconds)

    async def _send(self, batch: Sequence[Message], unsaved: Unsaved | None) -> Unsaved | None:
        """Take, gate, claim, request: send `batch`, committing `unsaved` (the last
        request's outcomes) with the claim; returns this request's outcomes, not yet
        journaled. Every decision on a message is the lifecycle's."""
        now = self._clock()
        live, unsaved = self._set_aside(batch, unsaved, now)
        if not live:
            return unsaved
        count, local = len(live), self._local_gate
        if local is not None and self.circuit.allow(now):
            # _pass_gates' common case without its coroutine: a local gate asked at once.
            wait = local.take_now(1, count)
            waited = wait > 0
            if waited:
                await self._wait_turn(wait, count, unsaved)
                unsaved = None
        else:
            unsaved, waited = await self._pass_gates(count, unsaved, now)
        if self.draining:
            return unsaved  # a rate-limit wait outlasted the drain's start: send nothing new
        if waited:
            now = self._clock()
        if not self._leased(now):
            # Another node may be taking this node's claims over right now: a new claim
            # could be taken from under a request in flight. The batch stays accepted in
            # the journal (the feeder brings it back, here or to another node).
            log.warning("claim_held_back", bridge=self.name, why="no lease")
            await anyio.sleep(JOURNAL_RETRY_S)
            self._scheduler.wake_feeder()
            return unsaved
        try:
            claimed = await self._journal.claim(
                live,
                live[0].bridge_index,
                now,
                record=unsaved.changes if unsaved is not None else (),
            )
        except JournalError as error:
            # Nothing of it was committed: the batch is still accepted in the journal (the
            # feeder brings it back) and the outcomes in hand are still to be saved.
            log.error("journal_write_failed", bridge=self.name, during="claim", error=str(error))
            await anyio.sleep(JOURNAL_RETRY_S)
            self._scheduler.wake_feeder()
            return unsaved
        if unsaved is not None:
            self._announce(unsaved)
        if not claimed:
            return None
        return await self._request(claimed, now)

    def _set_aside(
        self, batch: Sequence[Message], unsaved: Unsaved | None, now: float
    ) -> tuple[list[Message], Unsaved | None]:
        """The messages of `batch` not to send now: expired ones end, a resend whose
        provider's duplicate window passed while it waited is not sent (it may sit there
        already: engine.lifecycle.on_window_passed), and while the circuit is open those
        with a failover move on (engine.circuit: the provider is down, and nothing was
        sent this time, so failing over cannot double-send). Returns the rest."""
        live: list[Message] = []
        moved: list[Message] = []
        steps: list[lifecycle.Step] = []
        circuit_open = self.circuit.state(now) == "open"
        # Built only when a message may be set aside: the common batch needs none.
        ctx: lifecycle.Context | None = None
        for message in batch:
            expired = message.expires_at is not None and message.expires_at <= now
            if expired or circuit_open:
                ctx = ctx or self._context(now)
                if expired:
                    steps.append(lifecycle.on_expiry(message, ctx))
                    moved.append(message)
                    continue
                if lifecycle.can_failover(message, ctx):
                    steps.append(lifecycle.on_circuit_open(message, ctx))
                    moved.append(message)
                    continue
            if message.maybe_sent_at:
                ctx = ctx or self._context(now)
                if lifecycle.resend_too_late(message, ctx):
                    steps.append(lifecycle.on_window_passed(message, ctx))
                    moved.append(message)
                    continue
            live.append(message)
        if steps:
            if unsaved is None:
                unsaved = Unsaved()
            self._take_steps(moved, steps, unsaved)
        return live, unsaved

    async def _request(self, claimed: list[Message], now: float) -> Unsaved:
        """Make the request for the claimed messages; their outcomes, not yet journaled."""
        outbound = self._outbound(claimed, now)
        call = self.driver.build_send(outbound)
        # Asked once per request: even a no-op debug call costs its keyword arguments.
        debugging = log.is_enabled_for(logging.DEBUG)
        if debugging:
            log.debug("provider_request", bridge=self.name, call="send", **describe_call(call))
        result = Unsaved(requests=1)
        started = time.perf_counter()
        # Counted until the outcomes are journaled: a drain waits for them.
        self.in_flight += 1
        try:
            reply = await self._client.request(call)
        except TransportError as error:
            self._hooks.request_done(self.name, time.perf_counter() - started, "transport")
            log.warning(
                "request_failed",
                bridge=self.name,
                messages=len(claimed),
                reason=failure_reason(error),
                maybe_sent=getattr(error, "maybe_sent", True),
                error=self._redact(str(error)),
            )
            self._transport_failed(claimed, error, result)
            return result
        except BaseException:
            self.in_flight -= 1
            raise
        self._hooks.request_done(self.name, time.perf_counter() - started, str(reply.status))
        try:
            outcomes = self.driver.parse_send(outbound, reply)
        except UnparseableReply as error:
            # The provider answered something undocumented: it may have taken the
            # messages, so this is a lost reply, not a refusal.
            log.warning(
                "unparseable_reply",
                bridge=self.name,
                status=reply.status,
                error=self._redact(str(error)),
            )
            self._transport_failed(claimed, error, result, maybe_sent=True)
        else:
            self._apply(claimed, outcomes, result, debugging=debugging)
        return result

    async def _save(self, unsaved: Unsaved) -> None:
        """Commit `unsaved`, retrying while the journal cannot be written: its outcomes
        happened, so they are held until they are recorded, never dropped."""
        delay = JOURNAL_RETRY_S
        while True:
            try:
                await self._journal.record(unsaved.changes)
                break
            except JournalError as error:
                log.error(
                    "journal_write_failed",
                    bridge=self.name,
                    during="outcomes",
                    messages=len(unsaved.changes),
                    retry_in_s=delay,
                    error=str(error),
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, JOURNAL_RETRY_MAX_S)
        self._announce(unsaved)

    def _announce(self, unsaved: Unsaved) -> None:
        """After the commit, never before: what the journal now holds may be told."""
        self.in_flight -= unsaved.requests
        unsaved.requests = 0
        if unsaved.submitted:
            self._hooks.submitted(self.name, unsaved.submitted)
        if unsaved.charges:
            self._hooks.charged(self.name, unsaved.charges)
        if unsaved.unconfirmed:
            self._hooks.unconfirmed(self.name, unsaved.unconfirmed)
        # The feeder must find a retry in the journal when it looks.
        if unsaved.retried:
            self._scheduler.wake_feeder()
        if unsaved.events:
            self._events.emit_all(unsaved.events)

    def _record_circuit(self, verdict: lifecycle.CircuitVerdict, now: float) -> None:
        """Tell the circuit breaker how a request ended; log when its state changes."""
        before = self.circuit.state(now)
        if verdict == "success":
            self.circuit.record_success(now)
            if before == "closed":
                return  # closed, and a success keeps it so
        elif verdict == "failure":
            self.circuit.record_failure(now)
        else:
            self.circuit.release(now)
        after = self.circuit.state(now)
        if after != before:
            if after == "open":
                log.warning(
                    "circuit_opened",
                    bridge=self.name,
                    was=before,
                    open_for_s=self.circuit.open_for_s,
                )
            else:
                log.info("circuit_changed", bridge=self.name, was=before, now=after)

    def _outbound(self, claimed: list[Message], now: float) -> list[OutboundMessage]:
        """The request's messages as the driver sees them (one call per request, not per
        message; a loop, not a comprehension: no frame of its own)."""
        outbound = []
        for message in claimed:
            expires_at = message.expires_at
            outbound.append(
                OutboundMessage(
                    msg_id=message.msg_id,
                    to=message.to,
                    text=message.text,
                    encoding=message.encoding,
                    reference=message.reference,
                    sender=message.sender,
                    flash=message.flash,
                    dlr=message.dlr,
                    validity_s=None if expires_at is None else max(1, int(expires_at - now)),
                    attempt=message.attempt + 1,
                    maybe_sent=message.maybe_sent_at > 0,  # Message.maybe_sent, inline
                )
            )
        return outbound

    # ── outcomes: the lifecycle decides, dispatch carries the steps out ─────────────

    def _context(self, now: float) -> lifecycle.Context:
        """The bridge's lifecycle context at `now`: all but the time is the same at every
        request, so it is copied from one built at construction."""
        return msgspec.structs.replace(self._base_context, now=now)

    def _build_context(self) -> lifecycle.Context:
        return lifecycle.Context(
            bridge=self.name,
            now=0.0,
            idempotency=self.driver.capabilities.idempotency,
            policy=self._policy,
            failover_policy=self._failover_policy,
            jitter=self._jitter,
            price=self._price,
            takes=self._takes,
            report_timeout_s=self._report_timeout_s,
            can_ask_by_reference=self.driver.capabilities.idempotency == "reference",
        )

    def _apply(
        self,
        messages: Sequence[Message],
        outcomes: Sequence[Outcome],
        result: Unsaved,
        *,
        debugging: bool | None = None,
    ) -> None:
        ctx = self._context(self._clock())
        taken = lifecycle.on_taken(messages, outcomes, ctx)
        if taken is not None:
            self._take_all(taken, result, debugging=debugging)
            self._record_circuit("success", ctx.now)
            return
        steps = [
            lifecycle.on_reply(message, outcome, ctx)
            for message, outcome in zip(messages, outcomes, strict=True)
        ]
        self._take_steps(messages, steps, result, debugging=debugging)
        self._record_verdict(steps, ctx.now)

    def _take_all(self, taken: lifecycle.Taken, result: Unsaved, *, debugging: bool | None) -> None:
        """`_take_steps` for a request the provider took whole (engine.lifecycle.on_taken)."""
        result.changes += taken.changes
        result.events += taken.events
        result.charges += taken.charges
        result.submitted += taken.submitted
        if debugging is None:
            debugging = log.is_enabled_for(logging.DEBUG)
        if debugging:
            for message, provider_id in taken.submitted:
                self._log_submitted(message, provider_id)
        self._hooks.outcome(self.name, "submitted", len(taken.submitted))

    def _transport_failed(
        self,
        messages: Sequence[Message],
        error: Exception,
        result: Unsaved,
        *,
        maybe_sent: bool | None = None,
    ) -> None:
        ctx = self._context(self._clock())
        failure = lifecycle.TransportFailure(
            kind=failure_reason(error),
            text=self._redact(str(error) or type(error).__name__),
            maybe_sent=maybe_sent if maybe_sent is not None else getattr(error, "maybe_sent", True),
        )
        steps = [
            lifecycle.on_transport_failure(
                message,
                failure,
                ctx,
                # The duplicate window runs from the earliest attempt that may have
                # reached the provider, not from this one.
                first_attempt_at=message.maybe_sent_at or message.inflight_at or ctx.now,
            )
            for message in messages
        ]
        self._take_steps(messages, steps, result)
        self._hooks.outcome(self.name, "transport_error", len(messages))
        self._record_verdict(steps, ctx.now)

    def _take_steps(
        self,
        messages: Sequence[Message],
        steps: Sequence[lifecycle.Step],
        result: Unsaved,
        *,
        debugging: bool | None = None,
    ) -> None:
        """Queue each step's changes and events for the commit; count it; log what a person
        would want to know (a give-up, a failover). `debugging`: whether debug logging is
        on, when the caller has asked already."""
        changes, events = result.changes, result.events
        submitted: list[tuple[Message, str | None]] = []
        counts: dict[tuple[str, str | None], int] = {}
        if debugging is None:
            # Asked once per batch: even a no-op debug call costs its keyword arguments.
            debugging = log.is_enabled_for(logging.DEBUG)
        first_change = len(changes)
        for message, step in zip(messages, steps, strict=True):
            changes.extend(step.changes)
            events.extend(step.events)
            if step.charge is not None:
                result.charges.append(step.charge)
            for item in step.counts:
                key = (item.outcome, item.reason)
                counts[key] = counts.get(key, 0) + 1
            if step.state in lifecycle.TAKEN:
                provider_id = getattr(step.changes[0], "provider_id", None)
                submitted.append((message, provider_id))
                if debugging:
                    self._log_submitted(message, provider_id)
            elif step.state is lifecycle.State.UNCONFIRMED:
                result.unconfirmed.append(message)
                self._log_step(message, step)
            elif step.state is not lifecycle.State.SCHEDULED and step.reason is not None:
                self._log_step(message, step)
        if submitted:
            # hooks.submitted (metrics, matching early reports) waits for the commit.
            result.submitted = submitted
        if any(isinstance(change, MarkRetry) for change in changes[first_change:]):
            result.retried = True
        for (outcome, reason), number in counts.items():
            self._hooks.outcome(self.name, outcome, number, reason)

    def _log_submitted(self, message: Message, provider_id: str | None) -> None:
        log.debug(
            "message_submitted",
            bridge=self.name,
            msg_id=message.msg_id,
            provider_id=provider_id,
            attempt=message.attempt + 1,
        )

    def _log_step(self, message: Message, step: lifecycle.Step) -> None:
        if step.state is lifecycle.State.ACCEPTED:
            # The bridge it moved to: the first later one that takes it (engine.lifecycle),
            # not always the next.
            moved_to = getattr(step.changes[0], "bridge_index", message.bridge_index + 1)
            log.warning(
                "failover",
                bridge=self.name,
                msg_id=message.msg_id,
                to_bridge=message.bridges[moved_to],
                reason=lifecycle.describe(step.reason),
            )
            return
        log.warning(
            "message_failed" if step.state in lifecycle.FINAL else "message_unconfirmed",
            bridge=self.name,
            msg_id=message.msg_id,
            state=step.state.value,
            error=lifecycle.describe(step.reason),
        )

    def _record_verdict(self, steps: Sequence[lifecycle.Step], now: float) -> None:
        """circuit.py: success when the provider answered sensibly, failure on retryable
        errors, release (neither) on throttles; an account refusal opens it at once."""
        verdict = lifecycle.request_verdict(steps)
        if verdict == "account":
            reason = next(
                lifecycle.describe(step.reason) for step in steps if step.circuit == "account"
            )
            self._trip_circuit(now, reason)
        elif verdict is not None:
            self._record_circuit(verdict, now)

    def _trip_circuit(self, now: float, reason: str) -> None:
        was_open = self.circuit.state(now) == "open" and self.circuit.reason == reason
        self.circuit.trip(now, reason)
        if not was_open:
            # One warning per opening, not one per message.
            log.warning(
                "bridge_account_refused",
                bridge=self.name,
                reason=reason,
                open_for_s=self.circuit.open_for_s,
            )
