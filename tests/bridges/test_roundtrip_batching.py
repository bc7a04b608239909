"""Batches the providers accept, end to end (issue 17): the running daemon, real sockets,
real SQLite, the embedded simulators counting every request refused for what it held.

- 200 messages per bridge with repeated destinations, mixed validity and senders, a long
  text and (on Route Mobile, the one bridge with flash) flash: no
  request is refused for a batching reason (a repeated msisdn, BSG 31; a repeated phone
  and text, SMS Club 453), every message ends once, none is sent twice, and where the
  request carries one validity (BSG, SMS Club) none is given a shorter one than asked.
- A request refused whole because of one member (SMS Club's 453 for a message sent a
  minute before, dsc's testing-mode limit) is retried alone: the member at fault ends
  REJECTD, the others go out, each once.

Every wait is bounded (Client.wait_for); none sleeps for correctness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config import Settings
from tests.engine.daemon_harness import Client, connected, daemon_settings, running_daemon
from tests.engine.outcomes_harness import accepted_ids, journal_rows, with_bridge

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BRIDGES = ("dsc", "routemobile", "bsg", "smsclub")
MESSAGES = 200
NUMBERS = [f"+3809893{n:05d}" for n in range(20)]
# One short text and one long one (three GSM-7 parts; under BSG's 765-character limit).
TEXTS = ("Your order is ready", "Your parcel has left the warehouse. " * 10)
SENDERS = ("ACME", "SHOPTWO")
VALIDITIES: tuple[int | None, ...] = (None, 3600, 86_400)
BSG_DEFAULT_VALIDITY_S = 72 * 3600


def settings_for(tmp_path: Path) -> Settings:
    # The bridges' own rates are not under test here: SMS Club's is raised (and its
    # simulator's 9-a-second limit switched off below) so the run takes seconds.
    settings = daemon_settings(tmp_path)
    return with_bridge(settings, "smsclub", requests_per_s=1000.0, requests_burst=1000.0)


def mixed_lines(bridge: str) -> list[dict[str, Any]]:
    """200 one-recipient lines: 20 numbers, each 10 times; two texts, two senders, three
    validities. The number cycles every 20 lines and the rest every 12, so every batch
    key holds each of its numbers more than once."""
    lines = []
    for index in range(MESSAGES):
        line: dict[str, Any] = {
            "id": f"{bridge}-{index}",
            "to": NUMBERS[index % len(NUMBERS)],
            "text": TEXTS[index % 2],
            "from": SENDERS[(index // 2) % 2],
            "route": bridge,
            "dlr": False,
        }
        validity = VALIDITIES[(index // 4) % 3]
        if validity is not None:
            line["validity_s"] = validity
        if bridge == "routemobile" and index % 5 == 0:
            line["flash"] = True  # Route Mobile's `type` is one per request too
        lines.append(line)
    return lines


def outcomes_by_id(client: Client) -> dict[str, list[str]]:
    """msg_id -> the kinds of every event after `accepted` (submitted, retry, failed...)."""
    kinds: dict[str, list[str]] = {}
    for event in client.events:
        if event["event"] != "accepted" and event.get("msg_id"):
            kinds.setdefault(event["msg_id"], []).append(event["event"])
    return kinds


def ended(client: Client, msg_ids: list[str]) -> bool:
    finals = {
        event["msg_id"] for event in client.events if event["event"] in ("submitted", "failed")
    }
    return all(msg_id in finals for msg_id in msg_ids)


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_a_mixed_load_is_batched_as_the_provider_accepts(tmp_path: Path, bridge: str) -> None:
    lines = mixed_lines(bridge)
    async with running_daemon(settings_for(tmp_path)) as daemon:
        # No duplicate window between requests (a repeated phone and text is the point of
        # this load); a repeat inside one request is still refused whole (453).
        await daemon.sim_config({"smsclub_duplicate_window_s": 0, "smsclub_rate_limit": None})
        async with connected(daemon) as client:
            await client.send(*lines)
            await client.wait_for(lambda events: len(client.of("accepted")) == MESSAGES)
            ids = accepted_ids(client)
            await client.wait_for(lambda events: ended(client, list(ids.values())), 60.0)
        counters = (await daemon.sim_counters())[bridge]
    assert not client.of("rejected")
    # Every message one outcome, the provider's acceptance, with no retry on the way.
    assert outcomes_by_id(client) == {msg_id: ["submitted"] for msg_id in ids.values()}
    rows = journal_rows(str(tmp_path / "septet.db"), list(ids.values()))
    assert set(rows.values()) == {(3, "SUBMITTED")}
    # Nothing refused, nothing sent twice: each number got its ten, no request was
    # refused for what it held together.
    assert counters["refused_whole"] == {}
    assert counters["rejects"] == {}
    assert counters["accepted_total"] == MESSAGES
    expected = {number[1:]: MESSAGES // len(NUMBERS) for number in NUMBERS}
    assert counters["accepted_by_recipient"] == expected
    if bridge == "bsg":
        assert set(counters["accepted_by_reference"].values()) == {1}
    if bridge in ("bsg", "smsclub"):
        assert_validity_as_asked(client, lines, ids, counters["validity_s_by_id"], bridge)


def assert_validity_as_asked(
    client: Client,
    lines: list[dict[str, Any]],
    ids: dict[str, str],
    given: dict[str, int],
    bridge: str,
) -> None:
    """Each message's validity at the provider is the one its line asked for (to the
    provider's unit), never a shorter one taken from another line of its request."""
    asked = {ids[line["id"]]: line.get("validity_s") for line in lines}
    provider_ids = {event["msg_id"]: event["provider_id"] for event in client.of("submitted")}
    for msg_id, validity in asked.items():
        got = given.get(provider_ids[msg_id])
        if bridge == "bsg":
            # Whole hours, 72 where none is asked: 1 h and 24 h exactly (seconds pass).
            assert got == (validity or BSG_DEFAULT_VALIDITY_S), (msg_id, validity, got)
        elif validity is None:
            assert got is None, (msg_id, got)  # no lifetime sent
        else:
            # Whole minutes, rounded up from what is left at send time: within the run's
            # seconds and one validity slot of the asked validity, never longer.
            assert got is not None, msg_id
            assert validity - 120 <= got <= validity, (msg_id, validity, got)


