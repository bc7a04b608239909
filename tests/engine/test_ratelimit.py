"""Tests for engine.ratelimit: waits, bursts, debt, rate accuracy, and the GCRA bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.ratelimit import TokenBucket


def test_a_full_bucket_grants_its_burst_at_once() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    waits = [bucket.take(1, now=100.0) for _ in range(5)]
    assert waits == [0.0] * 5
    assert bucket.available(100.0) == 0.0


def test_the_caller_past_the_burst_waits_for_the_refill() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    for _ in range(5):
        bucket.take(1, now=0.0)
    assert bucket.take(1, now=0.0) == pytest.approx(0.1)


def test_queued_callers_wait_in_the_order_they_asked() -> None:
    bucket = TokenBucket(rate=4.0, burst=1.0)
    waits = [bucket.take(1, now=0.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert bucket.available(0.0) == pytest.approx(-3.0)


def test_the_debt_is_repaid_by_the_refill() -> None:
    bucket = TokenBucket(rate=4.0, burst=1.0)
    for _ in range(4):
        bucket.take(1, now=0.0)
    assert bucket.available(0.75) == pytest.approx(0.0)
    assert bucket.take(1, now=1.0) == 0.0


def test_the_level_never_refills_past_the_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=3.0)
    bucket.take(1, now=0.0)
    assert bucket.available(3600.0) == 3.0


def test_a_take_larger_than_the_burst_waits_proportionally() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    assert bucket.take(25, now=0.0) == pytest.approx(2.0)
    assert bucket.take(1, now=2.0) == pytest.approx(0.1)


def test_many_small_takes_wait_as_long_as_one_big_take() -> None:
    small = TokenBucket(rate=50.0, burst=10.0)
    big = TokenBucket(rate=50.0, burst=10.0)
    last_small_wait = 0.0
    for _ in range(100):
        last_small_wait = small.take(1, now=7.0)
    assert last_small_wait == pytest.approx(big.take(100, now=7.0))


def test_a_refund_shortens_the_wait_of_the_next_caller() -> None:
    bucket = TokenBucket(rate=10.0, burst=1.0)
    bucket.take(1, now=0.0)
    bucket.take(1, now=0.0)
    bucket.refund(1, now=0.0)
    assert bucket.take(1, now=0.0) == pytest.approx(0.1)


def test_a_refund_never_lifts_the_level_past_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0)
    bucket.refund(5, now=0.0)
    assert bucket.available(0.0) == 2.0


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    bucket = TokenBucket(rate=10.0, burst=1.0)
    bucket.take(1, now=10.0)
    assert bucket.take(1, now=5.0) == pytest.approx(0.1)
    assert bucket.available(10.0) == pytest.approx(-1.0)


@pytest.mark.parametrize("rate", [0.0, math.inf])
def test_rate_zero_or_infinite_means_unlimited(rate: float) -> None:
    bucket = TokenBucket(rate=rate, burst=1.0)
    assert bucket.unlimited
    assert all(bucket.take(1_000, now=0.0) == 0.0 for _ in range(100))
    assert bucket.available(0.0) == math.inf


@pytest.mark.parametrize(
    ("rate", "burst"), [(-1.0, 1.0), (math.nan, 1.0), (10.0, 0.0), (10.0, -1.0), (10.0, math.nan)]
)
def test_nonsense_settings_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="token bucket"):
        TokenBucket(rate=rate, burst=burst)


@pytest.mark.parametrize("n", [-1.0, math.nan])
def test_nonsense_takes_are_refused(n: float) -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    with pytest.raises(ValueError, match="tokens"):
        bucket.take(n, now=0.0)
    with pytest.raises(ValueError, match="tokens"):
        bucket.refund(n, now=0.0)


def count_tokens_granted_to_greedy_takers(
    rate: float, burst: float, takers: int, seconds: float
) -> float:
    """Tokens granted within `seconds` to `takers` callers that each take again once served."""
    bucket = TokenBucket(rate=rate, burst=burst)
    granted = 0.0
    # Each taker's next ask time; a taker asks, waits what it is told, then asks again.
    next_ask = [0.0] * takers
    for _ in range(int(rate * seconds + burst) * 2 + takers):  # bounded: the exact need, doubled
        taker = min(range(takers), key=next_ask.__getitem__)
        now = next_ask[taker]
        if now > seconds:
            break
        served_at = now + bucket.take(1, now)
        if served_at > seconds:
            break
        granted += 1
        next_ask[taker] = served_at
    return granted


@pytest.mark.parametrize(
    ("rate", "burst", "takers"), [(9.0, 1.0, 1), (100.0, 20.0, 8), (2_500.0, 50.0, 32)]
)
def test_greedy_takers_get_rate_times_time_plus_burst(
    rate: float, burst: float, takers: int
) -> None:
    granted = count_tokens_granted_to_greedy_takers(rate, burst, takers, seconds=10.0)
    assert granted == pytest.approx(rate * 10.0 + burst, rel=0.02)


schedules = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0, allow_nan=False),  # gap since the previous take
        st.floats(min_value=0.0, max_value=40.0, allow_nan=False),  # tokens asked for
    ),
    min_size=1,
    max_size=60,
)


@given(
    rate=st.floats(min_value=0.1, max_value=1_000.0),
    burst=st.floats(min_value=0.5, max_value=100.0),
    schedule=schedules,
)
def test_tokens_granted_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: float, schedule: list[tuple[float, float]]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    start = 1_000.0
    now = start
    grants: list[tuple[float, float]] = []
    for gap, n in schedule:
        now += gap
        grants.append((now + bucket.take(n, now), n))
    for granted_at, _ in grants:
        granted_by_then = sum(n for at, n in grants if at <= granted_at)
        bound = burst + rate * (granted_at - start)
        assert granted_by_then <= bound + 1e-6 * max(1.0, bound)


@given(
    rate=st.floats(min_value=0.1, max_value=1_000.0),
    burst=st.floats(min_value=0.5, max_value=100.0),
    schedule=schedules,
)
def test_waits_are_never_negative_and_served_in_asking_order(
    rate: float, burst: float, schedule: list[tuple[float, float]]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0.0
    last_served_at = -math.inf
    for gap, n in schedule:
        now += gap
        wait = bucket.take(n, now)
        assert wait >= 0.0
        assert now + wait >= last_served_at - 1e-9
        last_served_at = now + wait
