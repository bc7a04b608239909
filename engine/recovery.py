"""Crash recovery and the report deadline: the lifecycle's inputs that no request brings.

At start-up, `recover_inflight` decides, for each message a stopped daemon left in flight,
whether a resend is safe (engine.lifecycle.on_recovery: BSG deduplicates by reference;
SMS Club within its duplicate window, counted from the earliest attempt that may have
reached it; elsewhere the message is `unconfirmed` and its report decides).
`serve_report_deadlines` ends every message whose final report has not come by its
deadline as UNKNOWN, so nothing stays `submitted` forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import anyio
import structlog

from bridges.base import BridgeDriver
from engine import lifecycle
from engine.journal import Change, JournalError
from engine.models import Event, Message
from engine.retry import RetryPolicy

log = structlog.get_logger("septet.recovery")

# How many overdue messages one sweep ends in one commit, and how often it looks.
DEADLINE_BATCH = 1000
DEADLINE_SWEEP_S = 5.0


class RecoveryJournal(Protocol):
    async def inflight(self) -> list[Message]: ...

    async def report_overdue(self, now: float, limit: int) -> list[Message]: ...

    async def record(self, changes: Sequence[Change]) -> None: ...


class EventEmitter(Protocol):
    def emit(self, origin: str, event: Event) -> None: ...


async def recover_inflight(
    journal: RecoveryJournal,
    drivers: Mapping[str, BridgeDriver],
    events: EventEmitter,
    *,
    policy: RetryPolicy,
    price: Callable[[Message, str], tuple[float, str]],
    report_timeout_s: float,
    clock: Callable[[], float] = time.time,
    takes: Callable[[Message, str, float], bool] = lambda message, bridge, now: True,
) -> dict[str, int]:
    """Carry out the lifecycle's crash-recovery step for every message this node left in
    flight; returns how many went each way (for the start line)."""
    stuck = await journal.inflight()
    if not stuck:
        return {}
    tally = await recover_claims(
        journal,
        stuck,
        drivers,
        events,
        policy=policy,
        price=price,
        report_timeout_s=report_timeout_s,
        now=clock(),
        takes=takes,
    )
    log.warning("recovered_inflight", **tally)
    return tally


async def recover_claims(
    journal: RecoveryJournal,
    claimed: Sequence[Message],
    drivers: Mapping[str, BridgeDriver],
    events: EventEmitter,
    *,
    policy: RetryPolicy,
    price: Callable[[Message, str], tuple[float, str]],
    report_timeout_s: float,
    now: float,
    takes: Callable[[Message, str, float], bool] = lambda message, bridge, now: True,
) -> dict[str, int]:
    """The crash-recovery step for claims whose request's fate is unknown: this node's from
    a run that stopped, or a dead node's taken over (engine.membership). One commit; the
    events after it. Returns how many went to each state."""
    changes: list[Change] = []
    announced: list[tuple[str, Event]] = []
    tally: dict[str, int] = {}
    for message in claimed:
        driver = drivers.get(message.bridge)
        idempotency = driver.capabilities.idempotency if driver else "none"
        ctx = lifecycle.Context(
            bridge=message.bridge,
            now=now,
            idempotency=idempotency,
            policy=policy,
            failover_policy=policy,
            jitter=lambda: 0.5,
            price=price,
            takes=takes,
            report_timeout_s=report_timeout_s,
            can_ask_by_reference=idempotency == "reference",
        )
        step = lifecycle.on_recovery(message, ctx)
        changes.extend(step.changes)
        announced.extend(step.events)
        tally[step.state.value] = tally.get(step.state.value, 0) + 1
    await journal.record(changes)
    for origin, event in announced:
        events.emit(origin, event)
    return tally


async def serve_report_deadlines(
    journal: RecoveryJournal,
    events: EventEmitter,
    *,
    report_timeout_s: float,
    on_final: Callable[[str, str, float | None], None] | None = None,
    clock: Callable[[], float] = time.time,
    sweep_s: float = DEADLINE_SWEEP_S,
) -> None:
    """Forever: end the messages whose report deadline has passed (UNKNOWN, with a `dlr`
    event). A journal that cannot be written is waited out; nothing is skipped."""
    while True:
        ended = await end_overdue(journal, events, clock(), report_timeout_s, on_final)
        if ended < DEADLINE_BATCH:
            await anyio.sleep(sweep_s)


async def end_overdue(
    journal: RecoveryJournal,
    events: EventEmitter,
    now: float,
    report_timeout_s: float,
    on_final: Callable[[str, str, float | None], None] | None = None,
) -> int:
    """One sweep: returns how many messages it ended."""
    overdue = await journal.report_overdue(now, DEADLINE_BATCH)
    steps = [
        (message, step)
        for message in overdue
        if (step := lifecycle.on_report_deadline(message, now, report_timeout_s)) is not None
    ]
    if not steps:
        return 0
    try:
        await journal.record([change for _, step in steps for change in step.changes])
    except JournalError as error:
        log.error("journal_write_failed", during="report_deadline", error=str(error))
        return 0
    for message, step in steps:
        if on_final is not None:
            on_final(message.bridge, "UNKNOWN", now - (message.inflight_at or message.accepted_at))
        for origin, event in step.events:
            events.emit(origin, event)
    log.info("reports_overdue", messages=len(steps))
    return len(steps)
