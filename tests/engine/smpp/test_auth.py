"""Bind checks: password comparison and the failed-bind limit per peer."""

from __future__ import annotations

from engine.smpp.auth import BindGuard, password_matches


def test_password_matches() -> None:
    assert password_matches("demo", "demo")
    assert not password_matches("demo", "demo2")
    assert not password_matches("", "demo")


def test_guard_blocks_after_failures_within_the_window() -> None:
    guard = BindGuard(max_failures=2, window_s=60)
    guard.failed("10.0.0.1", now=0)
    assert not guard.blocked("10.0.0.1", now=1)
    guard.failed("10.0.0.1", now=2)
    assert guard.blocked("10.0.0.1", now=3)
    assert not guard.blocked("10.0.0.2", now=3)
    assert guard.blocked("10.0.0.1", now=59)
    assert not guard.blocked("10.0.0.1", now=61)  # the first failure left the window


def test_success_forgets_and_memory_is_bounded() -> None:
    guard = BindGuard(max_failures=1, window_s=60, max_peers=2)
    guard.failed("a", now=0)
    guard.succeeded("a")
    assert not guard.blocked("a", now=1)
    guard.failed("b", now=1)
    guard.failed("c", now=2)
    guard.failed("d", now=3)  # forgets b, the longest idle
    assert not guard.blocked("b", now=4)
    assert guard.blocked("c", now=4)
    assert guard.blocked("d", now=4)
