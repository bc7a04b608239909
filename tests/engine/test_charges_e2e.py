"""The providers' own charges through the daemon (issue 17, point 5): on the `submitted`
event next to septet's estimate, in the journal, and in `septet_cost_total` by source.

dsc and BSG state a charge in the reply to the send; Route Mobile only in its report
(`iCharge`, every part); SMS Club never. The simulators charge as their providers do:
dsc 75 RWF and BSG 0.02 EUR a message, Route Mobile one credit a part.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.daemon_harness import connected, daemon_settings, running_daemon

pytestmark = pytest.mark.anyio

LONG = "x" * 200  # two GSM-7 parts


def journal_charges(path: str) -> dict[str, tuple[float | None, str | None]]:
    """msg_id -> (submit_cost, submit_currency) as the journal keeps them."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT msg_id, submit_cost, submit_currency FROM messages")
        return {str(msg_id): (cost, currency) for msg_id, cost, currency in rows}


def cost_samples(exposition: str) -> dict[tuple[str, str, str], float]:
    """(bridge, currency, source) -> septet_cost_total."""
    return {
        (item.labels["bridge"], item.labels["currency"], item.labels["source"]): item.value
        for family in text_string_to_metric_families(exposition)
        for item in family.samples
        if item.name == "septet_cost_total"
    }


async def test_every_bridge_that_states_a_charge_has_it_kept_and_counted(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    lines = [
        {"id": "dsc", "to": "+250788100001", "text": "Hello"},
        {"id": "dsc-long", "to": "+250788100002", "text": LONG},
        {"id": "bsg", "to": "+447700900001", "text": "Hello"},
        {"id": "rm", "to": "+919812300001", "text": "Hello"},
        {"id": "rm-long", "to": "+919812300002", "text": LONG},
        {"id": "club", "to": "+380501000001", "text": "Hello"},
    ]
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        async with connected(daemon) as client:
            await client.send(*lines)
            await client.wait_for(lambda events: len(client.final_reports()) == len(lines))
        async with httpx.AsyncClient() as http:
            exposition = (await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text
    assert settings.journal.path is not None
    kept = journal_charges(settings.journal.path)

    accepted = {event["id"]: event for event in client.of("accepted")}
    submitted: dict[str, dict[str, Any]] = {event["id"]: event for event in client.of("submitted")}
    assert {ref: event["bridge"] for ref, event in submitted.items()} == {
        "dsc": "dsc",
        "dsc-long": "dsc",
        "bsg": "bsg",
        "rm": "routemobile",
        "rm-long": "routemobile",
        "club": "smsclub",
    }

    def charge(ref: str) -> tuple[Any, ...]:
        event = submitted[ref]
        return event["cost"], event["currency"], event["provider_cost"], event["provider_currency"]

    # Each submitted event carries septet's estimate, as accepted announced it, and the
    # provider's charge where its reply stated one.
    for ref, event in submitted.items():
        assert (event["cost"], event["currency"]) == (
            accepted[ref]["cost"],
            accepted[ref]["currency"],
        )
    assert charge("dsc") == (75.0, "RWF", 75.0, "RWF")
    assert charge("dsc-long") == (150.0, "RWF", 75.0, "RWF")  # 75 a part vs 75 a message
    assert charge("bsg") == (0.0325, "EUR", 0.02, "EUR")
    # Route Mobile and SMS Club say nothing of a charge when they take a message.
    assert charge("rm") == (0.18, "INR", None, None)
    assert charge("rm-long") == (0.36, "INR", None, None)
    assert charge("club")[2:] == (None, None)

    # The journal keeps what each provider stated: at submit for dsc and BSG, from the
    # report for Route Mobile (iCharge: one credit a part, in the bridge's price currency).
    def journaled(ref: str) -> tuple[float | None, str | None]:
        return kept[accepted[ref]["msg_id"]]

    assert journaled("dsc") == (75.0, "RWF")
    assert journaled("dsc-long") == (75.0, "RWF")
    assert journaled("bsg") == (0.02, "EUR")
    assert journaled("rm") == (1.0, "INR")
    assert journaled("rm-long") == (2.0, "INR")
    assert journaled("club") == (None, None)

    costs = cost_samples(exposition)
    assert costs[("dsc", "RWF", "estimate")] == 225.0
    assert costs[("dsc", "RWF", "provider")] == 150.0
    assert costs[("bsg", "EUR", "estimate")] == pytest.approx(0.0325)
    assert costs[("bsg", "EUR", "provider")] == pytest.approx(0.02)
    assert costs[("routemobile", "INR", "estimate")] == pytest.approx(0.54)
    assert costs[("routemobile", "INR", "provider")] == 3.0  # counted as the reports came
    assert costs[("smsclub", "UAH", "estimate")] > 0
    assert not [key for key in costs if key[0] == "smsclub" and key[2] == "provider"]
