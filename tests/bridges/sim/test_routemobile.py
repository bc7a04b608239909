"""The routemobile simulator against seed 001's URLs and docs/providers.md's reply rules."""

from __future__ import annotations

import re
import uuid

import aiohttp
import pytest

from bridges.sim.core import SimulatorConfig
from tests.bridges.sim.conftest import FakeClock, eventually, receiving, running

pytestmark = pytest.mark.anyio

# The seed's GET URL with X/Y/Z/Q/R/S filled; `ip` is an extra the server ignores.
SEED_QUERY = (
    "username=demo&password=demo&type=0&dlr=1&destination=%2B447700900001%2C447700900002"
    "&source=ACME&message=Hello%20there&ip=x"
)
SEND = "/bulksms/bulksms"
SCHEDULE = "/bulksms/schedulemsg"
BASE = {
    "username": "demo",
    "password": "demo",
    "type": "0",
    "dlr": "0",
    "destination": "447700900001",
    "source": "ACME",
    "message": "Hello",
}
ENTRY = re.compile(r"1701\|(\d+)\|([0-9a-f-]{36})")


async def get(http: aiohttp.ClientSession, path: str, **changes: str) -> str:
    params = {**BASE, **changes}
    async with http.get(path, params=params) as response:
        assert response.status == 200  # Route Mobile answers 200 whatever happened
        assert response.content_type == "text/plain"
        return await response.text()


