"""What a webhook reply means, and when a failed delivery is tried again. Pure: no I/O.

    reply                         verdict     then
    ────────────────────────────  ──────────  ──────────────────────────────────────────
    2xx                           delivered   the delivery is deleted
    410 Gone                      gone        deleted; no more of the message's events go
                                              to that URL
    any other status (3xx too:    failed      tried again after the backoff, until
    redirects are not followed),              `retry_for_s` after the event, then given up
    or no reply (connect, timeout)

The backoff doubles from `base_s` up to `max_delay_s`, each wait moved by up to ± `jitter`
of itself (the caller's `jitter()` in [0, 1)), so that receivers coming back are not hit by
every retry at once. The last try is made at the horizon itself; one that fails there is
given up.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    GONE = "gone"
    FAILED = "failed"


def verdict_of(status: int | None) -> Verdict:
    """The verdict on a reply's status (None: no reply)."""
    if status is None:
        return Verdict.FAILED
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.GONE
    return Verdict.FAILED


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    base_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = 0.2
    retry_for_s: float = 24 * 3600.0

    def delay(self, attempts: int, jitter: Callable[[], float]) -> float:
        """The wait after the `attempts`-th failed try (1 for the first)."""
        raw = min(self.max_delay_s, self.base_s * self.factor ** max(attempts - 1, 0))
        return max(0.0, raw * (1.0 + self.jitter * (2.0 * jitter() - 1.0)))

    def next_attempt(
        self, attempts: int, first_at: float, now: float, jitter: Callable[[], float]
    ) -> float | None:
        """When to try again after `attempts` failed tries of an event owed since
        `first_at`, or None: the horizon has passed, give up."""
        horizon = first_at + self.retry_for_s
        if now >= horizon:
            return None
        return min(now + self.delay(attempts, jitter), horizon)
