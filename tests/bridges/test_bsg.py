"""Golden request/reply tables for the bsg driver (seed 002, docs/providers.md "bsg")."""

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
    UnparseableReply,
)
from bridges.bsg import (
    CAPABILITIES,
    BsgBalance,
    BsgDriver,
    coerce_float,
    coerce_int,
    coerce_text,
    validity_hours,
)

SETTINGS = BridgeSettings(
    base_url="http://127.0.0.1:8080",
    credentials={"api_key": "test_demo"},
    default_sender="ACME",
)
HEADERS = (
    ("X-API-KEY", "test_demo"),
    ("Content-Type", "application/json"),
    ("Accept", "application/json"),
)


def outbound(
    to: str = "+380972000001",
    reference: str = "ref_1",
    text: str = "test sms",
    sender: str | None = None,
    validity_s: int | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        msg_id=reference,
        to=to,
        text=text,
        encoding="GSM-7",
        reference=reference,
        sender=sender,
        validity_s=validity_s,
    )


PAIR = [outbound("+380972000001", "12erdgm9"), outbound("+380972000002", "12erdgn0")]


def json_reply(body: object, status: int = 200) -> HttpReply:
    return HttpReply(status=status, body=msgspec.json.encode(body))


def sent_body(call: HttpCall) -> Any:
    return msgspec.json.decode(call.body)


def test_driver_satisfies_the_contract() -> None:
    driver: BridgeDriver = BsgDriver(SETTINGS)
    assert driver.name == "bsg"
    assert driver.capabilities == CAPABILITIES
    assert (CAPABILITIES.max_recipients, CAPABILITIES.distinct_texts) == (50, True)
    assert (CAPABILITIES.delivery, CAPABILITIES.idempotency) == ("poll", "reference")
    # docs/providers.md "BSG mass status" (≤ 100 ids) and Anti-abuse (one poll a minute).
    assert (CAPABILITIES.max_status_ids, CAPABILITIES.min_poll_interval_s) == (100, 60.0)


@pytest.mark.parametrize(
    ("credentials", "options"),
    [
        ({}, {}),
        ({"api_key": ""}, {}),
        ({"api_key": "k"}, {"tariff": "10"}),
        ({"api_key": "k"}, {"tariff": "x"}),
        ({"api_key": "k"}, {"blocked_code": "4"}),
        ({"api_key": "k"}, {"blocked_code": ""}),
    ],
)
def test_settings_without_key_or_with_bad_options_are_refused(
    credentials: dict[str, str], options: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="bsg"):
        BsgDriver(
            BridgeSettings(base_url="http://127.0.0.1:1", credentials=credentials, options=options)
        )


# ── build_send ────────────────────────────────────────────────────────────────────


def test_single_message_is_the_seed_phone_request() -> None:
    message = outbound("+380501234567", "reference_id", sender="sender")
    call = BsgDriver(SETTINGS).build_send([message])
    assert (call.method, call.path, call.query, call.headers) == (
        "POST",
        "/rest/sms/create",
        (),
        HEADERS,
    )
    # The seed's sample, without its optional "2way".
    assert sent_body(call) == {
        "destination": "phone",
        "msisdn": "380501234567",
        "reference": "reference_id",
        "originator": "sender",
        "body": "test sms",
    }


def test_same_text_and_sender_is_the_seed_bulk_request() -> None:
    settings = BridgeSettings(
        base_url="http://127.0.0.1:1", credentials={"api_key": "k"}, options={"tariff": "9"}
    )
    batch = [
        outbound("+380972000001", "12erdgm9", sender="test", validity_s=72 * 3600),
        outbound("+380972000002", "12erdgn0", sender="test", validity_s=72 * 3600),
    ]
    assert sent_body(BsgDriver(settings).build_send(batch)) == {
        "destination": "phones",
        "phones": [
            {"msisdn": "380972000001", "reference": "12erdgm9"},
            {"msisdn": "380972000002", "reference": "12erdgn0"},
        ],
        "originator": "test",
        "body": "test sms",
        "validity": 72,
        "tariff": 9,
    }


