"""Simulator of bsg (BSG REST API v1), as docs/providers.md pins it down.

`PUT`/`POST /rest/sms/create` in its three shapes (phone, phones, individual), status by
id, reference and task, and the balance. HTTP 200 always with the error in the body;
fields as strings (the seed) or numbers (*configurable*), the single reply flat or
wrapped in {"result": ...} (*configurable*). `reference` is unique per account and is
BSG's idempotency: a reused one is error 23. A request that names one msisdn twice is
refused whole with error 31 (issue 17: BSG sends none of it). `validity` is one per
request; the counters keep what each accepted message got. Statuses change once the
delivery delay has passed on the injected clock.

Status by id, reference, task, or 1–100 ids at once (`POST /rest/sms/getStatus`, whose
items say `external_id` for the reference: docs/providers.md "BSG mass status"). Every poll of
a message sooner than `bsg_poll_abuse_s` after the one before is counted in the counters'
`poll_abuse` (docs/providers.md "bsg" Anti-abuse: more than about one poll a minute).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from bridges.sim.core import (
    ProviderState,
    Route,
    json_response,
    path_parameter,
    read_body,
    utc_timestamp,
)

NAME = "bsg"
CREATE_PATH = "/rest/sms/create"
MASS_STATUS_PATH = "/rest/sms/getStatus"
MAX_STATUS_IDS = 100  # docs/providers.md "BSG mass status": 1–100 ids per call
FIRST_MESSAGE_ID = 22125  # the seed's example id
FIRST_TASK_ID = 21902
MAX_PHONES = 50  # error 12 beyond (docs/providers.md)
DEFAULT_VALIDITY_HOURS = 72  # docs/providers.md "bsg" Send: 1–72, default 72
AUTH_ERRORS_TO_BLOCK = 5  # in 30 minutes (docs/providers.md, anti-abuse)
AUTH_WINDOW_S = 1800.0
DESCRIPTIONS = {
    1: "Invalid API key",
    2: "Account blocked",  # 2 and 3 swap with bsg_blocked_code (see _description)
    3: "Not enough parameters",
    4: "Method not supported",
    5: "Unknown error",
    6: "Invalid tariff",
    7: "Invalid parameters",
    8: "Not enough money",
    10: "Invalid send time",
    11: "Too many messages in flight",
    12: "Too many phones in one request (max 50)",
    20: "Not found",
    21: "Invalid msisdn",
    22: "Reference missing",
    23: "Reference already exists",
    24: "Invalid payload",
    25: "Invalid originator",
    26: "Text is empty or too long",
    27: "Invalid reference",
    28: "Invalid validity",
    31: "Msisdn repeated in one request",
}
PER_PHONE_CODES = frozenset({21, 22, 23, 27, 31})
_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,32}")  # the seed's samples use "_" (docs/providers.md)
_MSISDN = re.compile(r"\+?[1-9][0-9]{6,14}")
# docs/providers.md "bsg" originator: alphanumeric ≤ 11 or numeric ≤ 15, else 25. Numeric is
# digits only: a `+447…` originator is refused (issue 17's strict provider mock).
_NUMERIC_ORIGINATOR = re.compile(r"[0-9]{1,15}")
_ALPHANUMERIC_ORIGINATOR = re.compile(r"[A-Za-z0-9 ._&-]{1,11}")
# GSM 03.38 default alphabet and its extension table (3GPP TS 23.038 6.2.1); extension
# characters take two septets. BSG's limit is 765 septets GSM, 355 characters UCS-2.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
MAX_GSM_SEPTETS = 765
MAX_UCS2_UNITS = 355
_json_decoder = msgspec.json.Decoder()


class BsgError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(DESCRIPTIONS.get(code, "Error"))
        self.code = code


def text_fits(body: str) -> bool:
    if _GSM_BASIC.issuperset(body):
        return len(body) <= MAX_GSM_SEPTETS  # one septet a character, the common case
    septets = 0
    for char in body:
        if char in _GSM_BASIC:
            septets += 1
        elif char in _GSM_EXTENSION:
            septets += 2
        else:
            units = len(body.encode("utf-16-le")) // 2
            return units <= MAX_UCS2_UNITS
    return septets <= MAX_GSM_SEPTETS


def _as_int(value: object, low: int, high: int, code: int) -> int:
    """Numbers come as numbers or digit strings (docs/providers.md); outside [low, high] -> code."""
    if isinstance(value, bool):
        raise BsgError(code)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        raise BsgError(code)
    if not low <= number <= high:
        raise BsgError(code)
    return number


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class StoredMessage(msgspec.Struct, frozen=True, gc=False):
    """One accepted message. gc=False: millions may be stored, none holds a reference
    cycle, so the garbage collector need not walk them."""

    id: int
    msisdn: str
    reference: str
    accepted_at: float
    final_status: str
    price: float


# Generic outcome -> BSG status word (docs/providers.md, "Status values").
_STATUS_WORDS = {
    "DELIVRD": "delivered",
    "UNDELIV": "undeliverable",
    "EXPIRED": "expired",
    "REJECTD": "rejected",
    "DELETED": "deleted",
    "UNKNOWN": "unknown",
}


class BsgSimulator:
    """The bsg provider: create (three shapes), status (id, reference, task), balance."""

    name = NAME

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self.reset()

    def reset(self) -> None:
        self.next_message_id = FIRST_MESSAGE_ID
        self.next_task_id = FIRST_TASK_ID
        self.by_id: dict[int, StoredMessage] = {}
        self.by_reference: dict[str, StoredMessage] = {}
        self.tasks: dict[int, list[int]] = {}
        self.spent = 0.0
        self.auth_errors: dict[str, list[float]] = {}
        self.blocked_until: dict[str, float] = {}
        # message id -> when it was last asked about, for the anti-abuse count.
        self.polled_at: dict[int, float] = {}

    def routes(self) -> list[Route]:
        return [
            Route("*", CREATE_PATH, self.create, sends=True),
            Route("*", MASS_STATUS_PATH, self.mass_status),
            Route("GET", "/rest/sms/reference/{reference}", self.status_by_reference),
            Route("GET", "/rest/sms/task/{task_id}", self.status_by_task),
            Route("GET", "/rest/sms/{id}", self.status_by_id),
            Route("GET", "/rest/common/balance", self.balance),
        ]

    # ── reply shapes ──

    def _value(self, value: int | float) -> int | float | str:
        """The seed writes every number as a string; some servers send numbers."""
        if not self.state.config.bsg_string_fields:
            return value
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    def error_reply(self, code: int, status: int = 200) -> web.Response:
        self.state.counters.count_reject(str(code))
        document = {"error": self._value(code), "errorDescription": self._description(code)}
        return json_response(document, status)

    def _description(self, code: int) -> str:
        # 2/3 mean "account blocked" / "not enough parameters" in either order (docs/providers.md,
        # *configurable*): the sentence follows the code's meaning, not its number.
        if code in (2, 3):
            blocked = code == self.state.config.bsg_blocked_code
            return DESCRIPTIONS[2] if blocked else DESCRIPTIONS[3]
        return DESCRIPTIONS.get(code, "")

    def server_error(self) -> web.Response:
        return self.error_reply(5, 500)

    def too_many_requests(self) -> web.Response:
        response = self.error_reply(11, 429)
        response.headers["Retry-After"] = str(self.state.config.retry_after_s)
        return response

    # ── auth ──

    def _missing_parameters_code(self) -> int:
        return 3 if self.state.config.bsg_blocked_code == 2 else 2

    def _authenticate(self, request: web.BaseRequest) -> web.Response | None:
        config = self.state.config
        if not config.bsg_auth_block:
            if request.headers.get("X-API-KEY") == config.bsg_api_key:
                return None
            return self.error_reply(1)
        remote = request.remote or ""
        now = self.state.clock()
        if self.blocked_until.get(remote, 0.0) > now:
            return self.error_reply(config.bsg_blocked_code)
        if request.headers.get("X-API-KEY") == config.bsg_api_key:
            return None
        # 5 auth errors in 30 minutes block the client IP (docs/providers.md, anti-abuse).
        recent = [t for t in self.auth_errors.get(remote, []) if now - t < AUTH_WINDOW_S]
        recent.append(now)
        self.auth_errors[remote] = recent
        if len(recent) >= AUTH_ERRORS_TO_BLOCK:
            self.blocked_until[remote] = now + config.bsg_block_s
        return self.error_reply(1)

    # ── create ──

    async def create(self, request: web.BaseRequest) -> web.Response:
        body = await read_body(request)
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        if request.method not in ("PUT", "POST"):
            return self.error_reply(4)
        try:
            # The server parses JSON whatever the Content-Type says (docs/providers.md).
            payload = _json_decoder.decode(body)
        except msgspec.DecodeError:
            return self.error_reply(24)
        if not isinstance(payload, dict):
            return self.error_reply(24)
        try:
            return self._create(payload)
        except BsgError as error:
            return self.error_reply(error.code)

    def _create(self, payload: dict[str, Any]) -> web.Response:
        destination = payload.get("destination")
        if destination is None:
            raise BsgError(self._missing_parameters_code())
        validity = DEFAULT_VALIDITY_HOURS
        if "validity" in payload:
            # 1–72 hours in the seed; newer documents take up to 87,840 (docs/providers.md).
            validity = _as_int(payload["validity"], 1, self.state.config.bsg_max_validity_hours, 28)
        if "tariff" in payload:
            _as_int(payload["tariff"], 0, 9, 6)
        if destination == "phone":
            return self._create_single(payload, validity)
        if destination not in ("phones", "individual"):
            raise BsgError(7)
        phones = payload.get("phones")
        if not isinstance(phones, list) or not phones:
            raise BsgError(self._missing_parameters_code())
        if len(phones) > MAX_PHONES:
            raise BsgError(12)
        if not all(isinstance(phone, dict) for phone in phones):
            raise BsgError(7)
        if destination == "phones":
            self._originator_and_body(payload)
        else:
            for phone in phones:
                self._originator_and_body(phone)
        self._check_request_codes(phones)
        msisdns = [(_as_text(phone.get("msisdn")) or "").lstrip("+") for phone in phones]
        if len(set(msisdns)) < len(msisdns):
            # One msisdn twice in one request: BSG refuses all of it (issue 17).
            self.state.counters.count_refused_whole("repeated_msisdn")
            raise BsgError(31)
        codes = [self._phone_error(phone) for phone in phones]
        self._check_money(codes.count(None))
        seen_references: set[str] = set()
        results: list[dict[str, Any]] = []
        ids: list[int] = []
        for phone, code in zip(phones, codes, strict=True):
            msisdn = _as_text(phone.get("msisdn")) or ""
            reference = _as_text(phone.get("reference")) or ""
            if code is None and reference in seen_references:
                code = 23
            if code is not None:
                self.state.counters.count_reject(str(code))
                results.append(
                    {
                        "reference": reference,
                        "error": self._value(code),
                        "errorDescription": self._description(code),
                    }
                )
                continue
            seen_references.add(reference)
            stored = self._accept(msisdn, reference, validity)
            ids.append(stored.id)
            results.append(self._accepted_entry(stored))
        total = round(sum(self.by_id[i].price for i in ids), 2)
        currency = self.state.config.bsg_currency
        document: dict[str, Any] = {"result": results, "error": self._value(0)}
        if destination == "phones":
            task_id = self.next_task_id
            self.next_task_id += 1
            self.tasks[task_id] = ids
            document["task_id"] = self._value(task_id)
            document["total_price"] = self._value(total)
            document["currency"] = currency
        else:
            document["totalprice"] = self._value(total)
            document["currency"] = currency
        return json_response(document)

    def _create_single(self, payload: dict[str, Any], validity: int) -> web.Response:
        self._originator_and_body(payload)
        self._check_request_codes([payload])
        code = self._phone_error(payload)
        if code is not None:
            raise BsgError(code)
        self._check_money(1)
        msisdn = _as_text(payload["msisdn"]) or ""
        stored = self._accept(msisdn, _as_text(payload["reference"]) or "", validity)
        entry = self._accepted_entry(stored)
        if self.state.config.bsg_wrapped_single:
            return json_response({"result": entry})
        return json_response(entry)

    def _originator_and_body(self, fields: dict[str, Any]) -> tuple[str, str]:
        originator, body = fields.get("originator"), fields.get("body")
        if originator is None or body is None:
            raise BsgError(self._missing_parameters_code())
        originator_text = _as_text(originator)
        if originator_text is None or not (
            _NUMERIC_ORIGINATOR.fullmatch(originator_text)
            or _ALPHANUMERIC_ORIGINATOR.fullmatch(originator_text)
        ):
            raise BsgError(25)
        if not isinstance(body, str) or not body or not text_fits(body):
            raise BsgError(26)
        return originator_text, body

    def _check_request_codes(self, phones: list[Any]) -> None:
        """A recipient mapped to a request-level code in `recipient_codes` fails the request."""
        forced = self.state.config.recipient_codes
        if not forced:
            return
        for phone in phones:
            code = forced.get(str(phone.get("msisdn", "")).lstrip("+"))
            if code is not None and code.isdigit() and int(code) not in PER_PHONE_CODES:
                raise BsgError(int(code))

    def _phone_error(self, phone: dict[str, Any]) -> int | None:
        msisdn = _as_text(phone.get("msisdn"))
        raw_reference = phone.get("reference")
        if raw_reference is None or raw_reference == "":
            return 22
        reference = _as_text(raw_reference)
        if reference is None or _REFERENCE.fullmatch(reference) is None:
            return 27
        if msisdn is None or _MSISDN.fullmatch(msisdn) is None:
            return 21
        if reference in self.by_reference:
            return 23  # unique per account: BSG's idempotency (docs/providers.md)
        forced = self.state.config.recipient_codes.get(msisdn.lstrip("+"))
        if forced is not None and forced.isdigit() and int(forced) in PER_PHONE_CODES:
            return int(forced)
        return None

    def _check_money(self, messages: int) -> None:
        config = self.state.config
        if config.bsg_balance is None:
            return
        if self.spent + messages * config.bsg_price > config.bsg_balance + 1e-9:
            raise BsgError(8)

    def _accept(self, msisdn: str, reference: str, validity_hours: int) -> StoredMessage:
        state = self.state
        message_id = self.next_message_id
        self.next_message_id += 1
        outcome = _STATUS_WORDS[state.pick_outcome()]
        price = state.config.bsg_price
        stored = StoredMessage(message_id, msisdn, reference, state.clock(), outcome, price)
        self.by_id[message_id] = stored
        self.by_reference[reference] = stored
        self.spent += price
        state.counters.count_accepted(msisdn, reference)
        state.counters.validity_s_by_id[str(message_id)] = validity_hours * 3600
        return stored

    def _accepted_entry(self, stored: StoredMessage) -> dict[str, Any]:
        return {
            "reference": stored.reference,
            "id": self._value(stored.id),
            "error": self._value(0),
            "price": self._value(stored.price),
            "currency": self.state.config.bsg_currency,
        }

    # ── status and balance ──

    def _status_object(self, stored: StoredMessage) -> dict[str, Any]:
        state = self.state
        reported_at = stored.accepted_at + state.config.dlr_delay_s
        reported = state.clock() >= reported_at
        return {
            "id": self._value(stored.id),
            "msisdn": stored.msisdn,
            "reference": stored.reference,
            "time_in": utc_timestamp(stored.accepted_at),
            "time_sent": utc_timestamp(stored.accepted_at),
            "time_dr": utc_timestamp(reported_at) if reported else None,
            "status": stored.final_status if reported else state.config.bsg_pending_status,
            "price": self._value(stored.price),
            "currency": state.config.bsg_currency,
        }

    def _count_poll(self, stored: StoredMessage) -> None:
        """docs/providers.md "bsg" Anti-abuse: the same message asked about again too soon."""
        state = self.state
        now = state.clock()
        window = state.config.bsg_poll_abuse_s
        last = self.polled_at.get(stored.id)
        if window > 0 and last is not None and now - last < window:
            state.counters.poll_abuse += 1
        self.polled_at[stored.id] = now

    def _found(self, stored: StoredMessage | None) -> web.Response:
        if stored is None:
            return self.error_reply(20)
        self._count_poll(stored)
        return json_response({"error": self._value(0), **self._status_object(stored)})

    async def status_by_id(self, request: web.BaseRequest) -> web.Response:
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        raw_id = path_parameter(request, "id")
        return self._found(self.by_id.get(int(raw_id)) if raw_id.isdigit() else None)

    async def status_by_reference(self, request: web.BaseRequest) -> web.Response:
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        return self._found(self.by_reference.get(path_parameter(request, "reference")))

    async def status_by_task(self, request: web.BaseRequest) -> web.Response:
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        raw_id = path_parameter(request, "task_id")
        ids = self.tasks.get(int(raw_id)) if raw_id.isdigit() else None
        if ids is None:
            return self.error_reply(20)
        objects = []
        for message_id in ids:
            stored = self.by_id[message_id]
            self._count_poll(stored)
            objects.append(self._status_object(stored))
        return json_response(
            {"error": self._value(0), "task_id": self._value(int(raw_id)), "result": objects}
        )

    async def mass_status(self, request: web.BaseRequest) -> web.Response:
        """`POST /rest/sms/getStatus` `{"ids": [...]}`: one item per known id, the reference
        as `external_id`; ids BSG does not know are left out, and none known is error 20."""
        body = await read_body(request)
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        if request.method != "POST":
            return self.error_reply(4)
        try:
            payload = _json_decoder.decode(body)
        except msgspec.DecodeError:
            return self.error_reply(24)
        raw_ids = payload.get("ids") if isinstance(payload, dict) else None
        if not isinstance(raw_ids, list) or not raw_ids:
            return self.error_reply(self._missing_parameters_code())
        if len(raw_ids) > MAX_STATUS_IDS:
            return self.error_reply(7)
        items: list[dict[str, Any]] = []
        for raw_id in raw_ids:
            text = _as_text(raw_id)
            stored = self.by_id.get(int(text)) if text is not None and text.isdigit() else None
            if stored is None:
                continue
            self._count_poll(stored)
            item = self._status_object(stored)
            item["external_id"] = item.pop("reference")
            del item["time_in"]
            items.append(item)
        if not items:
            return self.error_reply(20)
        return json_response({"result": items})

    async def balance(self, request: web.BaseRequest) -> web.Response:
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        config = self.state.config
        amount = 1_000_000.0 if config.bsg_balance is None else config.bsg_balance - self.spent
        return json_response(
            {
                "error": self._value(0),
                "amount": self._value(round(amount, 2)),
                "currency": config.bsg_currency,
                "limit": self._value(0.0),
            }
        )
