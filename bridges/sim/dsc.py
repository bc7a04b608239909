"""Simulator of dsc (Digital Services Center BulkSMS API v2), as docs/providers.md pins it down.

One endpoint, `POST /api/v2/sms/send`, form-encoded (docs/providers.md: the seed's JSON example
is wrong; the provider parses form bodies only, so a JSON body has no fields and gets the
400 "missing fields" sentence). Delivery reports go out as GET to the `dlrurl` given at
send time once a message is final: the receiver's own URL, keeping the username/password
it embedded, with `dnis`, `command=deliver`, `dlvrMsgId` and `dlvrMsgStat` (D or U) set.
"""

from __future__ import annotations

import re

from aiohttp import web
from yarl import URL

from bridges.sim.core import (
    ProviderState,
    ReportUrl,
    Route,
    json_response,
    parse_form,
    read_body,
)

NAME = "dsc"
SEND_PATH = "/api/v2/sms/send"
FIRST_MESSAGE_ID = 118579716  # the seed's first example id; ids are digits
REQUIRED_FIELDS = ("api_key", "username", "password", "recipients", "message")
# Country code first, digits only, no "+" (docs/providers.md); a local 0781234567 fails.
_RECIPIENT = re.compile(r"[1-9][0-9]{7,14}")
_FORM = "application/x-www-form-urlencoded"
_REPORT_PARAMETERS = ("dnis", "dlvrMsgId", "dlvrMsgStat")
_DAY_S = 86400.0


def _error(message: str, status: int) -> web.Response:
    return json_response({"status": "error", "message": message}, status)


class DscSimulator:
    """The dsc provider: send endpoint, testing-mode day limit, GET delivery callbacks."""

    name = NAME

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self.reset()

    def reset(self) -> None:
        self.next_message_id = FIRST_MESSAGE_ID
        self.sent_today = 0
        self.day = -1

    def routes(self) -> list[Route]:
        return [Route("POST", SEND_PATH, self.send, sends=True)]

    def server_error(self) -> web.Response:
        return json_response(
            {
                "status": "error",
                "message": "Failed to send SMS via external gateway",
                "http_code": 500,
            },
            500,
        )

    def too_many_requests(self) -> web.Response:
        # The only 429 dsc documents is the testing-mode limit; it sends no Retry-After.
        return _error("You have reached the daily SMS limit for testing mode.", 429)

    async def _fields(self, request: web.BaseRequest) -> dict[str, str]:
        content_type = request.content_type
        if content_type == _FORM:
            return parse_form(await read_body(request))
        if content_type.startswith("multipart/"):
            form = await request.post()
            return {key: value for key, value in form.items() if isinstance(value, str)}
        # JSON or anything else: the provider reads form fields only, so there are none.
        await read_body(request)
        return {}

    async def send(self, request: web.BaseRequest) -> web.Response:
        state = self.state
        config = state.config
        counters = state.counters
        fields = await self._fields(request)
        missing = [name for name in REQUIRED_FIELDS if not fields.get(name, "").strip()]
        if missing:
            counters.count_reject("400")
            return _error(f"Missing required fields: {', '.join(missing)}", 400)
        if (
            fields["api_key"] != config.dsc_api_key
            or fields["username"] != config.dsc_username
            or fields["password"] != config.dsc_password
        ):
            counters.count_reject("401")
            return _error("Invalid API key or credentials", 401)
        recipients = [number for raw in fields["recipients"].split(",") if (number := raw.strip())]
        invalid = [number for number in recipients if _RECIPIENT.fullmatch(number) is None]
        if invalid or not recipients:
            # The whole request is rejected when any number is bad (docs/providers.md).
            counters.count_reject("400")
            return _error(f"Invalid phone numbers: {','.join(invalid)}", 400)
        if config.dsc_testing_mode:
            day = int(state.clock() // _DAY_S)
            if day != self.day:
                self.day, self.sent_today = day, 0
            if self.sent_today + len(recipients) > config.dsc_daily_limit:
                counters.count_reject("429")
                return self.too_many_requests()
            self.sent_today += len(recipients)
        message = fields["message"]
        dlr_url = fields.get("dlrurl", "").strip()
        reports = self._report_url(dlr_url) if dlr_url else None
        cost = config.dsc_cost_per_message
        failing = config.recipient_codes
        entries = []
        for recipient in recipients:
            message_id = str(self.next_message_id)
            self.next_message_id += 1
            if recipient in failing:
                # A "failed" entry is final at once and charged all the same (the seed's example).
                status = "failed"
                counters.count_reject("failed")
            else:
                status = "sent"
                counters.count_accepted(recipient)
                if reports is not None:
                    # Only final states are sent: D (delivered) or U (undelivered) (seed 000).
                    outcome = "D" if state.pick_outcome() == "DELIVRD" else "U"
                    report = {"dnis": recipient, "dlvrMsgId": message_id, "dlvrMsgStat": outcome}
                    state.schedule_callback("GET", reports.build(report))
                elif dlr_url:
                    counters.dlr_failed += 1  # a report nobody can receive is given up at once
            entries.append(
                {
                    "status": status,
                    "messageid": message_id,
                    "recipient": recipient,
                    "message": message,
                    "cost": cost,
                }
            )
        return json_response(
            {
                "status": "success",
                "totalmessages": len(entries),
                "totalcost": cost * len(entries),
                "unit": "RWF",
                "response": entries,
            }
        )

    def _report_url(self, dlr_url: str) -> ReportUrl | None:
        """Where this request's reports go, or None for a `dlrurl` nobody can receive on."""
        try:
            url = URL(dlr_url)
        except ValueError:
            return None
        if url.scheme not in ("http", "https") or not url.host:
            return None
        # The receiver's username/password stay as it embedded them; the provider fills in
        # the rest, replacing template placeholders such as `dnis=$dnis$` (seed 000).
        return ReportUrl(url, {"command": "deliver"}, _REPORT_PARAMETERS)