def test_different_senders_and_texts_are_the_seed_individual_request() -> None:
    settings = BridgeSettings(
        base_url="http://127.0.0.1:1", credentials={"api_key": "k"}, options={"tariff": "9"}
    )
    batch = [
        outbound(
            "+380972000001", "12erdgm9", text="test sms1", sender="test1", validity_s=72 * 3600
        ),
        outbound(
            "+380972000002", "12erdgn0", text="test sms2", sender="test2", validity_s=72 * 3600
        ),
    ]
    assert sent_body(BsgDriver(settings).build_send(batch)) == {
        "destination": "individual",
        "phones": [
            {
                "msisdn": "380972000001",
                "reference": "12erdgm9",
                "originator": "test1",
                "body": "test sms1",
            },
            {
                "msisdn": "380972000002",
                "reference": "12erdgn0",
                "originator": "test2",
                "body": "test sms2",
            },
        ],
        "validity": 72,
        "tariff": 9,
    }


@pytest.mark.parametrize(
    ("texts", "senders", "destination"),
    [
        (["a"], [None], "phone"),
        (["a", "a"], [None, None], "phones"),
        (["a", "a"], [None, "ACME"], "phones"),  # None falls back to the default sender ACME
        (["a", "a", "a"], ["X", "X", "X"], "phones"),
        (["a", "b"], [None, None], "individual"),
        (["a", "a"], ["X", "Y"], "individual"),
        (["a", "a", "b"], ["X", "X", "X"], "individual"),
    ],
)
def test_mode_follows_texts_and_senders(
    texts: list[str], senders: list[str | None], destination: str
) -> None:
    batch = [
        outbound(f"+38097200000{i}", f"r{i}", text=text, sender=sender)
        for i, (text, sender) in enumerate(zip(texts, senders, strict=True))
    ]
    assert sent_body(BsgDriver(SETTINGS).build_send(batch))["destination"] == destination


@pytest.mark.parametrize(
    ("validity_s", "hours"),
    [
        (1, 1),
        (3599, 1),
        (3600, 1),
        (3601, 2),
        (86400, 24),
        (72 * 3600, 72),
        (72 * 3600 + 1, 72),
        (10**7, 72),
    ],
)
def test_validity_is_rounded_up_to_hours_and_clamped(validity_s: int, hours: int) -> None:
    assert validity_hours(validity_s) == hours
    assert (
        sent_body(BsgDriver(SETTINGS).build_send([outbound(validity_s=validity_s)]))["validity"]
        == hours
    )


def test_batch_validity_is_the_shortest_and_absent_when_none_is_asked() -> None:
    batch = [outbound(reference="a", validity_s=None), outbound(reference="b", validity_s=7200)]
    batch.append(outbound(reference="c", validity_s=36000))
    assert sent_body(BsgDriver(SETTINGS).build_send(batch))["validity"] == 2
    assert "validity" not in sent_body(BsgDriver(SETTINGS).build_send([outbound()]))


def test_originator_falls_back_to_default_sender_and_is_omitted_without_one() -> None:
    assert sent_body(BsgDriver(SETTINGS).build_send([outbound()]))["originator"] == "ACME"
    bare = BsgDriver(BridgeSettings(base_url="http://127.0.0.1:1", credentials={"api_key": "k"}))
    assert "originator" not in sent_body(bare.build_send([outbound()]))


@pytest.mark.parametrize("size", [0, 51])
def test_batch_outside_one_to_fifty_is_refused(size: int) -> None:
    batch = [outbound(f"+3809720{i:05d}", f"r{i}") for i in range(size)]
    with pytest.raises(ValueError, match="bsg"):
        BsgDriver(SETTINGS).build_send(batch)


def test_fifty_messages_fit_one_request() -> None:
    batch = [outbound(f"+3809720{i:05d}", f"r{i}") for i in range(50)]
    assert len(sent_body(BsgDriver(SETTINGS).build_send(batch))["phones"]) == 50


# ── parse_send ────────────────────────────────────────────────────────────────────

