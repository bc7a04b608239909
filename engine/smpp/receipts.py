"""Delivery receipts: which septet events end a message, and the deliver_sm that tells the
ESME (SMPP v3.4 Appendix B, section 4.6.1). Pure: no I/O.

Only a final state makes a receipt (issue 16):

    event                         receipt
    ────────────────────────────  ─────────────────────────────────────────────────
    dlr, state final              stat: the state (DELIVRD, UNDELIV, EXPIRED, ...)
    failed, final: true           stat: its `state` when given, else UNKNOWN for an
                                  "unknown" code and UNDELIV for the rest
    cancelled                     stat:DELETED (message_state DELETED, section 5.2.28)
    dlr with a non-final state,   none: the message goes on, its final event comes
    failed with final: false,     later
    status, retry, failover,
    accepted, submitted

The first final event of a message is its outcome; the store turns each id the ESME was
given into a receipt once (engine.smpp.storage), so a later final event changes nothing.
"""

from __future__ import annotations

from typing import Final

import msgspec

from engine.models import (
    OUTCOME_CANCELLED,
    CancelledEvent,
    DeliveryReport,
    Failed,
    event_decoder,
)
from engine.smpp import pdu as p
from engine.smpp.storage import GivenId, Outcome, PendingReceipt
from engine.smpp.text import FINAL_STATES, Alphabet, encode_text, error_digits, receipt_text

CANCELLED_STATE: Final = "DELETED"


def outcome_of(line: bytes) -> tuple[str, Outcome] | None:
    """(msg_id, outcome) for an event that ends a message; None for the rest."""
    try:
        event = event_decoder.decode(line)
    except msgspec.DecodeError:
        return None
    if isinstance(event, DeliveryReport) and event.state in FINAL_STATES:
        error = "000" if event.state == "DELIVRD" else error_digits(event.provider_status)
        return event.msg_id, Outcome(event.state, error, event.ts.timestamp())
    if isinstance(event, Failed) and event.final:
        return event.msg_id, Outcome(
            failed_state(event), error_digits(event.code), event.ts.timestamp()
        )
    if isinstance(event, CancelledEvent):
        return event.msg_id, Outcome(CANCELLED_STATE, "000", event.ts.timestamp())
    return None


def outcome_of_final(outcome: str, code: str | None, final_at: float) -> Outcome | None:
    """The receipt's outcome from a final message as the journal holds it (MarkFinal's
    `outcome`: an SMPP state, CANCELLED, or SUBMITTED for one that asked for no report,
    which makes none): for a final event that never became receipts."""
    if outcome == OUTCOME_CANCELLED:
        return Outcome(CANCELLED_STATE, "000", final_at)
    if outcome not in FINAL_STATES:
        return None
    return Outcome(outcome, "000" if outcome == "DELIVRD" else error_digits(code), final_at)


def failed_state(event: Failed) -> str:
    """The receipt state of a final `failed` event: the one it names (the lifecycle sets
    REJECTD, EXPIRED or UNDELIV), else read from its code as before it named one."""
    named = event.state
    if named in FINAL_STATES:
        return named
    return "UNKNOWN" if event.code == "unknown" else "UNDELIV"


def wants_receipt(registered_delivery: int, state: str) -> bool:
    """Section 5.2.17: bits 1..0 are 01 (on success or failure) or 10 (on failure only)."""
    mode = registered_delivery & 0x03
    return mode == 1 or (mode == 2 and state != "DELIVRD")


def build_receipt(row: GivenId, outcome: Outcome) -> PendingReceipt | None:
    if not wants_receipt(row.registered_delivery, outcome.state):
        return None
    message_id = str(row.id)
    return PendingReceipt(
        id=row.id,
        system_id=row.system_id,
        # The receipt travels back: from the handset to the sender (section 4.6.1), so
        # each address keeps the TON/NPI the submit gave it (section 5.2.5).
        source_addr=row.destination_addr,
        source_addr_ton=row.dest_addr_ton,
        source_addr_npi=row.dest_addr_npi,
        destination_addr=row.source_addr,
        dest_addr_ton=row.source_addr_ton,
        dest_addr_npi=row.source_addr_npi,
        text=receipt_text(
            message_id=message_id,
            state=outcome.state,
            error=outcome.error,
            submitted_at=row.submitted_at,
            done_at=outcome.done_at,
            text=row.text_head,
        ),
        state=outcome.state,
        message_state=p.MESSAGE_STATES.get(outcome.state, p.MESSAGE_STATES["UNKNOWN"]),
        # Kannel matches a receipt to its message by the link it came in on (dlr_find by
        # smsc-id), so it goes back to the group of the bind that submitted it.
        bind_group=row.bind_group,
    )


def receipt_pdu(
    receipt: PendingReceipt, sequence_number: int, alphabet: Alphabet = "gsm"
) -> p.DeliverSm:
    """The deliver_sm telling `receipt`, its text as data_coding 0 in the account's
    alphabet for 0 (`alphabet`)."""
    return p.DeliverSm(
        sequence_number=sequence_number,
        source_addr_ton=receipt.source_addr_ton,
        source_addr_npi=receipt.source_addr_npi,
        source_addr=receipt.source_addr,
        dest_addr_ton=receipt.dest_addr_ton,
        dest_addr_npi=receipt.dest_addr_npi,
        destination_addr=receipt.destination_addr,
        esm_class=p.ESM_CLASS_DELIVERY_RECEIPT,
        data_coding=0,
        short_message=encode_text(receipt.text, alphabet),
        optional=p.OptionalParameters(
            receipted_message_id=str(receipt.id), message_state=receipt.message_state
        ),
    )
