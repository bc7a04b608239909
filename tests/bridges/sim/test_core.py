"""Shared simulator parts: config updates and their validation, counters, seeded chance."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from bridges.sim.core import (
    ProviderCounters,
    ProviderState,
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
