"""Golden tables for the webhook policy: what a reply means, and when a failed delivery is
tried again (injected clock and jitter)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.webhooks.policy import Backoff, Verdict, verdict_of


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (301, Verdict.FAILED),  # redirects are not followed
        (302, Verdict.FAILED),
        (308, Verdict.FAILED),
        (400, Verdict.FAILED),
        (404, Verdict.FAILED),
        (410, Verdict.GONE),
        (429, Verdict.FAILED),
        (500, Verdict.FAILED),
        (503, Verdict.FAILED),
        (None, Verdict.FAILED),  # no reply: connect failure, timeout, reset
    ],
)
def test_verdicts(status: int | None, verdict: Verdict) -> None:
    assert verdict_of(status) is verdict


POLICY = Backoff(base_s=1.0, factor=2.0, max_delay_s=60.0, jitter=0.2, retry_for_s=300.0)
FIRST = 10_000.0


def middle() -> float:
    return 0.5  # no jitter: the wait is the raw delay


def lowest() -> float:
    return 0.0


def highest() -> float:
    return 0.999


@pytest.mark.parametrize(
    ("attempts", "now", "jitter", "expected"),
    [
        # attempts made, now (s after the event), jitter draw -> next try (s after the event)
        (1, 0.0, middle, 1.0),
        (2, 1.0, middle, 3.0),
        (3, 3.0, middle, 7.0),
        (4, 7.0, middle, 15.0),
        (7, 100.0, middle, 160.0),  # 64 s capped at max_delay_s = 60
        (20, 100.0, middle, 160.0),
        (1, 0.0, lowest, 0.8),  # -20 %
        (1, 0.0, highest, 1.1996),  # +20 % (the draw is below 1)
        (3, 100.0, lowest, 103.2),
        (9, 280.0, middle, 300.0),  # the last try is at the horizon itself
        (9, 299.9, middle, 300.0),
        (10, 300.0, middle, None),  # a try that fails at the horizon: given up
        (10, 1000.0, middle, None),
    ],
)
def test_backoff(
    attempts: int, now: float, jitter: Callable[[], float], expected: float | None
) -> None:
    at = POLICY.next_attempt(attempts, FIRST, FIRST + now, jitter)
    if expected is None:
        assert at is None
    else:
        assert at is not None
        assert at - FIRST == pytest.approx(expected)


def test_a_retry_is_never_before_now_nor_past_the_horizon() -> None:
    for attempts in range(1, 40):
        for now in (0.0, 1.0, 59.0, 299.0):
            for draw in (lowest, middle, highest):
                at = POLICY.next_attempt(attempts, FIRST, FIRST + now, draw)
                assert at is not None
                assert FIRST + now < at <= FIRST + POLICY.retry_for_s