SEED_SINGLE = {
    "error": "0",
    "id": "22125",
    "reference": "12erdgm9",
    "price": "0.02",
    "currency": "EUR",
}
SEED_BULK = {
    "result": [
        {"reference": "12erdgm9", "id": "12345", "error": "0", "price": "0.02", "currency": "EUR"},
        {"reference": "12erdgn0", "id": "12346", "error": "0", "price": "0.02", "currency": "EUR"},
    ],
    "error": "0",
    "task_id": "21902",
}
SEED_INDIVIDUAL = {**SEED_BULK, "totalprice": "0.04", "currency": "EUR"}
SEED_INDIVIDUAL.pop("task_id")
BOTH_OK = [Submitted("12345", 0.02, "EUR"), Submitted("12346", 0.02, "EUR")]


@pytest.mark.parametrize(
    ("batch", "body", "expected"),
    [
        pytest.param(
            PAIR[:1], SEED_SINGLE, [Submitted("22125", 0.02, "EUR")], id="seed-single-strings"
        ),
        pytest.param(
            PAIR[:1],
            {"error": 0, "id": 22125, "reference": "12erdgm9", "price": 0.02, "currency": "EUR"},
            [Submitted("22125", 0.02, "EUR")],
            id="single-numbers",
        ),
        pytest.param(
            PAIR[:1],
            {
                "result": {
                    "id": "22125",
                    "reference": "12erdgm9",
                    "price": "0.02",
                    "currency": "EUR",
                }
            },
            [Submitted("22125", 0.02, "EUR")],
            id="single-wrapped-no-error",
        ),
        pytest.param(
            PAIR[:1],
            {"result": {"error": 0, "id": 22125, "price": 0.02, "currency": "EUR"}, "error": "0"},
            [Submitted("22125", 0.02, "EUR")],
            id="single-wrapped-no-reference",
        ),
        pytest.param(PAIR, SEED_BULK, BOTH_OK, id="seed-bulk"),
        pytest.param(PAIR, SEED_INDIVIDUAL, BOTH_OK, id="seed-individual"),
        pytest.param(
            PAIR,
            {"result": list(reversed(SEED_BULK["result"])), "error": 0, "task_id": 21902},
            BOTH_OK,
            id="bulk-matched-by-reference",
        ),
        pytest.param(
            PAIR,
            {
                "result": [
                    {"id": 12345, "error": 0, "price": 0.02},
                    {"id": 12346, "error": 0, "price": 0.02},
                ],
                "error": 0,
                "currency": "EUR",
            },
            BOTH_OK,
            id="bulk-matched-by-order-top-level-currency",
        ),
        pytest.param(
            PAIR,
            {
                "result": [
                    {
                        "reference": "12erdgm9",
                        "id": "12345",
                        "error": "0",
                        "price": "0.02",
                        "currency": "EUR",
                    },
                    {"reference": "12erdgn0", "error": "21"},
                ],
                "error": "0",
                "task_id": "21902",
            },
            [
                Submitted("12345", 0.02, "EUR"),
                Rejected("21", "BSG refused the phone number", "number"),
            ],
            id="bulk-partial-failure",
        ),
        pytest.param(
            PAIR,
            {"result": [{"reference": "12erdgn0", "error": 23}], "error": 0},
            [
                RetryLater("0", "BSG's reply did not mention this message"),
                Submitted(None),
            ],
            id="bulk-one-missing-one-reference-exists",
        ),
        pytest.param(
            PAIR,
            {"error": 25, "errorDescription": "Invalid originator"},
            [
                Rejected(
                    "25", "BSG refused the sender (originator) (BSG: Invalid originator)", "sender"
                )
            ]
            * 2,
            id="request-level-error-applies-to-all",
        ),
        pytest.param(
            PAIR,
            {"result": [{"reference": "12erdgm9"}, {"reference": "12erdgn0"}], "error": "8"},
            [AccountRefused("8", "the BSG account does not have enough money", "credit")] * 2,
            id="entries-inherit-request-level-error",
        ),
        pytest.param(
            PAIR[:1],
            {"error": 0, "id": "5", "reference": "12erdgm9", "price": "n/a", "currency": 7},
            [Submitted("5", None, None)],
            id="uncoercible-price-and-currency-are-dropped",
        ),
    ],
)
def test_send_replies(batch: list[OutboundMessage], body: object, expected: list[Outcome]) -> None:
    assert BsgDriver(SETTINGS).parse_send(batch, json_reply(body)) == expected


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (1, AccountRefused),
        (2, AccountRefused),
        (3, Rejected),
        (4, Rejected),
        (5, RetryLater),
        (6, Rejected),
        (7, Rejected),
        (8, AccountRefused),
        (10, Rejected),
        (11, Throttled),
        (12, Rejected),
        (20, Rejected),
        (21, Rejected),
        (22, Rejected),
        (24, Rejected),
        (25, Rejected),
        (26, Rejected),
        (27, Rejected),
        (28, Rejected),
        (31, Rejected),
        (99, Rejected),
    ],
)
@pytest.mark.parametrize("as_text", [False, True])
def test_every_documented_error_code(code: int, kind: type[Outcome], as_text: bool) -> None:
    body = {"error": str(code) if as_text else code, "errorDescription": "described"}
    [outcome] = BsgDriver(SETTINGS).parse_send(PAIR[:1], json_reply(body))
    assert isinstance(outcome, kind)
    assert not isinstance(outcome, Submitted)
    assert outcome.code == str(code)
    assert outcome.reason.endswith("(BSG: described)")
    assert len(outcome.reason) > len("(BSG: described)") + 10