async def test_smsclub_refusal_of_a_whole_request_isolates_the_duplicate(tmp_path: Path) -> None:
    # A minute-old message and a new line to the same phone with the same text: SMS Club
    # refuses the whole request of five with 453. Nothing was sent, so each goes again
    # alone; the duplicate is refused for good (its own attempt never went out, so the
    # 453 does not mean "taken"), the other four go out, each once.
    numbers = NUMBERS[:5]
    text = "Your table is ready"
    async with running_daemon(settings_for(tmp_path)) as daemon:
        await daemon.sim_config({"smsclub_rate_limit": None})
        async with connected(daemon) as client:
            first = {"id": "first", "to": numbers[0], "text": text, "route": "smsclub"}
            await client.send({**first, "dlr": False})
            await client.wait_for(lambda events: bool(client.of("submitted")))
            await client.send(
                {"id": "five", "to": numbers, "text": text, "route": "smsclub", "dlr": False}
            )
            await client.wait_for(lambda events: len(client.of("accepted")) == 6)
            five = [e["msg_id"] for e in client.of("accepted") if e["id"] == "five"]
            await client.wait_for(lambda events: ended(client, five))
        counters = (await daemon.sim_counters())["smsclub"]
    stories = outcomes_by_id(client)
    # The five were one request, refused whole: a retry each, then each its own answer.
    assert {tuple(stories[msg_id][:1]) for msg_id in five} == {("retry",)}
    duplicate, *others = five
    assert stories[duplicate] == ["retry", "failed"]
    [failed] = [e for e in client.of("failed") if e["msg_id"] == duplicate]
    assert failed["state"] == "REJECTD"
    assert "453" in failed["error"]
    for msg_id in others:
        assert stories[msg_id] == ["retry", "submitted"]
    assert counters["accepted_by_recipient"] == {number[1:]: 1 for number in numbers}
    assert counters["rejects"] == {"453": 2}  # the request of five, then the duplicate alone
    assert counters["refused_whole"] == {}  # a duplicate window, not a batching refusal


async def test_dsc_testing_limit_on_a_whole_request_lets_what_fits_go_alone(
    tmp_path: Path,
) -> None:
    # dsc's testing mode takes 3 a day; a request of five would pass it and is refused
    # whole (429). Alone, three fit and two are refused for good; none is sent twice.
    numbers = [f"+25078{n:07d}" for n in range(5)]
    async with running_daemon(settings_for(tmp_path)) as daemon:
        await daemon.sim_config({"dsc_testing_mode": True, "dsc_daily_limit": 3}, provider="dsc")
        async with connected(daemon) as client:
            line = {"id": "five", "to": numbers, "text": "hello", "route": "dsc", "dlr": False}
            await client.send(line)
            await client.wait_for(lambda events: len(client.of("accepted")) == 5)
            five = [e["msg_id"] for e in client.of("accepted")]
            await client.wait_for(lambda events: ended(client, five))
        counters = (await daemon.sim_counters())["dsc"]
    stories = outcomes_by_id(client)
    assert sorted(tuple(story) for story in stories.values()) == sorted(
        [("retry", "submitted")] * 3 + [("retry", "failed")] * 2
    )
    assert {e["state"] for e in client.of("failed")} == {"REJECTD"}
    assert counters["accepted_total"] == 3
    assert set(counters["accepted_by_recipient"].values()) == {1}
    assert counters["rejects"] == {"429": 3}  # the request of five, then two alone
