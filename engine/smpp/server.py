"""The SMPP v3.4 server on anyio: binds, submit_sm into the engine, receipts back out.

    TCP ──PduReader/decode_pdu──▶ SmppConnection ──Session (state, timers)
                                      │ submit_sm (up to `window` at once per session)
                                      ▼
                               SmppServer.submit ──accept(Submission)──▶ journal commit
                                      │ message ids ──▶ SmppStore (engine.smpp.storage)
    deliver_sm receipts ◀── AccountState queue ◀── store ◀── septet events ("smpp:<system_id>")

A submit_sm_resp is sent right after the journal commit of its message (never waiting
for the provider), or, for a part of a long message, after the part is stored durably.
Over its account's rate, or with too many submissions in progress, a submit_sm is
answered ESME_RTHROTTLED at once. When its bridge queue is full, it waits for a slot,
reserved before the commit, in line with the socket clients (one place in the line per
bind) for at most `congestion_wait_s`; if none comes it is answered ESME_RTHROTTLED
with nothing journaled. A part of a long message is throttled at once while a queue is
full. Receipts wait in the store until the ESME answers their deliver_sm with a
deliver_sm_resp, across reconnects and restarts; only a message's first final event
makes them, one per id given out (engine.smpp.receipts, engine.smpp.store). A receipt
goes to a receiving bind of the bind group (system_type, address_range) that submitted
its message, or to any of the account's when that group has none (engine.smpp.account).

The store is a SQLite file beside the journal with one node, or the PostgreSQL journal's
database in a cluster (engine.smpp.store_postgres): there every node's server takes the
events of the account's origin, so a report becomes receipts on whichever node has it,
and each receipt is claimed by a node with a suitable receiving bind, which delivers it
(engine.smpp.cluster_receipts).

A submit_sm's text is read in its account's alphabet for its data_coding; one that is
not text there is refused (engine.smpp.text.TextRefusedError) with one
`smpp_text_refused` log line, and nothing journaled.

Stopping (the daemon's drain cancels serve_smpp): the listener closes, every bound ESME
is sent an unbind (SMPP v3.4 section 4.2: the SMSC may end a session too) and given up
to `unbind_wait_s` to answer it, while submit_sm already read are still answered; then
the connections left are closed. Connections are shielded from the cancellation for
that: they end by `close_connections`, never halfway through an answer.

This module and connection.py are the only SMPP code that touches sockets or clocks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from engine.accounts import Account, Accounts, demo_accounts, from_smpp_accounts
from engine.ingress.prepare import LineError, RefusalKind
from engine.journal import StoreEvents
from engine.models import Message, Submission, utc_from_timestamp
from engine.smpp import pdu as p
from engine.smpp.account import AccountState, origin_of
from engine.smpp.cluster_receipts import SharedReceipts
from engine.smpp.connection import SmppConnection
from engine.smpp.receipts import build_receipt, outcome_of
from engine.smpp.settings import SmppAccount as SmppAccount  # re-exported: engine.config
from engine.smpp.settings import SmppSettings as SmppSettings
from engine.smpp.storage import (
    NO_GROUP,
    OUTCOME_KEEP_S,
    BindGroup,
    GivenId,
    Outcome,
    PendingReceipt,
    ReceiptClaims,
    SmppStore,
    StoreError,
)
from engine.smpp.text import (
    RECEIPT_TEXT_CHARS,
    Coding,
    PartOf,
    Reassembly,
    TextRefusedError,
    UnreadableMessageError,
    decode_text,
    destination_number,
    message_octets,
    parse_smpp_time,
    preview_text,
    readable_as,
)

log = structlog.get_logger("septet.smpp")

MAX_SENDER_CHARS = 18  # engine.models.Sender
# How long a stopping server waits for bound ESMEs to answer its unbind.
UNBIND_WAIT_S = 1.0
# How often kept outcomes older than OUTCOME_KEEP_S are dropped from the store.
OUTCOME_PRUNE_EVERY_S = 3600.0
# In a cluster, how often a node looks for the waiting parts of nodes no longer live,
# and for ids of messages final since FINAL_SWEEP_AFTER_S that are still waiting (their
# final event was lost with its node: normally they end within milliseconds).
ADOPT_EVERY_S = 5.0
FINAL_SWEEP_EVERY_S = 60.0
FINAL_SWEEP_AFTER_S = 60.0
# The first wait before writing to a store that failed again, and the longest.
STORE_RETRY_S = 1.0
STORE_RETRY_MAX_S = 30.0


# ── what the server needs from the engine ─────────────────────────────────────


class Accept(Protocol):
    """engine.ingress.accept.Acceptor.accept: per submission the journaled messages, or a
    refusal; with `room_wait_s`, room is reserved before the commit (see there)."""

    def __call__(
        self,
        account: Account,
        origin: str,
        submissions: Sequence[Submission | bytes],
        *,
        room_wait_s: float | None = None,
        turn: anyio.Lock | None = None,
    ) -> Awaitable[list[list[Message] | LineError]]: ...


class SmppMonitor(Protocol):
    """What the server tells the metrics (engine.metrics.Operations): each bind's result
    (engine.metrics.BIND_RESULTS), and a reader of the live sessions' states while it
    serves (None once it has stopped)."""

    smpp_sessions: Callable[[], Iterable[str]] | None

    def smpp_bind(self, result: str) -> None: ...


class _NoMonitor:
    smpp_sessions: Callable[[], Iterable[str]] | None = None

    def smpp_bind(self, result: str) -> None:
        del result


class EventRegistry(Protocol):
    """engine.ingress.events.EventRouter: a sink gets every event of its origin as NDJSON lines."""

    def register(self, sink: Any) -> None: ...

    def unregister(self, sink: Any) -> None: ...


class OutboxJournal(Protocol):
    """engine.journal: events kept for an origin while nobody listened to it."""

    async def take_events(self, origin: str | None, limit: int) -> list[bytes]: ...

    async def record(self, changes: Sequence[StoreEvents]) -> None: ...


# The SMPP status (section 5.1.3) for each kind of engine.ingress.prepare refusal.
REFUSAL_STATUS: dict[RefusalKind, int] = {
    "congested": p.ESME_RTHROTTLED,  # the ESME is to slow down and submit it again
    "throttled": p.ESME_RTHROTTLED,  # over its account's messages per second
    # Over its account's daily quota: "message queue full", a temporary error to ESMEs
    # (Kannel retries it), as the quota starts again at 00:00 UTC.
    "quota": p.ESME_RMSGQFUL,
    "sender": p.ESME_RINVSRCADR,  # no bridge of the route, or the account, takes it
    "unauthorised": p.ESME_RSUBMITFAIL,
    "text": p.ESME_RINVMSGLEN,
    "validity": p.ESME_RINVEXPIRY,  # longer than every bridge of the route keeps one
    # A submit_sm carries no flash request today (build_submission); were it to, a route
    # with no flash-capable bridge refuses it as a failed submit.
    "flash": p.ESME_RSUBMITFAIL,
    "schedule": p.ESME_RINVSCHED,
    "duplicate": p.ESME_RSUBMITFAIL,
    "journal": p.ESME_RSYSERR,  # the journal could not take it (disk full)
    "destination": p.ESME_RINVDSTADR,
    "recipients": p.ESME_RINVDSTADR,
    "price": p.ESME_RINVDSTADR,
    "invalid": p.ESME_RSUBMITFAIL,
    "callback": p.ESME_RSUBMITFAIL,  # a submit_sm names no callback URL today
}


def refusal_status(refusal: LineError) -> int:
    """The SMPP status for a refusal of engine.ingress.prepare, by its kind."""
    return REFUSAL_STATUS[refusal.kind]


# ── per account ────────────────────────────────────────────────────────────────


# The place in the queues' line of the bind whose submit_sm is being handled. Set once per
# connection in _serve_connection; the connection's submit workers are tasks started
# under it, and a task starts with a copy of its parent's context (PEP 567), so each
# sees its own bind's lock without the connection passing it along.
_bind_turn: ContextVar[anyio.Lock | None] = ContextVar("smpp_bind_turn", default=None)


class AccountSink:
    """Registered with the EventRouter for the server's life: events of "smpp:<id>"."""

    def __init__(self, origin: str, deliver: Callable[[str, bytes], None]) -> None:
        self.origin = origin
        self.closed = False
        self._deliver = deliver

    def emit(self, line: bytes) -> None:
        self._deliver(self.origin, line)

    def emit_many(self, lines: list[bytes]) -> None:
        for line in lines:
            self._deliver(self.origin, line)