@pytest.mark.parametrize(
    ("blocked_code", "code", "expected"),
    [
        # docs/providers.md "bsg" Error codes: 1 invalid API key, 8 not enough money, and 2/3
        # account blocked / not enough parameters (configurable: option blocked_code).
        ("2", 1, AccountRefused("1", "BSG refused the API key", "credentials")),
        ("2", 8, AccountRefused("8", "the BSG account does not have enough money", "credit")),
        ("2", 2, AccountRefused("2", "BSG says the account is blocked", "blocked")),
        ("2", 3, Rejected("3", "BSG says the request lacks parameters")),
        ("3", 3, AccountRefused("3", "BSG says the account is blocked", "blocked")),
        ("3", 2, Rejected("2", "BSG says the request lacks parameters")),
        ("3", 1, AccountRefused("1", "BSG refused the API key", "credentials")),
    ],
)
def test_account_faults_are_the_bridges_not_the_messages(
    blocked_code: str, code: int, expected: Outcome
) -> None:
    settings = msgspec.structs.replace(SETTINGS, options={"blocked_code": blocked_code})
    driver = BsgDriver(settings)
    # A request-level error applies to every message; a per-phone entry to its own.
    assert driver.parse_send(PAIR, json_reply({"error": str(code)})) == [expected] * 2
    per_phone = {
        "result": [
            {"reference": "12erdgm9", "id": "12345", "error": 0, "price": 0.02},
            {"reference": "12erdgn0", "error": code},
        ],
        "error": 0,
        "currency": "EUR",
    }
    assert driver.parse_send(PAIR, json_reply(per_phone)) == [
        Submitted("12345", 0.02, "EUR"),
        expected,
    ]


@pytest.mark.parametrize("error", [23, "23"])
def test_reference_exists_means_the_first_attempt_went_through(error: object) -> None:
    body = {"error": error, "errorDescription": "Reference already exists"}
    assert BsgDriver(SETTINGS).parse_send(PAIR[:1], json_reply(body)) == [Submitted(None)]


MSISDN_REPEATED = {"error": "31", "errorDescription": "Msisdn repeated in one request"}


def test_a_request_refused_whole_for_a_repeated_msisdn_is_a_retry_for_each() -> None:
    # Issue 17: BSG refuses the whole request (31) for two phones alike; nothing of it
    # was sent, so every message gets a retry, and resends travel alone.
    batch = [*PAIR, outbound("+380972000001", "12erdgn1")]
    outcomes = BsgDriver(SETTINGS).parse_send(batch, json_reply(MSISDN_REPEATED))
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, RetryLater)
        assert outcome.code == "31"
        assert outcome.reason == (
            "the same phone number appears twice in one BSG request (BSG: Msisdn repeated "
            "in one request); BSG refused the whole request, nothing of it was sent"
        )


