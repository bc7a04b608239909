"""Golden request/reply tables for the dsc driver (docs/providers.md "dsc", seed 000)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.base import (
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
    RetryLater,
    StatusQuery,
    Submitted,
    Unknown,
    UnparseableReply,
    match_reply_entries,
)
from bridges.dsc import DscDriver

SETTINGS = BridgeSettings(
    base_url="http://127.0.0.1:1",
    credentials={
        "api_key": "key-1",
        "username": "acme",
        "password": "s3cret&=",
        "callback_username": "cb-user",
        "callback_password": "cb-pass",
    },
    callback_url="http://127.0.0.1:9750/dlr/dsc",
    default_sender="ACME",
)


def message(to: str, text: str = "Test from BulkSMS!", **changes: object) -> OutboundMessage:
    plain = OutboundMessage(msg_id=f"m{to}", to=to, text=text, encoding="GSM-7", reference=f"r{to}")
    return msgspec.structs.replace(plain, **changes)


TWO = [message("+250782589800"), message("+250782589801")]


def driver(settings: BridgeSettings = SETTINGS) -> DscDriver:
    return DscDriver(settings)


def json_reply(status: int, payload: object) -> HttpReply:
    return HttpReply(status=status, body=json.dumps(payload).encode())


def test_satisfies_the_driver_protocol() -> None:
    bridge: BridgeDriver = driver()
    assert bridge.name == "dsc"
    assert bridge.capabilities.max_recipients == 100
    assert bridge.capabilities.distinct_texts is False
    assert bridge.capabilities.delivery == "callback"
    assert bridge.capabilities.idempotency == "none"


@pytest.mark.parametrize(
    ("credentials", "callback_url", "missing"),
    [
        ({"username": "u", "password": "p"}, None, "api_key"),
        ({"api_key": "k", "username": "u", "password": "p"}, "http://x/dlr", "callback_username"),
    ],
)
def test_construction_names_missing_credentials(
    credentials: dict[str, str], callback_url: str | None, missing: str
) -> None:
    settings = BridgeSettings(
        base_url="http://x", credentials=credentials, callback_url=callback_url
    )
    with pytest.raises(ValueError, match=missing):
        DscDriver(settings)


# ── build_send ───────────────────────────────────────────────────────────────────


def test_build_send_is_the_exact_form_post() -> None:
    call = driver().build_send(TWO)
    assert call.method == "POST"
    assert call.path == "/api/v2/sms/send"
    assert call.query == ()
    assert ("content-type", "application/x-www-form-urlencoded") in call.headers
    assert call.body == (
        b"api_key=key-1&username=acme&password=s3cret%26%3D"
        b"&recipients=250782589800%2C250782589801"
        b"&message=Test+from+BulkSMS%21&sender=ACME"
        b"&dlrurl=http%3A%2F%2F127.0.0.1%3A9750%2Fdlr%2Fdsc%3Fusername%3Dcb-user%26password%3Dcb-pass"
    )


@pytest.mark.parametrize(
    ("batch", "settings", "expected_fields"),
    [
        # The message's own sender wins over the default; UTF-8 text survives.
        (
            [message("+250788000001", "Muraho ✓", sender="SHOP")],
            SETTINGS,
            [
                ("recipients", "250788000001"),
                ("message", "Muraho ✓"),
                ("sender", "SHOP"),
                ("dlrurl", "http://127.0.0.1:9750/dlr/dsc?username=cb-user&password=cb-pass"),
            ],
        ),
        # No report wanted: no dlrurl, so the provider never calls back.
        (
            [message("+250788000001", dlr=False)],
            SETTINGS,
            [("recipients", "250788000001"), ("message", "Test from BulkSMS!"), ("sender", "ACME")],
        ),
        # No sender anywhere and no callback URL: both optional fields are left out.
        (
            [message("+250788000001")],
            BridgeSettings(
                base_url="http://x",
                credentials={"api_key": "k", "username": "u", "password": "p"},
            ),
            [("recipients", "250788000001"), ("message", "Test from BulkSMS!")],
        ),
        # A callback URL with its own query keeps it; the credentials are appended.
        (
            [message("+250788000001")],
            BridgeSettings(
                base_url="http://x",
                credentials={
                    "api_key": "k",
                    "username": "u",
                    "password": "p",
                    "callback_username": "a b",
                    "callback_password": "p&q",
                },
                callback_url="https://septet.example/dlr/dsc?bridge=dsc",
            ),
            [
                ("recipients", "250788000001"),
                ("message", "Test from BulkSMS!"),
                (
                    "dlrurl",
                    "https://septet.example/dlr/dsc?bridge=dsc&username=a+b&password=p%26q",
                ),
            ],
        ),
    ],
)
def test_build_send_fields(
    batch: list[OutboundMessage],
    settings: BridgeSettings,
    expected_fields: list[tuple[str, str]],
) -> None:
    fields = parse_qsl(driver(settings).build_send(batch).body.decode(), keep_blank_values=True)
    assert fields[3:] == expected_fields
    assert [name for name, _ in fields[:3]] == ["api_key", "username", "password"]


def test_registered_dlrurl_carries_callback_credentials_the_callback_accepts() -> None:
    dlr_url = driver().callback_registration_url()
    assert dlr_url is not None
    registered = dict(parse_qsl(urlsplit(dlr_url).query))
    request = InboundRequest(
        method="GET",
        query={
            **registered,
            "dnis": "250782589800",
            "command": "deliver",
            "dlvrMsgId": "7",
            "dlvrMsgStat": "D",
        },
    )
    assert driver().parse_callback(request)[0].state == "DELIVRD"


@pytest.mark.parametrize(
    ("batch", "complaint"),
    [
        ([], "at least one"),
        ([message("+250788000001", "a"), message("+250788000002", "b")], "one text"),
        ([message(f"+2507880{index:05d}") for index in range(101)], "at most 100"),
    ],
)
def test_build_send_refuses_batches_the_api_cannot_carry(
    batch: list[OutboundMessage], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        driver().build_send(batch)


# ── parse_send ───────────────────────────────────────────────────────────────────

SEED_SUCCESS = {
    "status": "success",
    "totalmessages": 2,
    "totalcost": 150,
    "unit": "RWF",
    "response": [
        {
            "status": "sent",
            "messageid": "118579716",
            "recipient": "250782589800",
            "message": "Test from BulkSMS!",
            "cost": 75,
        },
        {
            "status": "failed",
            "messageid": "118579717",
            "recipient": "250782589801",
            "message": "Test from BulkSMS!",
            "cost": 75,
        },
    ],
}

FAILED = Rejected("failed", "dsc marked this recipient failed.")


def entry(status: str, messageid: object, recipient: str) -> dict[str, object]:
    return {"status": status, "messageid": messageid, "recipient": recipient, "cost": 75}


@pytest.mark.parametrize(
    ("batch", "reply", "expected"),
    [
        # The seed's own success response with a failed entry.
        (TWO, json_reply(200, SEED_SUCCESS), [Submitted("118579716", 75.0, "RWF"), FAILED]),
        # Entries in another order than the request: matched by recipient digits.
        (
            TWO,
            json_reply(
                200,
                {
                    "status": "success",
                    "unit": "RWF",
                    "response": [
                        entry("sent", "2", "250782589801"),
                        entry("sent", "1", "250782589800"),
                    ],
                },
            ),
            [Submitted("1", 75.0, "RWF"), Submitted("2", 75.0, "RWF")],
        ),
        # Fewer entries than recipients: the silent one may have gone out.
        (
            TWO,
            json_reply(
                200,
                {
                    "status": "success",
                    "unit": "RWF",
                    "response": [entry("sent", 9, "250782589801")],
                },
            ),
            [
                Unknown("missing", "dsc's reply has no entry for this recipient."),
                Submitted("9", 75.0, "RWF"),
            ],
        ),
        # The same number twice: each repeat takes the next unused entry.
        (
            [message("+250782589800"), message("+250782589800"), message("+250782589801")],
            json_reply(
                200,
                {
                    "status": "success",
                    "response": [
                        entry("sent", "5", "250782589801"),
                        entry("sent", "3", "250782589800"),
                        entry("failed", "4", "250782589800"),
                    ],
                },
            ),
            [Submitted("3", 75.0, "RWF"), FAILED, Submitted("5", 75.0, "RWF")],
        ),
        # Counts agree but the echoed numbers are in an unrecognised form: order wins.
        (
            TWO,
            json_reply(
                200,
                {
                    "status": "success",
                    "unit": "RWF",
                    "response": [
                        entry("sent", "1", "0782589800"),
                        entry("sent", "2", "0782589801"),
                    ],
                },
            ),
            [Submitted("1", 75.0, "RWF"), Submitted("2", 75.0, "RWF")],
        ),
        # An entry status the documents do not list: outcome unknown, never resent.
        (
            [TWO[0]],
            json_reply(
                200, {"status": "success", "response": [entry("queued", "1", "250782589800")]}
            ),
            [Unknown("queued", "dsc gave this recipient an unknown status 'queued'.")],
        ),
    ],
)
def test_parse_send_success_bodies(
    batch: list[OutboundMessage], reply: HttpReply, expected: list[Outcome]
) -> None:
    assert driver().parse_send(batch, reply) == expected


@pytest.mark.parametrize(
    ("status", "message_text", "expected_type", "reason_start"),
    [
        (
            429,
            "You have reached the daily SMS limit for testing mode.",
            Rejected,
            "dsc's daily limit for testing mode is reached",
        ),
        (400, "Invalid phone numbers: 0781234567", Rejected, "dsc rejected the request"),
        (400, "The message field is required.", Rejected, "dsc rejected the request"),
        (500, "Failed to send SMS via external gateway", RetryLater, "dsc's gateway failed"),
        (503, "Service Unavailable", RetryLater, "dsc's gateway failed"),
    ],
)
def test_parse_send_error_statuses_of_one_message(
    status: int, message_text: str, expected_type: type[Outcome], reason_start: str
) -> None:
    body: dict[str, object] = {"status": "error", "message": message_text}
    if status == 500:
        body["http_code"] = 500
    outcomes = driver().parse_send(TWO[:1], json_reply(status, body))
    assert len(outcomes) == 1
    for outcome in outcomes:
        assert isinstance(outcome, expected_type)
        assert isinstance(outcome, Rejected | RetryLater)
        assert outcome.code == str(status)
        assert outcome.reason == f"{reason_start}: {message_text}"


@pytest.mark.parametrize(
    ("status", "message_text"),
    [
        (400, "Invalid phone numbers: 250782589801"),
        (400, "The message field is required."),
        (429, "You have reached the daily SMS limit for testing mode."),
    ],
)
def test_a_refusal_of_a_whole_request_of_many_is_a_retry_for_each(
    status: int, message_text: str
) -> None:
    # docs/providers.md "dsc": one bad number rejects the whole request, and the testing-mode
    # limit refuses a request that would pass it. Nothing was sent; alone, each message
    # gets its own answer (engine.scheduler sends every resend alone).
    outcomes = driver().parse_send(
        TWO, json_reply(status, {"status": "error", "message": message_text})
    )
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, RetryLater)
        assert outcome.code == str(status)
        assert message_text in outcome.reason
        assert "whole request of 2" in outcome.reason
    error_at_200 = json_reply(200, {"status": "error", "message": message_text})
    assert {type(outcome) for outcome in driver().parse_send(TWO, error_at_200)} == {RetryLater}


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (
            json_reply(401, {"status": "error", "message": "Invalid API key or credentials"}),
            "Invalid API key or credentials",
        ),
        (HttpReply(status=401, body=b""), "(empty body)"),
        (HttpReply(status=401, body=b"<html>Unauthorized</html>"), "<html>Unauthorized</html>"),
    ],
)
def test_credentials_refused_is_the_accounts_fault_for_every_message(
    reply: HttpReply, said: str
) -> None:
    # docs/providers.md "dsc": 401 "Invalid API key or credentials" refuses the account, so
    # the engine fails the messages over instead of marking them REJECTD.
    refused = AccountRefused("401", f"dsc refused the account credentials: {said}", "credentials")
    assert driver().parse_send(TWO, reply) == [refused, refused]


def test_error_status_with_an_html_body_still_decides_by_status() -> None:
    reply = HttpReply(status=502, body=b"<html><body>Bad Gateway</body></html>")
    assert driver().parse_send(TWO[:1], reply) == [
        RetryLater("502", "dsc's gateway failed: <html><body>Bad Gateway</body></html>")
    ]
    assert driver().parse_send(TWO[:1], HttpReply(status=429, body=b"")) == [
        Rejected("429", "dsc's daily limit for testing mode is reached: (empty body)")
    ]


def test_error_body_at_http_200_is_final() -> None:
    reply = json_reply(200, {"status": "error", "message": "Invalid API key or credentials"})
    assert driver().parse_send(TWO[:1], reply) == [
        Rejected("error", "dsc refused the request: Invalid API key or credentials")
    ]


@pytest.mark.parametrize(
    "reply",
    [
        HttpReply(status=200, body=b""),
        HttpReply(status=200, body=b"<html>maintenance</html>"),
        HttpReply(status=200, body=b"[]"),
        HttpReply(status=200, body=b'{"status": "pending"}'),
        HttpReply(status=200, body=b'{"status": "success", "response": {"a": 1}}'),
        HttpReply(status=200, body=b'{"status": "success", "response": [{"messageid": "1"}]}'),
        HttpReply(status=200, body=b'{"x":' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        HttpReply(status=302, body=b""),
        HttpReply(status=404, body=b"Not Found"),
    ],
)
def test_parse_send_unparseable_replies_raise(reply: HttpReply) -> None:
    with pytest.raises(UnparseableReply):
        driver().parse_send(TWO, reply)


@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=512))
def test_parse_send_raises_nothing_but_unparseable_reply(status: int, body: bytes) -> None:
    try:
        outcomes = driver().parse_send(TWO, HttpReply(status=status, body=body))
    except UnparseableReply:
        return
    assert len(outcomes) == len(TWO)


@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["status", "response", "messageid", "recipient", "cost", "unit"]),
                children,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_parse_send_on_arbitrary_json_raises_nothing_but_unparseable_reply(body: object) -> None:
    try:
        outcomes = driver().parse_send(TWO, json_reply(200, body))
    except UnparseableReply:
        return
    assert len(outcomes) == len(TWO)


@pytest.mark.parametrize(
    ("wanted", "given_numbers", "expected"),
    [
        (["1", "2"], ["1", "2"], [0, 1]),
        (["1", "2"], ["", ""], [0, 1]),
        (["1", "2"], ["2", "1"], [1, 0]),
        (["1", "2", "3"], ["3"], [None, None, 0]),
        (["1", "1"], ["1", "1"], [0, 1]),
        (["1", "2"], ["8", "9"], [0, 1]),
        ([], [], []),
    ],
)
def test_match_entries(
    wanted: list[str], given_numbers: list[str], expected: list[int | None]
) -> None:
    assert match_reply_entries(wanted, given_numbers) == expected


# ── delivery reports ─────────────────────────────────────────────────────────────


def test_no_status_polling() -> None:
    queries = [StatusQuery(provider_id="1", reference="r")]
    assert driver().build_status(queries) is None
    assert driver().parse_status(queries, HttpReply(status=200, body=b"")) == []


def callback(**changes: str | None) -> InboundRequest:
    """The seed's example callback, with the credentials septet registered."""
    query: dict[str, str | None] = {
        "dnis": "250782589800",
        "username": "cb-user",
        "password": "cb-pass",
        "command": "deliver",
        "dlvrMsgId": "118579716",
        "dlvrMsgStat": "D",
    }
    query.update(changes)
    return InboundRequest(
        method="GET", query={name: value for name, value in query.items() if value is not None}
    )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            callback(),
            Receipt(
                provider_id="118579716",
                state="DELIVRD",
                provider_status="D",
                final=True,
                recipient="+250782589800",
            ),
        ),
        (
            callback(dlvrMsgStat="U", dlvrMsgId="118579717"),
            Receipt(
                provider_id="118579717",
                state="UNDELIV",
                provider_status="U",
                final=True,
                recipient="+250782589800",
            ),
        ),
        (
            callback(dlvrMsgStat="X"),
            Receipt(
                provider_id="118579716",
                state="UNKNOWN",
                provider_status="X",
                final=True,
                recipient="+250782589800",
            ),
        ),
        (
            callback(dlvrMsgStat=None, dnis=None, command=None),
            Receipt(provider_id="118579716", state="UNKNOWN", provider_status="", final=True),
        ),
    ],
)
def test_parse_callback(request_: InboundRequest, expected: Receipt) -> None:
    assert driver().parse_callback(request_) == [expected]