# ── the server ─────────────────────────────────────────────────────────────────


class SmppServer:
    """Everything the connections share: accounts, the store, reassembly, receipts."""

    def __init__(
        self,
        settings: SmppSettings,
        *,
        accept: Accept,
        store: SmppStore,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        congested: Callable[[], bool] | None = None,
        monitor: SmppMonitor | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        """`accounts`: the logins (engine.accounts); None: those of `settings.accounts`
        (the deprecated form), or the demo login."""
        self.settings = settings
        self.monitor: SmppMonitor = monitor or _NoMonitor()
        self._accept = accept
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self._congested = congested
        if accounts is None:
            accounts = Accounts(
                from_smpp_accounts(settings.accounts or []) or demo_accounts(api_key=None),
                max_failed_binds=settings.max_failed_binds,
                failed_bind_window_s=settings.failed_bind_window_s,
            )
        self.registry = accounts
        self.accounts = {a.smpp.system_id: AccountState(a) for a in accounts if a.smpp is not None}
        # A store the nodes of a cluster share: receipts are claimed by the node delivering them.
        self.shared: SharedReceipts | None = (
            None if store.claims is None else SharedReceipts(store.claims, self.accounts)
        )
        self.reassembly: Reassembly[GivenId] = Reassembly()
        self._reassembly_changed = anyio.Event()
        self.in_progress = 0
        self.live: set[SmppConnection] = set()
        self.stopping = False
        self._connection_closed = anyio.Event()
        self._events: list[tuple[str, bytes]] = []
        self._events_wake = anyio.Event()
        self._pruned_at: float | None = None
        self._acked: list[int] = []
        self._acked_wake = anyio.Event()
        self.tg: anyio.abc.TaskGroup | None = None

    # ── submit_sm ───────────────────────────────────────────────────────────────

    async def submit(
        self, account: AccountState, submit: p.SubmitSm, bind_group: BindGroup = NO_GROUP
    ) -> p.SubmitSmResp:
        """Answer one submit_sm of a bind of `account` in `bind_group`."""
        sequence = submit.sequence_number
        # Over the account's rate now: refused before any work (a part too, which would
        # take its token only when its message is joined). The Acceptor takes the token.
        if not account.owner.limit.has_room(self.wall_clock()):
            return p.SubmitSmResp(sequence_number=sequence, command_status=p.ESME_RTHROTTLED)
        if self.in_progress >= self.settings.max_pending:
            return p.SubmitSmResp(sequence_number=sequence, command_status=p.ESME_RTHROTTLED)
        self.in_progress += 1
        try:
            message_id = await self._submit(account, submit, bind_group)
        except TextRefusedError as error:
            log_text_refused(account.account.system_id, submit.data_coding, error)
            return p.SubmitSmResp(sequence_number=sequence, command_status=error.status)
        except UnreadableMessageError as error:
            return p.SubmitSmResp(sequence_number=sequence, command_status=error.status)
        except Exception as error:
            # The journal or the store could not commit: nothing was accepted.
            log.error("submit_failed", system_id=account.account.system_id, error=str(error))
            return p.SubmitSmResp(sequence_number=sequence, command_status=p.ESME_RSYSERR)
        finally:
            self.in_progress -= 1
        if isinstance(message_id, int):
            return p.SubmitSmResp(sequence_number=sequence, command_status=message_id)
        return p.SubmitSmResp(sequence_number=sequence, message_id=message_id)

    async def _submit(
        self, account: AccountState, submit: p.SubmitSm, bind_group: BindGroup
    ) -> str | int:
        """The message id given to the ESME, or an error status."""
        part, octets = message_octets(submit)
        coding = account.account.coding(submit.data_coding)
        if part is not None and self._congested is not None and self._congested():
            # A part is acknowledged once stored, and the part that completes its message
            # then waits for queue room without a bound: under congestion it is refused
            # before it is stored, so no acknowledged part waits on a full queue.
            return p.ESME_RTHROTTLED
        given = self._given_id(account, submit, bind_group)
        if part is None:
            return await self._submit_whole(account, given, octets, coding)
        return await self._submit_part(given, part, octets, coding)

    def _given_id(
        self, account: AccountState, submit: p.SubmitSm, bind_group: BindGroup
    ) -> GivenId:
        """The id record of a submit_sm, its addresses and times checked (id not yet
        allocated); an unreadable field raises UnreadableMessageError with its status."""
        destination_number(submit.destination_addr, submit.dest_addr_ton)  # fail early
        if len(submit.source_addr) > MAX_SENDER_CHARS:
            raise UnreadableMessageError(p.ESME_RINVSRCADR, "source_addr is too long")
        now = self.wall_clock()
        try:
            schedule_at = parse_smpp_time(submit.schedule_delivery_time, now)
        except ValueError as error:
            raise UnreadableMessageError(p.ESME_RINVSCHED, str(error)) from None
        try:
            expires_at = parse_smpp_time(submit.validity_period, now)
        except ValueError as error:
            raise UnreadableMessageError(p.ESME_RINVEXPIRY, str(error)) from None
        return GivenId(
            id=0,
            system_id=account.account.system_id,
            msg_id=None,
            registered_delivery=submit.registered_delivery,
            submitted_at=now,
            source_addr=submit.source_addr,
            destination_addr=submit.destination_addr,
            text_head="",
            data_coding=submit.data_coding,
            source_addr_ton=submit.source_addr_ton,
            source_addr_npi=submit.source_addr_npi,
            dest_addr_ton=submit.dest_addr_ton,
            dest_addr_npi=submit.dest_addr_npi,
            schedule_at=schedule_at,
            expires_at=expires_at,
            priority=min(9, submit.priority_flag * 3),
            bind_group=bind_group,
        )

    async def _submit_whole(
        self, account: AccountState, given: GivenId, octets: bytes, coding: Coding
    ) -> str | int:
        """A message in one submit_sm: accepted through the one accept path, then its id
        stored (with no receipt asked for, only the id counter: GivenId.kept)."""
        text = decode_text(octets, coding)
        given.text_head = text[:RECEIPT_TEXT_CHARS]
        (result,) = await self._accept(
            account.owner,
            account.origin,
            [build_submission(given, text, None)],
            room_wait_s=self.settings.congestion_wait_s,
            turn=_bind_turn.get(),
        )
        if isinstance(result, LineError):
            return refusal_status(result)
        given.id = await self.store.allocate_id()
        given.msg_id = result[0].msg_id
        self.queue_receipts(await self.store.add_ids([given], build_receipt))
        return str(given.id)

    async def _submit_part(
        self, given: GivenId, part: PartOf, octets: bytes, coding: Coding
    ) -> str | int:
        """One part of a concatenated message: stored, and the message joined and accepted
        when its last part arrives."""
        if coding != "ucs2":
            # Octet by octet, a part is refused now for what its message would be refused
            # for once joined (a UCS-2 part may end mid-character: it is read joined).
            decode_text(octets, coding)
        given.id = await self.store.allocate_id()
        given.text_head = preview_text(octets[: RECEIPT_TEXT_CHARS * 2], coding)[
            :RECEIPT_TEXT_CHARS
        ]
        given.part_key = (
            given.system_id,
            given.source_addr,
            given.destination_addr,
            part.reference,
            part.total,
        )
        given.part_seq = part.seq
        given.part_octets = octets
        await self.store.add_ids([given], build_receipt)
        group = self._add_part(given, part)
        if group is None:
            return str(given.id)
        status = await self.join(group, answered_by=given.id)
        return str(given.id) if status == p.ESME_ROK else status

    def coding(self, system_id: str, data_coding: int) -> Coding:
        """How an account's octets are read; an account no longer configured (parts kept
        across a restart) reads with the defaults."""
        state = self.accounts.get(system_id)
        account = state.account if state is not None else SmppAccount(system_id="", password="")
        return account.coding(data_coding)

    def _add_part(self, given: GivenId, part: PartOf) -> list[GivenId] | None:
        assert given.part_key is not None
        group = self.reassembly.add(given.part_key, part.seq, part.total, given, self.clock())
        self._reassembly_changed.set()
        return group

    async def join(self, group: list[GivenId], answered_by: int | None = None) -> int:
        """All parts are in: one septet message. Returns the status for the last part's
        submit_sm_resp; on a refusal the other parts get receipts saying REJECTD."""
        first = group[0]
        status = p.ESME_ROK
        msg_id: str | None = None
        octets = b"".join(g.part_octets for g in group)
        try:
            text = decode_text(octets, self.coding(first.system_id, first.data_coding))
        except TextRefusedError as error:
            log_text_refused(first.system_id, first.data_coding, error)
            status = error.status
        else:
            # The client reference makes a join repeated after a crash a duplicate,
            # never a second send: the journal answers with the first one's msg_id.
            origin = origin_of(first.system_id)
            reference = f"{origin}:{first.id}"
            state = self.accounts.get(first.system_id)
            result: list[Message] | LineError
            if state is None:  # its login was removed while its parts waited (a restart)
                result = LineError("the SMPP login is no longer configured", kind="unauthorised")
            else:
                (result,) = await self._accept(
                    state.owner,
                    origin,
                    [build_submission(first, text, reference)],
                )
            if isinstance(result, LineError):
                if result.kind == "duplicate" and result.msg_ids:
                    msg_id = result.msg_ids[0]
                else:
                    status = refusal_status(result)
            else:
                msg_id = result[0].msg_id
        if msg_id is None:
            # The last part's submit_sm_resp carries the refusal: no receipt for it.
            others = [row for row in group if row.id != answered_by]
            outcome = Outcome("REJECTD", "000", self.wall_clock())
            self.queue_receipts(await self.store.settle_ids(others, outcome, build_receipt))
            return status
        for row in group:
            row.msg_id = msg_id
            row.part_octets = b""
        self.queue_receipts(await self.store.link(group, build_receipt))
        return p.ESME_ROK

    async def serve_reassembly_timeouts(self) -> None:
        """Parts whose siblings never came: their ids get UNDELIV receipts."""
        timeout = self.settings.reassembly_timeout_s
        while True:
            first = self.reassembly.next_expiry()
            if first is None:
                await self._reassembly_changed.wait()
                self._reassembly_changed = anyio.Event()
                continue
            delay = first + timeout - self.clock()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._reassembly_changed.wait()
                    self._reassembly_changed = anyio.Event()
                continue
            expired = Outcome("UNDELIV", "000", self.wall_clock())
            for group in self.reassembly.expire(self.clock() - timeout):
                log.warning("parts_expired", ids=[row.id for row in group])
                receipts = await self.store.settle_ids(group, expired, build_receipt)
                self.queue_receipts(receipts)

    # ── events and receipts ─────────────────────────────────────────────────────

    def deliver_event(self, origin: str, line: bytes) -> None:
        self._events.append((origin, line))
        self._events_wake.set()

    def take_unread_events(self) -> list[StoreEvents]:
        """Events not yet turned into receipts, per origin: at shutdown they go back to
        the journal's outbox, and `resume` reads them at the next start."""
        by_origin: dict[str, list[bytes]] = {}
        for origin, line in self._events:
            by_origin.setdefault(origin, []).append(line)
        self._events = []
        return [StoreEvents(origin=o, events=lines) for o, lines in by_origin.items()]

    async def serve_events(self) -> None:
        """Final events of septet messages become receipts for every id given out. A
        store that cannot be written (its database away) is waited out: the events are
        kept and tried again, STORE_RETRY_S at first, then up to STORE_RETRY_MAX_S."""
        delay = STORE_RETRY_S
        while True:
            await self._events_wake.wait()
            self._events_wake = anyio.Event()
            lines, self._events = self._events, []
            try:
                await self._settle(lines)
            except StoreError as error:
                log.error(
                    "smpp_store_failed", during="receipts", retry_in_s=delay, error=str(error)
                )
                self._events = lines + self._events
                self._events_wake.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)
            else:
                delay = STORE_RETRY_S

    async def _settle(self, lines: Sequence[tuple[str, bytes]]) -> None:
        outcomes: dict[str, Outcome] = {}
        for _, line in lines:
            found = outcome_of(line)
            if found is not None:
                outcomes.setdefault(found[0], found[1])  # the first final one counts
        if outcomes:
            # A message none of whose ids is stored yet (the report outran the id's
            # commit: the message may be sent before store.add_ids returns) keeps its
            # outcome in the store until they are.
            receipts, _ = await self.store.settle_messages(
                outcomes, build_receipt, now=self.wall_clock()
            )
            self.queue_receipts(receipts)
        await self.prune_outcomes()

    async def prune_outcomes(self) -> None:
        """Drop kept outcomes nobody claimed within OUTCOME_KEEP_S; at most hourly."""
        now = self.wall_clock()
        if self._pruned_at is not None and now - self._pruned_at < OUTCOME_PRUNE_EVERY_S:
            return
        self._pruned_at = now
        forgotten = await self.store.forget_outcomes(now - OUTCOME_KEEP_S)
        if forgotten:
            log.info("smpp_outcomes_forgotten", count=forgotten)

    def queue_receipts(self, receipts: Sequence[PendingReceipt]) -> None:
        """Receipts just made: to the account's binds here (in a cluster, to whichever
        node claims them: they are in the shared store, and the nodes are woken)."""
        if self.shared is not None:
            if receipts:
                self.shared.wake()
            return
        by_account: dict[str, list[PendingReceipt]] = {}
        for receipt in receipts:
            by_account.setdefault(receipt.system_id, []).append(receipt)
        for system_id, items in by_account.items():
            account = self.accounts.get(system_id)
            if account is not None:
                account.queue(items)

    def receipt_acknowledged(self, receipt_id: int) -> None:
        self._acked.append(receipt_id)
        self._acked_wake.set()

    async def serve_acknowledgements(self) -> None:
        delay = STORE_RETRY_S
        while True:
            await self._acked_wake.wait()
            self._acked_wake = anyio.Event()
            if await self.flush_acknowledgements():
                delay = STORE_RETRY_S
                continue
            self._acked_wake.set()
            await anyio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_S)

    async def flush_acknowledgements(self) -> bool:
        """Acknowledged receipts leave the store (also at shutdown: an acknowledged
        receipt is never sent again after a restart). False when the store could not
        be written: they are kept for the next try (a restart meanwhile sends them again)."""
        ids, self._acked = self._acked, []
        if not ids:
            return True
        try:
            await self.store.delete_receipts(ids)
        except StoreError as error:
            log.error("smpp_store_failed", during="acknowledgements", error=str(error))
            self._acked = ids + self._acked
            return False
        if self.shared is not None:
            self.shared.sent_some()
        return True

    def receipts_returned(self, account: AccountState, receipts: Sequence[PendingReceipt]) -> None:
        """Sent on a bind that went before acknowledging them: for the account's next bind
        (in a cluster, released for any node's)."""
        if self.shared is not None:
            self.shared.give_back(receipts)
        else:
            account.queue(receipts)

    async def retry_receipt_later(self, account: AccountState, receipt: PendingReceipt) -> None:
        await anyio.sleep(self.settings.receipt_retry_s)
        self.receipts_returned(account, [receipt])

    # ── start-up ────────────────────────────────────────────────────────────────

    async def resume(self, journal: OutboxJournal) -> None:
        """After a restart: receipts still owed, parts still waiting, reports kept for us."""
        if self.shared is not None:
            # Receipts are claimed as binds come; a previous run's claims are let go.
            receipts = []
            released = await self.shared.start()
            if released:
                log.info("smpp_receipts_released", count=released)
        else:
            receipts = await self.store.pending_receipts()
            self.queue_receipts(receipts)
        joined = await self.take_parts(await self.store.waiting_parts())
        for account in self.accounts.values():
            while lines := await journal.take_events(account.origin, 1000):
                for line in lines:
                    self.deliver_event(account.origin, line)
        await self.prune_outcomes()
        log.info(
            "smpp_resumed",
            receipts=len(receipts),
            waiting_messages=len(self.reassembly),
            joined=joined,
        )

    async def take_parts(self, rows: Sequence[GivenId]) -> int:
        """Stored parts into reassembly (after a restart, or a dead node's in a cluster):
        a message they complete is joined; returns how many were."""
        complete: list[list[GivenId]] = []
        for row in rows:
            if row.part_key is None:
                continue
            key = row.part_key
            group = self.reassembly.add(key, row.part_seq, key[4], row, self.clock())
            if group is not None:
                complete.append(group)
        self._reassembly_changed.set()
        for group in complete:
            await self.join(group)
        return len(complete)

    async def serve_cluster_sweeps(self, claims: ReceiptClaims) -> None:
        """In a cluster, forever: every ADOPT_EVERY_S the waiting parts of nodes that are
        no longer live are taken here (their ESME may send the rest to this node; if it
        does not, they time out here as they would have there); every FINAL_SWEEP_EVERY_S
        the ids of messages final for FINAL_SWEEP_AFTER_S become receipts (their final
        event died with the node that made it before it was stored as receipts)."""
        swept_at = self.wall_clock()
        while True:
            await anyio.sleep(ADOPT_EVERY_S)
            try:
                rows = await claims.adopt_parts()
                if rows:
                    joined = await self.take_parts(rows)
                    log.info("smpp_parts_adopted", parts=len(rows), joined=joined)
                now = self.wall_clock()
                if now - swept_at >= FINAL_SWEEP_EVERY_S:
                    swept_at = now
                    made = await claims.settle_final(now - FINAL_SWEEP_AFTER_S, build_receipt)
                    if made:
                        log.warning("smpp_receipts_from_journal", receipts=len(made))
                        self.queue_receipts(made)
            except StoreError as error:
                log.error("smpp_store_failed", during="sweeps", error=str(error))

    # ── connections ─────────────────────────────────────────────────────────────

    def session_states(self) -> list[str]:
        """The state of each live connection's session (engine.smpp.session.State)."""
        return [connection.session.state.value for connection in list(self.live)]

    def connection_opened(self, connection: SmppConnection) -> None:
        self.live.add(connection)

    def connection_closed(self, connection: SmppConnection) -> None:
        self.live.discard(connection)
        self._connection_closed.set()
        self._connection_closed = anyio.Event()

    async def close_connections(self, wait_s: float) -> None:
        """Stopping: every bound ESME is sent an unbind and has up to `wait_s` to answer
        it (and to get the answers to its submit_sm already read); then the connections
        left are closed."""
        self.stopping = True
        for connection in list(self.live):
            connection.unbind_for_shutdown()
        with anyio.move_on_after(wait_s):
            while self.live:
                await self._connection_closed.wait()
        for connection in list(self.live):
            log.info("smpp_unbind_unanswered", peer=connection.peer)
            connection.cancel()


