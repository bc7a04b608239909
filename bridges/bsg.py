"""Sans-IO driver for bsg, the BSG REST API v1 (seed 002). Pure: no I/O.

Follows docs/providers.md "bsg", which pins down what the seed leaves open: the reference
is `[A-Za-z0-9_-]{1,32}` and is BSG's idempotency key (error 23 on a resend means the
first attempt went through), every number may come as a string or a number, and the
single reply comes flat or wrapped in `result`.

`BridgeSettings.credentials` keys:

- `api_key`: sent as the `X-API-KEY` header (keys start `live_` or `test_`).

`BridgeSettings.options` keys:

- `tariff`: optional BSG tariff number, 0–9, sent with every send.
- `blocked_code`: `2` (default) or `3`, the error code this account's BSG uses for "account
  blocked"; the other one then means "not enough parameters" (docs/providers.md "bsg" Error
  codes: 2/3 is *configurable*, as the simulator's `bsg_blocked_code` is).
- `max_numeric_originator`: `14` (default, the seed) or `15` (BSG's newer documents).
- `max_validity_hours`: `72` (default, the seed) up to `87840` (BSG's newer documents).
  Both raise the bridge's `Limits` (`bridge_limits`), which the engine admits lines by.


A message's `sender` (or `default_sender`) is the `originator`. `flash`, `dlr` and
`encoding` have no BSG field: BSG picks the encoding from the text itself, and the engine
routes no flash message to BSG (`LIMITS`).

Send modes (docs/providers.md "bsg" Send): one message → `phone`; many messages sharing
text and originator → `phones` (one body, a list of msisdn/reference pairs); anything
else → `individual` (each entry its own originator and body). A request-level error
that one message of many may have caused (a repeated msisdn, 31) means nothing was
sent: every message gets a retry, and resends travel alone (`_ONE_MESSAGES_CODES`).

Status polling (docs/providers.md "bsg" Status and "BSG mass status"): messages with an id are
asked about up to 100 at a time with `POST /rest/sms/getStatus` `{"ids": [...]}`, whose
items name the reference `external_id`; a message BSG gave no id (error 23 on a resend)
alone with `GET /rest/sms/reference/{reference}`. Mass status is the cheaper of BSG's
batch forms: a task's status (`GET /rest/sms/task/{task_id}`) lists every message of the
task, those already final too, and needs the task id the send contract does not carry
back. docs/providers.md "bsg" Anti-abuse: polling one message more than about once a minute
counts as abuse, so `min_poll_interval_s` is 60 and the engine's poller (engine.dlr)
never asks about one message more often.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from bridges.base import (
    AccountFault,
    AccountRefused,
    BridgeSettings,
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
    UnparseableReply,
    reply_text,
    retry_after_seconds,
)

SEND_PATH = "/rest/sms/create"
STATUS_BY_ID_PATH = "/rest/sms/{id}"
MASS_STATUS_PATH = "/rest/sms/getStatus"
STATUS_BY_REFERENCE_PATH = "/rest/sms/reference/{reference}"
BALANCE_PATH = "/rest/common/balance"

# docs/providers.md "bsg" Send: validity is whole hours, 1–72 (72 is BSG's default). Newer BSG
# documents take up to 87,840 hours: the `max_validity_hours` option may raise it that far.
MIN_VALIDITY_HOURS = 1
MAX_VALIDITY_HOURS = 72
NEWER_MAX_VALIDITY_HOURS = 87_840

CAPABILITIES = Capabilities(
    max_recipients=50,  # docs/providers.md "bsg": error 12 above 50 phones per request
    distinct_texts=True,  # the "individual" mode carries a body per phone
    delivery="poll",  # BSG has no push delivery reports
    idempotency="reference",  # error 23: the reference was already accepted
    max_status_ids=100,  # docs/providers.md "BSG mass status": 1–100 ids per call
    # docs/providers.md "bsg" Anti-abuse: more than about one poll a minute per message is abuse.
    min_poll_interval_s=60.0,
    validity_per_request=True,  # one `validity` per request
)

# docs/providers.md "bsg" originator: "up to 14 characters" in the seed, alphanumeric ≤ 11 or
# numeric ≤ 15 in BSG's other documents, error 25 otherwise; the stricter of each is the
# default (11 letters, 14 digits) and `max_numeric_originator` may raise the digits to 15.
# A numeric originator is digits only: `+447…` is refused with 25 (issue 17). The
# characters are those BSG's simulator takes (docs/providers.md names none): letters, digits,
# space and . _ & -. Error 26: at most 765 GSM-7 septets or 355 UCS-2 characters. BSG's
# send has no flash field (seed 002), so a flash message cannot go through BSG.
NEWER_MAX_NUMERIC_ORIGINATOR = 15
LIMITS = Limits(
    sender_required=True,  # `originator` is required (seed 002); missing: error 2/3
    alphanumeric_sender_max=11,
    numeric_sender_max=14,
    numeric_sender_plus=False,
    sender_characters=frozenset(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ._&-"
    ),
    gsm7_max=765,
    ucs2_max=355,
    flash=False,
    max_validity_s=MAX_VALIDITY_HOURS * 3600,
)


# Seed 002: `PUT (POST) https://api.bsg.world/rest/sms/create`.
PRODUCTION_BASE_URL: str | None = "https://api.bsg.world"


def required_credentials(callbacks: bool) -> tuple[str, ...]:
    """The credentials keys a bsg bridge needs (reports are polled: none for callbacks)."""
    del callbacks
    return ("api_key",)


def bridge_limits(options: Mapping[str, str]) -> Limits:
    """LIMITS, raised where the bridge's options say so, up to the newer documents' values:
    `max_numeric_originator` (14–15 digits) and `max_validity_hours` (72–87,840)."""
    numeric = _option_within(options, "max_numeric_originator", 14, NEWER_MAX_NUMERIC_ORIGINATOR)
    hours = _option_within(
        options, "max_validity_hours", MAX_VALIDITY_HOURS, NEWER_MAX_VALIDITY_HOURS
    )
    return msgspec.structs.replace(LIMITS, numeric_sender_max=numeric, max_validity_s=hours * 3600)


def _option_within(options: Mapping[str, str], key: str, low: int, high: int) -> int:
    """An integer option in [low, high]; `low` (the seed's value) when it is not set."""
    raw = options.get(key)
    if raw is None:
        return low
    value = coerce_int(raw)
    if value is None or not low <= value <= high:
        raise ValueError(f"bsg option {key} must be a whole number {low}–{high}, not {raw!r}")
    return value


# docs/providers.md "bsg" Error codes. Codes 0, 5, 11 and 23 are not refusals and the account
# faults below are not the message's; both are handled in `BsgDriver._outcome_for_code`.
# Every other code is final for the message. 2 and 3 are worded per driver (blocked_code).
_ERROR_SENTENCES: dict[int, str] = {
    1: "BSG refused the API key",
    4: "BSG does not support this method",
    5: "BSG had an unknown error",
    6: "BSG refused the tariff",
    7: "BSG found invalid parameters",
    8: "the BSG account does not have enough money",
    10: "BSG refused the send time",
    11: "BSG has too many messages in flight for this account",
    12: "BSG refused a batch of more than 50 phones",
    20: "BSG does not know this message",
    21: "BSG refused the phone number",
    22: "BSG says the reference is missing",
    23: "BSG already has a message with this reference",
    24: "BSG refused the request payload",
    25: "BSG refused the sender (originator)",
    26: "BSG says the text is empty or too long (765 GSM / 355 UCS-2 characters at most)",
    27: "BSG refused the reference",
    28: "BSG refused the validity period",
    31: "the same phone number appears twice in one BSG request",
}
BLOCKED_SENTENCE = "BSG says the account is blocked"
MISSING_PARAMETERS_SENTENCE = "BSG says the request lacks parameters"

# docs/providers.md "bsg" Error codes that a request of many messages gets for one of them:
# BSG refuses the whole request then (31: "msisdn twice in one request", issue 17) and
# sends none of it. Fields of each message: the msisdn (21, 31) and the reference (22, 23,
# 27). The originator (25) and the body (26) only where the messages' differ (individual
# mode); shared, they are every message's own fault. See `BsgDriver._refused_for_one`.
_ONE_MESSAGES_CODES: frozenset[int] = frozenset({21, 22, 23, 27, 31})

# docs/providers.md "bsg" Error codes that refuse the *account*, not the message: nothing was
# sent, so the engine opens the bridge's circuit and moves the message to another bridge.
# The "account blocked" code (2 or 3, see `blocked_code`) joins these per driver.
_ACCOUNT_FAULTS: dict[int, AccountFault] = {
    1: "credentials",  # docs/providers.md "bsg": 1 invalid API key
    8: "credit",  # docs/providers.md "bsg": 8 not enough money
}

# docs/providers.md "bsg" Error codes that blame one part of the message (the rest: "other").
_REJECTION_CAUSES: dict[int, RejectionCause] = {
    21: "number",  # invalid phone number
    25: "sender",  # invalid originator
    26: "content",  # empty or too long text
}

# docs/providers.md "bsg" Status values. "unknown" is not final: BSG shows it before any
# report has arrived.
_STATUS_STATES: dict[str, SmppState] = {
    "delivered": "DELIVRD",
    "undeliverable": "UNDELIV",
    "failed": "UNDELIV",
    "expired": "EXPIRED",
    "rejected": "REJECTD",
    "deleted": "DELETED",
    "scheduled": "ACCEPTD",
    "new": "ACCEPTD",
    "waiting": "ACCEPTD",
    "sent": "ENROUTE",
    "unknown": "UNKNOWN",
}
_NOT_FINAL_STATUSES: frozenset[str] = frozenset({"scheduled", "new", "waiting", "sent", "unknown"})

# ── Request bodies (docs/providers.md "bsg" Send) ────────────────────────────────────


class _SingleRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    destination: Literal["phone"]
    msisdn: str
    reference: str
    originator: str | None = None
    body: str
    validity: int | None = None
    tariff: int | None = None


class _BulkPhone(msgspec.Struct, frozen=True):
    msisdn: str
    reference: str


class _BulkRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    destination: Literal["phones"]
    phones: list[_BulkPhone]
    originator: str | None = None
    body: str
    validity: int | None = None
    tariff: int | None = None


class _IndividualPhone(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    msisdn: str
    reference: str
    originator: str | None = None
    body: str


class _MassStatusRequest(msgspec.Struct, frozen=True):
    """docs/providers.md "BSG mass status": `{"ids": [...]}`, integers, 1–100 of them."""

    ids: list[int]


class _IndividualRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    destination: Literal["individual"]
    phones: list[_IndividualPhone]
    validity: int | None = None
    tariff: int | None = None


class BsgBalance(msgspec.Struct, frozen=True, kw_only=True):
    """The account balance (`GET /rest/common/balance`): `limit` is the credit limit."""

    amount: float
    currency: str
    limit: float | None = None


_request_encoder = msgspec.json.Encoder()
# Replies are decoded loosely and coerced field by field: docs/providers.md "bsg" says any
# number may come as a JSON string or a JSON number.
_reply_decoder = msgspec.json.Decoder()


# ── Coercion of string-or-number fields ──────────────────────────────────────────


def coerce_int(value: object) -> int | None:
    """An integer from `0`, `"0"`, `0.0` or `"0.0"`; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass  # not an integer: try it as a decimal ("0.02") below
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def coerce_float(value: object) -> float | None:
    """A finite float from `0.02` or `"0.02"`; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def coerce_text(value: object) -> str | None:
    """An identifier as text: `"22125"` or `22125` give `"22125"`; None for the rest."""
    if isinstance(value, str):
        return value if value else None
    integer = coerce_int(value)
    return str(integer) if integer is not None else None


def _currency(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def msisdn_digits(e164: str) -> str:
    """BSG wants the country code and number as digits, without `+`."""
    return e164.removeprefix("+")


def validity_hours(validity_s: int, most: int = MAX_VALIDITY_HOURS) -> int:
    """Seconds rounded up to whole hours, clamped to BSG's 1–`most` (docs/providers.md "bsg").

    The engine admits no validity over the bridge's limit (engine.admission), so the clamp
    only bites on a message built by hand."""
    hours = -(-validity_s // 3600)
    return max(MIN_VALIDITY_HOURS, min(most, hours))


def _decode_object(reply: HttpReply) -> Any:
    try:
        return _reply_decoder.decode(reply.body)
    except (msgspec.DecodeError, RecursionError) as error:
        raise UnparseableReply(
            f"bsg sent a body that is not JSON: {reply_text(reply)!r}"
        ) from error


def _error_code(container: Mapping[str, Any], reply: HttpReply) -> int | None:
    """The `error` field of a reply or result entry; None when absent."""
    if "error" not in container:
        return None
    code = coerce_int(container["error"])
    if code is None:
        raise UnparseableReply(
            f"bsg sent an error code that is not a number: {reply_text(reply)!r}"
        )
    return code


def _result_entries(reply_object: Mapping[str, Any], reply: HttpReply) -> list[Mapping[str, Any]]:
    """The per-message entries of a send reply: `result[]`, `result{}` or the flat body."""
    result = reply_object.get("result")
    if result is None:
        if "id" in reply_object or "reference" in reply_object:
            return [reply_object]  # the flat single reply of the seed
        return []
    if isinstance(result, dict):
        return [result]  # the single reply as BSG's SDKs see it
    if isinstance(result, list) and all(isinstance(entry, dict) for entry in result):
        return result
    raise UnparseableReply(
        f"bsg sent a result that is not a list of objects: {reply_text(reply)!r}"
    )


def _match_entries(
    batch: Sequence[OutboundMessage], entries: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any] | None]:
    """Each message's result entry: by reference, else the entry at the same position
    when that entry names no reference of this batch."""
    batch_references = {message.reference for message in batch}
    by_reference: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        reference = coerce_text(entry.get("reference"))
        if reference in batch_references and reference not in by_reference:
            by_reference[reference] = entry
    matched: list[Mapping[str, Any] | None] = []
    for position, message in enumerate(batch):
        found = by_reference.get(message.reference)
        if found is None and position < len(entries):
            candidate = entries[position]
            if coerce_text(candidate.get("reference")) not in batch_references:
                found = candidate
        matched.append(found)
    return matched


def _receipt(entry: Mapping[str, Any], query: StatusQuery | None, reply: HttpReply) -> Receipt:
    """One status object as a receipt carrying every key it can be matched by.

    Polled by reference (the id was never learned: error 23 on a resend), the receipt
    carries both the id BSG gives and the reference queried, so the engine finds the
    message by its reference and learns its id. Otherwise the object's own reference
    (`external_id` in the mass-status reply, docs/providers.md "bsg") or the query's.
    """
    raw_status = entry.get("status")
    if not isinstance(raw_status, str):
        raise UnparseableReply(f"bsg sent a status object without a status: {reply_text(reply)!r}")
    status = raw_status.strip().lower()
    if query is not None and not query.provider_id:
        reference: str | None = query.reference
    else:
        reference = (
            coerce_text(entry.get("reference"))
            or coerce_text(entry.get("external_id"))
            or (query.reference if query else None)
        )
    return Receipt(
        provider_id=coerce_text(entry.get("id")) or (query.provider_id if query else None),
        # An undocumented word is reported as UNKNOWN and polled again, like "unknown".
        state=_STATUS_STATES.get(status, "UNKNOWN"),
        provider_status=raw_status,
        final=status in _STATUS_STATES and status not in _NOT_FINAL_STATUSES,
        reference=reference,
        recipient=coerce_text(entry.get("msisdn")),
    )


class BsgDriver:
    """BSG REST API v1: JSON sends in three modes, status polled 100 ids at a time."""

    name: str = "bsg"
    capabilities: Capabilities = CAPABILITIES
    limits: Limits = LIMITS

    def __init__(self, settings: BridgeSettings) -> None:
        api_key = settings.credentials.get("api_key")
        if not api_key:
            raise ValueError("bsg needs credentials.api_key (the X-API-KEY header)")
        self.limits = bridge_limits(settings.options)
        longest_s = self.limits.max_validity_s or MAX_VALIDITY_HOURS * 3600
        self._max_validity_hours = longest_s // 3600  # whole hours (bridge_limits)
        blocked_option = settings.options.get("blocked_code", "2")
        if blocked_option not in ("2", "3"):
            raise ValueError(f"bsg option blocked_code must be 2 or 3, not {blocked_option!r}")
        blocked = int(blocked_option)
        missing_parameters = 5 - blocked  # the other of 2 and 3
        self._sentences: dict[int, str] = {
            **_ERROR_SENTENCES,
            blocked: BLOCKED_SENTENCE,
            missing_parameters: MISSING_PARAMETERS_SENTENCE,
        }
        # docs/providers.md "bsg": 2/3 account blocked (also what BSG answers once 5 auth
        # errors in 30 minutes have blocked the client IP).
        self._account_faults: dict[int, AccountFault] = {**_ACCOUNT_FAULTS, blocked: "blocked"}
        tariff_option = settings.options.get("tariff")
        tariff = coerce_int(tariff_option) if tariff_option is not None else None
        if tariff_option is not None and (tariff is None or not 0 <= tariff <= 9):
            raise ValueError(f"bsg option tariff must be 0–9, not {tariff_option!r}")
        self._settings = settings
        self._tariff = tariff
        self._headers: tuple[tuple[str, str], ...] = (
            ("X-API-KEY", api_key),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        )

    # ── Send ──────────────────────────────────────────────────────────────────

    def build_send(self, batch: Sequence[OutboundMessage]) -> HttpCall:
        """One `POST /rest/sms/create` in the mode the batch needs (module docstring)."""
        if not batch:
            raise ValueError("bsg build_send needs at least one message")
        if len(batch) > CAPABILITIES.max_recipients:
            raise ValueError(f"bsg takes at most 50 messages per request, not {len(batch)}")
        validities = [m.validity_s for m in batch if m.validity_s is not None]
        # Validity is per request: the shortest keeps every message within what its
        # client asked for. The queue batches by validity (`validity_per_request`), so
        # the messages' own differ by less than a minute.
        validity = validity_hours(min(validities), self._max_validity_hours) if validities else None
        first = batch[0]
        originator = self._originator(first)
        request: _SingleRequest | _BulkRequest | _IndividualRequest
        if len(batch) == 1:
            request = _SingleRequest(
                destination="phone",
                msisdn=msisdn_digits(first.to),
                reference=first.reference,
                originator=originator,
                body=first.text,
                validity=validity,
                tariff=self._tariff,
            )
        elif all(m.text == first.text and self._originator(m) == originator for m in batch):
            request = _BulkRequest(
                destination="phones",
                phones=[_BulkPhone(msisdn_digits(m.to), m.reference) for m in batch],
                originator=originator,
                body=first.text,
                validity=validity,
                tariff=self._tariff,
            )
        else:
            request = _IndividualRequest(
                destination="individual",
                phones=[
                    _IndividualPhone(
                        msisdn=msisdn_digits(m.to),
                        reference=m.reference,
                        originator=self._originator(m),
                        body=m.text,
                    )
                    for m in batch
                ],
                validity=validity,
                tariff=self._tariff,
            )
        return HttpCall(
            method="POST",
            path=SEND_PATH,
            headers=self._headers,
            body=_request_encoder.encode(request),
        )

    def parse_send(self, batch: Sequence[OutboundMessage], reply: HttpReply) -> list[Outcome]:
        """One outcome per message: per-phone entries, or the request-level error for all."""
        if reply.status != 200:
            # docs/providers.md "bsg": BSG itself answers 200 always, so another status comes
            # from something in between. Resending is safe: the same reference makes a
            # double send impossible (error 23).
            reason = f"bsg answered HTTP {reply.status}: {reply_text(reply)}"
            if reply.status == 429:
                delay = retry_after_seconds(reply.headers)
                return [Throttled(code="429", reason=reason, delay_s=delay) for _ in batch]
            return [RetryLater(code=str(reply.status), reason=reason) for _ in batch]
        reply_object = _decode_object(reply)
        if not isinstance(reply_object, dict):
            raise UnparseableReply(f"bsg sent JSON that is not an object: {reply_text(reply)!r}")
        top_code = _error_code(reply_object, reply)
        entries = _result_entries(reply_object, reply)
        if top_code is None and not entries:
            raise UnparseableReply(
                f"bsg sent neither an error code nor a result: {reply_text(reply)!r}"
            )
        if top_code and not entries and self._refused_for_one(top_code, batch):
            # Nothing of the request was sent: each message is resent alone (resends
            # travel alone, engine.scheduler), where the one at fault gets its own answer.
            reason = self._reason(top_code, reply_object.get("errorDescription"))
            reason = f"{reason}; BSG refused the whole request, nothing of it was sent"
            return [RetryLater(code=str(top_code), reason=reason) for _ in batch]
        currency = _currency(reply_object.get("currency"))
        outcomes: list[Outcome] = []
        for entry in _match_entries(batch, entries):
            if entry is None:
                outcomes.append(self._unmatched_outcome(top_code, reply_object))
                continue
            # An entry without its own code shares the reply's (the wrapped single reply).
            code = _error_code(entry, reply)
            if code is None:
                code = top_code
            if code is None:
                if "id" not in entry:
                    raise UnparseableReply(
                        f"bsg sent a result entry without id or error: {reply_text(reply)!r}"
                    )
                code = 0
            outcomes.append(self._outcome_for_code(code, entry, currency))
        return outcomes

    def _refused_for_one(self, code: int, batch: Sequence[OutboundMessage]) -> bool:
        """Whether a request-level `code` may stand for one message of `batch` only."""
        if len(batch) < 2:
            return False
        if code in _ONE_MESSAGES_CODES:
            return True
        if code == 25:
            return len({self._originator(m) for m in batch}) > 1
        if code == 26:
            return len({m.text for m in batch}) > 1
        return False

    def _unmatched_outcome(self, top_code: int | None, reply_object: Mapping[str, Any]) -> Outcome:
        if top_code:
            # docs/providers.md "bsg": a request-level error applies to every message.
            return self._outcome_for_code(top_code, reply_object, None)
        # The reply does not speak of this message. Resending is safe (same reference).
        return RetryLater(code="0", reason="BSG's reply did not mention this message")

    def _outcome_for_code(
        self, code: int, entry: Mapping[str, Any], currency: str | None
    ) -> Outcome:
        """docs/providers.md "bsg" Error codes, as outcomes."""
        if code == 0:
            return Submitted(
                provider_id=coerce_text(entry.get("id")),
                cost=coerce_float(entry.get("price")),
                currency=_currency(entry.get("currency")) or currency,
            )
        if code == 23:
            # docs/providers.md "bsg" reference: BSG's idempotency. A resend after a lost reply
            # reuses the reference; 23 says the first attempt was accepted. The id is then
            # looked up by reference.
            return Submitted(provider_id=None)
        reason = self._reason(code, entry.get("errorDescription"))
        refusal = self._account_refusal(code, reason)
        if refusal is not None:
            return refusal
        if code == 11:
            return Throttled(code="11", reason=reason)
        if code == 5:
            return RetryLater(code="5", reason=reason)
        return Rejected(code=str(code), reason=reason, cause=_REJECTION_CAUSES.get(code, "other"))

    def _account_refusal(self, code: int, reason: str) -> AccountRefused | None:
        """The account fault `code` stands for, or None where it is not one."""
        fault = self._account_faults.get(code)
        return None if fault is None else AccountRefused(str(code), reason, fault)

    def _reason(self, code: int, description: object) -> str:
        sentence = self._sentences.get(code, f"BSG answered with undocumented error {code}")
        if isinstance(description, str) and description.strip():
            return f"{sentence} (BSG: {description.strip()})"
        return sentence

    def _originator(self, message: OutboundMessage) -> str | None:
        return message.sender or self._settings.default_sender

    # ── Status ────────────────────────────────────────────────────────────────

    def build_status(self, queries: Sequence[StatusQuery]) -> HttpCall | None:
        """Mass status for up to 100 messages with an id; one message without an id by
        its reference (module docstring)."""
        if not queries:
            return None
        if len(queries) > CAPABILITIES.max_status_ids:
            raise ValueError(f"bsg polls at most 100 ids per request, not {len(queries)}")
        ids = [query.provider_id for query in queries if query.provider_id]
        if len(ids) < len(queries):
            if len(queries) > 1:
                raise ValueError("bsg polls a message without an id on its own, by reference")
            path = STATUS_BY_REFERENCE_PATH.format(reference=quote(queries[0].reference, safe=""))
            return HttpCall(method="GET", path=path, headers=self._headers)
        if not all(provider_id.isascii() and provider_id.isdigit() for provider_id in ids):
            # BSG's ids are integers, which is what mass status takes; any other one is
            # asked about on its own.
            if len(ids) > 1:
                raise ValueError("bsg's mass status takes numeric ids only")
            path = STATUS_BY_ID_PATH.format(id=quote(ids[0], safe=""))
            return HttpCall(method="GET", path=path, headers=self._headers)
        return HttpCall(
            method="POST",
            path=MASS_STATUS_PATH,
            headers=self._headers,
            body=_request_encoder.encode(_MassStatusRequest(ids=[int(i) for i in ids])),
        )

    def parse_status(self, queries: Sequence[StatusQuery], reply: HttpReply) -> list[Receipt]:
        """Receipts from a status object (flat, wrapped in `result`, or a list of them).

        Error 20 (not found) and any other error reply carry no report: no receipts.
        """
        if reply.status != 200:
            return []
        reply_object = _decode_object(reply)
        if isinstance(reply_object, list):
            entries: list[Any] = reply_object
        elif isinstance(reply_object, dict):
            if _error_code(reply_object, reply):
                return []
            result = reply_object.get("result", reply_object)
            entries = result if isinstance(result, list) else [result]
        else:
            raise UnparseableReply(
                f"bsg sent a status reply that is not JSON: {reply_text(reply)!r}"
            )
        only_query = queries[0] if len(queries) == 1 else None
        by_id = {query.provider_id: query for query in queries if query.provider_id}
        receipts: list[Receipt] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise UnparseableReply(
                    f"bsg sent a status entry that is not an object: {reply_text(reply)!r}"
                )
            if _error_code(entry, reply):
                continue
            query = only_query or by_id.get(coerce_text(entry.get("id")) or "")
            receipts.append(_receipt(entry, query, reply))
        return receipts

    def parse_callback(self, request: InboundRequest) -> list[Receipt]:
        """BSG has no push delivery reports (docs/providers.md "bsg" Status: polling)."""
        raise ValueError("bsg sends no delivery callbacks")

    # ── Balance ───────────────────────────────────────────────────────────────

    def build_balance(self) -> HttpCall:
        """`GET /rest/common/balance` (docs/providers.md "bsg" Balance)."""
        return HttpCall(method="GET", path=BALANCE_PATH, headers=self._headers)

    def parse_balance(self, reply: HttpReply) -> BsgBalance | AccountRefused:
        """The balance, or the account refusal BSG answered (a wrong key: error 1).

        Any other error reply raises UnparseableReply with BSG's sentence.
        """
        if reply.status != 200:
            raise UnparseableReply(f"bsg answered HTTP {reply.status}: {reply_text(reply)}")
        reply_object = _decode_object(reply)
        if not isinstance(reply_object, dict):
            raise UnparseableReply(f"bsg sent JSON that is not an object: {reply_text(reply)!r}")
        code = _error_code(reply_object, reply)
        if code:
            reason = self._reason(code, reply_object.get("errorDescription"))
            refusal = self._account_refusal(code, reason)
            if refusal is not None:
                return refusal
            raise UnparseableReply(reason)
        result = reply_object.get("result", reply_object)
        amount = coerce_float(result.get("amount")) if isinstance(result, dict) else None
        if amount is None or not isinstance(result, dict):
            raise UnparseableReply(f"bsg sent a balance without an amount: {reply_text(reply)!r}")
        return BsgBalance(
            amount=amount,
            currency=_currency(result.get("currency")) or "",
            limit=coerce_float(result.get("limit")),
        )
