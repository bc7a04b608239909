"""The bsg simulator against seed 002's three request samples and docs/providers.md's codes."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest

from bridges.sim.core import SimulatorConfig
from tests.bridges.sim.conftest import FakeClock, running

pytestmark = pytest.mark.anyio

KEY = {"X-API-KEY": "test_demo"}
CREATE = "/rest/sms/create"
SEED_SINGLE = {
    "destination": "phone",
    "msisdn": "380501234567",
    "reference": "reference_id",
    "originator": "sender",
    "body": "test sms",
    "2way": 1,
}
SEED_BULK = {
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
SEED_INDIVIDUAL = {
    "validity": 72,
    "tariff": 9,
    "destination": "individual",
    "phones": [
        {
            "originator": "test1",
            "body": "test sms1",
            "msisdn": "380972000001",
            "reference": "12erdgm9",
        },
        {
            "originator": "test2",
            "body": "test sms2",
            "msisdn": "380972000002",
            "reference": "12erdgn0",
        },
    ],
}


async def create(
    http: aiohttp.ClientSession, payload: object, method: str = "POST"
) -> dict[str, Any]:
    # The seed's body is JSON; the server parses it whatever the Content-Type says.
    body = msgspec.json.encode(payload)
    async with http.request(method, CREATE, data=body, headers=KEY) as response:
        assert response.status == 200  # BSG puts the error in the body
        document: dict[str, Any] = msgspec.json.decode(await response.read())
        return document


async def test_seed_single_sample_gets_the_flat_reply_with_string_fields() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await create(http, SEED_SINGLE, method="PUT")
    assert reply == {
        "reference": "reference_id",
        "id": "22125",
        "error": "0",
        "price": "0.02",
        "currency": "EUR",
    }
    assert sim.counters("bsg")["accepted_by_reference"] == {"reference_id": 1}


async def test_single_reply_can_be_wrapped_and_numeric() -> None:
    config = SimulatorConfig(bsg_wrapped_single=True, bsg_string_fields=False)
    async with running(["bsg"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await create(http, SEED_SINGLE)
    assert reply == {
        "result": {
            "reference": "reference_id",
            "id": 22125,
            "error": 0,
            "price": 0.02,
            "currency": "EUR",
        }
    }


async def test_seed_bulk_sample_gets_results_and_a_task_id() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await create(http, SEED_BULK)
    assert reply["error"] == "0"
    assert reply["task_id"].isdigit()
    assert reply["total_price"] == "0.04"
    assert [entry["reference"] for entry in reply["result"]] == ["12erdgm9", "12erdgn0"]
    for entry in reply["result"]:
        assert entry["error"] == "0"
        assert entry["id"].isdigit()
        assert entry["price"] == "0.02"
        assert entry["currency"] == "EUR"
    assert sim.counters("bsg")["accepted_total"] == 2


async def test_seed_individual_sample_gets_totalprice() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await create(http, SEED_INDIVIDUAL)
    assert reply["error"] == "0"
    assert reply["totalprice"] == "0.04"
    assert reply["currency"] == "EUR"
    assert len(reply["result"]) == 2
    assert "task_id" not in reply


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"destination": None}, 3),
        ({"destination": "fax"}, 7),
        ({"originator": None}, 3),
        ({"originator": "A-Very-Long-Sender"}, 25),
        ({"originator": "1234567890123456"}, 25),
        ({"body": ""}, 26),
        ({"body": "x" * 766}, 26),
        ({"body": "ж" * 356}, 26),
        ({"body": "{" * 383}, 26),  # extension characters take two septets
        ({"msisdn": "12"}, 21),
        ({"reference": None}, 22),
        ({"reference": "has space"}, 27),
        ({"reference": "x" * 33}, 27),
        ({"validity": 0}, 28),
        ({"validity": "73"}, 28),
        ({"tariff": 10}, 6),
    ],
)
async def test_request_errors(changes: dict[str, object], code: int) -> None:
    payload = {key: value for key, value in {**SEED_SINGLE, **changes}.items() if value is not None}
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await create(http, payload)
    assert reply["error"] == str(code)
    assert reply["errorDescription"]
    assert "id" not in reply
    assert sim.counters("bsg")["accepted_total"] == 0


async def test_texts_at_the_limits_fit() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        for index, body in enumerate(["x" * 765, "ж" * 355, "{" * 382]):
            reply = await create(http, {**SEED_SINGLE, "body": body, "reference": f"r{index}"})
            assert reply["error"] == "0"


async def test_auth_method_and_payload_errors() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        async with http.post(CREATE, json=SEED_SINGLE, headers={"X-API-KEY": "live_x"}) as r:
            assert (await r.json())["error"] == "1"
        async with http.get(CREATE, headers=KEY) as response:
            assert (await response.json())["error"] == "4"
        async with http.post(CREATE, data=b"{not json", headers=KEY) as response:
            assert (await response.json())["error"] == "24"
        assert (await create(http, ["a list"]))["error"] == "24"


@pytest.mark.parametrize(
    "path",
    [
        "/rest/common/balance",
        "/rest/sms/22125",
        "/rest/sms/reference/reference_id",
        "/rest/sms/task/21902",
    ],
)
@pytest.mark.parametrize("headers", [{"X-API-KEY": "live_wrong"}, {}])
async def test_a_wrong_or_missing_key_is_error_1_on_every_endpoint(
    path: str, headers: dict[str, str]
) -> None:
    # docs/providers.md "bsg": HTTP 200 always, error 1 "invalid API key" in the body.
    async with (
        running(["bsg"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.get(path, headers=headers) as response,
    ):
        assert response.status == 200
        reply = await response.json()
    assert reply == {"error": "1", "errorDescription": "Invalid API key"}
    assert sim.counters("bsg")["rejects"] == {"1": 1}


async def test_the_configured_key_is_the_one_taken() -> None:
    config = SimulatorConfig(bsg_api_key="live_acme")
    async with running(["bsg"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        assert (await create(http, SEED_SINGLE))["error"] == "1"  # the demo key
        async with http.get("/rest/common/balance", headers={"X-API-KEY": "live_acme"}) as r:
            assert (await r.json())["error"] == "0"


async def test_reference_reuse_is_23_and_nothing_is_sent_twice() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        first = await create(http, SEED_SINGLE)
        again = await create(http, SEED_SINGLE)
    assert first["error"] == "0"
    assert again == {"error": "23", "errorDescription": "Reference already exists"}
    assert sim.counters("bsg")["accepted_by_reference"] == {"reference_id": 1}


async def test_bulk_per_phone_errors_keep_the_others() -> None:
    payload = {
        **SEED_BULK,
        "phones": [
            {"msisdn": "380972000001", "reference": "a1"},
            {"msisdn": "38097", "reference": "a2"},
            {"msisdn": "380972000003", "reference": "a3"},
            {"msisdn": "380972000004", "reference": "a1"},
            {"msisdn": "380972000005"},
        ],
    }
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await create(http, payload)
    assert reply["error"] == "0"
    assert [entry["error"] for entry in reply["result"]] == ["0", "21", "0", "23", "22"]
    for entry in reply["result"][3:] + reply["result"][1:2]:
        assert "id" not in entry
        assert "price" not in entry
    assert reply["total_price"] == "0.04"
    assert sim.counters("bsg")["accepted_total"] == 2


@pytest.mark.parametrize("shape", ["phones", "individual"])
async def test_one_msisdn_twice_in_a_request_refuses_all_of_it_with_31(shape: str) -> None:
    # Issue 17: BSG refuses the whole request ("msisdn repeated") and sends none of it;
    # `+` or not, it is the same number.
    template = SEED_BULK if shape == "phones" else SEED_INDIVIDUAL
    phones = [dict(phone) for phone in template["phones"]]  # type: ignore[attr-defined]
    phones.append({**phones[0], "msisdn": "+" + phones[0]["msisdn"], "reference": "again"})
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        refused = await create(http, {**template, "phones": phones})
        apart = await create(http, {**template, "phones": phones[:2]})
    assert refused == {"error": "31", "errorDescription": "Msisdn repeated in one request"}
    assert apart["error"] == "0"
    counters = sim.counters("bsg")
    assert counters["refused_whole"] == {"repeated_msisdn": 1}
    assert counters["accepted_total"] == 2  # the second request only


async def test_the_validity_each_message_got_is_counted_by_id() -> None:
    # One `validity` per request (hours); without one BSG applies its 72.
    bulk = {**SEED_BULK, "validity": 5}
    single = {key: value for key, value in SEED_SINGLE.items() if key != "validity"}
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        with_validity = await create(http, bulk)
        without = await create(http, single)
    ids = [entry["id"] for entry in with_validity["result"]] + [without["id"]]
    assert sim.counters("bsg")["validity_s_by_id"] == {
        ids[0]: 5 * 3600,
        ids[1]: 5 * 3600,
        ids[2]: 72 * 3600,
    }


async def test_more_than_50_phones_is_12() -> None:
    phones = [{"msisdn": f"3809720{i:05}", "reference": f"r{i}"} for i in range(51)]
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert (await create(http, {**SEED_BULK, "phones": phones}))["error"] == "12"
        reply = await create(http, {**SEED_BULK, "phones": phones[:50]})
    assert reply["error"] == "0"
    assert sim.counters("bsg")["accepted_total"] == 50


async def test_not_enough_money_is_8() -> None:
    config = SimulatorConfig(bsg_balance=0.03)
    async with running(["bsg"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        assert (await create(http, SEED_BULK))["error"] == "8"
        assert (await create(http, SEED_SINGLE))["error"] == "0"
        async with http.get("/rest/common/balance", headers=KEY) as response:
            balance = await response.json()
    assert balance == {"error": "0", "amount": "0.01", "currency": "EUR", "limit": "0.00"}


async def test_forced_request_level_codes_and_swapped_2_3() -> None:
    config = SimulatorConfig(
        recipient_codes={"380501234567": "10", "380501234568": "11"}, bsg_blocked_code=3
    )
    async with running(["bsg"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        assert (await create(http, SEED_SINGLE))["error"] == "10"
        assert (await create(http, {**SEED_SINGLE, "msisdn": "380501234568"}))["error"] == "11"
        no_body = {key: value for key, value in SEED_SINGLE.items() if key != "body"}
        missing = await create(http, no_body)
    # With the codes swapped, each keeps its meaning: 2 is now "not enough parameters".
    assert missing == {"error": "2", "errorDescription": "Not enough parameters"}


async def test_five_auth_errors_block_the_client(clock: FakeClock) -> None:
    config = SimulatorConfig(bsg_auth_block=True, bsg_block_s=60)
    async with running(["bsg"], config, clock) as sim, aiohttp.ClientSession(sim.url) as http:
        for _ in range(5):
            async with http.post(CREATE, json=SEED_SINGLE) as response:
                assert (await response.json())["error"] == "1"
        # The block is "account blocked": 2, unless the codes are swapped (docs/providers.md).
        assert await create(http, SEED_SINGLE) == {
            "error": "2",
            "errorDescription": "Account blocked",
        }
        async with http.get("/rest/common/balance") as response:
            assert (await response.json())["error"] == "2"
        clock.advance(61)
        assert (await create(http, SEED_SINGLE))["error"] == "0"


async def test_status_changes_after_the_delay(clock: FakeClock) -> None:
    config = SimulatorConfig(dlr_delay_s=30, dlr_mix={"DELIVRD": 1.0})
    async with running(["bsg"], config, clock) as sim, aiohttp.ClientSession(sim.url) as http:
        bulk = await create(http, SEED_BULK)
        message_id = bulk["result"][0]["id"]

        async def status(path: str) -> dict[str, Any]:
            async with http.get(path, headers=KEY) as response:
                document: dict[str, Any] = await response.json()
                return document

        before = await status(f"/rest/sms/{message_id}")
        assert before["status"] == "unknown"
        assert before["time_dr"] is None
        clock.advance(30)
        after = await status(f"/rest/sms/{message_id}")
        by_reference = await status("/rest/sms/reference/12erdgn0")
        task = await status(f"/rest/sms/task/{bulk['task_id']}")
        missing = await status("/rest/sms/999999")
        missing_reference = await status("/rest/sms/reference/nope")
    assert after["status"] == "delivered"
    assert after["msisdn"] == "380972000001"
    assert after["reference"] == "12erdgm9"
    for field in ("time_in", "time_sent", "time_dr", "price", "currency"):
        assert after[field]
    assert by_reference["status"] == "delivered"
    assert by_reference["id"] == bulk["result"][1]["id"]
    assert [entry["status"] for entry in task["result"]] == ["delivered", "delivered"]
    assert missing["error"] == "20"
    assert missing_reference["error"] == "20"


async def test_mass_status_answers_up_to_100_ids_with_external_id(clock: FakeClock) -> None:
    config = SimulatorConfig(dlr_delay_s=30, dlr_mix={"DELIVRD": 1.0})
    async with running(["bsg"], config, clock) as sim, aiohttp.ClientSession(sim.url) as http:
        bulk = await create(http, SEED_BULK)
        ids = [int(entry["id"]) for entry in bulk["result"]]

        async def mass(body: object) -> dict[str, Any]:
            encoded = msgspec.json.encode(body)
            async with http.post("/rest/sms/getStatus", data=encoded, headers=KEY) as response:
                assert response.status == 200
                document: dict[str, Any] = await response.json()
                return document

        before = await mass({"ids": [*ids, 999999]})
        clock.advance(30)
        after = await mass({"ids": ids})
        unknown = await mass({"ids": [999999]})
        too_many = await mass({"ids": list(range(1, 102))})
        empty = await mass({"ids": []})
    assert [item["status"] for item in before["result"]] == ["unknown", "unknown"]
    assert [(item["id"], item["external_id"]) for item in after["result"]] == [
        (bulk["result"][0]["id"], "12erdgm9"),
        (bulk["result"][1]["id"], "12erdgn0"),
    ]
    assert [item["status"] for item in after["result"]] == ["delivered", "delivered"]
    assert "reference" not in after["result"][0]
    assert unknown["error"] == "20"
    assert too_many["error"] == "7"
    assert empty["error"] == "3"  # not enough parameters (bsg_blocked_code 2)


async def test_polling_one_message_twice_within_a_minute_counts_as_abuse(
    clock: FakeClock,
) -> None:
    async with running(["bsg"], clock=clock) as sim, aiohttp.ClientSession(sim.url) as http:
        bulk = await create(http, SEED_BULK)
        first, second = (entry["id"] for entry in bulk["result"])

        async def get(path: str) -> None:
            async with http.get(path, headers=KEY) as response:
                await response.read()

        async def mass(ids: list[str]) -> None:
            body = msgspec.json.encode({"ids": [int(i) for i in ids]})
            async with http.post("/rest/sms/getStatus", data=body, headers=KEY) as response:
                await response.read()

        await mass([first, second])
        clock.advance(60)  # a minute later: polite
        await get(f"/rest/sms/{first}")
        await get("/rest/sms/reference/12erdgn0")
        polite = sim.counters("bsg")["poll_abuse"]
        clock.advance(59)  # under a minute, by every endpoint: each message counts
        await get(f"/rest/sms/task/{bulk['task_id']}")
        clock.advance(30)
        await mass([first])
        await get("/rest/sms/999999")  # unknown: nothing to count
    assert polite == 0
    assert sim.counters("bsg")["poll_abuse"] == 3


async def test_poll_abuse_is_not_counted_when_switched_off(clock: FakeClock) -> None:
    config = SimulatorConfig(bsg_poll_abuse_s=0)
    async with running(["bsg"], config, clock) as sim, aiohttp.ClientSession(sim.url) as http:
        bulk = await create(http, SEED_BULK)
        for _ in range(3):
            async with http.get(f"/rest/sms/{bulk['result'][0]['id']}", headers=KEY) as response:
                await response.read()
    assert sim.counters("bsg")["poll_abuse"] == 0
