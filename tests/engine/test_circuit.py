"""Tests for engine.circuit: the state table, row by row, driven by a fake clock."""

from __future__ import annotations

from typing import Final, Literal

import pytest

from engine.circuit import CircuitBreaker, CircuitState

Action = Literal["success", "failure", "allow", "release"]
Step = tuple[float, Action]


def drive(breaker: CircuitBreaker, steps: list[Step]) -> list[tuple[CircuitState, bool | None]]:
    """Apply each step; after each, the state, and what `allow` answered for allow steps."""
    seen: list[tuple[CircuitState, bool | None]] = []
    for now, action in steps:
        allowed: bool | None = None
        if action == "success":
            breaker.record_success(now)
        elif action == "failure":
            breaker.record_failure(now)
        elif action == "release":
            breaker.release(now)
        else:
            allowed = breaker.allow(now)
        seen.append((breaker.state(now), allowed))
    return seen


def small_breaker() -> CircuitBreaker:
    """Trips on 3 failures within 30 s; open 10 s, doubling to at most 40 s; 1 trial."""
    return CircuitBreaker(
        failure_threshold=3, window_s=30.0, open_s=10.0, half_open_max=1, max_open_s=40.0
    )


CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"

# Each row: a name, then (time, action) -> (state after it, allow's answer or None).
STATE_TABLE: list[tuple[str, list[tuple[Step, tuple[CircuitState, bool | None]]]]] = [
    (
        "closed lets everything through",
        [
            ((0, "allow"), (CLOSED, True)),
            ((0, "success"), (CLOSED, None)),
            ((1, "allow"), (CLOSED, True)),
        ],
    ),
    (
        "closed counts failures; the threshold-th in a row trips it",
        [
            ((0, "failure"), (CLOSED, None)),
            ((1, "failure"), (CLOSED, None)),
            ((2, "failure"), (OPEN, None)),
            ((2, "allow"), (OPEN, False)),
        ],
    ),
    (
        "a success breaks the streak",
        [
            ((0, "failure"), (CLOSED, None)),
            ((1, "failure"), (CLOSED, None)),
            ((2, "success"), (CLOSED, None)),
            ((3, "failure"), (CLOSED, None)),
            ((4, "failure"), (CLOSED, None)),
            ((5, "failure"), (OPEN, None)),
        ],
    ),
    (
        "failures older than window_s are forgotten",
        [
            ((0, "failure"), (CLOSED, None)),
            ((20, "failure"), (CLOSED, None)),
            ((31, "failure"), (CLOSED, None)),  # the one at 0 is out of the 30 s window
            ((45, "failure"), (OPEN, None)),  # 20, 31, 45: three within 30 s
        ],
    ),
    (
        "open refuses until open_s has passed, then half-open",
        [
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (OPEN, None)),
            ((9.9, "allow"), (OPEN, False)),
            ((10, "allow"), (HALF_OPEN, True)),
        ],
    ),
    (
        "late answers while open change nothing",
        [
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (OPEN, None)),
            ((1, "success"), (OPEN, None)),
            ((2, "failure"), (OPEN, None)),
            ((9, "allow"), (OPEN, False)),
            ((10, "allow"), (HALF_OPEN, True)),
        ],
    ),
    (
        "half-open allows half_open_max trials, then waits for their answer",
        [
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (OPEN, None)),
            ((10, "allow"), (HALF_OPEN, True)),
            ((10, "allow"), (HALF_OPEN, False)),
            ((11, "allow"), (HALF_OPEN, False)),
        ],
    ),
    (
        "a trial's success closes the circuit",
        [
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (OPEN, None)),
            ((10, "allow"), (HALF_OPEN, True)),
            ((11, "success"), (CLOSED, None)),
            ((11, "allow"), (CLOSED, True)),
        ],
    ),
    (
        "a trial's failure re-opens it for twice as long",
        [
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (OPEN, None)),
            ((10, "allow"), (HALF_OPEN, True)),
            ((11, "failure"), (OPEN, None)),
            ((30.9, "allow"), (OPEN, False)),  # open 20 s from 11
            ((31, "allow"), (HALF_OPEN, True)),
        ],
    ),
    (
        "a released trial frees its slot",
        [
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (CLOSED, None)),
            ((0, "failure"), (OPEN, None)),
            ((10, "allow"), (HALF_OPEN, True)),
            ((10, "release"), (HALF_OPEN, None)),
            ((10, "allow"), (HALF_OPEN, True)),
        ],
    ),
    (
        "release while closed is harmless",
        [((0, "release"), (CLOSED, None)), ((0, "allow"), (CLOSED, True))],
    ),
]


@pytest.mark.parametrize(
    "steps", [row[1] for row in STATE_TABLE], ids=[row[0] for row in STATE_TABLE]
)
def test_state_table(steps: list[tuple[Step, tuple[CircuitState, bool | None]]]) -> None:
    breaker = small_breaker()
    assert drive(breaker, [step for step, _ in steps]) == [seen for _, seen in steps]


def trip(breaker: CircuitBreaker, now: float) -> None:
    """Fail enough requests at `now` to open the breaker."""
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(now)
    assert breaker.state(now) == "open"


def test_open_time_doubles_up_to_the_cap_and_resets_on_close() -> None:
    breaker = small_breaker()
    now = 0.0
    trip(breaker, now)
    open_times = [breaker.open_for_s]
    for _ in range(4):
        now = breaker.retry_at(now)
        assert breaker.allow(now)
        breaker.record_failure(now)
        open_times.append(breaker.open_for_s)
    assert open_times == [10.0, 20.0, 40.0, 40.0, 40.0]
    now = breaker.retry_at(now)
    assert breaker.allow(now)
    breaker.record_success(now)
    assert breaker.state(now) == "closed"
    assert breaker.open_for_s == 10.0


def test_retry_at_says_when_an_open_circuit_will_allow_again() -> None:
    breaker = small_breaker()
    assert breaker.retry_at(5.0) == 5.0
    trip(breaker, 5.0)
    assert breaker.retry_at(6.0) == 15.0
    assert breaker.allow(15.0)


def test_several_trials_when_half_open_max_allows() -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_s=1.0, half_open_max=3)
    breaker.record_failure(0.0)
    assert [breaker.allow(1.0) for _ in range(4)] == [True, True, True, False]
    breaker.record_failure(1.5)  # the first trial failed: open again
    breaker.record_success(1.6)  # a second trial's late success: no news while open
    assert breaker.state(1.6) == "open"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"window_s": 0.0}, "window_s"),
        ({"open_s": 0.0}, "open_s"),
        ({"open_s": 500.0}, "open_s"),
        ({"half_open_max": 0}, "half_open_max"),
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        CircuitBreaker(**settings)  # type: ignore[arg-type]
