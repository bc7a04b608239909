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

import datetime as dt
import logging
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
    Submitted,
    Throttled,
    Unknown,
    UnparseableReply,
)
from engine.circuit import CircuitBreaker
from engine.http_errors import ConnectFailed, ReplyLost, ReplyTooLarge, TransportError
from engine.journal import Change, JournalError, MarkFinal, MarkRetry, MarkSubmitted
from engine.log import describe_call, redact_text
from engine.models import DeliveryReport, Event, Failed, Message, SubmittedEvent
from engine.ratelimit import TokenBucket
from engine.retry import Decision, Failover, GiveUp, RetryAt, RetryPolicy
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
    def emit(self, origin: str, event: Event) -> None: ...


class DispatchHooks(Protocol):
    """What dispatch tells the rest of the daemon (metrics, delivery-report matching)."""

    def submitted(self, bridge: str, messages: Sequence[tuple[Message, str | None]]) -> None: ...

    def outcome(self, bridge: str, outcome: str, count: int, reason: str | None = None) -> None: ...

    def request_done(self, bridge: str, seconds: float, status: str) -> None: ...

    def bucket_wait(self, bridge: str, seconds: float) -> None: ...


def _now_dt() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Unsaved:
    """One request's outcomes on their way to the journal: the changes to commit, then the
    events to emit and the submits to announce once they are committed."""

    __slots__ = ("changes", "events", "requests", "submitted")

    def __init__(self, requests: int = 0) -> None:
        self.changes: list[Change] = []
        self.events: list[tuple[str, Event]] = []
        self.submitted: list[tuple[Message, str | None]] = []
        # Requests counted in BridgeDispatcher.in_flight until these are committed.
        self.requests = requests


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
        requests_bucket: TokenBucket,
        messages_bucket: TokenBucket,
        circuit: CircuitBreaker,
        pool: int,
        linger_s: float,
        max_recipients: int,
        attempts_per_bridge: int,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        redact: Callable[[str], str] = redact_text,
    ) -> None:
        self.name = name
        self.driver = driver
        self._client = client
        self.queue = queue
        self._scheduler = scheduler
        self._journal = journal
        self._events = events
        self._hooks = hooks
        self._policy = policy
        self._requests = requests_bucket
        self._messages = messages_bucket
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
                ids = [message.msg_id for message in batch]
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

    async def _pass_gates(self, count: int, unsaved: Unsaved | None) -> Unsaved | None:
        """Wait for the circuit breaker and the token buckets. Outcomes in hand are
        committed before any wait, so no event waits on a rate limit; returns what is
        still unsaved."""
        now = self._clock()
        if not self.circuit.allow(now):
            if unsaved is not None:
                await self._save(unsaved)
                unsaved = None
            while not self.circuit.allow(now):
                await anyio.sleep(0.05)
                now = self._clock()
        wait = max(self._requests.take(1, now), self._messages.take(count, now))
        if wait > 0:
            if unsaved is not None:
                await self._save(unsaved)
                unsaved = None
            self._hooks.bucket_wait(self.name, wait)
            log.debug("rate_limited", bridge=self.name, messages=count, wait_s=round(wait, 6))
            await anyio.sleep(wait)
        return unsaved

    async def _send(self, batch: Sequence[Message], unsaved: Unsaved | None) -> Unsaved | None:
        """Claim and send `batch`, committing `unsaved` (the last request's outcomes) with
        the claim; returns this request's outcomes, not yet journaled."""
        now = self._clock()
        live: list[Message] = []
        for message in batch:
            if message.expires_at is not None and message.expires_at <= now:
                if unsaved is None:
                    unsaved = Unsaved()
                self._fail(
                    message,
                    "EXPIRED",
                    "validity",
                    "validity ended before sending",
                    unsaved.changes,
                    unsaved.events,
                    now,
                    "expired",
                )
            else:
                live.append(message)
        if not live:
            return unsaved
        if self.circuit.state(now) == "open":
            # The provider is down (engine.circuit): a message whose route has another
            # bridge goes there now instead of waiting out the open time; nothing was
            # sent this time, so failing over cannot double-send.
            waiting: list[Message] = []
            for message in live:
                if not self._has_failover(message):
                    waiting.append(message)
                    continue
                if unsaved is None:
                    unsaved = Unsaved()
                self._decide(
                    message,
                    "circuit_open",
                    "the circuit breaker is open",
                    "circuit_open",
                    Failover(f"{self.name}'s circuit breaker is open"),
                    unsaved.changes,
                    unsaved.events,
                    now,
                    maybe_sent=False,
                )
            live = waiting
            if not live:
                return unsaved
        unsaved = await self._pass_gates(len(live), unsaved)
        if self.draining:
            return unsaved  # a rate-limit wait outlasted the drain's start: send nothing new
        now = self._clock()
        bridge_index = live[0].bridge_index
        try:
            claimed = await self._journal.claim(
                live, bridge_index, now, record=unsaved.changes if unsaved is not None else ()
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
        outbound = [self._outbound(message, now) for message in claimed]
        call = self.driver.build_send(outbound)
        if log.is_enabled_for(logging.DEBUG):
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
            self._record_circuit("failure", self._clock())
            self._transport_failed(claimed, error, result.changes, result.events)
        except BaseException:
            self.in_flight -= 1
            raise
        else:
            self._hooks.request_done(self.name, time.perf_counter() - started, str(reply.status))
            try:
                outcomes = self.driver.parse_send(outbound, reply)
            except UnparseableReply as error:
                # The provider answered something undocumented: it may have taken the
                # messages, so this is a lost reply, not a refusal.
                self._record_circuit("failure", self._clock())
                log.warning(
                    "unparseable_reply",
                    bridge=self.name,
                    status=reply.status,
                    error=self._redact(str(error)),
                )
                self._transport_failed(
                    claimed, error, result.changes, result.events, maybe_sent=True
                )
            else:
                self._apply(claimed, outcomes, result)
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
        # The feeder must find a retry in the journal when it looks.
        if any(isinstance(change, MarkRetry) for change in unsaved.changes):
            self._scheduler.wake_feeder()
        for origin, event in unsaved.events:
            self._events.emit(origin, event)

    def _record_circuit(self, verdict: str, now: float) -> None:
        """Tell the circuit breaker how a request ended; log when its state changes."""
        before = self.circuit.state(now)
        if verdict == "success":
            self.circuit.record_success(now)
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

    def _outbound(self, message: Message, now: float) -> OutboundMessage:
        validity = None
        if message.expires_at is not None:
            validity = max(1, int(message.expires_at - now))
        return OutboundMessage(
            msg_id=message.msg_id,
            to=message.to,
            text=message.text,
            encoding=message.encoding,
            reference=message.reference,
            sender=message.sender,
            flash=message.flash,
            dlr=message.dlr,
            validity_s=validity,
            attempt=message.attempt + 1,
        )

    # ── outcomes ───────────────────────────────────────────────────────────────

    def _apply(
        self, messages: Sequence[Message], outcomes: Sequence[Outcome], result: Unsaved
    ) -> None:
        changes, events = result.changes, result.events
        now = self._clock()
        ts = _now_dt()
        submitted: list[tuple[Message, str | None]] = []
        any_retryable = False
        answered = False  # the provider answered sensibly (Submitted or Rejected)
        # Asked once per batch: even a no-op debug call costs its keyword arguments, per message.
        debugging = log.is_enabled_for(logging.DEBUG)
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, Submitted):
                changes.append(
                    MarkSubmitted(
                        msg_id=message.msg_id,
                        provider_id=outcome.provider_id,
                        cost=outcome.cost,
                        currency=outcome.currency,
                        at=now,
                        # No report will ever come: final at submit, in the same update.
                        final=not message.dlr,
                    )
                )
                events.append(
                    (
                        message.origin,
                        SubmittedEvent(
                            id=message.client_ref,
                            msg_id=message.msg_id,
                            ts=ts,
                            provider_id=outcome.provider_id,
                            bridge=self.name,
                        ),
                    )
                )
                if outcome.provider_id is None:
                    self._after_submit(message, outcome.provider_id, changes, events, now)
                submitted.append((message, outcome.provider_id))
                if debugging:
                    log.debug(
                        "message_submitted",
                        bridge=self.name,
                        msg_id=message.msg_id,
                        provider_id=outcome.provider_id,
                        attempt=message.attempt + 1,
                    )
                continue
            if isinstance(outcome, RetryLater):
                any_retryable = True
            elif isinstance(outcome, Rejected):
                answered = True
            decision = self._policy_for(message).decide(
                outcome,
                message.attempt + 1,
                now,
                self._jitter,
                self.driver.capabilities.idempotency,
                can_failover=self._has_failover(message),
            )
            self._decide(
                message,
                outcome.code,
                outcome.reason,
                failure_reason(outcome),
                decision,
                changes,
                events,
                now,
                # A reply that leaves it open whether the provider took the message.
                maybe_sent=isinstance(outcome, Unknown),
            )
        if submitted:
            # hooks.submitted (metrics, matching early reports) waits for the commit.
            result.submitted = submitted
            self._hooks.outcome(self.name, "submitted", len(submitted))
        # circuit.py: success when the provider answered sensibly, failure on retryable
        # errors, release (neither) on throttles — a busy provider is not a broken one.
        if submitted or answered:
            self._record_circuit("success", now)
        elif any_retryable:
            self._record_circuit("failure", now)
        else:
            self._record_circuit("release", now)

    def _after_submit(
        self,
        message: Message,
        provider_id: str | None,
        changes: list[Change],
        events: list[tuple[str, Event]],
        now: float,
    ) -> None:
        """A report that can never be matched ends the message as UNKNOWN. (Messages that
        asked for no report were made final by their MarkSubmitted.)"""
        if (
            message.dlr
            and provider_id is None
            and self.driver.capabilities.idempotency != "reference"
        ):
            # The provider took it but gave no id (SMS Club's 453 on a retry): no report
            # can be matched. Say so rather than wait forever.
            changes.append(
                MarkFinal(
                    msg_id=message.msg_id,
                    outcome="UNKNOWN",
                    code=None,
                    error="provider gave no message id",
                    at=now,
                )
            )
            events.append(
                (
                    message.origin,
                    DeliveryReport(
                        id=message.client_ref,
                        msg_id=message.msg_id,
                        ts=_now_dt(),
                        state="UNKNOWN",
                        provider_status="no provider message id",
                        bridge=self.name,
                    ),
                )
            )

    def _has_failover(self, message: Message) -> bool:
        """A next bridge is there, and no attempt here may have reached the provider: a
        message this provider may hold goes nowhere else (that would be a double send)."""
        return message.bridge_index + 1 < len(message.bridges) and not message.maybe_sent

    def _policy_for(self, message: Message) -> RetryPolicy:
        """With a failover bridge left, give up on this one sooner."""
        return self._failover_policy if self._has_failover(message) else self._policy

    def _transport_failed(
        self,
        messages: Sequence[Message],
        error: Exception,
        changes: list[Change],
        events: list[tuple[str, Event]],
        *,
        maybe_sent: bool | None = None,
    ) -> None:
        now = self._clock()
        sent = maybe_sent if maybe_sent is not None else getattr(error, "maybe_sent", True)
        kind = failure_reason(error)
        text = self._redact(str(error) or type(error).__name__)
        for message in messages:
            attempt = message.attempt + 1
            decision = self._policy_for(message).decide_transport(
                maybe_sent=sent,
                attempt=attempt,
                now=now,
                jitter=self._jitter,
                idempotency=self.driver.capabilities.idempotency,
                can_failover=self._has_failover(message) and not sent,
                first_attempt_at=now,
            )
            self._decide(
                message, "transport", text, kind, decision, changes, events, now, maybe_sent=sent
            )
        self._hooks.outcome(self.name, "transport_error", len(messages))

    def _decide(
        self,
        message: Message,
        code: str,
        reason: str,
        kind: str,
        decision: Decision,
        changes: list[Change],
        events: list[tuple[str, Event]],
        now: float,
        *,
        maybe_sent: bool,
    ) -> None:
        """Journal and announce the decision on one failed attempt; `kind` is its metrics
        reason (`failure_reason`), `maybe_sent` whether this attempt may have reached the
        provider."""
        attempt = message.attempt + 1
        if isinstance(decision, RetryAt):
            changes.append(
                MarkRetry(
                    msg_ids=[message.msg_id],
                    due_at=decision.at,
                    attempt=attempt,
                    bridge_index=message.bridge_index,
                    reason=decision.reason,
                    # Remembered across attempts: it keeps the message off other bridges.
                    maybe_sent=message.maybe_sent or maybe_sent,
                )
            )
            self._hooks.outcome(self.name, "retry", 1, kind)
            log.debug(
                "retry_scheduled",
                bridge=self.name,
                msg_id=message.msg_id,
                attempt=attempt,
                reason=kind,
                code=code,
                in_s=round(max(0.0, decision.at - now), 3),
            )
        elif isinstance(decision, Failover):
            changes.append(
                MarkRetry(
                    msg_ids=[message.msg_id],
                    due_at=now,
                    attempt=0,
                    bridge_index=message.bridge_index + 1,
                    reason=decision.reason,
                )
            )
            self._hooks.outcome(self.name, "failover", 1, kind)
            log.warning(
                "failover",
                bridge=self.name,
                msg_id=message.msg_id,
                to_bridge=message.bridges[message.bridge_index + 1],
                reason=reason,
            )
        else:
            # GiveUp (Done never follows a failed outcome; treat it alike to be safe).
            text = decision.reason if isinstance(decision, GiveUp) else reason
            outcome_unknown = code == "transport" or text.startswith("outcome unknown")
            if message.maybe_sent and not outcome_unknown:
                # This attempt failed plainly, but an earlier one may have gone through.
                text = (
                    "outcome unknown: an earlier attempt may have reached the provider;"
                    f" last: {text}"
                )
                outcome_unknown = True
            self._fail(
                message,
                "UNKNOWN" if outcome_unknown else "REJECTD",
                code,
                text,
                changes,
                events,
                now,
                kind,
            )

    def _fail(
        self,
        message: Message,
        state: str,
        code: str | None,
        error: str,
        changes: list[Change],
        events: list[tuple[str, Event]],
        now: float,
        kind: str,
    ) -> None:
        changes.append(
            MarkFinal(msg_id=message.msg_id, outcome=state, code=code, error=error, at=now)
        )
        log.warning(
            "message_failed",
            bridge=self.name,
            msg_id=message.msg_id,
            state=state,
            code=code,
            reason=kind,
            error=error,
        )
        events.append(
            (
                message.origin,
                Failed(
                    id=message.client_ref,
                    msg_id=message.msg_id,
                    ts=_now_dt(),
                    error=f"{self.name}: {error}",
                    code=code,
                    bridge=self.name,
                ),
            )
        )
        self._hooks.outcome(self.name, "failed", 1, kind)