async def test_seed_get_url_gives_one_entry_per_destination_in_order() -> None:
    async with (
        running(["routemobile"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.get(f"{SEND}?{SEED_QUERY}") as response,
    ):
        assert response.status == 200
        body = await response.text()
    entries = body.split(",")
    assert len(entries) == 2
    matches = [ENTRY.fullmatch(entry) for entry in entries]
    assert [m.group(1) for m in matches if m] == ["447700900001", "447700900002"]
    for match in matches:
        assert match is not None
        assert uuid.UUID(match.group(2)).version == 4
    assert sim.counters("routemobile")["accepted_total"] == 2


async def test_post_form_is_accepted_too() -> None:
    async with (
        running(["routemobile"]) as sim,
        aiohttp.ClientSession(sim.url) as http,
        http.post(SEND, data=BASE) as response,
    ):
        assert ENTRY.fullmatch(await response.text())


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"source": ""}, "1702"),
        ({"message": ""}, "1702"),
        ({"password": "nope"}, "1703"),
        ({"username": "nobody"}, "1703"),
        # Credentials are checked before the message: a bad type with them is still 1703.
        ({"password": "nope", "type": "9"}, "1703"),
        ({"type": "9"}, "1704"),
        ({"type": "2", "message": "Hello"}, "1705"),
        ({"type": "2", "message": "004"}, "1705"),
        ({"type": "6", "message": "D800"}, "1705"),  # a lone surrogate is no text
        ({"source": "ACME-Corporation"}, "1707"),
        ({"source": "1234567890123456789"}, "1707"),
        ({"dlr": "2"}, "1708"),
    ],
)
async def test_request_level_errors_are_a_bare_code(changes: dict[str, str], code: str) -> None:
    async with running(["routemobile"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert await get(http, SEND, **changes) == code
    assert sim.counters("routemobile")["accepted_total"] == 0
    assert sim.counters("routemobile")["rejects"] == {code: 1}


async def test_unicode_is_utf16_hex_with_surrogate_pairs() -> None:
    text = "Привет 👋"
    hex_text = text.encode("utf-16-be").hex().upper()
    async with running(["routemobile"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert ENTRY.fullmatch(await get(http, SEND, type="2", message=hex_text))
        assert ENTRY.fullmatch(await get(http, SEND, type="6", message=hex_text.lower()))


async def test_a_bad_destination_is_its_own_entry() -> None:
    async with running(["routemobile"]) as sim, aiohttp.ClientSession(sim.url) as http:
        body = await get(http, SEND, destination="447700900001,23405,+447700900002")
    first, second, third = body.split(",")
    assert ENTRY.fullmatch(first)
    assert second == "1706|23405"
    assert ENTRY.fullmatch(third)


async def test_scheduler_accepts_both_spellings() -> None:
    schedule = {"date": "03/03/2027", "time": "03:45 am", "gmt": "GMT +1:30"}
    seed_spelling = {"scheduledate": "03/03/2027", "scheduletime": "11:51 pm", "gmt": "-10:00"}
    async with running(["routemobile"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert ENTRY.fullmatch(await get(http, SCHEDULE, **schedule))
        assert ENTRY.fullmatch(await get(http, SCHEDULE, **seed_spelling))
        # The seed's own samples schedule through the send path.
        assert ENTRY.fullmatch(await get(http, SEND, **seed_spelling))
        assert await get(http, SCHEDULE, **{**schedule, "date": "13/01/2027"}) == "1702"
        assert await get(http, SCHEDULE, **{**schedule, "time": "13:00 pm"}) == "1702"
        assert await get(http, SCHEDULE, **{**schedule, "gmt": "GMT +13:00"}) == "1702"
        assert await get(http, SCHEDULE, date="03/03/2027") == "1702"


async def test_credit_running_out_stops_processing_at_the_no_credit_entry() -> None:
    config = SimulatorConfig(routemobile_credit=2)
    cells = "447700900001,447700900002,447700900003,447700900004"
    async with running(["routemobile"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        body = await get(http, SEND, destination=cells)
        assert await get(http, SEND) == "1725|447700900001"
    entries = body.split(",")
    assert len(entries) == 3
    assert all(ENTRY.fullmatch(entry) for entry in entries[:2])
    assert entries[2] == "1725|447700900003"
    assert sim.counters("routemobile")["accepted_total"] == 2


async def test_route_mobile_numbering_switch() -> None:
    config = SimulatorConfig(
        routemobile_credit=0,
        routemobile_numbering="routemobile",
        recipient_codes={"447700900009": "DND"},
    )
    async with running(["routemobile"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        assert await get(http, SEND, destination="447700900009") == "1032|447700900009"
        assert await get(http, SEND) == "1025|447700900001"


async def test_forced_codes_reach_every_documented_reply() -> None:
    forced = {
        "447700900003": "1042",
        "447700900004": "DND",
        "447700900005": "1709",
        "447700900006": "1715",
        "447700900007": "1028",
        "447700900008": "69",
    }
    config = SimulatorConfig(recipient_codes=forced)
    async with running(["routemobile"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        body = await get(http, SEND, destination="447700900003,447700900004,447700900001")
        first, second, third = body.split(",")
        assert (first, second) == ("1042|447700900003", "1732|447700900004")
        assert ENTRY.fullmatch(third)
        for cell, code in list(forced.items())[2:]:
            assert await get(http, SEND, destination=f"447700900001,{cell}") == code


async def test_colon_separator_switch() -> None:
    config = SimulatorConfig(routemobile_id_separator=":")
    async with running(["routemobile"], config) as sim, aiohttp.ClientSession(sim.url) as http:
        body = await get(http, SEND)
    assert re.fullmatch(r"1701\|447700900001:[0-9a-f-]{36}", body)


async def test_duplicate_window_gives_1041(clock: FakeClock) -> None:
    config = SimulatorConfig(routemobile_duplicate_window_s=60)
    async with (
        running(["routemobile"], config, clock) as sim,
        aiohttp.ClientSession(sim.url) as http,
    ):
        assert ENTRY.fullmatch(await get(http, SEND))
        assert await get(http, SEND) == "1041|447700900001"
        assert ENTRY.fullmatch(await get(http, SEND, message="Other"))
        clock.advance(61)
        assert ENTRY.fullmatch(await get(http, SEND))


async def test_ip_lists_give_16_and_18() -> None:
    async with running(["routemobile"]) as sim, aiohttp.ClientSession(sim.url) as http:
        assert ENTRY.fullmatch(await get(http, SEND))
        await http.post(f"{sim.url}/_sim/config", json={"routemobile_ip_whitelist": ["10.0.0.1"]})
        assert await get(http, SEND) == "18"
        await http.post(
            f"{sim.url}/_sim/config",
            json={"routemobile_ip_whitelist": None, "routemobile_ip_blacklist": ["127.0.0.1"]},
        )
        assert await get(http, SEND) == "16"


async def test_reports_are_posted_with_query_parameters_only_for_dlr_1() -> None:
    async with receiving([202]) as receiver:
        config = SimulatorConfig(
            dlr_delay_s=0.01,
            dlr_mix={"UNDELIV": 1.0},
            routemobile_dlr_url=f"{receiver.url}/dlr/routemobile",
        )
        async with (
            running(["routemobile"], config) as sim,
            aiohttp.ClientSession(sim.url) as http,
        ):
            await get(http, SEND, dlr="0", destination="447700900001")
            body = await get(http, SEND, dlr="1", destination="447700900002")
            await receiver.wait_for(1)
            await eventually(lambda: sim.counters("routemobile")["dlr_ok"] == 1)
    match = ENTRY.fullmatch(body)
    assert match is not None
    # Reports leave in acceptance order, so a report for dlr=0 would have come first.
    assert len(receiver.requests) == 1
    method, query = receiver.requests[0]
    assert method == "POST"
    assert query["sMessageId"] == match.group(2)
    assert query["sMobileNo"] == "447700900002"
    assert query["sSender"] == "ACME"
    assert query["sStatus"] == "UNDELIV"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", query["dtSubmit"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", query["dtDone"])
    for name in ("iCostPerSms", "iCharge", "iMCCMNC", "iErrCode"):
        assert name in query
    assert (query["iCostPerSms"], query["iCharge"]) == ("1", "1")  # one part, one credit


@pytest.mark.parametrize(
    ("message_type", "message", "parts"),
    [
        ("0", "a" * 160, 1),
        ("0", "a" * 161, 2),  # long: every 153 characters a part (seed 001)
        ("0", "a" * 307, 3),
        ("0", "€" * 80, 1),  # extension characters take two septets
        ("0", "€" * 81, 2),
        ("2", "0041" * 70, 1),  # Unicode hex, 4 digits a character: 70 in one part
        ("2", "0041" * 135, 3),  # then 268 hex digits (67 characters) a part
    ],
)
async def test_a_report_charges_every_part(message_type: str, message: str, parts: int) -> None:
    """Route Mobile's DLR Push API: iCharge is the total credits of the message's parts."""
    async with receiving([200]) as receiver:
        config = SimulatorConfig(
            dlr_delay_s=0.01, routemobile_dlr_url=f"{receiver.url}/dlr/routemobile"
        )
        async with (
            running(["routemobile"], config) as sim,
            aiohttp.ClientSession(sim.url) as http,
        ):
            await get(http, SEND, dlr="1", type=message_type, message=message)
            await receiver.wait_for(1)
    _method, query = receiver.requests[0]
    assert (query["iCostPerSms"], query["iCharge"]) == ("1", str(parts))
