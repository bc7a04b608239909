"""One port for every simulator: fault kinds, the control endpoints, counters, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from bridges.sim.core import SimulatorConfig
from bridges.sim.runner import resolve_providers
from tests.bridges.sim.conftest import running

pytestmark = pytest.mark.anyio

SMSCLUB_AUTH = {"Authorization": "Bearer demo"}
DSC_FORM = {
    "api_key": "demo",
    "username": "demo",
    "password": "demo",
    "recipients": "250782589800",
    "message": "Hello",
}
SEND_REQUESTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "dsc": ("POST", "/api/v2/sms/send", {"data": DSC_FORM}),
    "routemobile": (
        "GET",
        "/bulksms/bulksms",
        {
            "params": {
                "username": "demo",
                "password": "demo",
                "type": "0",
                "dlr": "0",
                "destination": "447700900001",
                "source": "ACME",
                "message": "Hello",
            }
        },
    ),
    "bsg": (
        "POST",
        "/rest/sms/create",
        {
            "json": {
                "destination": "phone",
                "msisdn": "380501234567",
                "reference": "ref_1",
                "originator": "ACME",
                "body": "Hello",
            },
            "headers": {"X-API-KEY": "test_demo"},
        },
    ),
    "smsclub": (
        "POST",
        "/sms/send",
        {
            "json": {"phone": ["380989361131"], "message": "Hello", "src_addr": "ACME"},
            "headers": SMSCLUB_AUTH,
        },
    ),
}


async def send(http: aiohttp.ClientSession, provider: str) -> aiohttp.ClientResponse:
    method, path, options = SEND_REQUESTS[provider]
    response = await http.request(method, path, **options)
    await response.read()
    return response


async def configure(http: aiohttp.ClientSession, changes: dict[str, Any], **query: str) -> Any:
    async with http.post("/_sim/config", json=changes, params=query) as response:
        return response.status, await response.json()


async def test_all_four_share_one_port_and_each_send_is_accepted() -> None:
    async with running(["all"]) as sim, aiohttp.ClientSession(sim.url) as http:
        for provider in SEND_REQUESTS:
            response = await send(http, provider)
            assert response.status == 200
        async with http.get("/_sim/counters") as response:
            counters = await response.json()
    assert set(counters) == {"dsc", "routemobile", "bsg", "smsclub"}
    for provider, document in counters.items():
        assert document["accepted_total"] == 1
        method, path, _ = SEND_REQUESTS[provider]
        assert document["requests"] == {f"{method} {path}": {"200": 1}}
    assert counters["bsg"]["accepted_by_reference"] == {"ref_1": 1}


@pytest.mark.parametrize(
    ("provider", "status", "body_check"),
    [
        ("dsc", 500, lambda body: body["http_code"] == 500 and body["status"] == "error"),
        ("routemobile", 500, lambda body: body == 1710),
        ("bsg", 500, lambda body: body["error"] == "5"),
        ("smsclub", 500, lambda body: body["status"] == 500 and "name" in body),
    ],
)
async def test_5xx_fault_is_the_providers_own_error(
    provider: str, status: int, body_check: Any
) -> None:
    config = SimulatorConfig(fail_rate=1.0, faults={"5xx": 1.0})
    async with running([provider], config) as sim, aiohttp.ClientSession(sim.url) as http:
        response = await send(http, provider)
        assert response.status == status
        assert body_check(msgspec.json.decode(await response.read()))
    counters = sim.counters(provider)
    assert counters["faults"] == {"5xx": 1}
    assert counters["accepted_total"] == 0


async def test_429_fault_carries_retry_after_where_the_provider_sends_it() -> None:
    config = SimulatorConfig(fail_rate=1.0, faults={"429": 1.0}, retry_after_s=3)
    async with running(["all"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        replies = {provider: await send(http, provider) for provider in SEND_REQUESTS}
    assert {provider: reply.status for provider, reply in replies.items()} == dict.fromkeys(
        SEND_REQUESTS, 429
    )
    assert replies["smsclub"].headers["Retry-After"] == "3"
    assert replies["bsg"].headers["Retry-After"] == "3"
    assert "Retry-After" not in replies["dsc"].headers


async def test_garbage_fault_is_unparseable_and_sends_nothing() -> None:
    config = SimulatorConfig(fail_rate=1.0, faults={"garbage": 1.0})
    async with running(["bsg"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        response = await send(http, "bsg")
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(await response.read())
    assert sim.counters("bsg")["accepted_total"] == 0


@pytest.mark.parametrize(("fault", "accepted"), [("reset_before", 0), ("reset_after", 1)])
async def test_reset_faults_drop_the_connection(fault: str, accepted: int) -> None:
    config = SimulatorConfig(fail_rate=1.0, faults={fault: 1.0})
    async with running(["smsclub"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await send(http, "smsclub")
    counters = sim.counters("smsclub")
    assert counters["accepted_total"] == accepted
    assert counters["faults"] == {fault: 1}
    assert counters["requests"] == {"POST /sms/send": {"aborted": 1}}


@pytest.mark.parametrize(("fault", "accepted"), [("timeout_before", 0), ("timeout_after", 1)])
async def test_timeout_faults_hang_until_the_client_gives_up(fault: str, accepted: int) -> None:
    config = SimulatorConfig(fail_rate=1.0, faults={fault: 1.0}, hang_s=30)
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with running(["dsc"], config) as sim:
        async with aiohttp.ClientSession(sim.url, timeout=timeout) as http:
            with pytest.raises(TimeoutError):
                await send(http, "dsc")
        assert sim.counters("dsc")["accepted_total"] == accepted


async def test_slow_fault_still_answers_and_accepts() -> None:
    config = SimulatorConfig(fail_rate=1.0, faults={"slow": 1.0}, slow_ms=20)
    async with running(["routemobile"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        response = await send(http, "routemobile")
        assert response.status == 200
        assert (await response.text()).startswith("1701|")
    assert sim.counters("routemobile")["faults"] == {"slow": 1}
    assert sim.counters("routemobile")["accepted_total"] == 1


async def test_fail_rate_is_a_seeded_fraction_and_only_hits_sends() -> None:
    config = SimulatorConfig(fail_rate=0.5, seed=7, latency_ms=1, jitter_ms=1)
    outcomes = []
    for _ in range(2):
        async with running(["smsclub"], config) as sim, aiohttp.ClientSession(sim.url) as http:
            await configure(http, {"smsclub_rate_limit": None, "smsclub_duplicate_window_s": 0})
            statuses = [(await send(http, "smsclub")).status for _ in range(40)]
            async with http.post("/sms/balance", headers=SMSCLUB_AUTH) as response:
                assert response.status == 200  # not a send: never faulted
        outcomes.append(statuses)
        assert sim.counters("smsclub")["accepted_total"] == statuses.count(200)
        assert sim.counters("smsclub")["faults"]["5xx"] == statuses.count(500)
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count(500) < 40


async def test_config_endpoint_updates_part_of_one_provider() -> None:
    async with running(["dsc", "bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        status, reply = await configure(http, {"fail_rate": 1.0}, provider="dsc")
        assert status == 200
        assert reply["dsc"]["fail_rate"] == 1.0
        assert (await send(http, "dsc")).status == 500
        assert (await send(http, "bsg")).status == 200
        async with http.get("/_sim/config") as response:
            configs = await response.json()
        assert configs["bsg"]["fail_rate"] == 0.0
        assert configs["dsc"]["bsg_api_key"] == "test_demo"
        bad = [
            await configure(http, {"no_such_field": 1}),
            await configure(http, {"faults": {"meteor": 1.0}}),
            await configure(http, {"dlr_mix": {"DELIVRD": 0}}),
            await configure(http, {"fail_rate": 2}),
            await configure(http, {"latency_ms": "fast"}),
            await configure(http, {}, provider="smsclub"),
        ]
        async with http.post("/_sim/config", data=b"nope") as response:
            assert response.status == 400
    assert [status for status, _ in bad] == [400, 400, 400, 400, 400, 404]
    assert sim.states["bsg"].config.fail_rate == 0.0


async def test_reset_clears_counters_and_messages() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        await send(http, "bsg")
        async with http.post("/_sim/reset") as response:
            assert await response.json() == {"reset": ["bsg"]}
        async with http.get("/_sim/counters", params={"provider": "bsg"}) as response:
            counters = await response.json()
        # The reference is forgotten with the messages, so it is accepted again.
        response = await send(http, "bsg")
        assert msgspec.json.decode(await response.read())["error"] == "0"
    assert counters["bsg"]["accepted_total"] == 0
    assert counters["bsg"]["requests"] == {}


async def test_per_provider_configs_override_the_shared_one() -> None:
    from bridges.sim.runner import serve_simulators

    async with anyio.create_task_group() as task_group:
        sim = await task_group.start(
            lambda task_status: serve_simulators(
                ["dsc", "smsclub"],
                config=SimulatorConfig(latency_ms=1),
                configs={"smsclub": SimulatorConfig(smsclub_token="other")},
                task_status=task_status,
            )
        )
        assert sim.states["dsc"].config.latency_ms == 1
        assert sim.states["smsclub"].config.smsclub_token == "other"
        assert sim.base_url("dsc") == sim.url
        task_group.cancel_scope.cancel()


def test_resolve_providers() -> None:
    assert resolve_providers(["bsg", "all"]) == ["bsg", "dsc", "routemobile", "smsclub"]
    with pytest.raises(ValueError, match="unknown provider 'twilio'"):
        resolve_providers(["dsc", "twilio"])


async def test_unknown_paths_and_methods_get_the_routers_answers() -> None:
    async with running(["bsg", "dsc"]) as sim, aiohttp.ClientSession(sim.url) as http:
        async with http.get("/no/such/path") as missing:
            assert missing.status == 404
            assert await missing.text() == "404: Not Found"
        async with http.delete("/api/v2/sms/send") as not_allowed:
            assert not_allowed.status == 405
            assert not_allowed.headers["Allow"] == "POST"
        # A `{name}` route takes one path segment; more segments are another path.
        async with http.get("/rest/sms/22125/extra") as too_deep:
            assert too_deep.status == 404


async def test_path_parameters_reach_the_handler() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        await send(http, "bsg")
        headers = {"X-API-KEY": "test_demo"}
        async with http.get("/rest/sms/reference/ref_1", headers=headers) as by_reference:
            found = msgspec.json.decode(await by_reference.read())
        async with http.get("/rest/sms/22125", headers=headers) as by_id:
            same = msgspec.json.decode(await by_id.read())
    assert (found["reference"], found["id"]) == ("ref_1", "22125")
    assert same["reference"] == "ref_1"


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    method, path, options = SEND_REQUESTS["dsc"]
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.request(method, path, expect100=True, **options) as response,
    ):
        assert response.status == 200
        assert (await response.json())["status"] == "success"
    assert sim.counters("dsc")["accepted_total"] == 1


async def test_a_body_in_several_packets_is_read_whole() -> None:
    # The body arrives after the headers, so it is not all buffered when the handler runs.
    form = {**DSC_FORM, "message": "x" * 200_000}

    async def chunks() -> AsyncIterator[bytes]:
        body = "&".join(f"{name}={value}" for name, value in form.items()).encode()
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with (
        running(["dsc"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post("/api/v2/sms/send", data=chunks(), headers=headers) as response,
    ):
        reply = await response.json()
    assert reply["response"][0]["message"] == form["message"]