@pytest.mark.parametrize("code", [21, 22, 23, 27, 31])
def test_request_level_codes_of_one_messages_field_are_retries_in_a_request_of_many(
    code: int,
) -> None:
    body = {"error": code, "errorDescription": "described"}
    outcomes = BsgDriver(SETTINGS).parse_send(PAIR, json_reply(body))
    assert [(type(o), getattr(o, "code", None)) for o in outcomes] == [(RetryLater, str(code))] * 2


@pytest.mark.parametrize(
    ("code", "batch", "kind"),
    [
        # The originator and body are one per request in phones mode: a refusal of them
        # is every message's own, final.
        (25, PAIR, Rejected),
        (26, PAIR, Rejected),
        # In individual mode each message has its own: one of them may be at fault.
        (25, [PAIR[0], outbound("+380972000002", "b", sender="Other")], RetryLater),
        (26, [PAIR[0], outbound("+380972000002", "b", text="other text")], RetryLater),
        # Codes about what the request shares stay final for all.
        (28, PAIR, Rejected),
        (24, PAIR, Rejected),
    ],
    ids=["25-shared", "26-shared", "25-individual", "26-individual", "28", "24"],
)
def test_originator_and_text_refusals_are_retries_only_where_the_messages_differ(
    code: int, batch: list[OutboundMessage], kind: type[Outcome]
) -> None:
    outcomes = BsgDriver(SETTINGS).parse_send(batch, json_reply({"error": code}))
    assert [type(outcome) for outcome in outcomes] == [kind, kind]


def test_a_message_alone_gets_the_code_for_itself() -> None:
    driver = BsgDriver(SETTINGS)
    assert [type(o) for o in driver.parse_send(PAIR[:1], json_reply(MSISDN_REPEATED))] == [Rejected]
    reference_exists = {"error": 23, "errorDescription": "Reference already exists"}
    assert driver.parse_send(PAIR[:1], json_reply(reference_exists)) == [Submitted(None)]


def test_per_phone_31_stays_with_its_message() -> None:
    per_phone = {
        "result": [
            {"reference": "12erdgm9", "id": "12345", "error": 0, "price": 0.02},
            {"reference": "12erdgn0", "error": 31},
        ],
        "error": 0,
    }
    outcomes = BsgDriver(SETTINGS).parse_send(PAIR, json_reply(per_phone))
    assert outcomes[0] == Submitted("12345", 0.02, None)
    assert isinstance(outcomes[1], Rejected)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, RetryLater), (502, RetryLater), (503, RetryLater), (404, RetryLater), (429, Throttled)],
)
def test_non_200_is_retried_safely(status: int, kind: type[Outcome]) -> None:
    reply = HttpReply(status=status, body=b"<html>Bad Gateway</html>")
    outcomes = BsgDriver(SETTINGS).parse_send(PAIR, reply)
    assert [type(o) for o in outcomes] == [kind, kind]
    assert all(isinstance(o, RetryLater | Throttled) and o.code == str(status) for o in outcomes)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"\xff\xfe",
        b"[]",
        b'"0"',
        b"{}",
        b'{"error": "abc"}',
        b'{"error": true}',
        b'{"error": [0]}',
        b'{"result": "x", "error": 0}',
        b'{"result": [1, 2], "error": 0}',
        b'{"result": [{"reference": "12erdgm9"}]}',
        b'{"result": [{"reference": "12erdgm9", "error": "x"}], "error": 0}',
    ],
)
def test_garbage_send_reply_is_unparseable(body: bytes) -> None:
    with pytest.raises(UnparseableReply):
        BsgDriver(SETTINGS).parse_send(PAIR, HttpReply(status=200, body=body))