@pytest.mark.parametrize(
    "request_",
    [
        callback(password="wrong"),
        callback(username="SmsChannelUsername"),
        callback(username=None),
        callback(password=None),
        callback(password="cb-pas"),
        callback(password="cb-pass\u00e9"),
    ],
)
def test_parse_callback_rejects_bad_credentials(request_: InboundRequest) -> None:
    with pytest.raises(CallbackRejected):
        driver().parse_callback(request_)


def test_parse_callback_refuses_everything_without_callback_credentials() -> None:
    settings = BridgeSettings(
        base_url="http://x", credentials={"api_key": "k", "username": "u", "password": "p"}
    )
    with pytest.raises(CallbackRejected):
        DscDriver(settings).parse_callback(callback())


@pytest.mark.parametrize(
    ("request_", "complaint"),
    [
        (callback(dlvrMsgId=None), "dlvrMsgId"),
        (callback(dlvrMsgId=""), "dlvrMsgId"),
        (callback(command="submit"), "command=deliver"),
    ],
)
def test_parse_callback_malformed_raises_value_error(
    request_: InboundRequest, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        driver().parse_callback(request_)


def test_registered_dlrurl_replaces_credentials_already_in_the_callback_url() -> None:
    settings = msgspec.structs.replace(
        SETTINGS, callback_url="http://127.0.0.1:9750/dlr/dsc?username=old&password=old&x=1"
    )
    assert (
        DscDriver(settings).callback_registration_url()
        == "http://127.0.0.1:9750/dlr/dsc?x=1&username=cb-user&password=cb-pass"
    )