def build_submission(given: GivenId, text: str, reference: str | None) -> Submission:
    validity_s: int | None = None
    start = given.schedule_at or given.submitted_at
    if given.expires_at is not None:
        validity_s = max(1, min(7 * 24 * 3600, int(given.expires_at - start)))
    return Submission(
        to=destination_number(given.destination_addr, given.dest_addr_ton),
        text=text,
        id=reference,
        sender=given.source_addr or None,
        dlr=bool(given.registered_delivery & 0x03),
        schedule_at=(
            None
            if given.schedule_at is None or given.schedule_at <= given.submitted_at
            else utc_from_timestamp(given.schedule_at)
        ),
        validity_s=validity_s,
        priority=given.priority,
    )


def log_text_refused(system_id: str, data_coding: int, error: TextRefusedError) -> None:
    """One line per refused text: the account, its data_coding, how it was read, why, and
    (for 0 and 1, whose alphabet is the account's setting) the alphabets it reads in."""
    log.warning(
        "smpp_text_refused",
        system_id=system_id,
        data_coding=data_coding,
        coding=error.coding,
        fault=error.fault,
        position=error.position,
        found=error.found_label,
        readable_as=readable_as(error.octets) if data_coding in (0, 1) else None,
    )


# ── one connection ─────────────────────────────────────────────────────────────


