"""Simulator of routemobile (Route Mobile "Bulk HTTP API" 1701 replies), per docs/providers.md.

`GET /bulksms/bulksms` (also POST form) sends; `/bulksms/schedulemsg` schedules, and the
send path with `scheduledate`/`scheduletime` (the seed's samples) schedules too. Replies are
text/plain, HTTP 200: one entry per destination in request order, comma-joined
(`1701|cell|id` or `<code>|cell`), or a bare request-level code. Delivery reports are
POSTed, parameters in the query string, to the URL configured on the account, only for
`dlr=1`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from aiohttp import web
from yarl import URL

from bridges.sim.core import (
    ProviderState,
    ReportUrl,
    Route,
    parse_form,
    read_body,
    text_response,
    utc_timestamp,
)

NAME = "routemobile"
SEND_PATH = "/bulksms/bulksms"
SCHEDULE_PATH = "/bulksms/schedulemsg"
REQUIRED = ("username", "password", "type", "dlr", "destination", "source", "message")
UNICODE_TYPES = frozenset({"2", "6"})
VALID_TYPES = frozenset("01234567")
# Request-level codes: the whole body is the bare code (docs/providers.md); a recipient mapped to
# one of these in `recipient_codes` makes the request answer it.
REQUEST_LEVEL_CODES = frozenset(
    {"1702", "1703", "1704", "1705", "1707", "1708", "1709", "1710", "1715"}
    | {"1028", "1033", "69", "8", "16", "18"}
)
_CELL = re.compile(r"\+?[0-9]{7,15}")
_NUMERIC_SOURCE = re.compile(r"\+?[0-9]{1,18}")
_ALPHANUMERIC_SOURCE = re.compile(r"[ -~]{1,11}")  # printable ASCII, at most 11
_HEX = re.compile(r"(?:[0-9A-Fa-f]{4})+")
_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{4})")  # MM/DD/YYYY
_TIME = re.compile(r"(\d{1,2}):(\d{2}) ?([AaPp][Mm])")  # hh:mm am|pm, hh 00-12
_GMT = re.compile(r"(?:GMT ?)?([+-])(\d{1,2}):(\d{2})")
_FORM = "application/x-www-form-urlencoded"
# Final sStatus values only reach the receiver in a report (docs/providers.md, DLR push).
_ERROR_CODES = {"DELIVRD": "000", "UNDELIV": "001", "EXPIRED": "002", "REJECTD": "003"}
_REPORT_PARAMETERS = ("sMobileNo", "sStatus", "sMessageId", "iErrCode")
_REPORT_OK = frozenset({200, 202})
# Credits a part costs; `routemobile_credit` counts messages, one credit each for a short one.
COST_PER_SMS = 1
# GSM 03.38 extension characters (3GPP TS 23.038 6.2.1.1): two septets each.
_GSM_EXTENSION = frozenset("^{}\\[~]|€")


def message_parts(message: str, message_type: str) -> int:
    """The parts the seed counts a message in: plain text is one part up to 160 characters,
    else one per 153; Unicode (hex, 4 digits per code unit) one up to 70 units, else one
    per 67 ("every 153 characters ... and 268 characters for Unicode", seed 001)."""
    if message_type in UNICODE_TYPES:
        units, single, per_part = len(message) // 4, 70, 67
    else:
        units = len(message) + sum(character in _GSM_EXTENSION for character in message)
        single, per_part = 160, 153
    return 1 if units <= single else -(-units // per_part)


def _valid_schedule(date: str, clock_time: str, gmt: str) -> bool:
    date_match = _DATE.fullmatch(date.strip())
    time_match = _TIME.fullmatch(clock_time.strip())
    if date_match is None or time_match is None:
        return False
    month, day, year = (int(group) for group in date_match.groups())
    hours, minutes = int(time_match.group(1)), int(time_match.group(2))
    if hours > 12 or minutes > 59:
        return False
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    if gmt.strip():
        gmt_match = _GMT.fullmatch(gmt.strip())
        if gmt_match is None or int(gmt_match.group(2)) > 12 or int(gmt_match.group(3)) > 59:
            return False
    return True


def _valid_message(message: str, message_type: str) -> bool:
    if message_type not in UNICODE_TYPES:
        return True
    # Unicode types carry UTF-16BE as hex, 4 digits per code unit (docs/providers.md).
    if _HEX.fullmatch(message) is None:
        return False
    try:
        bytes.fromhex(message).decode("utf-16-be")
    except UnicodeDecodeError:
        return False
    return True


class RouteMobileSimulator:
    """The routemobile provider: send, schedule, credit, DLR push."""

    name = NAME

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self.reset()

    def reset(self) -> None:
        self.credit_used = 0
        self.recent: dict[tuple[str, str], float] = {}  # (cell, message) -> accepted at
        # The configured report URL, parsed once (it changes only with the config).
        self._dlr_url_text = ""
        self._dlr_url = URL()

    def routes(self) -> list[Route]:
        return [
            Route("GET", SEND_PATH, self.send, sends=True),
            Route("POST", SEND_PATH, self.send, sends=True),
            Route("GET", SCHEDULE_PATH, self.schedule, sends=True),
            Route("POST", SCHEDULE_PATH, self.schedule, sends=True),
        ]

    def server_error(self) -> web.Response:
        return text_response("1710", 500)

    def too_many_requests(self) -> web.Response:
        return text_response("1710", 429)

    def _codes(self) -> tuple[str, str]:
        """(no credit, DND reject): the seed's numbering or Route Mobile's own."""
        if self.state.config.routemobile_numbering == "routemobile":
            return "1025", "1032"
        return "1725", "1732"

    async def _params(self, request: web.BaseRequest) -> dict[str, str]:
        # The query read as the servlet reads it (first value wins), without building
        # aiohttp's MultiDict of it; form fields of a POST override it.
        params = parse_form(request.rel_url.raw_query_string, first_wins=True)
        if request.method == "POST" and request.content_type == _FORM:
            params.update(parse_form(await read_body(request)))
        return params

    async def send(self, request: web.BaseRequest) -> web.Response:
        params = await self._params(request)
        if "scheduledate" in params or "scheduletime" in params:
            return self._submit(request, params, scheduled=True)
        return self._submit(request, params, scheduled=False)

    async def schedule(self, request: web.BaseRequest) -> web.Response:
        return self._submit(request, await self._params(request), scheduled=True)

    def _reject(self, code: str) -> web.Response:
        self.state.counters.count_reject(code)
        return text_response(code)

    def _submit(
        self, request: web.BaseRequest, params: Mapping[str, str], *, scheduled: bool
    ) -> web.Response:
        config = self.state.config
        values = [params.get(name, "") for name in REQUIRED]
        if not all(value.strip() for value in values):
            return self._reject("1702")
        username, password, message_type, dlr, destination, source, message = values
        if scheduled:
            # Both spellings: the seed's scheduledate/scheduletime and the API's date/time.
            date = params.get("date") or params.get("scheduledate") or ""
            clock_time = params.get("time") or params.get("scheduletime") or ""
            if not date.strip() or not clock_time.strip():
                return self._reject("1702")
        whitelist = config.routemobile_ip_whitelist
        if config.routemobile_ip_blacklist or whitelist is not None:
            remote = request.remote or ""
            if remote in config.routemobile_ip_blacklist:
                return self._reject("16")
            if whitelist is not None and remote not in whitelist:
                return self._reject("18")
        if username != config.routemobile_username or password != config.routemobile_password:
            return self._reject("1703")
        message_type = message_type.strip()
        if message_type not in VALID_TYPES:
            return self._reject("1704")
        dlr = dlr.strip()
        if dlr not in ("0", "1"):
            return self._reject("1708")
        if not (_NUMERIC_SOURCE.fullmatch(source) or _ALPHANUMERIC_SOURCE.fullmatch(source)):
            return self._reject("1707")
        if not _valid_message(message, message_type):
            return self._reject("1705")
        if scheduled and not _valid_schedule(date, clock_time, params.get("gmt", "")):
            return self._reject("1702")
        cells = [cell for raw in destination.split(",") if (cell := raw.strip())]
        if not cells:
            return self._reject("1702")
        forced = config.recipient_codes
        if forced:
            for cell in cells:
                code = forced.get(cell.lstrip("+"))
                if code in REQUEST_LEVEL_CODES:
                    return self._reject(code)
        return text_response(self._entries(cells, message, message_type, source, dlr == "1"))

    def _entries(
        self, cells: list[str], message: str, message_type: str, source: str, wants_dlr: bool
    ) -> str:
        state = self.state
        config = state.config
        counters = state.counters
        no_credit, dnd_reject = self._codes()
        separator = config.routemobile_id_separator
        window = config.routemobile_duplicate_window_s
        credit = config.routemobile_credit
        forced = config.recipient_codes
        now = state.clock()
        reports = None
        if wants_dlr and config.routemobile_dlr_url:
            parts = message_parts(message, message_type)
            reports = self._report_url(config.routemobile_dlr_url, source, now, parts)
        entries: list[str] = []
        for raw_cell in cells:
            cell = raw_cell.lstrip("+")
            if _CELL.fullmatch(raw_cell) is None:
                counters.count_reject("1706")
                entries.append(f"1706|{cell}")
                continue
            code = forced.get(cell) if forced else None
            if code is not None:
                # A forced per-destination code ("DND" means the account's DND reject code).
                code = dnd_reject if code == "DND" else code
                counters.count_reject(code)
                entries.append(f"{code}|{cell}")
                continue
            if window > 0:
                seen_at = self.recent.get((cell, message))
                if seen_at is not None and now - seen_at < window:
                    counters.count_reject("1041")
                    entries.append(f"1041|{cell}")
                    continue
            if credit is not None and self.credit_used >= credit:
                # Out of credit mid-batch: processing stops here (docs/providers.md).
                counters.count_reject(no_credit)
                entries.append(f"{no_credit}|{cell}")
                break
            self.credit_used += 1
            if window > 0:
                self.recent[(cell, message)] = now
            message_id = state.new_uuid()
            counters.count_accepted(cell)
            entries.append(f"1701|{cell}{separator}{message_id}")
            if reports is not None:
                outcome = state.pick_outcome()
                report = {
                    "sMobileNo": cell,
                    "sStatus": outcome,
                    "sMessageId": message_id,
                    "iErrCode": _ERROR_CODES.get(outcome, "999"),
                }
                # The receiver answers 200 or 202 (docs/providers.md).
                state.schedule_callback("POST", reports.build(report), _REPORT_OK)
        return ",".join(entries)

    def _report_url(self, dlr_url: str, source: str, submitted_at: float, parts: int) -> ReportUrl:
        """The account's report URL with what every report of this request shares: one text,
        so one charge, `iCharge` being the credits of all its parts (DLR Push API)."""
        if dlr_url != self._dlr_url_text:
            self._dlr_url, self._dlr_url_text = URL(dlr_url), dlr_url
        shared = {
            "sSender": source,
            "dtSubmit": utc_timestamp(submitted_at),
            "dtDone": utc_timestamp(submitted_at + self.state.config.dlr_delay_s),
            "iCostPerSms": str(COST_PER_SMS),
            "iCharge": str(COST_PER_SMS * parts),
            "iMCCMNC": "0",
        }
        return ReportUrl(self._dlr_url, shared, _REPORT_PARAMETERS)
