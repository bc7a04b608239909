"""`[pricing.<bridge>]` and `[routing]` through the running daemon: the costs of accepted,
failover and submitted events and of `septet_cost_total` come from the configured tables,
and routing prefixes are laid over the embedded table unless `replace = true`."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from engine.config import RoutingSettings
from engine.pricing import PriceConfig
from tests.engine.daemon_harness import connected, daemon_settings, running_daemon

pytestmark = pytest.mark.anyio

PRICING = {
    # Per message: a long text costs one unit price, whatever its parts.
    "dsc": PriceConfig(currency="USD", per="message", default=0.5, prefixes={"25078": 0.04}),
    # Per segment: a two-part text costs twice the unit price.
    "routemobile": PriceConfig(currency="EUR", per="segment", default=0.01, prefixes={"250": 0.03}),
}
LONG_TEXT = "Two parts: " + "x" * 170  # GSM-7, 181 characters: 2 segments


async def test_accepted_failover_and_submitted_events_and_metrics_use_the_configured_prices(
    tmp_path: Path,
) -> None:
    settings = daemon_settings(tmp_path, pricing=PRICING)
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"fail_rate": 1.0, "faults": {"5xx": 1.0}}, provider="dsc")
        async with connected(daemon) as client:
            await client.send({"id": "p1", "to": "+250788100050", "text": LONG_TEXT})
            await client.wait_for(lambda events: bool(client.of("submitted")))
            # The metric is counted after the submit's commit, beside the event: ask
            # until it shows (bounded), then check its value.
            series = 'septet_cost_total{bridge="routemobile",currency="EUR",source="estimate"}'
            async with httpx.AsyncClient() as http:
                for _ in range(100):
                    reply = await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")
                    if series in reply.text:
                        break
                    await anyio.sleep(0.05)
    [value] = [line.split()[-1] for line in reply.text.splitlines() if line.startswith(series)]
    assert float(value) == pytest.approx(0.06)
    [accepted] = client.of("accepted")
    assert (accepted["bridge"], accepted["segments"]) == ("dsc", 2)
    assert (accepted["cost"], accepted["currency"]) == (0.04, "USD")  # per message, 25078
    [failover] = client.of("failover")
    assert (failover["bridge"], failover["cost"], failover["currency"]) == (
        "routemobile",
        0.06,
        "EUR",
    )
    [submitted] = client.of("submitted")
    assert (submitted["bridge"], submitted["cost"], submitted["currency"]) == (
        "routemobile",
        0.06,
        "EUR",
    )


async def test_routing_prefixes_merge_over_the_embedded_table(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path, routing=RoutingSettings(prefixes={"44": ["smsclub"]}))
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send(
            {"id": "uk", "to": "+447700900050", "text": "written route"},
            {"id": "rw", "to": "+250788100051", "text": "embedded route"},
            {"id": "au", "to": "+61412345678", "text": "embedded default route"},
        )
        await client.wait_for(lambda events: len(client.of("accepted")) == 3)
    bridges = {event["id"]: event["bridge"] for event in client.of("accepted")}
    assert bridges == {"uk": "smsclub", "rw": "dsc", "au": "routemobile"}


async def test_routing_replace_routes_only_what_is_written(tmp_path: Path) -> None:
    routing = RoutingSettings(prefixes={"44": ["bsg"]}, replace=True)
    settings = daemon_settings(tmp_path, routing=routing)
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send(
            {"id": "uk", "to": "+447700900052", "text": "written route"},
            {"id": "rw", "to": "+250788100052", "text": "no route any more"},
        )
        await client.wait_for(lambda events: len(client.events) >= 2)
    assert [event["bridge"] for event in client.of("accepted")] == ["bsg"]
    [rejected] = client.of("rejected")
    assert rejected["id"] == "rw"
    assert "no route matches '+250788100052'" in rejected["error"]