# ── Coercion ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("value", "integer", "number", "text"),
    [
        (0, 0, 0.0, "0"),
        ("0", 0, 0.0, "0"),
        (" 25 ", 25, 25.0, " 25 "),
        (22125, 22125, 22125.0, "22125"),
        (3.0, 3, 3.0, "3"),
        ("3.0", 3, 3.0, "3.0"),
        (0.02, None, 0.02, None),
        ("0.02", None, 0.02, "0.02"),
        ("abc", None, None, "abc"),
        ("", None, None, None),
        ("nan", None, None, "nan"),
        (float("inf"), None, None, None),
        (True, None, None, None),
        (None, None, None, None),
        ([1], None, None, None),
    ],
)
def test_string_or_number_coercion(
    value: object, integer: int | None, number: float | None, text: str | None
) -> None:
    assert coerce_int(value) == integer
    assert coerce_float(value) == number
    assert coerce_text(value) == text


# ── Status ────────────────────────────────────────────────────────────────────────


def test_messages_with_ids_are_polled_by_mass_status_up_to_100_at_once() -> None:
    queries = [StatusQuery(provider_id=str(22125 + n), reference=f"r{n}") for n in range(100)]
    call = BsgDriver(SETTINGS).build_status(queries)
    assert call == HttpCall(
        method="POST",
        path="/rest/sms/getStatus",
        headers=HEADERS,
        body=msgspec.json.encode({"ids": [22125 + n for n in range(100)]}),
    )
    with pytest.raises(ValueError, match="at most 100"):
        BsgDriver(SETTINGS).build_status([*queries, StatusQuery(provider_id="1", reference="x")])


@pytest.mark.parametrize(
    ("query", "path"),
    [
        (StatusQuery(provider_id=None, reference="12erdgm9"), "/rest/sms/reference/12erdgm9"),
        (StatusQuery(provider_id="a/b", reference="x"), "/rest/sms/a%2Fb"),
    ],
)
def test_a_message_without_a_numeric_id_is_polled_alone(query: StatusQuery, path: str) -> None:
    call = BsgDriver(SETTINGS).build_status([query])
    assert call == HttpCall(method="GET", path=path, headers=HEADERS)


def test_a_message_without_an_id_is_never_batched() -> None:
    driver = BsgDriver(SETTINGS)
    assert driver.build_status([]) is None
    mixed = [
        StatusQuery(provider_id="1", reference="a"),
        StatusQuery(provider_id=None, reference="b"),
    ]
    with pytest.raises(ValueError, match="on its own"):
        driver.build_status(mixed)
    with pytest.raises(ValueError, match="numeric ids"):
        driver.build_status([StatusQuery(provider_id="x", reference="a"), *mixed[:1]])


def test_a_mass_status_reply_gives_one_receipt_per_item_with_its_reference() -> None:
    queries = [
        StatusQuery(provider_id="22125", reference="12erdgm9"),
        StatusQuery(provider_id="22126", reference="12erdgn0"),
        StatusQuery(provider_id="22127", reference="gone"),
    ]
    body = {
        "result": [
            {
                "id": "22125",
                "external_id": "12erdgm9",
                "msisdn": "380972000001",
                "status": "delivered",
            },
            {"id": 22126, "msisdn": "380972000002", "status": "unknown"},
        ]
    }
    receipts = BsgDriver(SETTINGS).parse_status(queries, json_reply(body))
    assert [(r.provider_id, r.reference, r.state, r.final) for r in receipts] == [
        ("22125", "12erdgm9", "DELIVRD", True),
        ("22126", "12erdgn0", "UNKNOWN", False),  # the reference from the query asked
    ]


QUERY = StatusQuery(provider_id="22125", reference="12erdgm9")


