"""Golden request/reply tables for the routemobile driver (docs/providers.md "routemobile")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.base import (
    AccountFault,
    AccountRefused,
    BridgeDriver,
    BridgeSettings,
    CallbackRejected,
    HttpReply,
    InboundRequest,
    OutboundMessage,
    Outcome,
    Receipt,
    Rejected,
    RejectionCause,
    RetryLater,
    StatusQuery,
    Submitted,
    Unknown,
    UnparseableReply,
)
from bridges.routemobile import RouteMobileDriver, code_outcome, schedule_fields, ucs2_hex

SETTINGS = BridgeSettings(
    base_url="http://127.0.0.1:1",
    credentials={"username": "demo", "password": "p&ss"},
    default_sender="ACME",
)
TOKEN_SETTINGS = BridgeSettings(
    base_url="http://127.0.0.1:1",
    credentials={"username": "demo", "password": "demo", "callback_token": "t0k3n"},
    callback_url="http://127.0.0.1:9750/dlr/routemobile",
)

UUID_1 = "bc5f9a3e-0f0e-4bb9-9a44-5e1f3e2c0a01"
UUID_2 = "0d3c1f7a-8d4e-4f55-b1c2-9b8e7a6f5d02"
UUID_3 = "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c03"


def message(to: str, text: str = "Hello", **changes: object) -> OutboundMessage:
    plain = OutboundMessage(msg_id=f"m{to}", to=to, text=text, encoding="GSM-7", reference=f"r{to}")
    return msgspec.structs.replace(plain, **changes)


A, B, C = "+919820000001", "+919820000002", "+919820000003"
THREE = [message(A), message(B), message(C)]


def driver(settings: BridgeSettings = SETTINGS) -> RouteMobileDriver:
    return RouteMobileDriver(settings)


def text_reply(body: str, status: int = 200) -> HttpReply:
    return HttpReply(status=status, body=body.encode(), headers={"content-type": "text/plain"})


def test_satisfies_the_driver_protocol() -> None:
    bridge: BridgeDriver = driver()
    assert bridge.name == "routemobile"
    assert bridge.capabilities.max_recipients == 100
    assert bridge.capabilities.distinct_texts is False
    assert bridge.capabilities.delivery == "callback"
    assert bridge.capabilities.idempotency == "none"


def test_construction_names_missing_credentials() -> None:
    with pytest.raises(ValueError, match="password"):
        RouteMobileDriver(BridgeSettings(base_url="http://x", credentials={"username": "u"}))


# ── build_send ───────────────────────────────────────────────────────────────────


def test_build_send_is_the_exact_get() -> None:
    call = driver().build_send(THREE)
    assert call.method == "GET"
    assert call.path == "/bulksms/bulksms"
    assert call.body == b""
    assert call.query == (
        ("username", "demo"),
        ("password", "p&ss"),
        ("type", "0"),
        ("dlr", "1"),
        ("destination", "919820000001,919820000002,919820000003"),
        ("source", "ACME"),
        ("message", "Hello"),
    )


@pytest.mark.parametrize(
    ("sent", "options", "expected_type", "expected_message"),
    [
        (message(A, "Hello"), {}, "0", "Hello"),
        (message(A, "Hello", flash=True), {}, "1", "Hello"),
        (message(A, "Привет", encoding="UCS-2"), {}, "2", "041F04400438043204350442"),
        (message(A, "Hi 😀", encoding="UCS-2", flash=True), {}, "6", "004800690020D83DDE00"),
        # ISO-8859-1 when asked for and the text fits it; GSM-7 otherwise.
        (message(A, "Café", encoding="GSM-7"), {"charset": "latin1"}, "5", "Café"),
        (message(A, "Café", flash=True), {"charset": "latin1"}, "7", "Café"),
        (message(A, "ΔΣ Greek", encoding="GSM-7"), {"charset": "latin1"}, "0", "ΔΣ Greek"),
        (message(A, "€", encoding="UCS-2"), {"charset": "latin1"}, "2", "20AC"),
    ],
)
def test_build_send_type_and_message(
    sent: OutboundMessage, options: dict[str, str], expected_type: str, expected_message: str
) -> None:
    settings = msgspec.structs.replace(SETTINGS, options=options)
    query = dict(driver(settings).build_send([sent]).query)
    assert (query["type"], query["message"]) == (expected_type, expected_message)


@pytest.mark.parametrize(
    ("text", "hex_text"),
    [
        ("A", "0041"),
        ("é", "00E9"),
        ("😀", "D83DDE00"),
        ("a😀b", "0061D83DDE000062"),
        ("", ""),
    ],
)
def test_ucs2_hex_is_upper_case_utf16be_with_surrogate_pairs(text: str, hex_text: str) -> None:
    assert ucs2_hex(text) == hex_text
    assert len(ucs2_hex(text)) == 4 * len(text.encode("utf-16-be")) // 2


@pytest.mark.parametrize(
    ("sent", "settings", "field", "expected"),
    [
        (message(A, sender="BRAND"), SETTINGS, "source", "BRAND"),
        (message(A), msgspec.structs.replace(SETTINGS, default_sender=None), "source", ""),
        (message(A, dlr=False), SETTINGS, "dlr", "0"),
        (message("+1 (555) 010-0000"), SETTINGS, "destination", "15550100000"),
    ],
)
def test_build_send_fields(
    sent: OutboundMessage, settings: BridgeSettings, field: str, expected: str
) -> None:
    assert dict(driver(settings).build_send([sent]).query)[field] == expected


@pytest.mark.parametrize(
    ("batch", "complaint"),
    [
        ([], "at least one"),
        ([message(A, "a"), message(B, "b")], "one text"),
        ([message(A), message(B, flash=True)], "one text"),
        ([message(f"+9198{index:08d}") for index in range(101)], "at most 100"),
    ],
)
def test_build_send_refuses_batches_the_api_cannot_carry(
    batch: list[OutboundMessage], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        driver().build_send(batch)


# ── build_schedule ───────────────────────────────────────────────────────────────


def test_build_schedule_is_the_send_plus_date_time_gmt() -> None:
    when = datetime(2026, 11, 22, 8, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    call = driver().build_schedule(THREE[:1], when)
    assert call.method == "GET"
    assert call.path == "/bulksms/schedulemsg"
    assert call.query == (
        *driver().build_send(THREE[:1]).query,
        ("date", "11/22/2026"),
        ("time", "08:05 am"),
        ("gmt", "+05:30"),
    )


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # 12 am is midnight, 12 pm is noon (hours run 00-12).
        (datetime(2018, 3, 3, 0, 0, tzinfo=UTC), ("03/03/2018", "12:00 am", "+00:00")),
        (datetime(2018, 3, 3, 0, 45, tzinfo=UTC), ("03/03/2018", "12:45 am", "+00:00")),
        (datetime(2018, 3, 3, 3, 45, tzinfo=UTC), ("03/03/2018", "03:45 am", "+00:00")),
        (datetime(2018, 3, 3, 12, 0, tzinfo=UTC), ("03/03/2018", "12:00 pm", "+00:00")),
        (datetime(2018, 12, 31, 23, 51, tzinfo=UTC), ("12/31/2018", "11:51 pm", "+00:00")),
        (
            datetime(2018, 1, 9, 13, 15, tzinfo=timezone(timedelta(hours=-10))),
            ("01/09/2018", "01:15 pm", "-10:00"),
        ),
        (
            datetime(2018, 1, 9, 13, 15, tzinfo=timezone(timedelta(hours=1, minutes=30))),
            ("01/09/2018", "01:15 pm", "+01:30"),
        ),
        # Offsets outside the seed's range (0-12 h, :00 or :30) are sent as UTC.
        (
            datetime(2018, 1, 9, 5, 45, tzinfo=timezone(timedelta(hours=5, minutes=45))),
            ("01/09/2018", "12:00 am", "+00:00"),
        ),
        (
            datetime(2018, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=14))),
            ("12/31/2017", "08:00 pm", "+00:00"),
        ),
    ],
)
def test_schedule_fields(when: datetime, expected: tuple[str, str, str]) -> None:
    assert schedule_fields(when) == list(zip(("date", "time", "gmt"), expected, strict=True))


def test_schedule_fields_refuse_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        schedule_fields(datetime(2018, 1, 1, 10, 0))


# ── parse_send ───────────────────────────────────────────────────────────────────

NO_CREDIT_TAIL = "routemobile: not sent, the account ran out of credit in this batch."
NO_CREDIT = AccountRefused("1725", NO_CREDIT_TAIL, "credit")
TIMED_OUT = (
    "routemobile: the provider timed out answering; the message may or may not have gone out."
)
MISSING = Unknown("missing", "routemobile's reply has no entry for this destination.")


def rejected(code: str) -> Outcome:
    """The per-code outcome, whose exact sentences CODE_TABLE pins down below."""
    return code_outcome(code)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Both success separators, mixed in one reply.
        (
            f"1701|919820000001|{UUID_1},1701|919820000002:{UUID_2},1701|+919820000003|{UUID_3}",
            [Submitted(UUID_1), Submitted(UUID_2), Submitted(UUID_3)],
        ),
        # Per-destination failures beside successes.
        (
            f"1701|919820000001|{UUID_1},1706|919820000002,1732|919820000003",
            [Submitted(UUID_1), rejected("1706"), rejected("1732")],
        ),
        # The failure shape with an empty id slot, and whitespace around entries.
        (
            f" 1701|919820000001|{UUID_1} , 1042|919820000002| ,1709|919820000003\r\n",
            [
                Submitted(UUID_1),
                rejected("1042"),
                RetryLater("1709", "routemobile: user validation failed."),
            ],
        ),
        # Credit runs out mid-batch: the no-credit entry ends the reply; later
        # destinations were never sent.
        (
            f"1701|919820000001|{UUID_1},1725|919820000002",
            [Submitted(UUID_1), rejected("1725"), NO_CREDIT],
        ),
        (
            "1025|919820000001",
            [
                rejected("1025"),
                AccountRefused("1025", NO_CREDIT_TAIL, "credit"),
                AccountRefused("1025", NO_CREDIT_TAIL, "credit"),
            ],
        ),
        # The no-credit code written bare as the last entry.
        (
            f"1701|919820000001|{UUID_1},1725",
            [Submitted(UUID_1), rejected("1725"), NO_CREDIT],
        ),
        # Entries in another order than the request: matched by cell.
        (
            f"1701|919820000003|{UUID_3},1701|919820000001|{UUID_1},1706|919820000002",
            [Submitted(UUID_1), rejected("1706"), Submitted(UUID_3)],
        ),
        # A reply cut short for no stated reason: the rest may or may not have gone.
        (f"1701|919820000001|{UUID_1}", [Submitted(UUID_1), MISSING, MISSING]),
        # 1701 without an id: taken, but nothing to match a report to.
        (
            f"1701|919820000001,1701|919820000002:,1701|919820000003|{UUID_3}",
            [Submitted(None), Submitted(None), Submitted(UUID_3)],
        ),
        # 1715 per destination: never resubmit.
        (
            f"1701|919820000001|{UUID_1},1715|919820000002,1715|919820000003",
            [
                Submitted(UUID_1),
                Unknown("1715", TIMED_OUT),
                Unknown("1715", TIMED_OUT),
            ],
        ),
    ],
)
def test_parse_send_entries(body: str, expected: list[Outcome]) -> None:
    assert driver().parse_send(THREE, text_reply(body)) == expected


def test_parse_send_of_a_batch_taken_whole_reads_as_entry_by_entry() -> None:
    """A hundred `1701|cell|id` entries in the batch's order (read in one pass) give what
    the same entries read one by one give (a space after each comma: no longer that
    shape), and an entry out of order is still matched by its cell."""
    batch = [message(f"+9198{n:08d}") for n in range(100)]
    entries = [f"1701|9198{n:08d}|id-{n}" for n in range(100)]
    taken = driver().parse_send(batch, text_reply(",".join(entries)))
    assert taken == [Submitted(f"id-{n}") for n in range(100)]
    assert driver().parse_send(batch, text_reply(", ".join(entries))) == taken
    swapped = [entries[1], entries[0], *entries[2:]]
    assert driver().parse_send(batch, text_reply(",".join(swapped))) == taken


def test_parse_send_repeated_destination_takes_entries_in_turn() -> None:
    batch = [message(A), message(A), message(B)]
    body = f"1701|919820000002|{UUID_2},1701|919820000001|{UUID_1},1041|919820000001"
    assert driver().parse_send(batch, text_reply(body)) == [
        Submitted(UUID_1),
        rejected("1041"),
        Submitted(UUID_2),
    ]


FailureType = Callable[[str, str], Outcome]


def refused(fault: AccountFault) -> FailureType:
    """The account's fault, not the message's (docs/providers.md "routemobile" Codes)."""
    return lambda code, reason: AccountRefused(code, reason, fault)


def blamed(cause: RejectionCause) -> FailureType:
    """A refusal that blames one part of the message (the metrics count it so)."""
    return lambda code, reason: Rejected(code, reason, cause)


CODE_TABLE: list[tuple[str, FailureType, str]] = [
    ("1702", Rejected, "a parameter was missing or blank"),
    ("1703", refused("credentials"), "the username or password was refused"),
    ("1704", Rejected, "the message type was refused"),
    ("1705", blamed("content"), "the message text was refused"),
    ("1706", blamed("number"), "the destination was refused"),
    ("1707", blamed("sender"), "the sender (source) was refused"),
    ("1708", Rejected, "the dlr flag was refused"),
    # The one retried code; the engine fails over when the retries run out.
    ("1709", RetryLater, "user validation failed"),
    ("1710", Rejected, "the provider had an internal error"),
    ("1715", Unknown, "the provider timed out answering; the message may or may not have gone out"),
    ("1725", refused("credit"), "the account has insufficient credit"),
    ("1025", refused("credit"), "the account has insufficient credit"),
    ("1732", blamed("number"), "the destination is on the do-not-disturb list"),
    ("1032", blamed("number"), "the destination is on the do-not-disturb list"),
    ("1028", blamed("content"), "the provider judged the message spam"),
    ("1041", Rejected, "the provider judged the message a duplicate"),
    ("1042", blamed("number"), "the destination is explicitly do-not-disturb"),
    ("1033", blamed("content"), "the message does not match a registered template"),
    ("69", Rejected, "the provider had an internal error (SMPP submit failed)"),
    ("8", Rejected, "the provider had an internal error (SMPP system error)"),
    ("16", refused("blocked"), "the client IP address is blacklisted"),
    ("18", refused("blocked"), "the client IP address is not whitelisted"),
]


@pytest.mark.parametrize(("code", "expected_type", "sentence"), CODE_TABLE)
def test_bare_code_applies_to_every_message(
    code: str, expected_type: FailureType, sentence: str
) -> None:
    outcomes = driver().parse_send(THREE, text_reply(code))
    assert outcomes == [expected_type(code, f"routemobile: {sentence}.")] * 3


@pytest.mark.parametrize(("code", "expected_type", "sentence"), CODE_TABLE)
def test_per_destination_code(code: str, expected_type: FailureType, sentence: str) -> None:
    body = f"1701|919820000001|{UUID_1},{code}|919820000002,1701|919820000003:{UUID_3}"
    outcomes = driver().parse_send(THREE, text_reply(body))
    assert outcomes[0] == Submitted(UUID_1)
    assert outcomes[1] == expected_type(code, f"routemobile: {sentence}.")
    assert outcomes[2] == Submitted(UUID_3)


@pytest.mark.parametrize("code", ["1999", "0", "1026", "0045"])
def test_unknown_numeric_code_is_final(code: str) -> None:
    assert driver().parse_send(THREE[:1], text_reply(code)) == [
        Rejected(code, f"routemobile answered the unknown code {code}.")
    ]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 404])
def test_http_error_means_nothing_was_processed(status: int) -> None:
    reply = text_reply("<html>Bad Gateway</html>", status=status)
    assert (
        driver().parse_send(THREE[:2], reply)
        == [RetryLater(f"http_{status}", f"routemobile's gateway answered HTTP {status}.")] * 2
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \r\n",
        b"1701",
        b"OK",
        b"<html>error</html>",
        b"Error: invalid user",
        b"1701|919820000001|id|extra",
        b"abc|919820000001",
        b"1701|not-a-number|id",
        "１７０１|919820000001|x".encode(),
        "²".encode(),
        b"\xff\xfe1701",
    ],
)
def test_parse_send_unparseable_replies_raise(body: bytes) -> None:
    with pytest.raises(UnparseableReply):
        driver().parse_send(THREE, HttpReply(status=200, body=body))


@given(body=st.binary(max_size=300))
def test_parse_send_raises_nothing_but_unparseable_reply(body: bytes) -> None:
    try:
        outcomes = driver().parse_send(THREE, HttpReply(status=200, body=body))
    except UnparseableReply:
        return
    assert len(outcomes) == len(THREE)


@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["1701", "1706", "1725", "1709", "8", "x"]),
            st.sampled_from(["", "|919820000001", "|919820000002", "|+919820000003", "|zz"]),
            st.sampled_from(["", "|id", ":id", "|"]),
        ),
        max_size=5,
    )
)
def test_parse_send_on_reply_shaped_text_raises_nothing_but_unparseable_reply(
    entries: list[tuple[str, str, str]],
) -> None:
    body = ",".join("".join(parts) for parts in entries)
    try:
        outcomes = driver().parse_send(THREE, text_reply(body))
    except UnparseableReply:
        return
    assert len(outcomes) == len(THREE)


# ── delivery reports ─────────────────────────────────────────────────────────────


def test_no_status_polling() -> None:
    queries = [StatusQuery(provider_id=UUID_1, reference="r")]
    assert driver().build_status(queries) is None
    assert driver().parse_status(queries, text_reply("")) == []


def callback(settings_token: str | None = None, **changes: str | None) -> InboundRequest:
    """A Route Mobile DLR push: POST with its parameters in the query string."""
    query: dict[str, str | None] = {
        "sSender": "ACME",
        "sMobileNo": "919820000001",
        "sStatus": "DELIVRD",
        "dtSubmit": "2026-11-22 08:00:00",
        "dtDone": "2026-11-22 08:00:07",
        "sMessageId": UUID_1,
        "iCostPerSms": "0.25",
        "iCharge": "0.25",
        "iMCCMNC": "40410",
        "iErrCode": "000",
        "token": settings_token,
    }
    query.update(changes)
    return InboundRequest(
        method="POST", query={name: value for name, value in query.items() if value is not None}
    )


@pytest.mark.parametrize(
    ("status", "state", "final"),
    [
        ("DELIVRD", "DELIVRD", True),
        ("UNDELIV", "UNDELIV", True),
        ("EXPIRED", "EXPIRED", True),
        ("REJECTD", "REJECTD", True),
        ("DELETED", "DELETED", True),
        ("ACKED", "ENROUTE", False),
        ("ENROUTE", "ENROUTE", False),
        ("ACCEPTED", "ACCEPTD", False),
        ("UNKNOWN", "UNKNOWN", True),
        ("delivrd", "DELIVRD", True),
        ("FAILED", "UNKNOWN", True),
        ("", "UNKNOWN", True),
    ],
)
def test_parse_callback_states(status: str, state: str, final: bool) -> None:
    receipts = driver().parse_callback(callback(sStatus=status, iErrCode="001"))
    assert receipts == [
        Receipt(
            provider_id=UUID_1,
            state=state,  # type: ignore[arg-type]
            provider_status=status,
            final=final,
            error_code="001",
            recipient="+919820000001",
            cost=0.25,  # iCharge; no currency: SETTINGS has neither a price table nor option
        )
    ]


PRICED = msgspec.structs.replace(SETTINGS, price_currency="INR")


def test_the_charge_is_icharge_every_part_in_the_price_table_currency() -> None:
    """Route Mobile's DLR Push API: iCostPerSms per SMS, iCharge the total of every part.
    A 3-part message at 0.18 a part charges 0.54; the account's currency is the one the
    bridge is priced in (its reports name none)."""
    (receipt,) = driver(PRICED).parse_callback(callback(iCostPerSms="0.18", iCharge="0.54"))
    assert (receipt.cost, receipt.currency) == (0.54, "INR")


def test_the_charge_currency_option_wins_over_the_price_table() -> None:
    settings = msgspec.structs.replace(PRICED, options={"charge_currency": "USD"})
    (receipt,) = driver(settings).parse_callback(callback(iCharge="0.0065"))
    assert (receipt.cost, receipt.currency) == (0.0065, "USD")


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", ""])
def test_a_charge_currency_that_is_no_iso_code_is_refused(currency: str) -> None:
    settings = msgspec.structs.replace(SETTINGS, options={"charge_currency": currency})
    with pytest.raises(ValueError, match="charge_currency"):
        driver(settings)


@pytest.mark.parametrize("charge", [None, "", " ", "NULL", "-1", "nan", "inf", "1,5"])
def test_a_report_without_a_usable_charge_has_none(charge: str | None) -> None:
    """Only iCharge counts: a report with iCostPerSms alone, or a figure that is no amount,
    has no charge (and no currency), rather than a guess."""
    (receipt,) = driver(PRICED).parse_callback(callback(iCostPerSms="0.18", iCharge=charge))
    assert (receipt.cost, receipt.currency) == (None, None)


def test_a_free_message_is_charged_zero() -> None:
    (receipt,) = driver(PRICED).parse_callback(callback(iCostPerSms="0", iCharge=" 0 "))
    assert (receipt.cost, receipt.currency) == (0.0, "INR")


def test_parse_callback_without_optional_fields() -> None:
    request = InboundRequest(method="POST", query={"sMessageId": UUID_2, "sStatus": "UNDELIV"})
    assert driver().parse_callback(request) == [
        Receipt(provider_id=UUID_2, state="UNDELIV", provider_status="UNDELIV", final=True)
    ]


@pytest.mark.parametrize("message_id", [None, "", "  "])
def test_parse_callback_without_message_id_raises_value_error(message_id: str | None) -> None:
    with pytest.raises(ValueError, match="sMessageId"):
        driver().parse_callback(callback(sMessageId=message_id))


def test_callback_with_the_registered_token_is_accepted() -> None:
    bridge = driver(TOKEN_SETTINGS)
    url = bridge.callback_registration_url()
    assert url == "http://127.0.0.1:9750/dlr/routemobile?token=t0k3n"
    token = dict(parse_qsl(urlsplit(url).query))["token"]
    assert bridge.parse_callback(callback(token))[0].state == "DELIVRD"


@pytest.mark.parametrize("token", [None, "", "t0k3", "t0k3n!", "T0K3N", "t0k3né"])
def test_callback_with_a_wrong_or_missing_token_is_rejected(token: str | None) -> None:
    with pytest.raises(CallbackRejected):
        driver(TOKEN_SETTINGS).parse_callback(callback(token))


def test_without_a_token_configured_any_callback_is_read() -> None:
    assert driver().callback_registration_url() is None
    assert driver().parse_callback(callback("anything"))[0].provider_id == UUID_1


def test_registration_url_replaces_a_token_already_in_the_callback_url() -> None:
    settings = msgspec.structs.replace(
        TOKEN_SETTINGS, callback_url="http://127.0.0.1:9750/dlr/routemobile?token=old&x=1"
    )
    assert (
        driver(settings).callback_registration_url()
        == "http://127.0.0.1:9750/dlr/routemobile?x=1&token=t0k3n"
    )


def test_http_429_from_a_gateway_throttles_with_retry_after() -> None:
    from bridges.base import HttpReply, Throttled

    driver = RouteMobileDriver(
        BridgeSettings(base_url="http://x", credentials={"username": "u", "password": "p"})
    )
    batch = [
        OutboundMessage(
            msg_id="1", to="+911234567890", text="t", encoding="GSM-7", reference="r1", sender="S"
        )
    ]
    outcomes = driver.parse_send(
        batch, HttpReply(status=429, body=b"slow down", headers={"retry-after": "3"})
    )
    assert outcomes == [Throttled("http_429", "routemobile's gateway answered HTTP 429.", 3.0)]
