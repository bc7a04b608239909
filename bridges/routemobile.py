"""Sans-IO driver for routemobile, Route Mobile's "1701" Bulk HTTP API (seed 001). Pure: no I/O.

Follows docs/providers.md "routemobile", which fills the seed's gaps: Unicode text travels
as upper-case UTF-16BE hex, the reply has one comma-separated entry per destination,
both numberings of the no-credit and DND codes are accepted, and delivery reports are
pushed by POST with their parameters in the query string.

`BridgeSettings.credentials` keys:

- `username`, `password`: the HTTP account, sent on every call.
- `callback_token` (optional): Route Mobile pushes reports to a URL configured on the
  account, with no credentials of its own. septet registers its callback URL with
  `?token=<callback_token>` (see `callback_registration_url`) and, when this key is
  set, refuses every callback that does not carry the same token.

`BridgeSettings.options`:

- `charset = "latin1"` sends GSM-7 texts that fit ISO-8859-1 as type 5 / 7 instead of 0 / 1.
- `charge_currency` (an ISO 4217 code): the currency of the account's charges. Route Mobile
  states its charge only in the delivery report (`iCharge`, in the account's credits) and
  names no currency; without this option it is the bridge's price table currency
  (`BridgeSettings.price_currency`).

Destinations are sent as bare digits: the seed allows an optional `+`, and leaving it
out spares the `%2B` the seed warns about.
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from bridges.base import (
    AccountFault,
    AccountRefused,
    BridgeSettings,
    CallbackRejected,
    Capabilities,
    HttpCall,
    HttpReply,
    InboundRequest,
    Limits,
    OutboundMessage,
    Outcome,
    Receipt,
    Rejected,
    RejectionCause,
    RetryLater,
    SmppState,
    StatusQuery,
    Submitted,
    Throttled,
    Unknown,
    UnparseableReply,
    ascii_digits,
    match_reply_entries,
    retry_after_seconds,
)

SEND_PATH = "/bulksms/bulksms"
SCHEDULE_PATH = "/bulksms/schedulemsg"

SUCCESS_CODE = "1701"

# docs/providers.md "routemobile" Codes, with its rule "Retry only 1709. After 1715 never
# resubmit". A code that refuses the *account* (credentials, credit, the client's IP) is
# the bridge's fault, not the message's: nothing was sent, so another bridge may take it.
# Every other code is final for the message.
_RETRY_CODES: dict[str, str] = {
    # 1709 "user validation failed" is the one code docs/providers.md says to retry; when the
    # retries run out, engine/retry.py fails the message over where its route allows.
    "1709": "user validation failed",
}
_UNKNOWN_CODES: dict[str, str] = {
    "1715": "the provider timed out answering; the message may or may not have gone out",
}
_ACCOUNT_CODES: dict[str, tuple[str, AccountFault]] = {
    # docs/providers.md "routemobile": 1703 bad username/password.
    "1703": ("the username or password was refused", "credentials"),
    # docs/providers.md "routemobile": no credit is 1725 in the seed, 1025 in Route Mobile's
    # own documents; processing stops at it.
    "1725": ("the account has insufficient credit", "credit"),
    "1025": ("the account has insufficient credit", "credit"),
    # docs/providers.md "routemobile": 16 IP blacklisted, 18 IP not whitelisted.
    "16": ("the client IP address is blacklisted", "blocked"),
    "18": ("the client IP address is not whitelisted", "blocked"),
}
# docs/providers.md "routemobile": both numberings of no-credit mean "processing stopped here".
NO_CREDIT_CODES = frozenset(
    code for code, (_, fault) in _ACCOUNT_CODES.items() if fault == "credit"
)
_REJECT_CODES: dict[str, str] = {
    "1702": "a parameter was missing or blank",
    "1704": "the message type was refused",
    "1705": "the message text was refused",
    "1706": "the destination was refused",
    "1707": "the sender (source) was refused",
    "1708": "the dlr flag was refused",
    "1710": "the provider had an internal error",
    "1732": "the destination is on the do-not-disturb list",
    "1032": "the destination is on the do-not-disturb list",
    "1028": "the provider judged the message spam",
    "1041": "the provider judged the message a duplicate",
    "1042": "the destination is explicitly do-not-disturb",
    "1033": "the message does not match a registered template",
    # SMPP v3.4 section 5.1.3 command_status values passed through by the SMSC:
    # 0x45 (69) ESME_RSUBMITFAIL and 0x08 (8) ESME_RSYSERR.
    "69": "the provider had an internal error (SMPP submit failed)",
    "8": "the provider had an internal error (SMPP system error)",
}

# The part of the message each refusal above blames (the rest: "other").
_REJECTION_CAUSES: dict[str, RejectionCause] = {
    "1706": "number",
    "1732": "number",
    "1032": "number",
    "1042": "number",
    "1707": "sender",
    "1705": "content",
    "1028": "content",
    "1033": "content",
}

# docs/providers.md "routemobile" Delivery reports: sStatus to SMPP state and finality.
_CALLBACK_STATES: dict[str, tuple[SmppState, bool]] = {
    "DELIVRD": ("DELIVRD", True),
    "UNDELIV": ("UNDELIV", True),
    "EXPIRED": ("EXPIRED", True),
    "REJECTD": ("REJECTD", True),
    "DELETED": ("DELETED", True),
    "ACKED": ("ENROUTE", False),
    "ENROUTE": ("ENROUTE", False),
    "ACCEPTED": ("ACCEPTD", False),
    "ACCEPTD": ("ACCEPTD", False),
    "UNKNOWN": ("UNKNOWN", True),
}


# A phone number as bare ASCII digits (no `+`, spaces or dashes).
destination_digits = ascii_digits

_CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217


def parse_charge(value: str | None) -> float | None:
    """A report's `iCharge`: what the message cost, every part of it; None where the report
    gives no usable figure (absent, blank, not a number, negative, not finite).

    Route Mobile's DLR Push API: `iCostPerSms` is the cost per SMS, `iCharge` the "total
    credits deducted depending upon number of message parts". The total is the charge:
    `iCostPerSms` alone undercounts a long message, and multiplying it by the parts septet
    counted could disagree with the parts the provider billed.
    """
    if value is None:
        return None
    try:
        amount = float(value.strip())
    except ValueError:
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None


def is_code(text: str) -> bool:
    """Whether `text` is a reply code: ASCII digits only (str.isdigit alone takes '²')."""
    return text.isascii() and text.isdigit()


def code_outcome(code: str) -> Outcome:
    """The outcome a failure code means for one message (docs/providers.md "routemobile")."""
    if code in _RETRY_CODES:
        return RetryLater(code, f"routemobile: {_RETRY_CODES[code]}.")
    if code in _UNKNOWN_CODES:
        return Unknown(code, f"routemobile: {_UNKNOWN_CODES[code]}.")
    if code in _ACCOUNT_CODES:
        sentence, fault = _ACCOUNT_CODES[code]
        return AccountRefused(code, f"routemobile: {sentence}.", fault)
    if code in _REJECT_CODES:
        cause = _REJECTION_CAUSES.get(code, "other")
        return Rejected(code, f"routemobile: {_REJECT_CODES[code]}.", cause)
    # The seed: "Apart from error code 1709, please do NOT retry" any other code,
    # including SMPP v3.4 error codes we have no sentence for.
    return Rejected(code, f"routemobile answered the unknown code {code}.")


def ucs2_hex(text: str) -> str:
    """Unicode `message` text: UTF-16BE bytes as upper-case hex, 4 digits per code unit.

    docs/providers.md "routemobile": a character outside the BMP is a surrogate pair, so it
    takes 8 hex digits (3GPP TS 23.038 UCS-2 as handsets read it: UTF-16).
    """
    return text.encode("utf-16-be", "surrogatepass").hex().upper()


def schedule_fields(when: datetime) -> list[tuple[str, str]]:
    """`date`, `time` and `gmt` for the scheduler (docs/providers.md "routemobile" Scheduler).

    `date` is MM/DD/YYYY; `time` is "hh:mm am|pm" with hours 00-12, 12 am being
    midnight; `gmt` is "+hh:mm" / "-hh:mm". The seed allows offsets of 0-12 hours in
    whole or half hours only, so a time in any other zone is sent as UTC.
    """
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("A scheduled time needs a time zone.")
    if abs(offset) > timedelta(hours=12) or offset % timedelta(minutes=30):
        when = when.astimezone(UTC)
        offset = timedelta(0)
    minutes = offset // timedelta(minutes=1)
    hour_of_half_day = when.hour % 12 or 12
    meridiem = "am" if when.hour < 12 else "pm"
    sign = "-" if minutes < 0 else "+"
    hours, remainder = divmod(abs(minutes), 60)
    return [
        ("date", f"{when.month:02d}/{when.day:02d}/{when.year:04d}"),
        ("time", f"{hour_of_half_day:02d}:{when.minute:02d} {meridiem}"),
        ("gmt", f"{sign}{hours:02d}:{remainder:02d}"),
    ]


class ReplyEntry(msgspec.Struct, frozen=True):
    """One parsed reply entry: a code, the echoed cell (digits, "" if none) and the id."""

    code: str
    cell: str
    provider_id: str | None


def _all_taken(batch: Sequence[OutboundMessage], body: str) -> list[Outcome] | None:
    """The outcomes of a reply that took every message: an entry `1701|<cell>|<id>` for
    each, in the batch's order (what `parse_send` makes of it, without a ReplyEntry and a
    match per entry); None for any other reply (read entry by entry)."""
    entries = body.split(",")
    if len(entries) != len(batch):
        return None
    outcomes: list[Outcome] = []
    for entry, message in zip(entries, batch, strict=True):
        fields = entry.split("|")
        if (
            len(fields) != 3
            or fields[0] != SUCCESS_CODE
            or fields[1] != destination_digits(message.to)
        ):
            return None
        provider_id = fields[2].strip()
        if not provider_id:
            return None
        outcomes.append(Submitted(provider_id))
    return outcomes


def parse_entry(raw: str) -> ReplyEntry:
    """One comma-separated entry: `1701|cell|id`, `1701|cell:id`, `code|cell` or `code`."""
    fields = raw.strip().split("|")
    code = fields[0].strip()
    if not is_code(code) or len(fields) > 3:
        raise UnparseableReply(f"routemobile's reply entry {raw[:80]!r} is not a documented shape.")
    cell = fields[1].strip() if len(fields) > 1 else ""
    provider_id = fields[2].strip() if len(fields) > 2 else None
    if provider_id is None and ":" in cell:
        # docs/providers.md "routemobile": some servers write `1701|<cell>:<id>`.
        cell, provider_id = (part.strip() for part in cell.split(":", 1))
    if cell and not is_code(cell.removeprefix("+")):
        raise UnparseableReply(f"routemobile's reply entry {raw[:80]!r} has no phone number.")
    return ReplyEntry(code, destination_digits(cell), provider_id or None)


# Seed 001 `source`: "Max Length of 18 if numeric. Max Length of 11 if alphanumeric", the
# plus sign allowed (URL-encoded); anything else is 1707 (docs/providers.md "routemobile"), and
# a blank one 1702. `type` 1, 6 and 7 are flash (GSM, Unicode, ISO-8859-1 text). The seed
# states no text limit (long texts are concatenated) and has no validity field.
LIMITS = Limits(
    sender_required=True,
    alphanumeric_sender_max=11,
    numeric_sender_max=18,
    numeric_sender_plus=True,
    flash=True,
)


def bridge_limits(options: Mapping[str, str]) -> Limits:
    """LIMITS: no option of this driver changes them."""
    del options
    return LIMITS


# Seed 001 writes the host as `http://<server>:port`: Route Mobile's white-labelled API
# runs on a server named per account, so there is no default and `base_url` is required.
PRODUCTION_BASE_URL: str | None = None


def required_credentials(callbacks: bool) -> tuple[str, ...]:
    """The credentials keys a routemobile bridge needs (`callback_token` is optional)."""
    del callbacks
    return ("username", "password")


class RouteMobileDriver:
    """routemobile's driver: one GET per batch, reports by POST callback only."""

    name = "routemobile"
    # docs/providers.md "routemobile": one text per request, no published recipient cap
    # (use 100), no polling, no idempotency key (1715 leaves the outcome unknown).
    capabilities = Capabilities(
        max_recipients=100, distinct_texts=False, delivery="callback", idempotency="none"
    )
    limits = LIMITS

    def __init__(self, settings: BridgeSettings) -> None:
        missing = [key for key in required_credentials(True) if key not in settings.credentials]
        if missing:
            raise ValueError(f"The routemobile bridge needs the credentials {', '.join(missing)}.")
        self.settings = settings
        charge_currency = settings.options.get("charge_currency")
        if charge_currency is not None and _CURRENCY.fullmatch(charge_currency) is None:
            raise ValueError(
                f"The routemobile option charge_currency {charge_currency!r} is not an ISO 4217"
                " code (three capital letters, e.g. INR)."
            )
        # Reports state the charge in the account's credits and name no currency: read it
        # in the option's currency, else in the price table's, as septet's estimate is.
        self.charge_currency = charge_currency or settings.price_currency

    # ── send ──────────────────────────────────────────────────────────────────────

    def build_send(self, batch: Sequence[OutboundMessage]) -> HttpCall:
        """One GET carrying the batch's shared text to every destination."""
        return HttpCall(method="GET", path=SEND_PATH, query=tuple(self._send_fields(batch)))

    def build_schedule(self, batch: Sequence[OutboundMessage], when: datetime) -> HttpCall:
        """The batch for delivery at `when` (time zone aware); the reply reads as a send's."""
        fields = self._send_fields(batch) + schedule_fields(when)
        return HttpCall(method="GET", path=SCHEDULE_PATH, query=tuple(fields))

    def _send_fields(self, batch: Sequence[OutboundMessage]) -> list[tuple[str, str]]:
        if not batch:
            raise ValueError("A routemobile send needs at least one message.")
        if len(batch) > self.capabilities.max_recipients:
            limit = self.capabilities.max_recipients
            raise ValueError(f"A routemobile send carries at most {limit} destinations.")
        first = batch[0]
        text, encoding, flash, dlr = first.text, first.encoding, first.flash, first.dlr
        destinations = [destination_digits(first.to)]
        # One pass over the rest (a batch is up to 100): the shared text checked, the
        # destinations and the dlr flag gathered.
        for message in batch[1:]:
            if message.text != text or message.encoding != encoding or message.flash != flash:
                raise ValueError("A routemobile send carries one text, encoding and flash flag.")
            dlr = dlr or message.dlr
            destinations.append(destination_digits(message.to))
        message_type, text = self._type_and_text(first)
        credentials = self.settings.credentials
        # A missing sender goes out blank: the provider answers 1702 for every message,
        # a final rejection the user sees, rather than an exception in the dispatcher.
        sender = first.sender or self.settings.default_sender or ""
        return [
            ("username", credentials["username"]),
            ("password", credentials["password"]),
            ("type", message_type),
            ("dlr", "1" if dlr else "0"),
            ("destination", ",".join(destinations)),
            ("source", sender),
            ("message", text),
        ]

    def _type_and_text(self, message: OutboundMessage) -> tuple[str, str]:
        """`type` and `message` values (docs/providers.md "routemobile" type)."""
        if message.encoding == "UCS-2":
            return ("6" if message.flash else "2"), ucs2_hex(message.text)
        if self.settings.options.get("charset") == "latin1" and _fits_latin1(message.text):
            return ("7" if message.flash else "5"), message.text
        return ("1" if message.flash else "0"), message.text

    def parse_send(self, batch: Sequence[OutboundMessage], reply: HttpReply) -> list[Outcome]:
        """One outcome per destination, from the comma-separated plain-text reply."""
        if reply.status != 200:
            # docs/providers.md "routemobile": the API answers HTTP 200 always, so anything
            # else is a gateway in front of it failing before it processed anything.
            reason = f"routemobile's gateway answered HTTP {reply.status}."
            if reply.status == 429:  # a rate limit in front of the API: slow the bridge
                delay = retry_after_seconds(reply.headers)
                return [Throttled("http_429", reason, delay)] * len(batch)
            return [RetryLater(f"http_{reply.status}", reason)] * len(batch)
        try:
            body = reply.body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UnparseableReply("routemobile's reply is not UTF-8 text.") from None
        if not body:
            raise UnparseableReply("routemobile's reply is empty.")
        taken = _all_taken(batch, body)
        if taken is not None:
            return taken
        if is_code(body):
            # A bare code is a request-level error that applies to every message.
            if body == SUCCESS_CODE:
                raise UnparseableReply("routemobile answered 1701 without cell or message id.")
            return [code_outcome(body)] * len(batch)
        entries = [parse_entry(raw) for raw in body.split(",") if raw.strip()]
        matched = match_reply_entries(
            [destination_digits(message.to) for message in batch], [entry.cell for entry in entries]
        )
        stopped_for_credit = next(
            (entry.code for entry in entries if entry.code in NO_CREDIT_CODES), None
        )
        outcomes: list[Outcome] = []
        for index in matched:
            if index is not None:
                outcomes.append(self._entry_outcome(entries[index]))
            elif stopped_for_credit is not None:
                # docs/providers.md "routemobile": processing stops at the no-credit entry,
                # so the destinations after it were never sent: the account's fault.
                reason = "routemobile: not sent, the account ran out of credit in this batch."
                outcomes.append(AccountRefused(stopped_for_credit, reason, "credit"))
            else:
                outcomes.append(
                    Unknown("missing", "routemobile's reply has no entry for this destination.")
                )
        return outcomes

    @staticmethod
    def _entry_outcome(entry: ReplyEntry) -> Outcome:
        if entry.code == SUCCESS_CODE:
            return Submitted(entry.provider_id)
        return code_outcome(entry.code)

    # ── delivery reports ──────────────────────────────────────────────────────────

    def build_status(self, queries: Sequence[StatusQuery]) -> HttpCall | None:
        """None: routemobile has no status endpoint, reports are pushed."""
        return None

    def parse_status(self, queries: Sequence[StatusQuery], reply: HttpReply) -> list[Receipt]:
        """Nothing to read: there is no status endpoint to have answered."""
        return []

    def callback_registration_url(self) -> str | None:
        """The URL to configure on the Route Mobile account: `callback_url` + `token`."""
        callback_url = self.settings.callback_url
        token = self.settings.credentials.get("callback_token")
        if callback_url is None or token is None:
            return callback_url
        parts = urlsplit(callback_url)
        # A `token` already in the URL is replaced, so registering twice is harmless.
        kept = [
            pair for pair in parse_qsl(parts.query, keep_blank_values=True) if pair[0] != "token"
        ]
        query = [*kept, ("token", token)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def parse_callback(self, request: InboundRequest) -> list[Receipt]:
        """One receipt from Route Mobile's DLR push (parameters in the query string), with
        the provider's charge (`iCharge`) where it states one.

        Raises CallbackRejected when a `callback_token` is configured and the request
        does not carry it, and ValueError when `sMessageId` is missing (answer 400).
        """
        self._check_callback_token(request)
        query = request.query
        provider_id = query.get("sMessageId", "").strip()
        if not provider_id:
            raise ValueError("A routemobile callback must name the message in sMessageId.")
        raw_state = query.get("sStatus", "")
        # Anything we do not recognise is reported as UNKNOWN and final, as docs/providers.md
        # reads UNKNOWN itself: waiting for another report that may never come is worse.
        state, final = _CALLBACK_STATES.get(raw_state.strip().upper(), ("UNKNOWN", True))
        mobile = destination_digits(query.get("sMobileNo", ""))
        cost = parse_charge(query.get("iCharge"))
        return [
            Receipt(
                provider_id=provider_id,
                state=state,
                provider_status=raw_state,
                final=final,
                error_code=query.get("iErrCode") or None,
                recipient=f"+{mobile}" if mobile else None,
                cost=cost,
                currency=self.charge_currency if cost is not None else None,
            )
        ]

    def _check_callback_token(self, request: InboundRequest) -> None:
        expected = self.settings.credentials.get("callback_token")
        if expected is None:
            return
        given = request.query.get("token")
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise CallbackRejected("A routemobile callback carried a missing or wrong token.")


def _fits_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
