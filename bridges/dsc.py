"""Sans-IO driver for dsc, Digital Services Center's BulkSMS API v2 (seed 000). Pure: no I/O.

Follows docs/providers.md "dsc", which corrects the seed: the send is form-urlencoded (not
JSON), delivery state arrives only by GET callback, and there is no status endpoint.

`BridgeSettings.credentials` keys:

- `api_key`, `username`, `password`: the account, sent on every call.
- `callback_username`, `callback_password`: the credentials septet embeds in the
  `dlrurl` it registers with each send and expects back on every callback. Required
  when `callback_url` is set; without them every callback is refused (fail closed).

`default_sender` (or a message's `sender`) becomes the optional `sender` field.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import msgspec

from bridges.base import (
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
    RetryLater,
    SmppState,
    StatusQuery,
    Submitted,
    Unknown,
    UnparseableReply,
    ascii_digits,
    match_reply_entries,
    reply_text,
)

SEND_PATH = "/api/v2/sms/send"
DEFAULT_CURRENCY = "RWF"

# docs/providers.md "dsc": the callback's dlvrMsgStat is D or U; only final states are sent.
_CALLBACK_STATES: dict[str, SmppState] = {"D": "DELIVRD", "U": "UNDELIV"}

# docs/providers.md "dsc" Errors: 401 "Invalid API key or credentials" refuses the account,
# not the message: nothing was sent, and another bridge may take it.
_CREDENTIALS_REFUSED = 401
# docs/providers.md "dsc" Retry: never 400/401/429. 429 is the testing-mode daily limit
# (15 SMS a day), which a resend today cannot pass, so it is final, not Throttled. Never
# the same request again, that is: the messages of a refused request of many are sent
# again one by one (`DscDriver._refused_whole`), each to get its own answer.
_FINAL_HTTP_ERRORS: dict[int, str] = {
    400: "dsc rejected the request",
    429: "dsc's daily limit for testing mode is reached",
}


class _SendEntry(msgspec.Struct, frozen=True):
    """One `response[]` entry: the fate of one recipient (docs/providers.md "dsc" Success)."""

    status: str
    messageid: str | int | None = None
    recipient: str | int = ""
    cost: float | None = None


class _SendReply(msgspec.Struct, frozen=True):
    """Both documented bodies: success (`response[]`) and error (`message`)."""

    status: str
    message: str | None = None
    unit: str | None = None
    response: list[_SendEntry] = msgspec.field(default_factory=list)


_send_reply_decoder = msgspec.json.Decoder(_SendReply)


# A phone number as the bare digits dsc wants and echoes (no `+`, no spaces).
recipient_digits = ascii_digits


# docs/providers.md "dsc": `sender` is optional and neither the seed nor that page states
# its limits, so those of the network apply: an alphanumeric originating address carries at
# most 11 GSM 7-bit characters (3GPP TS 23.040 9.1.2.5), a numeric one an international
# number of at most 15 digits (ITU-T E.164). The send has no flash or validity field and
# no documented text limit.
LIMITS = Limits(
    sender_required=False,
    alphanumeric_sender_max=11,
    numeric_sender_max=15,
    numeric_sender_plus=True,
    flash=False,
)


def bridge_limits(options: Mapping[str, str]) -> Limits:
    """LIMITS: no option of this driver changes them."""
    del options
    return LIMITS


# Seed 000: every example of the send posts to this host (`{base}/api/v2/sms/send`).
PRODUCTION_BASE_URL: str | None = "https://bulksms.digitalservicescenter.rw"


def required_credentials(callbacks: bool) -> tuple[str, ...]:
    """The credentials keys a dsc bridge needs; the callback pair when septet takes its
    reports by callback (an HTTP listener or `public_url` is configured)."""
    account = ("api_key", "username", "password")
    return (*account, "callback_username", "callback_password") if callbacks else account


class DscDriver:
    """dsc's driver: one form POST per batch, reports by GET callback only."""

    name = "dsc"
    # docs/providers.md "dsc": one `message` per request, a comma list of recipients; no
    # polling endpoint; no idempotency key. 100 recipients is septet's per-request cap.
    capabilities = Capabilities(
        max_recipients=100, distinct_texts=False, delivery="callback", idempotency="none"
    )
    limits = LIMITS

    def __init__(self, settings: BridgeSettings) -> None:
        required = required_credentials(settings.callback_url is not None)
        missing = [key for key in required if key not in settings.credentials]
        if missing:
            raise ValueError(f"The dsc bridge needs the credentials {', '.join(missing)}.")
        self.settings = settings
        # The parts of every send body that never change, form-encoded once.
        credentials = settings.credentials
        self._credential_fields = urlencode(
            [
                ("api_key", credentials["api_key"]),
                ("username", credentials["username"]),
                ("password", credentials["password"]),
            ]
        )
        dlr_url = self.callback_registration_url()
        self._dlr_field = "" if dlr_url is None else "&" + urlencode([("dlrurl", dlr_url)])

    # ── send ──────────────────────────────────────────────────────────────────────

    def build_send(self, batch: Sequence[OutboundMessage]) -> HttpCall:
        """One form-urlencoded POST carrying the batch's shared text to every recipient."""
        if not batch:
            raise ValueError("A dsc send needs at least one message.")
        if len(batch) > self.capabilities.max_recipients:
            raise ValueError(
                f"A dsc send carries at most {self.capabilities.max_recipients} recipients."
            )
        first = batch[0]
        if any(message.text != first.text for message in batch):
            raise ValueError("A dsc send carries one text for every recipient.")
        # docs/providers.md "dsc": digits, country code first, no `+`, comma-joined. The body
        # is what urlencode() makes of the fields in this order (credentials first).
        recipients = ",".join([recipient_digits(message.to) for message in batch])
        body = (
            f"{self._credential_fields}&recipients={quote_plus(recipients)}"
            f"&message={quote_plus(first.text)}"
        )
        sender = first.sender or self.settings.default_sender
        if sender:
            body += f"&sender={quote_plus(sender)}"
        if self._dlr_field and any(message.dlr for message in batch):
            body += self._dlr_field
        return HttpCall(
            method="POST",
            path=SEND_PATH,
            headers=(
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/json"),
            ),
            body=body.encode("ascii"),
        )

    def callback_registration_url(self) -> str | None:
        """The `dlrurl` septet registers: `callback_url` plus the callback credentials.

        The provider calls it back with the `username` and `password` found in it
        (docs/providers.md "dsc" Callback), which `parse_callback` checks.
        """
        callback_url = self.settings.callback_url
        if callback_url is None:
            return None
        credentials = self.settings.credentials
        parts = urlsplit(callback_url)
        # Credentials already in the URL are replaced, so registering twice is harmless.
        kept = [
            pair
            for pair in parse_qsl(parts.query, keep_blank_values=True)
            if pair[0] not in ("username", "password")
        ]
        query = [
            *kept,
            ("username", credentials["callback_username"]),
            ("password", credentials["callback_password"]),
        ]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def parse_send(self, batch: Sequence[OutboundMessage], reply: HttpReply) -> list[Outcome]:
        """One outcome per message, from the success body or the HTTP error status."""
        if reply.status == _CREDENTIALS_REFUSED:
            reason = f"dsc refused the account credentials: {self._error_message(reply)}"
            return [AccountRefused(str(reply.status), reason, "credentials")] * len(batch)
        if reply.status in _FINAL_HTTP_ERRORS:
            reason = f"{_FINAL_HTTP_ERRORS[reply.status]}: {self._error_message(reply)}"
            return self._refused_whole(batch, str(reply.status), reason)
        if 500 <= reply.status <= 599:
            # docs/providers.md "dsc": 500 is the upstream gateway failing before any message
            # id was issued, so a resend cannot double-send.
            reason = f"dsc's gateway failed: {self._error_message(reply)}"
            return [RetryLater(str(reply.status), reason)] * len(batch)
        if reply.status != 200:
            raise UnparseableReply(f"dsc answered HTTP {reply.status}: {reply_text(reply)}")
        parsed = self._decode(reply)
        if parsed.status == "error":
            # Not documented at HTTP 200, but the provider's own error body: read it as
            # the 400 it most likely stands for (final, nothing was sent).
            reason = f"dsc refused the request: {parsed.message or reply_text(reply)}"
            return self._refused_whole(batch, "error", reason)
        if parsed.status != "success":
            raise UnparseableReply(f"dsc answered an unknown status: {reply_text(reply)}")
        currency = parsed.unit or DEFAULT_CURRENCY
        entries = parsed.response
        matched = match_reply_entries(
            [recipient_digits(message.to) for message in batch],
            [recipient_digits(entry.recipient) for entry in entries],
        )
        return [
            self._entry_outcome(None if index is None else entries[index], currency)
            for index in matched
        ]

    @staticmethod
    def _refused_whole(batch: Sequence[OutboundMessage], code: str, reason: str) -> list[Outcome]:
        """A refusal of the whole request: final for a message sent alone.

        docs/providers.md "dsc" Errors: one bad number rejects the whole request (400), and
        the testing-mode limit refuses a request that would pass it (429). Either may be
        one message's doing, and nothing of the request was sent, so a request of many
        is a retry for each: resends travel alone (engine.scheduler), where each gets
        its own answer.
        """
        if len(batch) == 1:
            return [Rejected(code, reason)]
        whole = f"{reason} (the whole request of {len(batch)} was refused; each goes alone)"
        return [RetryLater(code, whole)] * len(batch)

    def _entry_outcome(self, entry: _SendEntry | None, currency: str) -> Outcome:
        if entry is None:
            # The request succeeded but said nothing of this recipient: it may have
            # been sent, so a resend could double-send.
            return Unknown("missing", "dsc's reply has no entry for this recipient.")
        if entry.status == "sent":
            provider_id = None if entry.messageid is None else str(entry.messageid)
            return Submitted(provider_id, entry.cost, currency)
        if entry.status == "failed":
            # docs/providers.md "dsc": a "failed" entry is final (REJECTD) at once.
            return Rejected("failed", "dsc marked this recipient failed.")
        return Unknown(entry.status, f"dsc gave this recipient an unknown status {entry.status!r}.")

    @staticmethod
    def _decode(reply: HttpReply) -> _SendReply:
        # msgspec raises RecursionError, not DecodeError, on absurdly deep nesting.
        try:
            return _send_reply_decoder.decode(reply.body)
        except (msgspec.DecodeError, RecursionError) as error:
            raise UnparseableReply(f"dsc's reply is not its documented JSON: {error}") from None

    @staticmethod
    def _error_message(reply: HttpReply) -> str:
        """The `message` of an error body, or an excerpt where the body is not JSON."""
        try:
            message = _send_reply_decoder.decode(reply.body).message
        except (msgspec.DecodeError, RecursionError):
            message = None
        return message or reply_text(reply) or "(empty body)"

    # ── delivery reports ──────────────────────────────────────────────────────────

    def build_status(self, queries: Sequence[StatusQuery]) -> HttpCall | None:
        """None: dsc has no status endpoint (docs/providers.md "dsc")."""
        return None

    def parse_status(self, queries: Sequence[StatusQuery], reply: HttpReply) -> list[Receipt]:
        """Nothing to read: there is no status endpoint to have answered."""
        return []

    def parse_callback(self, request: InboundRequest) -> list[Receipt]:
        """One receipt from dsc's GET callback, after checking the embedded credentials.

        Raises CallbackRejected on missing or wrong credentials (the listener answers
        401) and ValueError on a callback without `dlvrMsgId` (the listener answers 400).
        """
        self._check_callback_credentials(request)
        query = request.query
        command = query.get("command")
        if command is not None and command != "deliver":
            raise ValueError(f"A dsc callback must have command=deliver, not {command!r}.")
        provider_id = query.get("dlvrMsgId", "")
        if not provider_id:
            raise ValueError("A dsc callback must name the message in dlvrMsgId.")
        raw_state = query.get("dlvrMsgStat", "")
        dnis = recipient_digits(query.get("dnis", ""))
        return [
            Receipt(
                provider_id=provider_id,
                # Only final states are forwarded (docs/providers.md "dsc"), so a state we
                # do not know is still the message's last word: UNKNOWN, final.
                state=_CALLBACK_STATES.get(raw_state, "UNKNOWN"),
                provider_status=raw_state,
                final=True,
                recipient=f"+{dnis}" if dnis else None,
            )
        ]

    def _check_callback_credentials(self, request: InboundRequest) -> None:
        credentials = self.settings.credentials
        expected_username = credentials.get("callback_username")
        expected_password = credentials.get("callback_password")
        if expected_username is None or expected_password is None:
            raise CallbackRejected("dsc callbacks are refused: no callback credentials are set.")
        username = request.query.get("username")
        password = request.query.get("password")
        if username is None or password is None:
            raise CallbackRejected("A dsc callback must carry username and password.")
        # Both compared in constant time and both always compared, so timing tells an
        # attacker nothing about which one was wrong.
        username_ok = hmac.compare_digest(username.encode(), expected_username.encode())
        password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
        if not (username_ok and password_ok):
            raise CallbackRejected("A dsc callback carried the wrong username or password.")
