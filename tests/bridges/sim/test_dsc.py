"""The dsc simulator against seed 000's own examples and docs/providers.md's corrections."""

from __future__ import annotations

import aiohttp
import pytest

from bridges.sim.core import SimulatorConfig
from tests.bridges.sim.conftest import FakeClock, eventually, receiving, running

pytestmark = pytest.mark.anyio

CREDENTIALS = {"api_key": "demo", "username": "demo", "password": "demo"}
# The seed's PHP / Python requests / cURL examples, placeholders filled: one form body.
SEED_FORM = {
    **CREDENTIALS,
    "recipients": "250782589800,250782589801",
    "message": "Hello, this is a test message from BulkSMS DigitalServicesCenter!",
    "dlrurl": "https://yourdomain.com/dlr-handler",
}
SEND = "/api/v2/sms/send"


async def test_seed_form_post_gets_one_entry_per_recipient_in_order() -> None:
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=SEED_FORM) as response,
    ):
        assert response.status == 200
        reply = await response.json()
    assert reply["status"] == "success"
    assert reply["totalmessages"] == 2
    assert reply["totalcost"] == 150
    assert reply["unit"] == "RWF"
    assert [entry["recipient"] for entry in reply["response"]] == [
        "250782589800",
        "250782589801",
    ]
    for entry in reply["response"]:
        assert entry["status"] == "sent"
        assert entry["messageid"].isdigit()
        assert entry["message"] == SEED_FORM["message"]
        assert entry["cost"] == 75
    assert reply["response"][0]["messageid"] != reply["response"][1]["messageid"]
    counters = sim.counters("dsc")
    assert counters["accepted_total"] == 2
    assert counters["accepted_by_recipient"] == {"250782589800": 1, "250782589801": 1}


async def test_seed_json_example_has_no_form_fields_so_it_is_a_400() -> None:
    # docs/providers.md: the seed's JSON example (axios) is wrong; every request is form-encoded.
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, json=SEED_FORM) as response,
    ):
        assert response.status == 400
        reply = await response.json()
    assert reply["status"] == "error"
    assert reply["message"].startswith("Missing required fields: api_key")
    assert sim.counters("dsc")["accepted_total"] == 0


async def test_missing_message_names_the_field() -> None:
    form = {**SEED_FORM, "message": ""}
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=form) as response,
    ):
        assert response.status == 400
        assert (await response.json())["message"] == "Missing required fields: message"


@pytest.mark.parametrize("field", ["api_key", "username", "password"])
async def test_bad_credentials_are_a_401_with_the_seed_sentence(field: str) -> None:
    # docs/providers.md "dsc" Errors: bad credentials → HTTP 401 "Invalid API key or credentials".
    form = {**SEED_FORM, field: "wrong"}
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=form) as response,
    ):
        assert response.status == 401
        assert await response.json() == {
            "status": "error",
            "message": "Invalid API key or credentials",
        }


async def test_configured_credentials_replace_the_demo_ones() -> None:
    config = SimulatorConfig(dsc_api_key="key-9", dsc_username="acme", dsc_password="s3cret")
    own = {**SEED_FORM, "api_key": "key-9", "username": "acme", "password": "s3cret"}
    async with running(["dsc"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        async with http.post(SEND, data=SEED_FORM) as response:
            assert response.status == 401
        async with http.post(SEND, data=own) as response:
            assert response.status == 200
    assert sim.counters("dsc")["rejects"] == {"401": 1}


async def test_a_local_number_rejects_the_whole_request() -> None:
    form = {**SEED_FORM, "recipients": "250782589800,0781234567,+250782589801"}
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=form) as response,
    ):
        assert response.status == 400
        assert await response.json() == {
            "status": "error",
            "message": "Invalid phone numbers: 0781234567,+250782589801",
        }
    assert sim.counters("dsc")["accepted_total"] == 0


async def test_a_failed_entry_is_charged_and_not_accepted() -> None:
    config = SimulatorConfig(recipient_codes={"250782589801": "failed"})
    async with (
        running(["dsc"], config) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=SEED_FORM) as response,
    ):
        reply = await response.json()
    assert [entry["status"] for entry in reply["response"]] == ["sent", "failed"]
    assert reply["totalcost"] == 150
    assert sim.counters("dsc")["accepted_total"] == 1
    assert sim.counters("dsc")["rejects"] == {"failed": 1}