def status_object(status: str) -> dict[str, object]:
    return {
        "id": "22125",
        "msisdn": "380972000001",
        "reference": "12erdgm9",
        "time_in": "2026-11-22 08:00:00",
        "time_sent": "2026-11-22 08:00:01",
        "time_dr": "2026-11-22 08:00:05",
        "status": status,
        "price": "0.02",
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    ("status", "state", "final"),
    [
        ("delivered", "DELIVRD", True),
        ("undeliverable", "UNDELIV", True),
        ("failed", "UNDELIV", True),
        ("expired", "EXPIRED", True),
        ("rejected", "REJECTD", True),
        ("deleted", "DELETED", True),
        ("scheduled", "ACCEPTD", False),
        ("new", "ACCEPTD", False),
        ("waiting", "ACCEPTD", False),
        ("sent", "ENROUTE", False),
        ("unknown", "UNKNOWN", False),
        ("Delivered", "DELIVRD", True),
        ("something-new", "UNKNOWN", False),
    ],
)
@pytest.mark.parametrize("shape", ["flat", "wrapped", "list", "wrapped-list"])
def test_status_words_map_to_smpp_states(
    status: str, state: SmppState, final: bool, shape: str
) -> None:
    entry = status_object(status)
    body: object = {
        "flat": entry,
        "wrapped": {"result": entry, "error": 0},
        "list": [entry],
        "wrapped-list": {"result": [entry], "error": "0"},
    }[shape]
    assert BsgDriver(SETTINGS).parse_status([QUERY], json_reply(body)) == [
        Receipt(
            provider_id="22125",
            state=state,
            provider_status=status,
            final=final,
            reference="12erdgm9",
            recipient="380972000001",
        )
    ]


def test_status_by_reference_fills_in_what_the_object_lacks() -> None:
    query = StatusQuery(provider_id=None, reference="12erdgm9")
    body = {"id": 22125, "status": "delivered", "msisdn": 380972000001}
    assert BsgDriver(SETTINGS).parse_status([query], json_reply(body)) == [
        Receipt(
            provider_id="22125",
            state="DELIVRD",
            provider_status="delivered",
            final=True,
            reference="12erdgm9",
            recipient="380972000001",
        )
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"id": "22125", "reference": "12erdgm9", "status": "unknown"},
        {"id": 22125, "status": "unknown"},
        {"error": 0, "result": {"id": "22125", "external_id": "12erdgm9", "status": "unknown"}},
        # Whatever the object says its reference is, the engine looks the message up by
        # the one it asked for.
        {"id": "22125", "reference": "12ERDGM9", "status": "unknown"},
    ],
)
def test_status_by_reference_carries_the_id_learned_and_the_reference_asked(
    body: object,
) -> None:
    query = StatusQuery(provider_id=None, reference="12erdgm9")
    [receipt] = BsgDriver(SETTINGS).parse_status([query], json_reply(body))
    assert (receipt.provider_id, receipt.reference) == ("22125", "12erdgm9")
    assert (receipt.state, receipt.final) == ("UNKNOWN", False)


def test_status_by_id_takes_the_reference_from_the_object_or_its_mass_status_name() -> None:
    mass_status_item = {"id": "22125", "external_id": "12erdgm9", "status": "delivered"}
    [receipt] = BsgDriver(SETTINGS).parse_status([QUERY], json_reply(mass_status_item))
    assert (receipt.provider_id, receipt.reference, receipt.final) == ("22125", "12erdgm9", True)


def test_task_list_skips_entries_with_errors() -> None:
    body = {"result": [status_object("sent"), {"reference": "gone", "error": 20}], "error": 0}
    queries = [QUERY, StatusQuery(provider_id=None, reference="gone")]
    [receipt] = BsgDriver(SETTINGS).parse_status(queries, json_reply(body))
    assert (receipt.provider_id, receipt.state, receipt.final) == ("22125", "ENROUTE", False)


@pytest.mark.parametrize(
    "reply",
    [
        json_reply({"error": 20, "errorDescription": "Not found"}),
        json_reply({"error": "20"}),
        json_reply({"error": 1, "errorDescription": "Invalid API key"}),
        HttpReply(status=503, body=b"unavailable"),
    ],
)
def test_status_errors_give_no_receipts(reply: HttpReply) -> None:
    assert BsgDriver(SETTINGS).parse_status([QUERY], reply) == []


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"7",
        b'{"id": "1"}',
        b'{"status": 3}',
        b"[1]",
        b'{"result": ["x"]}',
        b'{"error": "?"}',
    ],
)
def test_garbage_status_reply_is_unparseable(body: bytes) -> None:
    with pytest.raises(UnparseableReply):
        BsgDriver(SETTINGS).parse_status([QUERY], HttpReply(status=200, body=body))


