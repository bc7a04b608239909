"""Tests for engine.retry: a golden table per entry point, and properties of the backoff."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.base import Idempotency, Outcome, Rejected, RetryLater, Submitted, Throttled, Unknown
from engine.retry import Decision, Done, Failover, GiveUp, RetryAt, RetryPolicy

NOW = 1_000.0


def no_jitter() -> float:
    """The middle of [0, 1): the jitter spread is exactly 1, so delays are the bare backoff."""
    return 0.5


# Default policy: backoff 0.5 s, 1 s, 2 s, … (×2), capped at 300 s; 8 attempts; throttles 16.
OUTCOME_TABLE: list[tuple[str, Outcome, int, Idempotency, bool, Decision]] = [
    # ── the provider took it ──
    ("submitted", Submitted("p-1"), 1, "none", False, Done()),
    ("submitted without id", Submitted(None), 3, "reference", True, Done()),
    # ── final refusal: the provider's own words, never retried, never failed over ──
    (
        "rejected",
        Rejected("21", "Invalid msisdn"),
        1,
        "reference",
        True,
        GiveUp("Invalid msisdn", code="21"),
    ),
    # ── retry later: exponential backoff, Retry-After as a floor ──
    (
        "retry first",
        RetryLater("500", "upstream down"),
        1,
        "none",
        False,
        RetryAt(NOW + 0.5, "500: upstream down"),
    ),
    (
        "retry third",
        RetryLater("500", "upstream down"),
        3,
        "none",
        False,
        RetryAt(NOW + 2.0, "500: upstream down"),
    ),
    (
        "retry-after above backoff wins",
        RetryLater("503", "busy", 30.0),
        1,
        "none",
        False,
        RetryAt(NOW + 30.0, "503: busy"),
    ),
    (
        "retry-after below backoff is only a floor",
        RetryLater("503", "busy", 0.1),
        3,
        "none",
        False,
        RetryAt(NOW + 2.0, "503: busy"),
    ),
    (
        "retry attempts used up, failover allowed",
        RetryLater("500", "upstream down"),
        8,
        "none",
        True,
        Failover("500: upstream down; 8 attempts on this bridge"),
    ),
    (
        "retry attempts used up, no failover",
        RetryLater("500", "upstream down"),
        8,
        "none",
        False,
        GiveUp("500: upstream down; gave up after 8 attempts", code="500", why="attempts_used"),
    ),
    # ── throttled: max(Retry-After, backoff), twice the attempts before failing over ──
    (
        "throttled with retry-after",
        Throttled("429", "too many", 5.0),
        1,
        "none",
        True,
        RetryAt(NOW + 5.0, "throttled (429: too many)"),
    ),
    (
        "throttled at max_attempts still retries",
        Throttled("429", "too many"),
        8,
        "none",
        True,
        RetryAt(NOW + 64.0, "throttled (429: too many)"),
    ),
    (
        "throttled past patience, failover allowed",
        Throttled("429", "too many"),
        16,
        "none",
        True,
        Failover("throttled (429: too many); 16 attempts on this bridge"),
    ),
    (
        "throttled past patience, no failover",
        Throttled("429", "too many"),
        16,
        "none",
        False,
        GiveUp(
            "throttled (429: too many); gave up after 16 attempts", code="429", why="attempts_used"
        ),
    ),
    # ── unknown: never resend, whatever the provider deduplicates ──
    (
        "unknown",
        Unknown("1715", "response timeout"),
        1,
        "none",
        True,
        GiveUp("outcome unknown: response timeout", code="1715", why="unknown"),
    ),
    (
        "unknown with reference idempotency",
        Unknown("1715", "response timeout"),
        1,
        "reference",
        True,
        GiveUp("outcome unknown: response timeout", code="1715", why="unknown"),
    ),
]


@pytest.mark.parametrize(
    ("outcome", "attempt", "idempotency", "can_failover", "expected"),
    [row[1:] for row in OUTCOME_TABLE],
    ids=[row[0] for row in OUTCOME_TABLE],
)
def test_decide_golden_table(
    outcome: Outcome,
    attempt: int,
    idempotency: Idempotency,
    can_failover: bool,
    expected: Decision,
) -> None:
    decision = RetryPolicy().decide(outcome, attempt, NOW, no_jitter, idempotency, can_failover)
    assert decision == expected


MAYBE = "the request may have reached the provider"
TRANSPORT_TABLE: list[tuple[str, bool, int, Idempotency, bool, float, Decision]] = [
    # ── never sent: as RetryLater ──
    (
        "not sent",
        False,
        1,
        "none",
        False,
        NOW,
        RetryAt(NOW + 0.5, "transport failure before the request was sent"),
    ),
    (
        "not sent, attempts used up, failover allowed",
        False,
        8,
        "none",
        True,
        NOW - 100,
        Failover("transport failure before the request was sent; 8 attempts on this bridge"),
    ),
    (
        "not sent, attempts used up, no failover",
        False,
        8,
        "none",
        False,
        NOW - 100,
        GiveUp(
            "transport failure before the request was sent; gave up after 8 attempts",
            why="attempts_used",
        ),
    ),
    # ── maybe sent, no idempotency: unknown at once ──
    (
        "maybe sent, no idempotency",
        True,
        1,
        "none",
        True,
        NOW,
        GiveUp(
            f"outcome unknown: {MAYBE} and it offers no way to resend safely",
            why="no_idempotency",
            maybe_sent=True,
        ),
    ),
    # ── maybe sent, the provider deduplicates by reference (BSG) ──
    (
        "maybe sent, reference",
        True,
        2,
        "reference",
        True,
        NOW - 1,
        RetryAt(NOW + 1.0, f"{MAYBE}; it deduplicates by reference"),
    ),
    (
        "maybe sent, reference, attempts used up: never fail over",
        True,
        8,
        "reference",
        True,
        NOW - 100,
        GiveUp(
            f"outcome unknown: {MAYBE} and 8 attempts are used up",
            why="attempts_used",
            maybe_sent=True,
        ),
    ),
    # ── maybe sent, duplicate window (SMS Club, 120 s, resend no later than 110 s) ──
    (
        "maybe sent, window, early",
        True,
        1,
        "duplicate-window",
        True,
        NOW,
        RetryAt(
            NOW + 0.5,
            f"{MAYBE}; the resend is 0.5 s after the first attempt, inside its 120 s "
            "duplicate window",
        ),
    ),
    (
        "maybe sent, window, backoff clamped to the window",
        True,
        7,
        "duplicate-window",
        True,
        NOW - 90,
        RetryAt(
            NOW + 20.0,
            f"{MAYBE}; the resend is 110.0 s after the first attempt, inside its 120 s "
            "duplicate window",
        ),
    ),
    (
        "maybe sent, window passed",
        True,
        2,
        "duplicate-window",
        True,
        NOW - 115,
        GiveUp(
            f"outcome unknown: {MAYBE} and its 120 s duplicate window has passed",
            why="window_passed",
            maybe_sent=True,
        ),
    ),
]


@pytest.mark.parametrize(
    ("maybe_sent", "attempt", "idempotency", "can_failover", "first_attempt_at", "expected"),
    [row[1:] for row in TRANSPORT_TABLE],
    ids=[row[0] for row in TRANSPORT_TABLE],
)
def test_decide_transport_golden_table(
    maybe_sent: bool,
    attempt: int,
    idempotency: Idempotency,
    can_failover: bool,
    first_attempt_at: float,
    expected: Decision,
) -> None:
    decision = RetryPolicy().decide_transport(
        maybe_sent, attempt, NOW, no_jitter, idempotency, can_failover, first_attempt_at
    )
    assert decision == expected


def test_jitter_spreads_the_delay_both_ways() -> None:
    policy = RetryPolicy(jitter=0.2)
    earliest = policy.decide(RetryLater("500", "x"), 4, NOW, lambda: 0.0, "none")
    latest = policy.decide(RetryLater("500", "x"), 4, NOW, lambda: 0.999, "none")
    assert isinstance(earliest, RetryAt)
    assert isinstance(latest, RetryAt)
    assert earliest.at == pytest.approx(NOW + 4.0 * 0.8)
    assert latest.at == pytest.approx(NOW + 4.0 * 1.1998)


def test_the_backoff_stops_growing_at_the_cap() -> None:
    policy = RetryPolicy(max_delay_s=300.0)
    assert [policy.backoff_s(k) for k in (9, 10, 11, 12, 10_000)] == [128.0, 256.0, 300.0, 300, 300]


def test_decisions_round_trip_as_tagged_json() -> None:
    decisions: list[Decision] = [Done(), RetryAt(1.5, "r"), GiveUp("g", code="7"), Failover("f")]
    encoded = msgspec.json.encode(decisions)
    assert msgspec.json.decode(encoded, type=list[Decision]) == decisions
    assert b'"type":"retry_at"' in encoded


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"base_s": -1.0}, "base_s"),
        ({"factor": 0.5}, "factor"),
        ({"base_s": 10.0, "max_delay_s": 5.0}, "max_delay_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"jitter": 1.5}, "jitter"),
        ({"throttle_patience": 0}, "throttle_patience"),
        ({"duplicate_window_margin_s": 200.0}, "duplicate_window_margin_s"),
    ],
)
def test_nonsense_policies_are_refused(settings: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**settings)  # type: ignore[arg-type]


policies = st.builds(
    RetryPolicy,
    base_s=st.floats(min_value=0.0, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    max_delay_s=st.floats(min_value=10.0, max_value=3_600.0),
    max_attempts=st.integers(min_value=1, max_value=50),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
unit_interval = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(policy=policies, attempt=st.integers(min_value=1, max_value=2_000))
def test_backoff_never_decreases_with_the_attempt(policy: RetryPolicy, attempt: int) -> None:
    assert policy.backoff_s(attempt) <= policy.backoff_s(attempt + 1)


@given(policy=policies, attempt=st.integers(min_value=1, max_value=2_000), draw=unit_interval)
def test_jittered_delays_stay_between_zero_and_the_jittered_cap(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    delay = policy.jittered_s(attempt, lambda: draw)
    assert 0.0 <= delay <= policy.max_delay_s * (1 + policy.jitter)


@given(policy=policies, attempt=st.integers(min_value=1, max_value=200), draw=unit_interval)
def test_a_retry_is_never_scheduled_in_the_past(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    decision = policy.decide(RetryLater("500", "x"), attempt, NOW, lambda: draw, "none")
    if attempt >= policy.max_attempts:
        assert isinstance(decision, GiveUp)
    else:
        assert isinstance(decision, RetryAt)
        assert NOW <= decision.at <= NOW + policy.max_delay_s * (1 + policy.jitter)


def test_a_tiny_base_and_a_huge_attempt_do_not_overflow() -> None:
    policy = RetryPolicy(base_s=5e-324, factor=10.0, max_delay_s=10.0)
    assert policy.backoff_s(2_000) == 10.0
