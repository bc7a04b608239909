"""The limits each simulated provider enforces on its own (docs/providers.md), at and just past
each edge: BSG's originator (25) and validity (28), Route Mobile's source (1707) and its
flash types, SMS Club's src_addr (400). The drivers' Limits are checked against these in
tests/bridges/test_limits.py; nothing here imports a driver."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest

from bridges.sim.core import SimulatorConfig
from tests.bridges.sim.conftest import running

pytestmark = pytest.mark.anyio

BSG_SINGLE = {
    "destination": "phone",
    "msisdn": "380501234567",
    "reference": "reference_id",
    "originator": "sender",
    "body": "test sms",
}
ROUTEMOBILE = {
    "username": "demo",
    "password": "demo",
    "type": "0",
    "dlr": "0",
    "destination": "447700900001",
    "source": "ACME",
    "message": "Hello",
}


async def bsg_error(http: aiohttp.ClientSession, **changes: object) -> str:
    body = msgspec.json.encode({**BSG_SINGLE, **changes})
    async with http.post(
        "/rest/sms/create", data=body, headers={"X-API-KEY": "test_demo"}
    ) as response:
        document: dict[str, Any] = msgspec.json.decode(await response.read())
    return str(document["error"])


@pytest.mark.parametrize(
    ("originator", "code"),
    [
        ("ELEVENCHARS", "0"),
        ("VERYLONGSEND", "25"),  # 12 alphanumeric (issue 17)
        ("123456789012345", "0"),  # 15 digits: BSG's other documents
        ("1234567890123456", "25"),
        ("+447700900123", "25"),  # numeric is digits only (issue 17)
        ("Shop#1", "25"),
    ],
)
async def test_bsg_originator_limits(originator: str, code: str) -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert await bsg_error(http, originator=originator) == code


async def test_bsg_validity_is_1_to_72_hours_unless_configured_as_newer_documents() -> None:
    async with running(["bsg"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert await bsg_error(http, validity=72, reference="r1") == "0"
        assert await bsg_error(http, validity=73, reference="r2") == "28"
    config = SimulatorConfig(bsg_max_validity_hours=87_840)
    async with running(["bsg"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        assert await bsg_error(http, validity=87_840, reference="r3") == "0"
        assert await bsg_error(http, validity=87_841, reference="r4") == "28"


@pytest.mark.parametrize(
    ("changes", "reply"),
    [
        ({"source": "ELEVENCHARS"}, "1701"),
        ({"source": "VERYLONGSEND"}, "1707"),  # 12 alphanumeric (issue 17)
        ({"source": "123456789012345678"}, "1701"),
        ({"source": "+123456789012345678"}, "1701"),  # the seed: URL-encode the plus
        ({"source": "1234567890123456789"}, "1707"),
        ({"type": "1"}, "1701"),  # flash, GSM
        ({"type": "6", "message": "041F04400438043204350442"}, "1701"),  # flash, Unicode
        ({"type": "7", "message": "Grüße"}, "1701"),  # flash, ISO-8859-1
    ],
)
async def test_routemobile_source_limits_and_flash_types(
    changes: dict[str, str], reply: str
) -> None:
    async with (
        running(["routemobile"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.get("/bulksms/bulksms", params={**ROUTEMOBILE, **changes}) as response,
    ):
        assert (await response.text()).split("|")[0] == reply


@pytest.mark.parametrize(
    ("source", "status"),
    [("ELEVENCHARS", 200), ("VERYLONGSEND", 400), ("380501234567", 400)],
)
async def test_smsclub_src_addr_takes_at_most_11_characters(source: str, status: int) -> None:
    payload = {"phone": ["380989361131"], "message": "test text", "src_addr": source}
    async with (
        running(["smsclub"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post("/sms/send", json=payload, headers={"Authorization": "Bearer demo"}) as answer,
    ):
        assert answer.status == status
        document: dict[str, Any] = await answer.json()
    if status == 400:
        assert "src_addr" in document["success_request"]["add_info"]
