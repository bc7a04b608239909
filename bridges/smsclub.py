"""Sans-IO driver for smsclub, SMS Club's JSON API (seed 003). Pure: no I/O.

Follows docs/providers.md "smsclub": every call is a JSON `POST` under `{base}/sms` with a
bearer token; a send carries one text to at most 100 phones; failed phones come back
in `add_info`; the duplicate window (453 within 2 minutes) is SMS Club's only
idempotency, so a 453 on a resend of a message that may have reached SMS Club means that
attempt went through. A 453 refuses a whole request: for a request of many messages it
is a retry for each (nothing was sent), and each resend travels alone.

`BridgeSettings.credentials` keys:

- `token`: sent as `Authorization: Bearer <token>`.

`BridgeSettings.options` keys:

- `integration_id`: optional, sent with every send (SMS Club's referral programme).

A message's `sender` (or `default_sender`) is `src_addr`. `flash`, `dlr` and `encoding`
have no SMS Club field. `validity_s` becomes `lifetime` in minutes: the field is not in
the seed; SMS Club's older HTTP API documents `lifetime` in minutes (public client code:
runningmaster/smsclub, "LifeTime sets life time of SMS, which is specified in minutes";
Prihod/smsclubmobi-client sends it as an integer in the JSON send).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from bridges.base import (
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
    RetryLater,
    SmppState,
    StatusQuery,
    Submitted,
    Throttled,
    Unknown,
    UnparseableReply,
    reply_text,
    retry_after_seconds,
)

SEND_PATH = "/sms/send"
STATUS_PATH = "/sms/status"
ORIGINATOR_PATH = "/sms/originator"
BALANCE_PATH = "/sms/balance"

CAPABILITIES = Capabilities(
    max_recipients=100,  # docs/providers.md "smsclub" Send: at most 100 phones per request
    distinct_texts=False,  # one `message` per request
    delivery="poll",  # no push delivery reports: poll /sms/status
    idempotency="duplicate-window",  # 453: the same message again within 2 minutes
    max_status_ids=100,  # docs/providers.md "smsclub" Status: id_sms ≤ 100
    # No floor per message is stated; status calls count in the 9 requests/s (429) like
    # sends, which the engine meters with one limiter per bridge (engine.ratelimit).
    min_poll_interval_s=0.0,
    validity_per_request=True,  # one `lifetime` per request
)

# Seed 003: `src_addr` is required, an alpha name ("Альфа-имя") registered on the account
# (`/sms/originator` lists them); a bad one is a 400 on `src_addr`. No length is stated:
# an alphanumeric originating address carries at most 11 GSM 7-bit characters (3GPP TS
# 23.040 9.1.2.5), and as SMS Club takes names, not numbers, a digits-only one gets no more
# and no `+`. The send has no flash field; `lifetime` and the text have no stated limit.
LIMITS = Limits(
    sender_required=True,
    alphanumeric_sender_max=11,
    numeric_sender_max=11,
    numeric_sender_plus=False,
    flash=False,
)


# Seed 003 names no host for the JSON API, so there is no default: `base_url` is required
# (the address SMS Club gives with the account's token).
PRODUCTION_BASE_URL: str | None = None


def required_credentials(callbacks: bool) -> tuple[str, ...]:
    """The credentials keys an smsclub bridge needs (reports are polled)."""
    del callbacks
    return ("token",)


def bridge_limits(options: Mapping[str, str]) -> Limits:
    """LIMITS: no option of this driver changes them."""
    del options
    return LIMITS


# docs/providers.md "smsclub" Status: ENROUTE is pending; the others are final, one to one.
# The Russian labels are those of the legacy API (docs/providers.md: "drivers accept them").
# No public client lists them; this set is the plain Russian for each state.
_STATUS_STATES: dict[str, SmppState] = {
    "ENROUTE": "ENROUTE",
    "DELIVRD": "DELIVRD",
    "EXPIRED": "EXPIRED",
    "UNDELIV": "UNDELIV",
    "REJECTD": "REJECTD",
    "ОТПРАВЛЕНО": "ENROUTE",
    "ДОСТАВЛЕНО": "DELIVRD",
    "ПРОСРОЧЕНО": "EXPIRED",
    "НЕ ДОСТАВЛЕНО": "UNDELIV",
    "ОТКЛОНЕНО": "REJECTD",
}
_PENDING_STATES: frozenset[str] = frozenset({"ENROUTE"})


class _SendRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    phone: list[str]
    message: str
    src_addr: str | None = None
    lifetime: int | None = None
    integration_id: str | None = None


class _StatusRequest(msgspec.Struct, frozen=True):
    id_sms: list[str]


class SmsClubBalance(msgspec.Struct, frozen=True, kw_only=True):
    """The account balance (`POST /sms/balance`): `amount` is SMS Club's `money`."""

    amount: float
    currency: str


