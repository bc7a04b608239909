"""Kannel's dlr-url: which reports a dlr-mask asks for, and the URL with its escapes. Pure.

A message sent through Kannel's sendsms (engine.ingress.sendsms) with `dlr-mask` and
`dlr-url` has its reports fetched from that URL with a GET, as Kannel does: one per event
whose report type (`%d`, `dlr_type_of`) is in the mask, the escapes of Kannel's userguide
("Parameters (Escape Codes)") substituted from the message and the event (`expand`). The
journal's feed (engine.feed) computes the URL in the transaction that stores the event,
and the webhooks' delivery worker (engine.webhooks.worker) makes the GET, at least once.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from typing import Final

import msgspec

from engine.models import (
    Accepted,
    CancelledEvent,
    DeliveryReport,
    Event,
    Failed,
    FailoverEvent,
    LineRejected,
    RetryEvent,
    StatusEvent,
    SubmittedEvent,
)

# dlr-mask bits (Kannel's userguide, "dlr-mask"): the `%d` a report is fetched with.
DLR_DELIVERED: Final = 1  # delivered to phone
DLR_UNDELIVERED: Final = 2  # non-delivered to phone
DLR_QUEUED: Final = 4  # queued on SMSC (an intermediate status)
DLR_SMSC_ACK: Final = 8  # delivered to SMSC (the provider took it)
DLR_SMSC_NACK: Final = 16  # non-delivered to SMSC (the provider refused it)
DLR_ALL: Final = 31


class KannelDlr(msgspec.Struct, frozen=True, kw_only=True):
    """Where and for which reports (`mask`, Kannel's bits) a message's dlr-url is fetched."""

    url: str
    mask: int


class KannelTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What a message's events need to become dlr-url GETs (engine.feed.AppendEvents): the
    template and mask, and the message's fields its escapes name."""

    url: str
    mask: int
    to: str
    sender: str
    text: str
    account: str
    provider_id: str = ""


# ── dlr-url escapes ────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class DlrValues:
    """What one report of a message fills a dlr-url with (Kannel's escape table)."""

    dlr_type: int  # %d
    smsc_reply: str  # %A
    to: str  # %p (the message's recipient: a report's sender), %q with "+"
    sender: str  # %P (the message's sender: a report's receiver), %Q
    at: float  # %t, %T
    smsc_id: str  # %i: the bridge
    msg_id: str  # %I
    text: str  # %a, %b, %k
    provider_id: str  # %F
    account: str  # %n, %o


def _plus(number: str) -> str:
    return "+" + number[2:] if number.startswith("00") else number


def _escapes(values: DlrValues) -> dict[str, str]:
    moment = dt.datetime.fromtimestamp(values.at, dt.UTC)
    digits = values.to.lstrip("+")
    words = values.text.split()
    return {
        "d": str(values.dlr_type),
        "A": values.smsc_reply,
        "p": digits,
        "q": "+" + digits,
        "P": values.sender,
        "Q": _plus(values.sender),
        "t": moment.strftime("%Y-%m-%d %H:%M:%S"),
        "T": str(int(values.at)),
        "i": values.smsc_id,
        "I": values.msg_id,
        "a": " ".join(words),
        "b": values.text,
        "k": words[0] if words else "",
        "F": values.provider_id,
        "f": values.provider_id,
        "n": values.account,
        "o": values.account,
        "%": "%",
    }


def expand_dlr_url(template: str, values: DlrValues) -> str:
    """`template` with Kannel's escapes replaced, each value URL-encoded (as Kannel does);
    an escape Kannel has and septet does not fill becomes empty, an unknown one stays."""
    table = _escapes(values)
    out: list[str] = []
    index = 0
    while index < len(template):
        char = template[index]
        if char == "%" and index + 1 < len(template):
            code = template[index + 1]
            if code in table:
                value = table[code]
                out.append("%" if code == "%" else urllib.parse.quote(value, safe=""))
                index += 2
                continue
            if code in KANNEL_EMPTY:
                index += 2
                continue
        out.append(char)
        index += 1
    return "".join(out)


# Kannel escapes with no meaning in septet (udh, coding details, billing, meta-data, ...).
KANNEL_EMPTY: Final = frozenset("sSrcmMCuUBDRLNx")


def report_of(event: Event) -> tuple[int, str] | None:
    """An event as a Kannel report: its type (`%d`) and its SMSC reply text (`%A`), or
    None for an event that is no report (accepted, retry, failover, cancelled)."""
    match event:
        case SubmittedEvent():
            return DLR_SMSC_ACK, f"ACK/{event.provider_id or ''}"
        case DeliveryReport():
            kind = dlr_type(event.state, submitted=True, refused=False)
            return kind, f"stat:{event.state} err:{event.provider_status}"
        case StatusEvent():
            return DLR_QUEUED, f"stat:{event.state} err:{event.provider_status}"
        case Failed():
            refused = event.state == "REJECTD"
            kind = dlr_type(
                None if refused else event.state or "UNKNOWN", submitted=False, refused=refused
            )
            return kind, f"NACK/{event.code or ''}/{event.error}"
        case Accepted() | RetryEvent() | FailoverEvent() | CancelledEvent() | LineRejected():
            return None


def url_for(target: KannelTarget, event: Event) -> str | None:
    """The GET a message's event makes to its dlr-url, or None: not a report, or not one
    the mask asks for."""
    report = report_of(event)
    if report is None or not report[0] & target.mask:
        return None
    kind, reply = report
    provider_id = getattr(event, "provider_id", None) or target.provider_id
    values = DlrValues(
        dlr_type=kind,
        smsc_reply=reply,
        to=target.to,
        sender=target.sender,
        at=event.ts.timestamp(),
        smsc_id=str(getattr(event, "bridge", None) or ""),
        msg_id=str(event.msg_id or ""),
        text=target.text,
        provider_id=provider_id,
        account=target.account,
    )
    return expand_dlr_url(target.url, values)


def dlr_type(state: str | None, *, submitted: bool, refused: bool) -> int:
    """The `%d` of a report: an SMPP final state (DELIVRD: 1, any other: 2), else the
    provider's taking (8) or refusing (16) the message, else an intermediate status (4)."""
    if state is not None:
        return DLR_DELIVERED if state == "DELIVRD" else DLR_UNDELIVERED
    if refused:
        return DLR_SMSC_NACK
    return DLR_SMSC_ACK if submitted else DLR_QUEUED
