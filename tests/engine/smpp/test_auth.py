"""Bind checks: password comparison and the failed-bind limit per (account, peer)."""

from __future__ import annotations

from engine.smpp.auth import UNKNOWN_ACCOUNT, BindGuard, bind_key, password_matches


def test_password_matches() -> None:
    assert password_matches("demo", "demo")
    assert not password_matches("demo", "demo2")
    assert not password_matches("", "demo")


def test_guard_blocks_after_failures_within_the_window() -> None:
    guard = BindGuard(max_failures=2, window_s=60)
    demo = ("demo", "10.0.0.1")
    guard.failed(demo, now=0)
    assert not guard.blocked(demo, now=1)
    guard.failed(demo, now=2)
    assert guard.blocked(demo, now=3)
    assert not guard.blocked(("demo", "10.0.0.2"), now=3)
    assert guard.blocked(demo, now=59)
    assert not guard.blocked(demo, now=61)  # the first failure left the window


def test_one_accounts_failures_do_not_lock_out_another_from_the_same_address() -> None:
    guard = BindGuard(max_failures=2, window_s=60)
    guard.failed(bind_key("demo", True, "10.0.0.1"), now=0)
    guard.failed(bind_key("demo", True, "10.0.0.1"), now=1)
    assert guard.blocked(bind_key("demo", True, "10.0.0.1"), now=2)
    assert not guard.blocked(bind_key("other", True, "10.0.0.1"), now=2)


def test_unknown_system_ids_count_together_per_address() -> None:
    assert bind_key("who", False, "10.0.0.1") == (UNKNOWN_ACCOUNT, "10.0.0.1")
    assert bind_key("what", False, "10.0.0.1") == bind_key("who", False, "10.0.0.1")
    guard = BindGuard(max_failures=2, window_s=60)
    guard.failed(bind_key("who", False, "10.0.0.1"), now=0)
    guard.failed(bind_key("what", False, "10.0.0.1"), now=1)
    assert guard.blocked(bind_key("where", False, "10.0.0.1"), now=2)
    assert not guard.blocked(bind_key("demo", True, "10.0.0.1"), now=2)


def test_success_forgets_and_memory_is_bounded() -> None:
    guard = BindGuard(max_failures=1, window_s=60, max_peers=2)
    a, b, c, d = (("demo", peer) for peer in "abcd")
    guard.failed(a, now=0)
    guard.succeeded(a)
    assert not guard.blocked(a, now=1)
    guard.failed(b, now=1)
    guard.failed(c, now=2)
    guard.failed(d, now=3)  # forgets b, the longest idle
    assert not guard.blocked(b, now=4)
    assert guard.blocked(c, now=4)
    assert guard.blocked(d, now=4)