_request_encoder = msgspec.json.Encoder()
# Decoded loosely: `info` and `add_info` are objects, or `[]` when PHP encodes an
# empty array, and phones may come as strings or numbers.
_reply_decoder = msgspec.json.Decoder()


def phone_digits(e164: str) -> str:
    """SMS Club wants the country code and number as digits, without `+`."""
    return e164.removeprefix("+")


def lifetime_minutes(validity_s: int) -> int:
    """Seconds rounded up to whole minutes, at least one."""
    return max(1, -(-validity_s // 60))


def _decode(reply: HttpReply) -> Any:
    try:
        return _reply_decoder.decode(reply.body)
    except (msgspec.DecodeError, RecursionError) as error:
        raise UnparseableReply(
            f"smsclub sent a body that is not JSON: {reply_text(reply)!r}"
        ) from error


def _as_text(value: object) -> str | None:
    """A phone or id as text: SMS Club writes them as strings, sometimes as numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _success_request(reply: HttpReply) -> Mapping[str, Any]:
    """The `success_request` object of a 2xx reply."""
    reply_object = _decode(reply)
    if isinstance(reply_object, dict):
        success = reply_object.get("success_request")
        if isinstance(success, dict):
            return success
    raise UnparseableReply(f"smsclub sent no success_request object: {reply_text(reply)!r}")


def _string_map(container: Mapping[str, Any], key: str, reply: HttpReply) -> dict[str, str]:
    """`info` or `add_info` as text to text; absent or `[]` is empty."""
    value = container.get(key)
    if value is None or value == []:
        return {}
    if not isinstance(value, dict):
        raise UnparseableReply(
            f"smsclub sent an {key} that is not an object: {reply_text(reply)!r}"
        )
    mapped: dict[str, str] = {}
    for map_key, map_value in value.items():
        text = _as_text(map_value)
        if text is None:
            raise UnparseableReply(
                f"smsclub sent an {key} entry that is not text: {reply_text(reply)!r}"
            )
        mapped[map_key] = text
    return mapped


def _error_message(reply: HttpReply) -> str:
    """The `message` of an error body `{"name","message","code","status"}`, else the body."""
    try:
        reply_object = _reply_decoder.decode(reply.body)
    except (msgspec.DecodeError, RecursionError):
        return reply_text(reply)
    if isinstance(reply_object, dict):
        message = reply_object.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()
    return reply_text(reply)


def _validation_reasons(reply: HttpReply) -> str:
    """A 400's `success_request.add_info` as `field: reason` sentences, else the body."""
    try:
        fields = _string_map(_success_request(reply), "add_info", reply)
    except UnparseableReply:
        return _error_message(reply)
    if not fields:
        return _error_message(reply)
    return "; ".join(f"{field}: {reason}" for field, reason in fields.items())


class SmsClubDriver:
    """SMS Club JSON API: one text to up to 100 phones per send, status polled by id."""

    name: str = "smsclub"
    capabilities: Capabilities = CAPABILITIES
    limits: Limits = LIMITS

    def __init__(self, settings: BridgeSettings) -> None:
        token = settings.credentials.get("token")
        if not token:
            raise ValueError("smsclub needs credentials.token (the bearer token)")
        self._settings = settings
        self._headers: tuple[tuple[str, str], ...] = (
            ("Authorization", f"Bearer {token}"),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        )

    # ── Send ──────────────────────────────────────────────────────────────────

    def build_send(self, batch: Sequence[OutboundMessage]) -> HttpCall:
        """One `POST /sms/send`: the batch shares text and sender (distinct_texts False)."""
        if not batch:
            raise ValueError("smsclub build_send needs at least one message")
        if len(batch) > CAPABILITIES.max_recipients:
            raise ValueError(f"smsclub takes at most 100 phones per request, not {len(batch)}")
        first = batch[0]
        sender = first.sender or self._settings.default_sender
        for message in batch:
            if (
                message.text != first.text
                or (message.sender or self._settings.default_sender) != sender
            ):
                raise ValueError("smsclub sends one text from one sender per request")
        validities = [m.validity_s for m in batch if m.validity_s is not None]
        request = _SendRequest(
            phone=[phone_digits(m.to) for m in batch],
            message=first.text,
            src_addr=sender,
            # Lifetime is per request: the shortest keeps every message within what
            # its client asked for.
            lifetime=lifetime_minutes(min(validities)) if validities else None,
            integration_id=self._settings.options.get("integration_id"),
        )
        return HttpCall(
            method="POST",
            path=SEND_PATH,
            headers=self._headers,
            body=_request_encoder.encode(request),
        )

    def parse_send(self, batch: Sequence[OutboundMessage], reply: HttpReply) -> list[Outcome]:
        """One outcome per message, from `info`/`add_info` or the HTTP status."""
        status = reply.status
        if 200 <= status < 300:
            return self._parse_accepted(batch, reply)
        if status == 400:
            reason = f"SMS Club refused the request as invalid: {_validation_reasons(reply)}"
            return [Rejected(code="400", reason=reason) for _ in batch]
        if status == 401:
            # docs/providers.md "smsclub" Errors: 401 auth. The account's fault, not the
            # message's: nothing was sent, so another bridge may take it.
            return [self._token_refused(reply)] * len(batch)
        message = _error_message(reply)
        if status == 429:
            # docs/providers.md "smsclub": more than 9 requests per second; back off and retry.
            delay = retry_after_seconds(reply.headers)
            reason = f"SMS Club is rate limiting (over 9 requests a second): {message}"
            return [Throttled(code="429", reason=reason, delay_s=delay) for _ in batch]
        if status == 453:
            if len(batch) > 1:
                # A 453 refuses the whole request, for one phone and text repeated in it
                # or sent within 2 minutes before: nothing of it was sent, and which
                # message it means is not said. Each is resent alone (engine.scheduler:
                # resends travel alone), where the one at fault gets its own 453.
                reason = (
                    f"SMS Club refused the whole request as a duplicate of one of its "
                    f"messages; nothing was sent: {message}"
                )
                return [RetryLater(code="453", reason=reason) for _ in batch]
            return [self._duplicate_outcome(batch[0], message)]
        if status >= 500:
            # docs/providers.md "smsclub" Retry: 5xx retry with backoff; no message was taken
            # (and if one was, the resend meets the duplicate window: 453 on a retry).
            reason = f"SMS Club is unavailable (HTTP {status}): {message}"
            return [RetryLater(code=str(status), reason=reason) for _ in batch]
        if 400 <= status < 500:
            reason = f"SMS Club refused the request (HTTP {status}): {message}"
            return [Rejected(code=str(status), reason=reason) for _ in batch]
        reason = f"SMS Club answered an unexpected HTTP {status}: {message}"
        return [Unknown(code=str(status), reason=reason) for _ in batch]

    @staticmethod
    def _duplicate_outcome(message: OutboundMessage, provider_message: str) -> Outcome:
        # docs/providers.md "smsclub" Retry: a 453 after a retry means the first attempt went
        # through (submitted, id unknown) — where an earlier attempt may have reached SMS
        # Club (`maybe_sent`). Otherwise no attempt of this message went out (a first
        # attempt, or a resend after a request SMS Club refused whole), so the 453 is a
        # genuine duplicate of another message the client sent within 2 minutes: final,
        # never resent (docs/providers.md: never retry 453).
        if message.maybe_sent:
            return Submitted(provider_id=None)
        reason = f"SMS Club saw the same message within 2 minutes: {provider_message}"
        return Rejected(code="453", reason=reason)

    @staticmethod
    def _parse_accepted(batch: Sequence[OutboundMessage], reply: HttpReply) -> list[Outcome]:
        success = _success_request(reply)
        info = _string_map(success, "info", reply)
        failures = _string_map(success, "add_info", reply)
        # info maps id → phone; a phone twice in one batch has two ids, taken in order.
        ids_by_phone: dict[str, list[str]] = {}
        for provider_id, phone in info.items():
            ids_by_phone.setdefault(phone_digits(phone), []).append(provider_id)
        outcomes: list[Outcome] = []
        for message in batch:
            phone = phone_digits(message.to)
            ids = ids_by_phone.get(phone)
            if ids:
                outcomes.append(Submitted(provider_id=ids.pop(0)))
            elif phone in failures:
                # add_info names the phones SMS Club would not send to (docs/providers.md).
                outcomes.append(
                    Rejected(code="add_info", reason=f"SMS Club: {failures[phone]}", cause="number")
                )
            else:
                # Neither taken nor refused: a resend could double-send.
                outcomes.append(
                    Unknown(code="missing", reason="SMS Club's reply did not mention this phone")
                )
        return outcomes

    # ── Status ────────────────────────────────────────────────────────────────

    def build_status(self, queries: Sequence[StatusQuery]) -> HttpCall | None:
        """`POST /sms/status` for the queries with an id; None when none has one.

        A message submitted without an id (453 on a retry) cannot be polled: SMS Club
        has no lookup by anything else.
        """
        if len(queries) > CAPABILITIES.max_status_ids:
            raise ValueError(f"smsclub polls at most 100 ids per request, not {len(queries)}")
        ids = [q.provider_id for q in queries if q.provider_id]
        if not ids:
            return None
        return HttpCall(
            method="POST",
            path=STATUS_PATH,
            headers=self._headers,
            body=_request_encoder.encode(_StatusRequest(id_sms=ids)),
        )

    def parse_status(self, queries: Sequence[StatusQuery], reply: HttpReply) -> list[Receipt]:
        """Receipts for the ids in `info`; ids in `add_info` (unknown) give none."""
        if not 200 <= reply.status < 300:
            return []
        info = _string_map(_success_request(reply), "info", reply)
        references = {q.provider_id: q.reference for q in queries if q.provider_id}
        receipts: list[Receipt] = []
        for provider_id, raw_status in info.items():
            label = raw_status.strip().upper()
            state = _STATUS_STATES.get(label)
            receipts.append(
                Receipt(
                    provider_id=provider_id,
                    # An undocumented label is reported as UNKNOWN and polled again.
                    state=state or "UNKNOWN",
                    provider_status=raw_status,
                    final=state is not None and state not in _PENDING_STATES,
                    reference=references.get(provider_id),
                )
            )
        return receipts

    def parse_callback(self, request: InboundRequest) -> list[Receipt]:
        """SMS Club has no push delivery reports (docs/providers.md "smsclub")."""
        raise ValueError("smsclub sends no delivery callbacks")

    # ── Sender IDs and balance ────────────────────────────────────────────────

    def build_originators(self) -> HttpCall:
        """`POST /sms/originator` with no body, as SMS Club's own examples send it."""
        return HttpCall(method="POST", path=ORIGINATOR_PATH, headers=self._headers)

    def parse_originators(self, reply: HttpReply) -> list[str]:
        """The account's active sender IDs; an error reply raises UnparseableReply."""
        self._raise_for_error(reply)
        info = _success_request(reply).get("info")
        if not isinstance(info, list) or not all(isinstance(name, str) for name in info):
            raise UnparseableReply(
                f"smsclub sent sender IDs that are not a list: {reply_text(reply)!r}"
            )
        return list(info)

    def build_balance(self) -> HttpCall:
        """`POST /sms/balance` with no body, as SMS Club's own examples send it."""
        return HttpCall(method="POST", path=BALANCE_PATH, headers=self._headers)

    def parse_balance(self, reply: HttpReply) -> SmsClubBalance | AccountRefused:
        """The balance (docs/providers.md gives the real shape: `info` is an object), or the
        refusal of a wrong token (401); any other error raises UnparseableReply."""
        if reply.status == 401:
            return self._token_refused(reply)
        self._raise_for_error(reply)
        info = _success_request(reply).get("info")
        money: float | None = None
        if isinstance(info, dict):
            raw_money = info.get("money")
            if isinstance(raw_money, str | int | float) and not isinstance(raw_money, bool):
                try:
                    money = float(raw_money)
                except ValueError:
                    money = None
        if money is None or not math.isfinite(money) or not isinstance(info, dict):
            raise UnparseableReply(f"smsclub sent a balance without money: {reply_text(reply)!r}")
        return SmsClubBalance(amount=money, currency=_as_text(info.get("currency")) or "")

    @staticmethod
    def _token_refused(reply: HttpReply) -> AccountRefused:
        """docs/providers.md "smsclub" Errors: 401 is auth, a wrong or revoked bearer token."""
        reason = f"SMS Club refused the token: {_error_message(reply)}"
        return AccountRefused(code="401", reason=reason, fault="credentials")

    @staticmethod
    def _raise_for_error(reply: HttpReply) -> None:
        if not 200 <= reply.status < 300:
            raise UnparseableReply(f"smsclub answered HTTP {reply.status}: {_error_message(reply)}")
