"""Admission by bridge through the running daemon and the embedded simulators: a line a
bridge's provider would refuse is rejected when it is accepted, with a sentence naming the
rule and the bridge, and never reaches the provider; a flash line goes to the bridge of
its route that sends flash, or is rejected. Every wait is bounded (Client.wait_for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.smpp import pdu as p
from tests.engine.daemon_harness import Client, connected, daemon_settings, running_daemon
from tests.engine.smpp.raw_client import RawClient

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALL_DELIVERED = {"dlr_mix": {"DELIVRD": 1.0}}


def by_id(client: Client, kind: str) -> dict[str, dict[str, Any]]:
    return {event["id"]: event for event in client.of(kind) if event.get("id")}


def nothing_sent(counters: dict[str, Any], provider: str) -> bool:
    return counters[provider]["accepted_total"] == 0 and not counters[provider]["rejects"]


async def test_senders_and_texts_the_provider_would_refuse_are_rejected_at_accept(
    tmp_path: Path,
) -> None:
    refused = [
        {"id": "bsg-sender", "route": "bsg", "from": "VERYLONGSEND"},
        {"id": "rm-sender", "route": "routemobile", "from": "VERYLONGSEND"},
        {"id": "bsg-plus", "route": "bsg", "from": "+447700900123"},
        {"id": "bsg-text", "route": "bsg", "text": "x" * 766},
        # +44 routes bsg -> routemobile: neither takes a 12-character alphanumeric sender.
        {"id": "uk-sender", "from": "VERYLONGSEND"},
    ]
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        async with connected(daemon) as client:
            await client.send(
                *({"to": "+447700900123", "text": "Hello", **line} for line in refused)
            )
            await client.wait_for(lambda events: len(client.of("rejected")) == len(refused))
        counters = await daemon.sim_counters()
    rejected = by_id(client, "rejected")
    assert {key: event["error"] for key, event in rejected.items()} == {
        "bsg-sender": "from 'VERYLONGSEND' is 12 characters; bsg takes at most 11 alphanumeric",
        "rm-sender": (
            "from 'VERYLONGSEND' is 12 characters; routemobile takes at most 11 alphanumeric"
        ),
        "bsg-plus": (
            "from '+447700900123' starts with '+'; bsg takes a numeric sender as digits only"
        ),
        "bsg-text": "text is 766 GSM-7 characters; bsg takes at most 765",
        "uk-sender": (
            "from 'VERYLONGSEND' is 12 characters; bsg takes at most 11 alphanumeric; "
            "routemobile takes at most 11 alphanumeric"
        ),
    }
    assert [event["line"] for event in client.of("rejected")] == [1, 2, 3, 4, 5]
    assert not client.of("accepted")
    assert nothing_sent(counters, "bsg")
    assert nothing_sent(counters, "routemobile")


async def test_a_property_the_primary_refuses_goes_to_the_routes_first_bridge_that_takes_it(
    tmp_path: Path,
) -> None:
    lines = [
        # +44 routes bsg -> routemobile; BSG takes 765 septets, Route Mobile concatenates.
        {"id": "long", "to": "+447700900123", "text": "x" * 800},
        # +380 routes smsclub -> bsg; SMS Club takes 11 characters, BSG 14 digits.
        {"id": "numeric", "to": "+380501234567", "text": "Hello", "from": "380501234567"},
    ]
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config(ALL_DELIVERED)
        async with connected(daemon) as client:
            await client.send(*lines)
            await client.wait_for(lambda events: len(client.of("dlr")) >= len(lines))
        counters = await daemon.sim_counters()
    accepted = by_id(client, "accepted")
    assert accepted["long"]["bridge"] == "routemobile"
    assert accepted["numeric"]["bridge"] == "bsg"
    assert {event["state"] for event in client.of("dlr")} == {"DELIVRD"}
    assert not client.of("failover")
    assert (counters["routemobile"]["accepted_total"], counters["bsg"]["accepted_total"]) == (
        1,
        1,
    )
    assert nothing_sent(counters, "smsclub")


async def test_flash_goes_to_routemobile_or_is_rejected(tmp_path: Path) -> None:
    lines = [
        # +250 routes dsc -> routemobile: only Route Mobile sends flash (types 1/6/7).
        {"id": "rw-flash", "to": "+250788123456", "text": "Hello", "flash": True},
        # +380 routes smsclub -> bsg: neither has flash messages.
        {"id": "ua-flash", "to": "+380501234567", "text": "Hello", "flash": True},
        {"id": "dsc-flash", "to": "+250788123456", "text": "Hello", "flash": True, "route": "dsc"},
    ]
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config(ALL_DELIVERED)
        async with connected(daemon) as client:
            await client.send(*lines)
            await client.wait_for(
                lambda events: len(client.of("rejected")) == 2 and len(client.of("dlr")) == 1
            )
        counters = await daemon.sim_counters()
    assert by_id(client, "accepted")["rw-flash"]["bridge"] == "routemobile"
    assert {key: event["error"] for key, event in by_id(client, "rejected").items()} == {
        "ua-flash": "flash is true; smsclub sends no flash messages; bsg sends no flash messages",
        "dsc-flash": "flash is true; dsc sends no flash messages",
    }
    assert counters["routemobile"]["accepted_total"] == 1
    for provider in ("dsc", "bsg", "smsclub"):
        assert nothing_sent(counters, provider)


async def test_an_smpp_source_addr_no_bridge_takes_is_esme_rinvsrcadr(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        async with await RawClient.connect(daemon.smpp_port) as client:
            assert (await client.bind()).command_status == p.ESME_ROK
            refused = await client.submit(
                source_addr="VERYLONGSEND", destination_addr="447700900123"
            )
            taken = await client.submit(source_addr="ACME", destination_addr="447700900123")
        counters = await daemon.sim_counters()
    assert refused.command_status == p.ESME_RINVSRCADR
    assert taken.command_status == p.ESME_ROK
    assert counters["bsg"]["accepted_total"] + counters["routemobile"]["accepted_total"] <= 1
