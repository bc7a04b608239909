"""Delivery receipts: which septet events end a message, and the deliver_sm that tells the
ESME (SMPP v3.4 Appendix B, section 4.6.1). Pure: no I/O.
"""

from __future__ import annotations

import msgspec

from engine.models import DeliveryReport, Failed, event_decoder
from engine.smpp import pdu as p
from engine.smpp.store import GivenId, PendingReceipt
from engine.smpp.text import FINAL_STATES, encode_gsm, error_digits, receipt_text


class Outcome(msgspec.Struct, frozen=True):
    """A septet message's final state as a receipt tells it."""

    state: str
    error: str
    done_at: float


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
        state = "UNKNOWN" if event.code == "unknown" else "UNDELIV"
        return event.msg_id, Outcome(state, error_digits(event.code), event.ts.timestamp())
    return None


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
        # The receipt travels back: from the handset to the sender (section 4.6.1).
        source_addr=row.destination_addr,
        destination_addr=row.source_addr,
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
    )


def receipt_pdu(receipt: PendingReceipt, sequence_number: int) -> p.DeliverSm:
    return p.DeliverSm(
        sequence_number=sequence_number,
        source_addr=receipt.source_addr,
        destination_addr=receipt.destination_addr,
        esm_class=p.ESM_CLASS_DELIVERY_RECEIPT,
        data_coding=0,
        short_message=encode_gsm(receipt.text),
        optional=p.OptionalParameters(
            receipted_message_id=str(receipt.id), message_state=receipt.message_state
        ),
    )
