"""Tests for engine.bridge_limits: the local gate takes one request and its messages (a
status poll takes no message), and wait_for_turn commits before any wait, sleeps a Hold
off and asks again, and gives up while held when told to stop."""

from __future__ import annotations

import pytest

from engine.bridge_limits import Hold, HoldCause, LocalGate, wait_for_turn
from engine.ratelimit import RequestLimiter, TokenBucket

pytestmark = pytest.mark.anyio


def test_a_send_waits_for_the_later_of_its_two_limits() -> None:
    gate = LocalGate(RequestLimiter(2.0, 1.0), TokenBucket(10.0, 10.0))
    assert gate.take(1, 10, 0.0) == 0.0
    # The request limiter wants 0.5 s; the bucket, 20 messages short, wants 2 s.
    assert gate.take(1, 20, 0.0) == pytest.approx(2.0)


def test_a_status_poll_takes_no_message_and_waits_for_no_message_debt() -> None:
    gate = LocalGate(RequestLimiter(100.0, 100.0), TokenBucket(10.0, 10.0))
    assert gate.take(1, 30, 0.0) == pytest.approx(2.0)  # 20 messages of debt
    assert gate.take(1, 0, 0.0) == 0.0
    assert gate.messages.available(0.0) == pytest.approx(-20.0)
    assert gate.fault is None


class Answers:
    """A gate that gives the answers it was handed, in order (for wait_for_turn alone)."""

    def __init__(self, *answers: float | Hold) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[int, int]] = []

    async def reserve(self, requests: int, messages: int, /) -> float | Hold:
        self.asked.append((requests, messages))
        return self.answers.pop(0)

    @property
    def fault(self) -> str | None:
        return None


async def test_wait_for_turn_commits_first_then_sleeps_each_hold_and_the_grant() -> None:
    gate = Answers(Hold(HoldCause.UNREACHABLE, 0.5), Hold(HoldCause.AHEAD, 0.2), 0.3)
    steps: list[str] = []

    async def before_wait(seconds: float) -> None:
        steps.append(f"commit {seconds}")

    async def sleep(seconds: float) -> None:
        steps.append(f"sleep {seconds}")

    assert await wait_for_turn(gate, 1, 7, before_wait=before_wait, sleep=sleep)
    assert steps == [
        "commit 0.5",
        "sleep 0.5",
        "commit 0.2",
        "sleep 0.2",
        "commit 0.3",
        "sleep 0.3",
    ]
    assert gate.asked == [(1, 7)] * 3


async def test_wait_for_turn_neither_commits_nor_sleeps_for_a_turn_now() -> None:
    steps: list[str] = []

    async def record(seconds: float) -> None:
        steps.append(str(seconds))

    assert await wait_for_turn(Answers(0.0), 1, 0, before_wait=record, sleep=record)
    assert steps == []


async def test_wait_for_turn_gives_up_while_held_when_told_to_stop() -> None:
    gate = Answers(Hold(HoldCause.UNREACHABLE, 0.5), 0.0)

    async def nothing(seconds: float) -> None:
        return None

    assert not await wait_for_turn(
        gate, 1, 1, before_wait=nothing, sleep=nothing, stop=lambda: True
    )
    assert gate.answers == [0.0]  # not asked again: no turn was reserved