def test_no_delivery_callbacks() -> None:
    request = InboundRequest(method="GET", query={"id": "1"})
    with pytest.raises(ValueError, match="bsg sends no delivery callbacks"):
        BsgDriver(SETTINGS).parse_callback(request)


# ── Balance ───────────────────────────────────────────────────────────────────────


def test_balance_request_and_reply() -> None:
    driver = BsgDriver(SETTINGS)
    assert driver.build_balance() == HttpCall(
        method="GET", path="/rest/common/balance", headers=HEADERS
    )
    assert driver.parse_balance(
        json_reply({"error": 0, "amount": "12.5", "currency": "EUR", "limit": "0"})
    ) == (BsgBalance(amount=12.5, currency="EUR", limit=0.0))
    assert driver.parse_balance(
        json_reply({"result": {"amount": 3, "currency": "EUR"}})
    ) == BsgBalance(amount=3.0, currency="EUR")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": 1, "errorDescription": "Invalid API key"},
            AccountRefused("1", "BSG refused the API key (BSG: Invalid API key)", "credentials"),
        ),
        (
            {"error": "2", "errorDescription": "Account blocked"},
            AccountRefused(
                "2", "BSG says the account is blocked (BSG: Account blocked)", "blocked"
            ),
        ),
    ],
)
def test_balance_of_a_refused_account_is_the_refusal(
    body: object, expected: AccountRefused
) -> None:
    # docs/providers.md "bsg": 1 invalid API key, 2 account blocked (blocked_code 2).
    assert BsgDriver(SETTINGS).parse_balance(json_reply(body)) == expected


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (json_reply({"error": 4, "errorDescription": "Method not supported"}), "method"),
        (json_reply({"error": 0, "currency": "EUR"}), "amount"),
        (HttpReply(status=500, body=b"oops"), "HTTP 500"),
        (HttpReply(status=200, body=b"oops"), "not JSON"),
    ],
)
def test_balance_errors_raise(reply: HttpReply, match: str) -> None:
    with pytest.raises(UnparseableReply, match=match):
        BsgDriver(SETTINGS).parse_balance(reply)


# ── Never anything but UnparseableReply ───────────────────────────────────────────

REPLY_KEYS = st.sampled_from(
    [
        "error",
        "errorDescription",
        "result",
        "id",
        "reference",
        "price",
        "currency",
        "status",
        "msisdn",
        "task_id",
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["0", "23", "12erdgm9"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(REPLY_KEYS | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=20,
)
STATUSES = st.sampled_from([200, 200, 200, 400, 429, 500])


def _only_unparseable(driver: BsgDriver, reply: HttpReply) -> None:
    try:
        outcomes = driver.parse_send(PAIR, reply)
    except UnparseableReply:
        pass  # the one exception a parser may raise on garbage
    else:
        assert len(outcomes) == len(PAIR)
    try:
        receipts = driver.parse_status([QUERY], reply)
    except UnparseableReply:
        pass  # the one exception a parser may raise on garbage
    else:
        assert all(isinstance(r, Receipt) for r in receipts)


@given(body=st.binary(max_size=64), status=STATUSES)
def test_arbitrary_bytes_never_raise_anything_else(body: bytes, status: int) -> None:
    _only_unparseable(BsgDriver(SETTINGS), HttpReply(status=status, body=body))


@given(document=JSON_VALUES, status=STATUSES)
def test_arbitrary_json_never_raises_anything_else(document: object, status: int) -> None:
    _only_unparseable(BsgDriver(SETTINGS), json_reply(document, status))


def test_deeply_nested_json_is_unparseable_not_a_crash() -> None:
    reply = HttpReply(status=200, body=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(UnparseableReply):
        BsgDriver(SETTINGS).parse_send(PAIR, reply)
