"""Shared simulator parts: config updates and their validation, counters, seeded chance."""

from __future__ import annotations

import random
import uuid
from urllib.parse import parse_qsl

import anyio
import pytest
from yarl import URL

from bridges.sim.core import (
    ProviderCounters,
    ProviderState,
    ReportUrl,
    SimulatorConfig,
    parse_form,
    updated_config,
)


def test_partial_update_keeps_the_rest() -> None:
    config = updated_config(SimulatorConfig(latency_ms=5), {"fail_rate": 0.25})
    assert (config.latency_ms, config.fail_rate) == (5, 0.25)
    assert config.dsc_username == "demo"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latency": 1}, "unknown field"),
        ({"faults": {"flood": 1.0}}, "unknown fault kinds: flood"),
        ({"dlr_mix": {"LOST": 1.0}}, "unknown delivery outcomes: LOST"),
        ({"fail_rate": -0.1}, "fail_rate"),
        ({"fail_rate": 0.5, "faults": {"5xx": 0}}, "positive weight"),
        ({"routemobile_numbering": "other"}, "routemobile_numbering"),
    ],
)
def test_invalid_updates_name_the_problem(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        updated_config(SimulatorConfig(), changes)


def test_seeded_state_repeats_its_choices() -> None:
    config = SimulatorConfig(seed=42, fail_rate=0.5, faults={"5xx": 1.0, "slow": 1.0})
    first, second = ProviderState("dsc", config), ProviderState("dsc", config)
    draws = [(s.pick_outcome(), s.pick_fault(), s.new_uuid()) for s in (first, second)]
    assert draws[0] == draws[1]
    first.update({"seed": 42})
    assert first.pick_outcome() == ProviderState("dsc", config).pick_outcome()


def test_outcome_mix_is_respected() -> None:
    state = ProviderState("bsg", SimulatorConfig(seed=1, dlr_mix={"EXPIRED": 1.0, "DELIVRD": 0}))
    assert {state.pick_outcome() for _ in range(50)} == {"EXPIRED"}
    assert state.pick_fault() is None  # fail_rate 0


def test_counters_count() -> None:
    counters = ProviderCounters()
    counters.count_request("POST /x", "200")
    counters.count_request("POST /x", "200")
    counters.count_accepted("250782589800", "ref")
    counters.count_reject("1706", 2)
    counters.count_fault("5xx")
    assert counters.requests == {"POST /x": {"200": 2}}
    assert (counters.accepted_total, counters.accepted_by_reference) == (1, {"ref": 1})
    assert (counters.rejects, counters.faults) == ({"1706": 2}, {"5xx": 1})


@pytest.mark.parametrize(
    "body",
    [
        b"api_key=demo&username=demo&recipients=250782589800%2C250782589801&message=Hi+there",
        b"message=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82&empty=&flag&&dup=1&dup=2",
        b"bad=%ZZ&plus=%2B250&amp=a%26b",
    ],
)
def test_parse_form_reads_like_parse_qsl(body: bytes) -> None:
    expected = dict(parse_qsl(body.decode(), keep_blank_values=True))
    assert parse_form(body) == expected


def test_parse_form_can_keep_the_first_of_repeated_names() -> None:
    query = "dup=1&dup=2&plus=a+b&pct=%2B1"
    assert parse_form(query, first_wins=True) == {"dup": "1", "plus": "a b", "pct": "+1"}
    assert parse_form(query)["dup"] == "2"


def test_draws_match_the_standard_library_for_the_same_seed() -> None:
    # The fast paths must not change what a seeded run produces.
    config = SimulatorConfig(seed=3, dlr_mix={"DELIVRD": 0.7, "UNDELIV": 0.2, "EXPIRED": 0.1})
    state = ProviderState("routemobile", config)
    reference = random.Random(3)
    outcomes, weights = list(config.dlr_mix), list(config.dlr_mix.values())
    for _ in range(20):
        expected = reference.choices(outcomes, weights=weights)[0]
        assert state.pick_outcome() == expected
        assert state.new_uuid() == str(uuid.UUID(int=reference.getrandbits(128), version=4))


def test_report_url_keeps_the_receivers_parameters_and_replaces_templates() -> None:
    receiver = URL("http://127.0.0.1:9/dlr/dsc?dnis=$dnis$&username=recv&password=s%26cret#x")
    reports = ReportUrl(receiver, {"command": "deliver"}, ("dnis", "dlvrMsgStat"))
    built = URL(reports.build({"dnis": "250782589800", "dlvrMsgStat": "D"}))
    assert (built.path, built.fragment) == ("/dlr/dsc", "")
    assert dict(built.query) == {
        "username": "recv",
        "password": "s&cret",
        "command": "deliver",
        "dnis": "250782589800",
        "dlvrMsgStat": "D",
    }
    bare = ReportUrl(URL("http://127.0.0.1:9/d"), {}, ("a",))
    assert bare.build({"a": "1 2"}) == "http://127.0.0.1:9/d?a=1+2"


@pytest.mark.anyio
async def test_reports_leave_in_due_order_and_wake_a_waiting_drainer() -> None:
    state = ProviderState("dsc", SimulatorConfig(dlr_delay_s=0.0))
    taken: list[list[str]] = []

    async def drain_once() -> None:
        taken.append([job.url for job in await state.due_reports()])

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(drain_once)
        await anyio.wait_all_tasks_blocked()
        assert taken == []  # nothing queued: the drainer waits
        state.schedule_callback("GET", "http://127.0.0.1:9/first")
    state.update({"dlr_delay_s": 3600.0})
    state.schedule_callback("GET", "http://127.0.0.1:9/much-later")
    state.update({"dlr_delay_s": 0.0})
    state.schedule_callback("GET", "http://127.0.0.1:9/second")
    state.schedule_callback("POST", "http://127.0.0.1:9/third", frozenset({202}))
    await drain_once()
    assert taken == [
        ["http://127.0.0.1:9/first"],
        ["http://127.0.0.1:9/second", "http://127.0.0.1:9/third"],
    ]
    assert state.pending_reports == 1  # the one due in an hour stays queued
