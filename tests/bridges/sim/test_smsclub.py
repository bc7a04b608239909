"""The smsclub simulator against seed 003's examples and docs/providers.md's limits."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from bridges.sim.core import SimulatorConfig
from tests.bridges.sim.conftest import FakeClock, running

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer demo", "Content-Type": "application/json"}
SEED_SEND = {"phone": ["380989361131"], "message": "test text", "src_addr": "VashZakaz"}
SEED_STATUS_LITERAL = b'{\n    "id_sms" : ["106"],\n}'  # the seed's own text: a trailing comma


async def post(
    http: aiohttp.ClientSession, path: str, body: object = None, expect: int = 200
) -> Any:
    data = body if isinstance(body, bytes) else None
    json_body = None if isinstance(body, bytes) or body is None else body
    async with http.post(path, data=data, json=json_body, headers=AUTH) as response:
        assert response.status == expect
        return await response.json()


async def test_seed_send_returns_id_to_phone() -> None:
    async with running(["smsclub"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await post(http, "/sms/send", SEED_SEND)
    assert reply == {"success_request": {"info": {"106": "380989361131"}}}
    assert sim.counters("smsclub")["accepted_by_recipient"] == {"380989361131": 1}


async def test_seed_status_text_is_invalid_json_and_the_fixed_one_works(clock: FakeClock) -> None:
    config = SimulatorConfig(dlr_delay_s=10, dlr_mix={"UNDELIV": 1.0})
    async with running(["smsclub"], config, clock) as sim, aiohttp.ClientSession(sim.url) as http:
        await post(http, "/sms/send", SEED_SEND)
        bad = await post(http, "/sms/status", SEED_STATUS_LITERAL, expect=400)
        clock.advance(1.0)  # keep clear of the 9-a-second limit
        pending = await post(http, "/sms/status", {"id_sms": ["106", "999"]})
        clock.advance(10)
        final = await post(http, "/sms/status", {"id_sms": [106]})
    assert bad["status"] == 400
    assert set(bad) == {"name", "message", "code", "status"}
    assert pending == {
        "success_request": {"info": {"106": "ENROUTE"}, "add_info": {"999": "Message not found"}}
    }
    assert final == {"success_request": {"info": {"106": "UNDELIV"}}}


async def test_originator_and_balance_shapes() -> None:
    async with running(["smsclub"]) as sim, aiohttp.ClientSession(sim.url) as http:
        originators = await post(http, "/sms/originator")
        balance = await post(http, "/sms/balance")
    assert originators == {"success_request": {"info": ["test1", "test2"]}}
    assert balance == {"success_request": {"info": {"money": "8111.1700", "currency": "UAH"}}}


async def test_auth_and_method_errors_use_the_framework_body() -> None:
    async with running(["smsclub"]) as sim, aiohttp.ClientSession(sim.url) as http:
        async with http.post("/sms/send", json=SEED_SEND) as response:
            assert response.status == 401
            unauthorized = await response.json()
        async with http.get("/sms/balance", headers=AUTH) as response:
            assert response.status == 405
            not_allowed = await response.json()
    assert unauthorized["status"] == 401
    assert set(unauthorized) == {"name", "message", "code", "status"}
    assert not_allowed["status"] == 405


@pytest.mark.parametrize("path", ["/sms/send", "/sms/status", "/sms/originator", "/sms/balance"])
@pytest.mark.parametrize("authorization", ["Bearer wrong", "demo", None])
async def test_a_wrong_or_missing_token_is_401_on_every_endpoint(
    path: str, authorization: str | None
) -> None:
    # docs/providers.md "smsclub" Errors: 401 auth, with a {"name","message","code","status"} body.
    headers = {} if authorization is None else {"Authorization": authorization}
    async with (
        running(["smsclub"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(path, json={}, headers=headers) as response,
    ):
        assert response.status == 401
        reply = await response.json()
    assert reply == {
        "name": "Unauthorized",
        "message": "Your request was made with invalid credentials.",
        "code": 0,
        "status": 401,
    }
    assert sim.counters("smsclub")["rejects"] == {"401": 1}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"message": "x", "src_addr": "A"}, "phone"),
        ({"phone": "380989361131", "message": "x", "src_addr": "A"}, "phone"),
        (
            {"phone": [f"3809893{i:05}" for i in range(101)], "message": "x", "src_addr": "A"},
            "phone",
        ),
        ({"phone": ["380989361131"], "message": " ", "src_addr": "A"}, "message"),
        ({"phone": ["380989361131"], "message": "x"}, "src_addr"),
    ],
)
async def test_validation_errors_are_400_add_info(payload: dict[str, object], field: str) -> None:
    async with running(["smsclub"]) as sim, aiohttp.ClientSession(sim.url) as http:
        reply = await post(http, "/sms/send", payload, expect=400)
    assert list(reply["success_request"]["add_info"]) == [field]
    assert sim.counters("smsclub")["accepted_total"] == 0


async def test_status_validation() -> None:
    async with running(["smsclub"]) as sim, aiohttp.ClientSession(sim.url) as http:
        many = await post(http, "/sms/status", {"id_sms": [str(i) for i in range(101)]}, 400)
        empty = await post(http, "/sms/status", {}, expect=400)
    assert list(many["success_request"]["add_info"]) == ["id_sms"]
    assert list(empty["success_request"]["add_info"]) == ["id_sms"]


async def test_failed_numbers_go_to_add_info_possibly_alone() -> None:
    config = SimulatorConfig(recipient_codes={"380989361132": "Number is blacklisted"})
    async with running(["smsclub"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        mixed = await post(
            http, "/sms/send", {**SEED_SEND, "phone": ["380989361131", "12", 380989361133]}
        )
        only_failed = await post(http, "/sms/send", {**SEED_SEND, "phone": ["380989361132"]})
    assert mixed == {
        "success_request": {
            "info": {"106": "380989361131", "107": "380989361133"},
            "add_info": {"12": "Invalid phone number"},
        }
    }
    assert only_failed == {
        "success_request": {"add_info": {"380989361132": "Number is blacklisted"}}
    }


async def test_more_than_9_requests_a_second_is_429(clock: FakeClock) -> None:
    async with running(["smsclub"], clock=clock) as sim, aiohttp.ClientSession(sim.url) as http:
        for _ in range(9):
            await post(http, "/sms/balance")
        async with http.post("/sms/balance", headers=AUTH) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
            throttled = await response.json()
        clock.advance(1.0)
        await post(http, "/sms/balance")
    assert throttled["status"] == 429
    assert set(throttled) == {"name", "message", "code", "status"}


async def test_same_phone_and_text_within_2_minutes_is_453(clock: FakeClock) -> None:
    async with running(["smsclub"], clock=clock) as sim, aiohttp.ClientSession(sim.url) as http:
        await post(http, "/sms/send", SEED_SEND)
        clock.advance(60)
        duplicate = await post(http, "/sms/send", SEED_SEND, expect=453)
        await post(http, "/sms/send", {**SEED_SEND, "message": "another text"})
        clock.advance(61)
        again = await post(http, "/sms/send", SEED_SEND)
    assert duplicate["status"] == 453
    assert set(duplicate) == {"name", "message", "code", "status"}
    assert list(again["success_request"]["info"].values()) == ["380989361131"]
    assert sim.counters("smsclub")["accepted_by_recipient"] == {"380989361131": 3}


@pytest.mark.parametrize("window_s", [120.0, 0.0])
async def test_one_phone_twice_in_a_request_is_453_for_all_of_it(
    clock: FakeClock, window_s: float
) -> None:
    # Issue 17: the same phone and text twice in one request refuse the whole request,
    # whatever the duplicate window between requests is.
    config = SimulatorConfig(smsclub_duplicate_window_s=window_s)
    repeated = {**SEED_SEND, "phone": ["380989361131", "380989361132", 380989361131]}
    async with (
        running(["smsclub"], config, clock) as sim,
        aiohttp.ClientSession(sim.url) as http,
    ):
        refused = await post(http, "/sms/send", repeated, expect=453)
        apart = await post(
            http, "/sms/send", {**SEED_SEND, "phone": ["380989361131", "380989361132"]}
        )
    assert refused["status"] == 453
    assert len(apart["success_request"]["info"]) == 2
    counters = sim.counters("smsclub")
    assert counters["refused_whole"] == {"repeated_phone_text": 1}
    assert counters["accepted_total"] == 2


async def test_lifetime_is_counted_by_id_and_checked() -> None:
    async with running(["smsclub"]) as sim, aiohttp.ClientSession(sim.url) as http:
        sent = await post(http, "/sms/send", {**SEED_SEND, "lifetime": 90})
        plain = await post(http, "/sms/send", {**SEED_SEND, "message": "no lifetime"})
        bad = await post(http, "/sms/send", {**SEED_SEND, "lifetime": "soon"}, expect=400)
    [message_id] = sent["success_request"]["info"]
    assert plain["success_request"]["info"]
    assert sim.counters("smsclub")["validity_s_by_id"] == {message_id: 90 * 60}
    assert list(bad["success_request"]["add_info"]) == ["lifetime"]


async def test_status_calls_count_in_the_9_a_second_with_sends(clock: FakeClock) -> None:
    # Steps of 1/16 s: exact in binary, so the window's edge is where the test says.
    async with running(["smsclub"], clock=clock) as sim, aiohttp.ClientSession(sim.url) as http:
        sent = await post(http, "/sms/send", SEED_SEND)
        [message_id] = sent["success_request"]["info"]
        for _ in range(8):
            clock.advance(0.0625)
            await post(http, "/sms/status", {"id_sms": [message_id]})
        # Nine in the last second (the send at 0 s and eight polls): the tenth is refused.
        await post(http, "/sms/status", {"id_sms": [message_id]}, expect=429)
        clock.advance(0.4375)  # 0.9375 s: the send is still in the window
        await post(http, "/sms/status", {"id_sms": [message_id]}, expect=429)
        clock.advance(0.0625)  # 1 s: the send has left it, one place is free
        await post(http, "/sms/status", {"id_sms": [message_id]})
        await post(http, "/sms/send", SEED_SEND | {"message": "other"}, expect=429)
    assert sim.counters("smsclub")["rejects"]["429"] == 3
