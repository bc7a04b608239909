"""Cancelling one stored message: the path of DELETE /v1/messages/{id} and `septet messages cancel`.

A cancel wins only over a message still waiting that no request has carried
(engine.lifecycle.on_cancel decides; the journal's compare-and-set, SQL_CANCEL, makes it
race-free against a claim). What became of it is a `CancelVerdict`; each door words it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from engine import lifecycle
from engine.ingress.api_models import FINAL_STATES
from engine.journal import Change, StoredMessage
from engine.models import Message


class Canceller(Protocol):
    """What a cancel needs of the engine: the journal's compare-and-set, then (once it
    won) the step carried out: its events, its counts, the message out of its queue."""

    async def cancel(self, changes: Sequence[Change]) -> bool: ...

    def cancelled(self, message: Message, step: lifecycle.Step) -> None: ...


class CancelVerdict(enum.Enum):
    CANCELLED = "cancelled"  # this call cancelled it
    ALREADY_CANCELLED = "already_cancelled"
    FINAL = "final"  # it ended otherwise already
    CARRIED = "carried"  # a request has carried it (a retry or a failover is pending)
    SENT = "sent"  # it was already sent to the provider (in flight, or lost the race)


async def cancel_stored(stored: StoredMessage, canceller: Canceller, now: float) -> CancelVerdict:
    """Cancel `stored` if it still may be; JournalError passes through (nothing changed)."""
    message = stored.message
    if stored.status == "cancelled":
        return CancelVerdict.ALREADY_CANCELLED
    if stored.status in FINAL_STATES:
        return CancelVerdict.FINAL
    step = lifecycle.on_cancel(message, now)
    if step is None:
        return CancelVerdict.SENT if stored.status == "inflight" else CancelVerdict.CARRIED
    if not await canceller.cancel(step.changes):
        return CancelVerdict.SENT
    canceller.cancelled(message, step)
    return CancelVerdict.CANCELLED


def cancel_refusal(msg_id: str, status: str, verdict: CancelVerdict) -> str:
    """The sentence for a cancel that did not happen."""
    why = {
        CancelVerdict.FINAL: f"it is final already ({status})",
        CancelVerdict.CARRIED: f"a request has carried it already ({status})",
        CancelVerdict.SENT: "it was already sent to the provider",
    }.get(verdict, status)
    return f"message {msg_id} cannot be cancelled: {why}"