# ── serving ────────────────────────────────────────────────────────────────────


async def serve_smpp(
    settings: SmppSettings,
    *,
    accept: Accept,
    events: EventRegistry,
    journal: OutboxJournal,
    store: Callable[[], contextlib.AbstractAsyncContextManager[SmppStore]],
    host: str | None = None,
    port: int | None = None,
    congested: Callable[[], bool] | None = None,
    unbind_wait_s: float = UNBIND_WAIT_S,
    monitor: SmppMonitor | None = None,
    accounts: Accounts | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for ESMEs until cancelled; `task_status.started(port)` once listening.

    `accept` is engine.ingress.accept.Acceptor.accept; `accounts` the logins (None: those
    of `settings.accounts`, the deprecated form, or demo/demo); `events` the EventRouter
    (one sink per account, registered for the server's life); `journal` gives back the
    events stored while the server was down; `store` opens the server's SmppStore
    (engine.smpp.storage: a SQLite file beside the journal, or the PostgreSQL journal's
    database in a cluster). `congested`, when given,
    says the engine's queues are full: a part of a long message is then answered
    ESME_RTHROTTLED (a whole message waits for room in `accept`, see SmppSettings).
    Cancelled, it unbinds the bound ESMEs and waits up to `unbind_wait_s` for them
    (the module docstring), so the cancelling task should expect that much. `monitor`
    is told of binds and reads the sessions' states while the server runs.
    """
    if host is None or port is None:
        listen_host, _, listen_port = (settings.listen or "127.0.0.1:2775").rpartition(":")
        host = host if host is not None else listen_host.strip("[]") or "127.0.0.1"
        port = port if port is not None else int(listen_port)
    async with store() as opened:
        server = SmppServer(
            settings,
            accept=accept,
            store=opened,
            congested=congested,
            monitor=monitor,
            accounts=accounts,
        )
        sinks = [AccountSink(a.origin, server.deliver_event) for a in server.accounts.values()]
        for sink in sinks:
            events.register(sink)
        server.monitor.smpp_sessions = server.session_states
        try:
            async with anyio.create_task_group() as tg:
                server.tg = tg
                tg.start_soon(server.serve_events)
                tg.start_soon(server.serve_acknowledgements)
                tg.start_soon(server.serve_reassembly_timeouts)
                await server.resume(journal)
                if server.shared is not None and opened.claims is not None:
                    tg.start_soon(server.shared.serve)
                    tg.start_soon(server.serve_cluster_sweeps, opened.claims)
                await _listen(server, host, port, unbind_wait_s, task_status)
        finally:
            server.monitor.smpp_sessions = None
            for sink in sinks:
                sink.closed = True
                events.unregister(sink)
            with anyio.CancelScope(shield=True):
                await _stopped(server, journal)


async def _listen(
    server: SmppServer,
    host: str,
    port: int,
    unbind_wait_s: float,
    task_status: anyio.abc.TaskStatus[int],
) -> None:
    """Take connections until cancelled; then unbind the bound ESMEs (serve_smpp)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound_port: int = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    log.info("smpp_listening", host=host, port=bound_port)
    task_status.started(bound_port)
    async with anyio.create_task_group() as connections:
        try:
            await listener.serve(
                lambda stream: _serve_connection(server, stream), task_group=connections
            )
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
                await server.close_connections(unbind_wait_s)


async def _stopped(server: SmppServer, journal: OutboxJournal) -> None:
    """The server has stopped: acknowledged receipts leave the store, what this node
    claimed is released (a cluster), and events not yet made receipts go back to the
    journal's outbox."""
    await server.flush_acknowledgements()
    if server.shared is not None:
        await server.shared.stop()
    unread = server.take_unread_events()
    if unread:
        await journal.record(unread)


async def _serve_connection(server: SmppServer, stream: anyio.abc.SocketStream) -> None:
    try:
        peer = str(stream.extra(anyio.abc.SocketAttribute.remote_address)[0])  # noqa: S610 - anyio, not Django
    except (IndexError, TypeError):
        peer = "unknown"
    if server.stopping or len(server.live) >= server.settings.max_connections:
        if not server.stopping:
            log.warning("smpp_too_many_connections", peer=peer)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        return
    _bind_turn.set(anyio.Lock())  # this connection's task only (see _bind_turn)
    connection = SmppConnection(server, stream, peer)
    server.connection_opened(connection)
    try:
        # Shielded from serve_smpp's cancellation: a stopping server ends a connection
        # with an unbind (close_connections), which cancels this scope when time is up.
        with anyio.CancelScope(shield=True) as connection.scope:
            await connection.serve()
    finally:
        server.connection_closed(connection)
