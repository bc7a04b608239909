"""Golden request/reply tables for the smsclub driver (seed 003, docs/providers.md "smsclub")."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.base import (
    AccountRefused,
    BridgeDriver,
    BridgeSettings,
    HttpCall,
    HttpReply,
    InboundRequest,
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
    retry_after_seconds,
)
from bridges.smsclub import (
    CAPABILITIES,
    SmsClubBalance,
    SmsClubDriver,
    lifetime_minutes,
)

SETTINGS = BridgeSettings(
    base_url="http://127.0.0.1:8080",
    credentials={"token": "demo"},
    default_sender="VashZakaz",
)
HEADERS = (
    ("Authorization", "Bearer demo"),
    ("Content-Type", "application/json"),
    ("Accept", "application/json"),
)


def outbound(
    to: str = "+380989361131",
    reference: str = "ref_1",
    text: str = "test text",
    sender: str | None = None,
    validity_s: int | None = None,
    attempt: int = 1,
) -> OutboundMessage:
    return OutboundMessage(
        msg_id=reference,
        to=to,
        text=text,
        encoding="GSM-7",
        reference=reference,
        sender=sender,
        validity_s=validity_s,
        attempt=attempt,
    )


TRIO = [
    outbound("+380989361131", "a"),
    outbound("+380989361132", "b"),
    outbound("+380989361133", "c"),
]


def json_reply(body: object, status: int = 200, headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status=status, body=msgspec.json.encode(body), headers=headers or {})


def error_body(status: int, message: str) -> dict[str, object]:
    return {"name": "Error", "message": message, "code": 0, "status": status}


def sent_body(call: HttpCall) -> Any:
    return msgspec.json.decode(call.body)


def test_driver_satisfies_the_contract() -> None:
    driver: BridgeDriver = SmsClubDriver(SETTINGS)
    assert driver.name == "smsclub"
    assert driver.capabilities == CAPABILITIES
    assert (CAPABILITIES.max_recipients, CAPABILITIES.distinct_texts) == (100, False)
    assert (CAPABILITIES.delivery, CAPABILITIES.idempotency) == ("poll", "duplicate-window")
    assert CAPABILITIES.max_status_ids == 100
    assert CAPABILITIES.validity_per_request  # one `lifetime` per request


@pytest.mark.parametrize("credentials", [{}, {"token": ""}, {"api_key": "demo"}])
def test_settings_without_token_are_refused(credentials: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"smsclub needs credentials\.token"):
        SmsClubDriver(BridgeSettings(base_url="http://127.0.0.1:1", credentials=credentials))


# ── build_send ────────────────────────────────────────────────────────────────────


def test_send_is_the_seed_request() -> None:
    call = SmsClubDriver(SETTINGS).build_send([outbound()])
    assert (call.method, call.path, call.query, call.headers) == ("POST", "/sms/send", (), HEADERS)
    assert sent_body(call) == {
        "phone": ["380989361131"],
        "message": "test text",
        "src_addr": "VashZakaz",
    }


def test_send_carries_every_phone_lifetime_and_integration_id() -> None:
    settings = BridgeSettings(
        base_url="http://127.0.0.1:1",
        credentials={"token": "t"},
        options={"integration_id": "partner-7"},
    )
    batch = [
        outbound("+380989361131", "a", sender="Shop", validity_s=3600),
        outbound("+380989361132", "b", sender="Shop", validity_s=61),
        outbound("+380989361133", "c", sender="Shop"),
    ]
    assert sent_body(SmsClubDriver(settings).build_send(batch)) == {
        "phone": ["380989361131", "380989361132", "380989361133"],
        "message": "test text",
        "src_addr": "Shop",
        "lifetime": 2,
        "integration_id": "partner-7",
    }


@pytest.mark.parametrize(
    ("validity_s", "minutes"), [(1, 1), (59, 1), (60, 1), (61, 2), (3600, 60), (86400, 1440)]
)
def test_lifetime_is_validity_rounded_up_to_minutes(validity_s: int, minutes: int) -> None:
    assert lifetime_minutes(validity_s) == minutes


def test_src_addr_is_omitted_without_any_sender() -> None:
    bare = SmsClubDriver(BridgeSettings(base_url="http://127.0.0.1:1", credentials={"token": "t"}))
    assert sent_body(bare.build_send([outbound()])) == {
        "phone": ["380989361131"],
        "message": "test text",
    }


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [outbound(f"+3809893{i:05d}", f"r{i}") for i in range(101)],
        [outbound(text="one"), outbound("+380989361132", "b", text="two")],
        [outbound(sender="A"), outbound("+380989361132", "b", sender="B")],
        [outbound(), outbound("+380989361132", "b", sender="Other")],
    ],
    ids=["empty", "101-phones", "two-texts", "two-senders", "default-vs-other-sender"],
)
def test_batches_it_cannot_send_in_one_request_are_refused(batch: list[OutboundMessage]) -> None:
    with pytest.raises(ValueError, match="smsclub"):
        SmsClubDriver(SETTINGS).build_send(batch)


def test_default_sender_and_same_explicit_sender_share_a_request() -> None:
    batch = [outbound(), outbound("+380989361132", "b", sender="VashZakaz")]
    assert sent_body(SmsClubDriver(SETTINGS).build_send(batch))["src_addr"] == "VashZakaz"


def test_a_hundred_phones_fit_one_request() -> None:
    batch = [outbound(f"+3809893{i:05d}", f"r{i}") for i in range(100)]
    assert len(sent_body(SmsClubDriver(SETTINGS).build_send(batch))["phone"]) == 100


# ── parse_send ────────────────────────────────────────────────────────────────────

MISSING = Unknown("missing", "SMS Club's reply did not mention this phone")


@pytest.mark.parametrize(
    ("batch", "body", "expected"),
    [
        pytest.param(
            TRIO[:1],
            {"success_request": {"info": {"106": "380989361131"}}},
            [Submitted("106")],
            id="seed-reply",
        ),
        pytest.param(
            TRIO,
            {
                "success_request": {
                    "info": {"106": "380989361131", "107": "380989361133"},
                    "add_info": {"380989361132": "Invalid phone number"},
                }
            },
            [
                Submitted("106"),
                Rejected("add_info", "SMS Club: Invalid phone number", "number"),
                Submitted("107"),
            ],
            id="partial-failure",
        ),
        pytest.param(
            TRIO[:2],
            {"success_request": {"add_info": {"380989361131": "blocked", "380989361132": "bad"}}},
            [
                Rejected("add_info", "SMS Club: blocked", "number"),
                Rejected("add_info", "SMS Club: bad", "number"),
            ],
            id="all-failed-no-info",
        ),
        pytest.param(
            TRIO,
            {"success_request": {"info": {"106": "380989361131"}, "add_info": []}},
            [Submitted("106"), MISSING, MISSING],
            id="phones-in-neither-are-unknown",
        ),
        pytest.param(
            TRIO[:2],
            {"success_request": {"info": {"106": 380989361132, "107": "+380989361131"}}},
            [Submitted("107"), Submitted("106")],
            id="numeric-and-plus-phones-matched-out-of-order",
        ),
        pytest.param(
            [outbound("+380989361131", "a"), outbound("+380989361131", "b")],
            {"success_request": {"info": {"106": "380989361131", "107": "380989361131"}}},
            [Submitted("106"), Submitted("107")],
            id="same-phone-twice-takes-ids-in-order",
        ),
        pytest.param(
            TRIO[:1],
            {"success_request": {"info": [], "add_info": []}},
            [MISSING],
            id="php-empty-arrays",
        ),
    ],
)
def test_send_replies(batch: list[OutboundMessage], body: object, expected: list[Outcome]) -> None:
    assert SmsClubDriver(SETTINGS).parse_send(batch, json_reply(body)) == expected


def test_validation_error_rejects_every_message_with_the_reasons() -> None:
    body = {"success_request": {"add_info": {"src_addr": "Unknown sender", "message": "Empty"}}}
    outcomes = SmsClubDriver(SETTINGS).parse_send(TRIO[:2], json_reply(body, 400))
    expected = Rejected(
        "400", "SMS Club refused the request as invalid: src_addr: Unknown sender; message: Empty"
    )
    assert outcomes == [expected, expected]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            json_reply(error_body(401, "Your request was made with invalid credentials."), 401),
            # docs/providers.md "smsclub": 401 auth, the account's fault, not the messages'.
            AccountRefused(
                "401",
                "SMS Club refused the token: Your request was made with invalid credentials.",
                "credentials",
            ),
            id="401",
        ),
        pytest.param(
            json_reply(error_body(429, "Rate limit exceeded."), 429, {"retry-after": "2"}),
            Throttled(
                "429",
                "SMS Club is rate limiting (over 9 requests a second): Rate limit exceeded.",
                2.0,
            ),
            id="429-retry-after",
        ),
        pytest.param(
            json_reply(error_body(429, "Rate limit exceeded."), 429),
            Throttled(
                "429", "SMS Club is rate limiting (over 9 requests a second): Rate limit exceeded."
            ),
            id="429-no-retry-after",
        ),
        pytest.param(
            json_reply(error_body(500, "Internal error"), 500),
            RetryLater("500", "SMS Club is unavailable (HTTP 500): Internal error"),
            id="500",
        ),
        pytest.param(
            HttpReply(status=503, body=b"<html>down</html>"),
            RetryLater("503", "SMS Club is unavailable (HTTP 503): <html>down</html>"),
            id="503-html",
        ),
        pytest.param(
            json_reply({"success_request": {}}, 400),
            Rejected("400", 'SMS Club refused the request as invalid: {"success_request":{}}'),
            id="400-without-fields",
        ),
        pytest.param(
            json_reply(error_body(403, "Forbidden"), 403),
            Rejected("403", "SMS Club refused the request (HTTP 403): Forbidden"),
            id="other-4xx",
        ),
        pytest.param(
            HttpReply(status=302, body=b""),
            Unknown("302", "SMS Club answered an unexpected HTTP 302: "),
            id="redirect",
        ),
    ],
)
def test_error_statuses(reply: HttpReply, expected: Outcome) -> None:
    assert SmsClubDriver(SETTINGS).parse_send(TRIO[:2], reply) == [expected, expected]


DUPLICATE = error_body(453, "Duplicate message.")
GENUINE_DUPLICATE = Rejected(
    "453", "SMS Club saw the same message within 2 minutes: Duplicate message."
)


@pytest.mark.parametrize(
    ("attempt", "maybe_sent", "expected"),
    [
        # A first attempt: the client sent the same message twice within 2 minutes.
        (1, False, GENUINE_DUPLICATE),
        # A resend after an attempt that may have reached SMS Club (a lost reply): that
        # attempt went through (docs/providers.md "smsclub" Retry).
        (2, True, Submitted(provider_id=None)),
        (5, True, Submitted(provider_id=None)),
        # A resend after a request SMS Club refused whole: nothing of this message went
        # out, so the 453 is about another message, a genuine duplicate.
        (2, False, GENUINE_DUPLICATE),
    ],
    ids=["first-attempt", "resend-maybe-sent", "late-resend-maybe-sent", "resend-never-sent"],
)
def test_duplicate_453_alone_means_submitted_only_where_an_attempt_may_have_gone_out(
    attempt: int, maybe_sent: bool, expected: Outcome
) -> None:
    message = msgspec.structs.replace(outbound(attempt=attempt), maybe_sent=maybe_sent)
    outcomes = SmsClubDriver(SETTINGS).parse_send([message], json_reply(DUPLICATE, 453))
    assert outcomes == [expected]


@pytest.mark.parametrize("maybe_sent", [False, True])
def test_duplicate_453_for_a_request_of_many_is_a_retry_for_each(maybe_sent: bool) -> None:
    # SMS Club refuses the whole request (a phone and text repeated in it, or one sent
    # within 2 minutes before) and says not which: nothing was sent, each goes alone.
    batch = [msgspec.structs.replace(message, maybe_sent=maybe_sent) for message in TRIO]
    outcomes = SmsClubDriver(SETTINGS).parse_send(batch, json_reply(DUPLICATE, 453))
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, RetryLater)
        assert outcome.code == "453"
        assert "nothing was sent" in outcome.reason
        assert "Duplicate message." in outcome.reason


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), (" 0.5 ", 0.5), ("0", 0.0), ("-1", None), ("inf", None), ("soon", None)],
)
def test_retry_after_header(value: str, seconds: float | None) -> None:
    assert retry_after_seconds({"retry-after": value}) == seconds
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"\xff",
        b"[]",
        b"{}",
        b'{"success_request": []}',
        b'{"success_request": {"info": "106"}}',
        b'{"success_request": {"info": {"106": null}}}',
        b'{"success_request": {"add_info": [1]}}',
    ],
)
def test_garbage_success_reply_is_unparseable(body: bytes) -> None:
    with pytest.raises(UnparseableReply):
        SmsClubDriver(SETTINGS).parse_send(TRIO, HttpReply(status=200, body=body))


# ── Status ────────────────────────────────────────────────────────────────────────


def test_status_request_carries_the_ids() -> None:
    queries = [
        StatusQuery(provider_id="106", reference="a"),
        StatusQuery(provider_id=None, reference="b"),
        StatusQuery(provider_id="107", reference="c"),
    ]
    call = SmsClubDriver(SETTINGS).build_status(queries)
    assert call is not None
    assert (call.method, call.path, call.headers) == ("POST", "/sms/status", HEADERS)
    assert sent_body(call) == {"id_sms": ["106", "107"]}


def test_status_without_any_id_or_over_a_hundred() -> None:
    driver = SmsClubDriver(SETTINGS)
    assert driver.build_status([]) is None
    assert driver.build_status([StatusQuery(provider_id=None, reference="a")]) is None
    many = [StatusQuery(provider_id=str(i), reference=str(i)) for i in range(101)]
    with pytest.raises(ValueError, match="100"):
        driver.build_status(many)


@pytest.mark.parametrize(
    ("label", "state", "final"),
    [
        ("ENROUTE", "ENROUTE", False),
        ("DELIVRD", "DELIVRD", True),
        ("EXPIRED", "EXPIRED", True),
        ("UNDELIV", "UNDELIV", True),
        ("REJECTD", "REJECTD", True),
        ("delivrd", "DELIVRD", True),
        ("Отправлено", "ENROUTE", False),
        ("Доставлено", "DELIVRD", True),
        ("Не доставлено", "UNDELIV", True),
        ("Просрочено", "EXPIRED", True),
        ("Отклонено", "REJECTD", True),
        ("SOMETHING", "UNKNOWN", False),
    ],
)
def test_status_labels_map_to_smpp_states(label: str, state: SmppState, final: bool) -> None:
    query = StatusQuery(provider_id="106", reference="a")
    body = {"success_request": {"info": {"106": label}}}
    assert SmsClubDriver(SETTINGS).parse_status([query], json_reply(body)) == [
        Receipt(provider_id="106", state=state, provider_status=label, final=final, reference="a")
    ]


def test_unknown_ids_in_add_info_give_no_receipt() -> None:
    queries = [
        StatusQuery(provider_id="106", reference="a"),
        StatusQuery(provider_id="9", reference="b"),
    ]
    body = {"success_request": {"info": {"106": "DELIVRD"}, "add_info": {"9": "not found"}}}
    [receipt] = SmsClubDriver(SETTINGS).parse_status(queries, json_reply(body))
    assert (receipt.provider_id, receipt.reference, receipt.state) == ("106", "a", "DELIVRD")


@pytest.mark.parametrize(
    "reply",
    [
        json_reply(error_body(401, "Unauthorized"), 401),
        json_reply(error_body(429, "Too many"), 429),
        HttpReply(status=502, body=b"bad gateway"),
        json_reply({"success_request": {"info": [], "add_info": {"106": "unknown"}}}),
    ],
)
def test_status_errors_give_no_receipts(reply: HttpReply) -> None:
    assert (
        SmsClubDriver(SETTINGS).parse_status([StatusQuery(provider_id="106", reference="a")], reply)
        == []
    )


@pytest.mark.parametrize(
    "body",
    [b"garbage", b"[]", b'{"success_request": 1}', b'{"success_request": {"info": {"1": []}}}'],
)
def test_garbage_status_reply_is_unparseable(body: bytes) -> None:
    with pytest.raises(UnparseableReply):
        SmsClubDriver(SETTINGS).parse_status([], HttpReply(status=200, body=body))


def test_no_delivery_callbacks() -> None:
    with pytest.raises(ValueError, match="smsclub sends no delivery callbacks"):
        SmsClubDriver(SETTINGS).parse_callback(InboundRequest(method="POST", query={}))


# ── Sender IDs and balance ────────────────────────────────────────────────────────


def test_originators_request_and_reply() -> None:
    driver = SmsClubDriver(SETTINGS)
    assert driver.build_originators() == HttpCall(
        method="POST", path="/sms/originator", headers=HEADERS
    )
    body = {"success_request": {"info": ["test1", "test2"]}}
    assert driver.parse_originators(json_reply(body)) == ["test1", "test2"]


def test_balance_request_and_reply() -> None:
    driver = SmsClubDriver(SETTINGS)
    assert driver.build_balance() == HttpCall(method="POST", path="/sms/balance", headers=HEADERS)
    body = {"success_request": {"info": {"money": "8111.1700", "currency": "UAH"}}}
    assert driver.parse_balance(json_reply(body)) == SmsClubBalance(amount=8111.17, currency="UAH")


def test_balance_with_a_refused_token_is_the_refusal() -> None:
    # docs/providers.md "smsclub" Errors: 401 auth.
    reply = json_reply(error_body(401, "Your request was made with invalid credentials."), 401)
    assert SmsClubDriver(SETTINGS).parse_balance(reply) == AccountRefused(
        "401",
        "SMS Club refused the token: Your request was made with invalid credentials.",
        "credentials",
    )


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (json_reply(error_body(500, "Down"), 500), "HTTP 500: Down"),
        (json_reply({"success_request": {"info": {"currency": "UAH"}}}), "without money"),
        (json_reply({"success_request": {"info": {"money": "lots"}}}), "without money"),
        (json_reply({"success_request": {"info": {"money": True}}}), "without money"),
        (HttpReply(status=200, body=b"money"), "not JSON"),
    ],
)
def test_balance_errors_raise(reply: HttpReply, match: str) -> None:
    with pytest.raises(UnparseableReply, match=match):
        SmsClubDriver(SETTINGS).parse_balance(reply)


@pytest.mark.parametrize(
    "reply",
    [
        json_reply(error_body(500, "down"), 500),
        json_reply({"success_request": {"info": "test1"}}),
        json_reply({"success_request": {"info": ["ok", 2]}}),
    ],
)
def test_originator_errors_raise(reply: HttpReply) -> None:
    with pytest.raises(UnparseableReply):
        SmsClubDriver(SETTINGS).parse_originators(reply)


# ── Never anything but UnparseableReply ───────────────────────────────────────────

REPLY_KEYS = st.sampled_from(
    ["success_request", "info", "add_info", "money", "currency", "message", "name", "code"]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["380989361131", "106", "DELIVRD", "Доставлено"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(REPLY_KEYS | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=20,
)
STATUSES = st.sampled_from([200, 200, 200, 400, 401, 429, 453, 500])
QUERIES = [StatusQuery(provider_id="106", reference="a")]


def _only_unparseable(driver: SmsClubDriver, reply: HttpReply) -> None:
    try:
        outcomes = driver.parse_send(TRIO, reply)
    except UnparseableReply:
        pass  # the one exception a parser may raise on garbage
    else:
        assert len(outcomes) == len(TRIO)
    try:
        receipts = driver.parse_status(QUERIES, reply)
    except UnparseableReply:
        pass  # the one exception a parser may raise on garbage
    else:
        assert all(isinstance(r, Receipt) for r in receipts)


@given(body=st.binary(max_size=64), status=STATUSES)
def test_arbitrary_bytes_never_raise_anything_else(body: bytes, status: int) -> None:
    _only_unparseable(SmsClubDriver(SETTINGS), HttpReply(status=status, body=body))


@given(document=JSON_VALUES, status=STATUSES)
def test_arbitrary_json_never_raises_anything_else(document: object, status: int) -> None:
    _only_unparseable(SmsClubDriver(SETTINGS), json_reply(document, status))


@given(document=JSON_VALUES)
def test_arbitrary_json_inside_success_request_never_raises_anything_else(document: object) -> None:
    body = {"success_request": {"info": document, "add_info": document}}
    _only_unparseable(SmsClubDriver(SETTINGS), json_reply(body))


def test_deeply_nested_json_is_unparseable_not_a_crash() -> None:
    reply = HttpReply(status=200, body=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(UnparseableReply):
        SmsClubDriver(SETTINGS).parse_send(TRIO, reply)