async def test_testing_mode_allows_15_a_day_then_429(clock: FakeClock) -> None:
    config = SimulatorConfig(dsc_testing_mode=True)
    form = {**SEED_FORM, "recipients": ",".join(f"25078258980{i}" for i in range(5))}
    async with running(["dsc"], config, clock) as sim, aiohttp.ClientSession(sim.url) as http:
        for _ in range(3):
            async with http.post(SEND, data=form) as response:
                assert response.status == 200
        async with http.post(SEND, data={**form, "recipients": "250782589800"}) as response:
            assert response.status == 429
            assert await response.json() == {
                "status": "error",
                "message": "You have reached the daily SMS limit for testing mode.",
            }
        clock.advance(86400)
        async with http.post(SEND, data=form) as response:
            assert response.status == 200
    assert sim.counters("dsc")["accepted_total"] == 20


async def test_testing_mode_is_off_by_default() -> None:
    form = {**SEED_FORM, "recipients": ",".join(f"2507825898{i:02}" for i in range(20))}
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=form) as response,
    ):
        assert response.status == 200
        assert (await response.json())["totalmessages"] == 20


async def test_only_post_is_served() -> None:
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.get(SEND) as response,
    ):
        assert response.status == 405


async def test_report_is_a_get_to_the_registered_url_keeping_its_credentials() -> None:
    config = SimulatorConfig(dlr_delay_s=0.01, dlr_mix={"DELIVRD": 1.0})
    async with (
        receiving() as receiver,
        running(["dsc"], config) as sim,
        aiohttp.ClientSession(sim.url) as http,
    ):
        # The seed's callback template: the receiver embeds its own username/password.
        dlr_url = (
            f"{receiver.url}/dlr/dsc?dnis=$dnis$&username=recv&password=s3cret"
            "&command=deliver&dlvrMsgId=$messageID$&dlvrMsgStat=$status$"
        )
        form = {**SEED_FORM, "dlrurl": dlr_url}
        async with http.post(SEND, data=form) as response:
            reply = await response.json()
        await receiver.wait_for(2)
        await eventually(lambda: sim.counters("dsc")["dlr_ok"] == 2)
    ids = {entry["recipient"]: entry["messageid"] for entry in reply["response"]}
    for method, query in receiver.delivered:
        assert method == "GET"
        assert query["username"] == "recv"
        assert query["password"] == "s3cret"
        assert query["command"] == "deliver"
        assert query["dlvrMsgStat"] == "D"
        assert query["dlvrMsgId"] == ids[query["dnis"]]
    assert {query["dnis"] for _, query in receiver.delivered} == set(ids)


async def test_undelivered_outcomes_are_reported_as_u() -> None:
    config = SimulatorConfig(dlr_delay_s=0.01, dlr_mix={"EXPIRED": 1.0, "UNDELIV": 1.0})
    async with (
        receiving() as receiver,
        running(["dsc"], config) as sim,
        aiohttp.ClientSession(sim.url) as http,
    ):
        form = {**SEED_FORM, "dlrurl": f"{receiver.url}/dlr?username=a&password=b"}
        async with http.post(SEND, data=form) as response:
            assert response.status == 200
        await receiver.wait_for(2)
    assert [query["dlvrMsgStat"] for _, query in receiver.delivered] == ["U", "U"]


async def test_a_refused_report_is_retried_then_counted() -> None:
    config = SimulatorConfig(dlr_delay_s=0.0, dlr_retry_delay_s=0.01)
    async with (
        receiving([500, 200]) as receiver,
        running(["dsc"], config) as sim,
        aiohttp.ClientSession(sim.url) as http,
    ):
        form = {**SEED_FORM, "recipients": "250782589800", "dlrurl": f"{receiver.url}/d"}
        async with http.post(SEND, data=form) as response:
            assert response.status == 200
        await receiver.wait_for(1)
        await eventually(lambda: sim.counters("dsc")["dlr_ok"] == 1)
    counters = sim.counters("dsc")
    assert len(receiver.requests) == 2
    assert counters["dlr_sent"] == 2
    assert counters["dlr_retried"] == 1
    assert counters["dlr_ok"] == 1
    assert counters["dlr_failed"] == 0
