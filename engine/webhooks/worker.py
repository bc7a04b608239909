"""The webhook delivery worker: owed deliveries from the journal, POSTed, settled in batches.

    journal.due_deliveries ──▶ claimed (in memory) ──▶ `concurrency` senders POST them
          ▲ woken by the journal after a commit that owes new ones     │ verdict (policy.py)
          └───────────── journal.settle_deliveries (one write per batch) ◀┘

At least once: a delivery leaves the journal only after its receiver answered 2xx (or
410, or it was given up), in a write after the POST; a crash in between posts it again
after the restart, with the same `Septet-Event-Id` for the receiver to drop the copy.
Claims are held in memory, not written: after a restart every owed delivery is due again.

It never slows the send path: its own connection pool (engine.http11, the transport under
engine.http_io, keep-alive), its own concurrency limit, and its journal reads and writes
are one per batch, not one per event. Deliveries the journal hands over after a commit
wait in memory for a sender (up to MAX_HANDED; beyond that they are read back from the
journal later); outcomes are written once SETTLE_BATCH of them wait, or SETTLE_GATHER_S
after the first. Redirects are not followed (the transport returns them as replies, and
a 3xx is a failed try).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bridges.base import HttpReply
from engine.feed import DeliveryOutcome, DueDelivery
from engine.http11 import Http11Transport
from engine.http_errors import TransportError
from engine.journal import JournalError
from engine.webhooks import hosts
from engine.webhooks.policy import Backoff, Verdict, verdict_of
from engine.webhooks.settings import AccountWebhooks, WebhookSettings
from engine.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature

log = structlog.get_logger("septet.webhooks")

# Deliveries read from the journal at most this many at a time.
CLAIM_BATCH: Final = 256
# Looked at again at least this often when nothing is due (retries fall due by time).
IDLE_WAIT_S: Final = 10.0
# The journal's count of owed deliveries is read for the gauge at most this often.
OWED_REFRESH_S: Final = 5.0
# A journal that cannot be written: settled outcomes are kept and written again after this.
SETTLE_RETRY_S: Final = 1.0
# Outcomes are written once this many wait, or this long after the first of them: one
# journal write per batch, not per event (a crash in between only posts them again).
SETTLE_BATCH: Final = 512
SETTLE_GATHER_S: Final = 0.05
# Deliveries handed over by the journal kept in memory while every sender is busy; those
# beyond are left to a journal read once there is room.
MAX_HANDED: Final = 20_000
MAX_REPLY_BYTES: Final = 64 * 1024
# 410 marks of this run kept in memory (engine.feed keeps every one in the journal).
MAX_GONE_KEPT: Final = 100_000
# Delivery-time checks of URLs naming an IP address (no DNS: the answer holds) kept.
MAX_CHECKS_KEPT: Final = 4096

CheckKey = tuple[str, bool, bool, tuple[str, ...]]

Outcome = Literal["delivered", "retry", "gave_up", "gone", "refused"]


class DeliveryJournal(Protocol):
    async def due_deliveries(
        self, now: float, limit: int, exclude: frozenset[int] = frozenset()
    ) -> list[DueDelivery]: ...

    async def settle_deliveries(self, outcomes: Sequence[DeliveryOutcome]) -> None: ...

    async def next_delivery_at(self, after: float | None = None) -> float | None: ...

    async def deliveries_owed(self) -> int: ...


class WebhookMetrics(Protocol):
    def webhook_deliveries(self, outcome: str, count: int = 1) -> None: ...

    def webhook_latency(self, seconds: float) -> None: ...

    def webhook_owed(self, count: int) -> None: ...


Post = Callable[[str, Sequence[tuple[str, str]], bytes], Awaitable[HttpReply]]
Accounts = Callable[[str], AccountWebhooks | None]


class WebhookWorker:
    """Delivers the journal's owed webhooks until cancelled. `accounts(name)` gives an
    account's webhook settings (its secret, its allow-list) at delivery time."""

    def __init__(
        self,
        journal: DeliveryJournal,
        settings: WebhookSettings,
        accounts: Accounts,
        *,
        metrics: WebhookMetrics | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._journal = journal
        self._settings = settings
        self._accounts = accounts
        self._metrics = metrics
        self._clock = clock
        self._jitter = jitter
        self._backoff = Backoff(
            base_s=settings.base_s,
            max_delay_s=settings.max_delay_s,
            jitter=settings.jitter,
            retry_for_s=settings.retry_for_s,
        )
        # Claimed beyond the POSTs running: the next ones wait on the limiter, not a read.
        self._most_claimed = 2 * settings.concurrency
        # Claimed in all, outcomes not yet written included: a journal that cannot be
        # written stops the claiming here.
        self._most_held = self._most_claimed + 2 * SETTLE_BATCH
        # Claimed deliveries without an outcome yet (queued for a sender, or being sent).
        self._open = 0
        # Whether the journal may hold retries falling due later (unknown at the start; a
        # settled retry sets it; a read that finds none clears it): when not, an idle
        # worker asks the journal nothing until it is woken.
        self._may_have_retries = True
        self._claimed: set[int] = set()
        self._settled: list[DeliveryOutcome] = []
        # Outcomes not yet counted in the metrics (counted with each batch settled).
        self._tally: dict[Outcome, int] = {}
        self._wake_send, self._wake_receive = anyio.create_memory_object_stream[None](1)
        self._settle_send, self._settle_receive = anyio.create_memory_object_stream[None](1)
        self._transport: Http11Transport | None = None
        # Deliveries the journal handed over after their commit, not yet started; and
        # whether the journal may hold due ones this worker has not seen (then it reads).
        self._handed: deque[DueDelivery] = deque()
        self._must_read = True
        # (msg_id, url) that answered 410 in this run: a delivery handed over by the journal
        # has not been joined with the journal's marks (one read back has).
        self._gone: set[tuple[str, str]] = set()
        self._checks: dict[CheckKey, hosts.Refusal | None] = {}
        self._owed_read_at = float("-inf")

    def wake(self, added: Sequence[DueDelivery] = ()) -> None:
        """New deliveries were committed (engine.journal's `on_deliveries`): those handed
        over are started without reading them back; with none handed over, read them."""
        if added and len(self._handed) + len(added) <= MAX_HANDED:
            self._handed.extend(added)
        else:
            self._must_read = True  # none handed over, or too many kept: the journal has them
        _poke(self._wake_send)

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        s = self._settings
        # Run again after a failure (the daemon restarts it): the POSTs of the last run were
        # cancelled, so only deliveries whose outcome still waits to be written stay claimed.
        self._claimed = {outcome.event_id for outcome in self._settled}
        # What was handed over before this run is read back from the journal instead (a
        # cluster node that becomes the leader may hold hand-offs another leader served).
        self._handed.clear()
        self._open = 0
        self._may_have_retries = self._must_read = True
        self._transport = Http11Transport(
            max_connections=s.concurrency,
            connect_timeout_s=s.connect_timeout_s,
            timeout_s=s.timeout_s,
            user_agent="septet-webhooks/0.1",
            max_reply_bytes=MAX_REPLY_BYTES,
        )
        # Claimed deliveries on their way to the `concurrency` senders (no task per
        # delivery); the claims bound how many wait in it.
        queue, receive = anyio.create_memory_object_stream[DueDelivery](math.inf)
        try:
            async with queue, anyio.create_task_group() as tg:
                tg.start_soon(self._serve_settler)
                with receive:
                    for _ in range(s.concurrency):
                        tg.start_soon(self._serve_sender, receive.clone())
                task_status.started()
                await self._serve_claims(queue)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await self._transport.aclose()

    async def _serve_claims(self, queue: MemoryObjectSendStream[DueDelivery]) -> None:
        while True:
            await self._refresh_owed()
            room = self._start(queue, self._handed, self._room())
            if self._must_read and room > 0:
                room = await self._read_due(queue, room)
                if room < 0:
                    continue  # the read was full: more may be due now
            await self._wait_for_work(room > 0)

    def _room(self) -> int:
        return min(self._most_claimed - self._open, self._most_held - len(self._claimed))

    async def _read_due(self, queue: MemoryObjectSendStream[DueDelivery], room: int) -> int:
        """Claim what the journal holds due; the room left, or -1 when the read was full.
        Those handed over are dropped first: the read returns them in their due order."""
        self._must_read = False
        self._handed.clear()
        limit = min(room, CLAIM_BATCH)
        due = await self._journal.due_deliveries(self._clock(), limit, frozenset(self._claimed))
        if self._handed:  # handed over during the read: the read may have them too
            read = {delivery.event_id for delivery in due}
            self._handed = deque(d for d in self._handed if d.event_id not in read)
        room = self._start(queue, deque(due), room)
        if len(due) == limit:
            self._must_read = True
            return -1
        return room

    def _start(
        self, queue: MemoryObjectSendStream[DueDelivery], due: deque[DueDelivery], room: int
    ) -> int:
        """Claim deliveries from the left of `due` for the senders while there is room;
        returns the room left."""
        while due and room > 0:
            delivery = due.popleft()
            if delivery.event_id in self._claimed:
                continue  # read back and handed over both: started once
            self._claimed.add(delivery.event_id)
            self._open += 1
            queue.send_nowait(delivery)
            room -= 1
        return room

    async def _wait_for_work(self, had_room: bool) -> None:
        wait = IDLE_WAIT_S
        if had_room and self._may_have_retries:
            # The earliest retry falling due later. Those due now are claimed already (being
            # sent: one that fails settles as a retry, which wakes this loop); a retry timed
            # after them must not wait for IDLE_WAIT_S behind them (a receiver back up had
            # its owed events 10 s late).
            now = self._clock()
            next_at = await self._journal.next_delivery_at(after=now)
            if next_at is None:
                self._may_have_retries = False
            else:
                wait = min(wait, next_at - self._clock())
        with anyio.move_on_after(wait) as timer:
            await self._wake_receive.receive()
        if timer.cancelled_caught:
            self._must_read = True  # a retry fell due, or a periodic look

    async def _refresh_owed(self) -> None:
        now = self._clock()
        if self._metrics is None or now - self._owed_read_at < OWED_REFRESH_S:
            return
        self._owed_read_at = now
        self._metrics.webhook_owed(await self._journal.deliveries_owed())

    async def _serve_sender(self, queue: MemoryObjectReceiveStream[DueDelivery]) -> None:
        """One of `concurrency` senders: a delivery at a time, its outcome to the settler."""
        half = self._most_claimed // 2
        async with queue:
            while True:
                try:  # without a checkpoint per delivery: the POST yields anyway
                    delivery = queue.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        delivery = await queue.receive()
                    except anyio.EndOfStream:
                        return
                outcome, settled = await self._attempt(delivery)
                self._open -= 1
                self._tally[outcome] = self._tally.get(outcome, 0) + 1
                self._settled.append(settled)
                if len(self._settled) in (1, SETTLE_BATCH):
                    _poke(self._settle_send)  # a batch begins, or is full
                if self._open == half and (self._handed or self._must_read):
                    _poke(self._wake_send)  # room for those waiting

    async def _attempt(self, delivery: DueDelivery) -> tuple[Outcome, DeliveryOutcome]:
        """One try: (what became of it, the journal's record of that)."""
        done = DeliveryOutcome(event_id=delivery.event_id, attempts=delivery.attempts + 1)
        if delivery.gone or (delivery.msg_id, delivery.url) in self._gone:
            return "gone", done  # its URL answered 410 for this message already
        account = self._accounts(delivery.account)
        signed = delivery.method != "GET"  # Kannel's dlr-url: the URL is all it sends
        if signed and (delivery.body is None or account is None or not account.secret):
            why = "its event is no longer kept" if delivery.body is None else "no webhook secret"
            self._give_up(delivery, why)
            return "gave_up", done
        if account is None:
            self._give_up(delivery, "no webhook settings")
            return "gave_up", done
        refusal = await self._check(delivery.url, account, signed)
        if refusal is not None and refusal.rule is not hosts.Rule.UNRESOLVED:
            self._give_up(delivery, hosts.describe(refusal))
            return "refused", done
        # A name that does not resolve now may later (a DNS outage): a failed try.
        status = None if refusal is not None else await self._send(delivery, account, signed)
        verdict = verdict_of(status)
        if verdict is Verdict.DELIVERED:
            if self._metrics is not None:
                self._metrics.webhook_latency(max(0.0, self._clock() - delivery.first_at))
            return "delivered", done
        if verdict is Verdict.GONE:
            log.info("webhook_gone", event_id=delivery.event_id, msg_id=delivery.msg_id)
            if len(self._gone) >= MAX_GONE_KEPT:
                self._gone.clear()  # the journal keeps them all; this is a shortcut
            self._gone.add((delivery.msg_id, delivery.url))
            return "gone", DeliveryOutcome(
                event_id=delivery.event_id, attempts=done.attempts, gone=True
            )
        next_at = self._backoff.next_attempt(
            done.attempts, delivery.first_at, self._clock(), self._jitter
        )
        if next_at is None:
            self._give_up(delivery, f"no 2xx reply in {self._settings.retry_for_s:g} s")
            return "gave_up", done
        return "retry", DeliveryOutcome(
            event_id=delivery.event_id, attempts=done.attempts, next_at=next_at
        )

    async def _check(
        self, url: str, account: AccountWebhooks, signed: bool
    ) -> hosts.Refusal | None:
        """hosts.check_resolved, remembered for a URL that names an IP address (keyed by
        what of the account it reads, so a changed allow-list or secret is judged anew)."""
        key = (url, signed, bool(account.secret), tuple(account.allowed_hosts))
        if key in self._checks:
            return self._checks[key]
        refusal = await hosts.check_resolved(url, account, signed=signed)
        if hosts.names_an_address(url):
            if len(self._checks) >= MAX_CHECKS_KEPT:
                self._checks.clear()
            self._checks[key] = refusal
        return refusal

    async def _send(
        self, delivery: DueDelivery, account: AccountWebhooks, signed: bool
    ) -> int | None:
        if signed:
            assert account.secret is not None
            return await self._post(delivery, account.secret)
        return await self._get(delivery)

    async def _post(self, delivery: DueDelivery, secret: str) -> int | None:
        """The reply's status, or None when there was none (connect, timeout, reset)."""
        assert self._transport is not None
        assert delivery.body is not None
        timestamp = int(self._clock())
        headers = (
            ("Content-Type", "application/json"),
            (SIGNATURE_HEADER, signature(secret, timestamp, delivery.body)),
            (EVENT_ID_HEADER, str(delivery.event_id)),
        )
        try:
            reply = await self._transport.perform("POST", delivery.url, headers, delivery.body)
        except TransportError as error:
            log.debug("webhook_failed", event_id=delivery.event_id, error=str(error))
            return None
        return reply.status

    async def _get(self, delivery: DueDelivery) -> int | None:
        """Kannel's dlr-url: a GET of the URL made at accept (engine.kannel_dlr)."""
        assert self._transport is not None
        headers = ((EVENT_ID_HEADER, str(delivery.event_id)),)
        try:
            reply = await self._transport.perform("GET", delivery.url, headers, b"")
        except TransportError as error:
            log.debug("dlr_url_failed", event_id=delivery.event_id, error=str(error))
            return None
        return reply.status

    def _give_up(self, delivery: DueDelivery, why: str) -> None:
        log.warning(
            "webhook_given_up",
            event_id=delivery.event_id,
            msg_id=delivery.msg_id,
            host=urlsplit(delivery.url).hostname,
            attempts=delivery.attempts + 1,
            why=why,
        )

    def _count(self) -> None:
        """The outcomes since the last count, one metric update per outcome kind."""
        tally, self._tally = self._tally, {}
        if self._metrics is not None:
            for outcome, count in tally.items():
                self._metrics.webhook_deliveries(outcome, count)

    async def _serve_settler(self) -> None:
        """Write settled outcomes in batches; a claim ends once its outcome is written."""
        while True:
            await self._settle_receive.receive()  # the first outcome of a batch
            if len(self._settled) < SETTLE_BATCH:
                with anyio.move_on_after(SETTLE_GATHER_S):
                    await self._settle_receive.receive()  # the batch is full
            batch, self._settled = self._settled, []
            self._count()
            if not batch:
                continue
            try:
                await self._journal.settle_deliveries(batch)
            except JournalError as error:
                log.error("journal_write_failed", during="webhooks", error=str(error))
                self._settled[:0] = batch
                await anyio.sleep(SETTLE_RETRY_S)
                _poke(self._settle_send)
                continue
            for outcome in batch:
                self._claimed.discard(outcome.event_id)
            # The claimer needs waking only when work waits for room, or for a retry time.
            if any(outcome.next_at is not None for outcome in batch):
                self._may_have_retries = self._must_read = True
            if self._handed or self._must_read:
                _poke(self._wake_send)


def _poke(stream: MemoryObjectSendStream[None]) -> None:
    """Wake the one waiting on `stream` (a wake-up already pending is enough)."""
    with contextlib.suppress(anyio.WouldBlock):
        stream.send_nowait(None)
