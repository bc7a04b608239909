"""Simulator of smsclub (SMS Club JSON API, Ukraine), as docs/providers.md pins it down.

Every call is `POST /sms/<method>` with a Bearer token and a JSON body. Replies wrap their
data in {"success_request": {"info": ..., "add_info": ...}}; 400 is a field validation
error in the same wrapper; 401, 405, 429 (more than 9 requests a second), 453 (the same
phone and text again within 2 minutes, or twice in one request: the whole request is
refused, issue 17) and 5xx carry the framework's error body
{"name", "message", "code", "status"}. No push reports: `/sms/status` shows ENROUTE until
the delivery delay has passed on the injected clock, then the final state.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import msgspec
from aiohttp import web

from bridges.sim.core import ProviderState, Route, json_response, read_body

NAME = "smsclub"
FIRST_MESSAGE_ID = 106  # the seed's example id
MAX_PHONES = 100
MAX_STATUS_IDS = 100
RATE_WINDOW_S = 1.0
_PHONE = re.compile(r"[1-9][0-9]{9,14}")
_json_decoder = msgspec.json.Decoder()
# Generic outcome -> SMS Club status (seed 003, "Statuses"); DELETED has no SMS Club word
# and UNKNOWN stays ENROUTE (the report never comes).
_STATUS_WORDS = {
    "DELIVRD": "DELIVRD",
    "UNDELIV": "UNDELIV",
    "EXPIRED": "EXPIRED",
    "REJECTD": "REJECTD",
    "DELETED": "REJECTD",
    "UNKNOWN": "ENROUTE",
}
_ERRORS = {
    400: ("Bad Request", "Invalid JSON data in request body: Syntax error."),
    401: ("Unauthorized", "Your request was made with invalid credentials."),
    405: (
        "Method Not Allowed",
        "Method Not Allowed. This URL can only handle the following request methods: POST.",
    ),
    429: ("Too Many Requests", "Rate limit exceeded."),
    453: ("Duplicate", "Duplication of a message in an interval of less than 2 minutes"),
    500: ("Internal Server Error", "Service is temporarily unavailable"),
}


class StoredMessage(msgspec.Struct, frozen=True, gc=False):
    """One accepted message. gc=False: millions may be stored, none holds a reference
    cycle, so the garbage collector need not walk them."""

    phone: str
    accepted_at: float
    final_status: str


class SmsClubSimulator:
    """The smsclub provider: send, status, originator list, balance; rate and duplicate limits."""

    name = NAME

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self.reset()

    def reset(self) -> None:
        self.next_message_id = FIRST_MESSAGE_ID
        self.messages: dict[str, StoredMessage] = {}
        # (phone, text) -> accepted at, in insertion (= time) order so expiry pops the front.
        self.recent: dict[tuple[str, str], float] = {}
        self.request_times: deque[float] = deque()

    def routes(self) -> list[Route]:
        return [
            Route("*", "/sms/send", self.send, sends=True),
            Route("*", "/sms/status", self.status),
            Route("*", "/sms/originator", self.originator),
            Route("*", "/sms/balance", self.balance),
        ]

    def error_reply(self, status: int, message: str | None = None) -> web.Response:
        self.state.counters.count_reject(str(status))
        name, default_message = _ERRORS[status]
        document = {"name": name, "message": message or default_message, "code": 0}
        return json_response({**document, "status": status}, status)

    def server_error(self) -> web.Response:
        return self.error_reply(500)

    def too_many_requests(self) -> web.Response:
        response = self.error_reply(429)
        response.headers["Retry-After"] = str(self.state.config.retry_after_s)
        return response

    def _validation_error(self, field: str, reason: str) -> web.Response:
        self.state.counters.count_reject("400")
        return json_response({"success_request": {"add_info": {field: reason}}}, 400)

    def _admit(self, request: web.BaseRequest) -> web.Response | None:
        """Method, auth and rate checks every endpoint shares, in the framework's order."""
        if request.method != "POST":
            return self.error_reply(405)
        config = self.state.config
        if request.headers.get("Authorization") != f"Bearer {config.smsclub_token}":
            return self.error_reply(401)
        limit = config.smsclub_rate_limit
        if limit is not None:
            now = self.state.clock()
            times = self.request_times
            while times and now - times[0] >= RATE_WINDOW_S:
                times.popleft()
            if len(times) >= limit:
                # More than 9 requests in a second (docs/providers.md).
                return self.too_many_requests()
            times.append(now)
        return None

    async def _payload(self, request: web.BaseRequest) -> dict[str, Any] | web.Response:
        body = await read_body(request)
        if not body or body.isspace():
            return {}
        try:
            payload = _json_decoder.decode(body)
        except msgspec.DecodeError:
            return self.error_reply(400)
        if not isinstance(payload, dict):
            return self.error_reply(400)
        return payload

    async def send(self, request: web.BaseRequest) -> web.Response:
        refused = self._admit(request)
        if refused is not None:
            return refused
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        phones = payload.get("phone")
        if not isinstance(phones, list) or not phones:
            return self._validation_error("phone", "Phone must be a non-empty array.")
        if len(phones) > MAX_PHONES:
            return self._validation_error("phone", f"No more than {MAX_PHONES} phones.")
        message = payload.get("message")
        if not isinstance(message, str) or not message.strip():
            return self._validation_error("message", "Message cannot be blank.")
        source = payload.get("src_addr")
        if not isinstance(source, str) or not source.strip() or len(source) > 11:
            return self._validation_error("src_addr", "Src Addr is invalid.")
        lifetime = payload.get("lifetime")
        if lifetime is not None and (
            not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime < 1
        ):
            return self._validation_error("lifetime", "Lifetime must be a positive integer.")
        return self._accept(phones, message, lifetime)

    def _accept(self, raw_phones: list[Any], message: str, lifetime: int | None) -> web.Response:
        state = self.state
        counters = state.counters
        config = state.config
        now = state.clock()
        # Phones come as strings or numbers; anything else is an invalid number.
        phones = [
            str(value)
            for value in raw_phones
            if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        ]
        if len(set(phones)) < len(phones):
            # One phone twice with the one text of a request: SMS Club refuses all of it.
            counters.count_refused_whole("repeated_phone_text")
            return self.error_reply(453)
        window = config.smsclub_duplicate_window_s
        if window > 0:
            recent = self.recent
            while recent:
                oldest_key = next(iter(recent))
                if now - recent[oldest_key] < window:
                    break
                del recent[oldest_key]
            if any((phone, message) in recent for phone in phones):
                # The same message again within 2 minutes: nothing is sent (docs/providers.md).
                return self.error_reply(453)
        info: dict[str, str] = {}
        add_info: dict[str, str] = {}
        if len(phones) != len(raw_phones):
            for value in raw_phones:
                if not isinstance(value, str | int) or isinstance(value, bool):
                    counters.count_reject("invalid phone")
                    add_info[str(value)] = "Invalid phone number"
        for phone in phones:
            if _PHONE.fullmatch(phone) is None:
                counters.count_reject("invalid phone")
                add_info[phone] = "Invalid phone number"
                continue
            reason = config.recipient_codes.get(phone)
            if reason is not None:
                counters.count_reject(reason)
                add_info[phone] = reason
                continue
            message_id = str(self.next_message_id)
            self.next_message_id += 1
            outcome = _STATUS_WORDS[state.pick_outcome()]
            self.messages[message_id] = StoredMessage(phone, now, outcome)
            if window > 0:
                self.recent.pop((phone, message), None)
                self.recent[(phone, message)] = now
            counters.count_accepted(phone)
            if lifetime is not None:
                counters.validity_s_by_id[message_id] = lifetime * 60
            info[message_id] = phone
        reply: dict[str, dict[str, str]] = {}
        if info:
            reply["info"] = info
        if add_info:
            reply["add_info"] = add_info
        return json_response({"success_request": reply})

    async def status(self, request: web.BaseRequest) -> web.Response:
        refused = self._admit(request)
        if refused is not None:
            return refused
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        ids = payload.get("id_sms")
        if not isinstance(ids, list) or not ids:
            return self._validation_error("id_sms", "Id Sms must be a non-empty array.")
        if len(ids) > MAX_STATUS_IDS:
            return self._validation_error("id_sms", f"No more than {MAX_STATUS_IDS} ids.")
        state = self.state
        now = state.clock()
        delay = state.config.dlr_delay_s
        info: dict[str, str] = {}
        add_info: dict[str, str] = {}
        for raw_id in ids:
            message_id = str(raw_id)
            stored = self.messages.get(message_id)
            if stored is None:
                add_info[message_id] = "Message not found"
            elif now - stored.accepted_at >= delay:
                info[message_id] = stored.final_status
            else:
                info[message_id] = "ENROUTE"
        reply: dict[str, dict[str, str]] = {}
        if info:
            reply["info"] = info
        if add_info:
            reply["add_info"] = add_info
        return json_response({"success_request": reply})

    async def originator(self, request: web.BaseRequest) -> web.Response:
        refused = self._admit(request)
        if refused is not None:
            return refused
        await read_body(request)
        return json_response({"success_request": {"info": self.state.config.smsclub_originators}})

    async def balance(self, request: web.BaseRequest) -> web.Response:
        refused = self._admit(request)
        if refused is not None:
            return refused
        await read_body(request)
        config = self.state.config
        info = {"money": config.smsclub_money, "currency": config.smsclub_currency}
        return json_response({"success_request": {"info": info}})
