"""Polling by the providers' rules, through the running daemon against the simulators.

A backlog of messages pending at BSG and SMS Club (their reports come seconds late, so
each is polled several times) while new sends keep coming: SMS Club, on the embedded
default's 8 requests/s, never answers 429 (its limit, 9 in any second, counts sends and
status calls together); BSG is never asked about one message twice within its abuse
window (its floor and the simulator's window scaled from a minute to a second, so the
test runs in seconds); every message ends with exactly one final outcome. A poller set
below the window is caught by the simulator's count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from engine.config import Settings
from tests.engine.daemon_harness import FINAL, Client, connected, daemon_settings, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# BSG's floor and the simulator's abuse window, a minute in production, a second here.
BSG_WINDOW_S = 1.0
BACKLOG_PER_BRIDGE = 400
STREAM_PER_BRIDGE = 30
BSG_PREFIX = "+4477009"  # engine.routing's default routes: the UK to bsg
SMSCLUB_PREFIX = "+3805010"  # Ukraine to smsclub


def with_bsg_floor(settings: Settings, interval_s: float, floor_s: float) -> Settings:
    bridges = dict(settings.bridges)
    bridges["bsg"] = msgspec.structs.replace(
        bridges["bsg"], poll_interval_s=interval_s, poll_floor_s=floor_s
    )
    return msgspec.structs.replace(settings, bridges=bridges)


def final_events(client: Client) -> dict[str, list[dict[str, Any]]]:
    """msg_id -> every event that ended it (a final dlr or a failed): one each, if right."""
    finals: dict[str, list[dict[str, Any]]] = {}
    for event in client.events:
        if event["event"] == "failed" or (event["event"] == "dlr" and event["state"] in FINAL):
            finals.setdefault(event["msg_id"], []).append(event)
    return finals


def all_final(client: Client, count: int) -> Any:
    return lambda events: len(client.of("accepted")) == count and len(final_events(client)) == count


def throttled(counters: dict[str, Any]) -> int:
    """Requests the provider answered 429, whatever the endpoint."""
    return sum(by_status.get("429", 0) for by_status in counters["requests"].values())


async def send_backlog_and_stream(client: Client) -> int:
    """Lines of 100 recipients per bridge (one text each), then single messages with texts
    of their own (one request each), a few a second, while the backlog is polled."""
    lines = []
    for prefix, bridge in ((BSG_PREFIX, "bsg"), (SMSCLUB_PREFIX, "club")):
        for wave in range(BACKLOG_PER_BRIDGE // 100):
            recipients = [f"{prefix}{wave}{n:04d}" for n in range(100)]
            lines.append({"to": recipients, "text": f"{bridge} backlog wave {wave}"})
    await client.send(*lines)
    for n in range(STREAM_PER_BRIDGE):
        await client.send(
            {"to": f"{BSG_PREFIX}9{n:04d}", "text": f"bsg stream {n}"},
            {"to": f"{SMSCLUB_PREFIX}9{n:04d}", "text": f"club stream {n}"},
        )
        await anyio.sleep(0.2)
    return 2 * (BACKLOG_PER_BRIDGE + STREAM_PER_BRIDGE)


async def test_a_polled_backlog_with_sends_going_on_stays_within_both_providers_rules(
    tmp_path: Path,
) -> None:
    settings = with_bsg_floor(daemon_settings(tmp_path), BSG_WINDOW_S, BSG_WINDOW_S)
    async with running_daemon(settings) as daemon:
        # Reports come 3 s after a send: every message is polled while still pending.
        await daemon.sim_config({"dlr_delay_s": 3.0})
        await daemon.sim_config({"bsg_poll_abuse_s": BSG_WINDOW_S}, provider="bsg")
        async with connected(daemon) as client:
            count = await send_backlog_and_stream(client)
            await client.wait_for(all_final(client, count), timeout_s=90.0)
        counters = await daemon.sim_counters()
    accepted = client.of("accepted")
    assert {e["bridge"] for e in accepted} == {"bsg", "smsclub"}
    finals = final_events(client)
    assert {msg_id: len(events) for msg_id, events in finals.items()} == {
        e["msg_id"]: 1 for e in accepted
    }
    assert not client.of("failed")
    club, bsg = counters["smsclub"], counters["bsg"]
    assert throttled(club) == 0
    assert club["rejects"].get("429", 0) == 0
    assert club["requests"]["POST /sms/status"]["200"] > 0
    assert bsg["poll_abuse"] == 0
    assert bsg["requests"]["POST /rest/sms/getStatus"]["200"] > 0
    assert club["accepted_total"] == bsg["accepted_total"] == count // 2


async def test_polling_bsg_faster_than_its_window_is_counted_as_abuse(tmp_path: Path) -> None:
    # The control: the same simulator window, a poller configured under it.
    settings = with_bsg_floor(daemon_settings(tmp_path), 0.2, 0.2)
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_delay_s": 2.0, "bsg_poll_abuse_s": BSG_WINDOW_S}, "bsg")
        async with connected(daemon) as client:
            await client.send({"to": [f"{BSG_PREFIX}1{n:04d}" for n in range(5)], "text": "x"})
            await client.wait_for(all_final(client, 5))
        counters = await daemon.sim_counters()
    assert counters["bsg"]["poll_abuse"] > 0
