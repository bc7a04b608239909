"""Token buckets that say how long to wait before a send may go. Pure: no I/O.

A `TokenBucket(rate, burst)` refills `rate` tokens per second up to `burst`. `take(n, now)`
reserves `n` tokens at once and returns how many seconds the caller must wait before
they are its to spend. Reservations may push the level below zero: the bucket then holds
a debt, and the next caller's wait includes it. This is the debt form of the generic
cell rate algorithm (GCRA): callers are served in the order they asked, nobody polls,
and over any stretch of time the tokens granted never exceed `burst + rate × elapsed`.

    level ▲ burst ─────╮        ╭────────        take(n) subtracts n at once;
          │            ╰──╮  ╭──╯                the wait is the time the refill
          0 ──────────────╲╱───────── time       needs to climb back to zero
          │  (debt)

The scheduler keeps one bucket per bridge for requests/s and one for messages/s, feeds
them its clock and sleeps for what they answer. A rate of 0 or infinity means the bridge
has no limit: every take is granted at once.
"""

from __future__ import annotations

import math


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; callers reserve and wait.

    The bucket starts full at the first call that passes a time. Time never runs
    backwards for it: a `now` earlier than one seen before counts as that earlier time,
    so a clock step back cannot mint tokens.
    """

    __slots__ = ("_last", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if math.isnan(rate) or rate < 0:
            raise ValueError(f"a token bucket's rate must be 0 (unlimited) or positive, not {rate}")
        if self._is_unlimited_rate(rate):
            burst = math.inf
        elif not burst > 0:
            raise ValueError(f"a token bucket's burst must be positive, not {burst}")
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._last: float | None = None

    @staticmethod
    def _is_unlimited_rate(rate: float) -> bool:
        return rate == 0 or math.isinf(rate)

    @property
    def unlimited(self) -> bool:
        """True when the bucket never makes anyone wait (rate 0 or infinity)."""
        return self._is_unlimited_rate(self.rate)

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        if now > self._last:
            self._level = min(self.burst, self._level + (now - self._last) * self.rate)
            self._last = now

    def take(self, n: float, now: float) -> float:
        """Reserve `n` tokens; return the seconds to wait until they are granted (0.0: now).

        `n` may exceed `burst`: the caller then waits for the refill to cover the
        difference. The reservation stands whatever the caller does next; one that gives
        up waiting hands the tokens back with `refund`.
        """
        if n < 0 or math.isnan(n):
            raise ValueError(f"cannot take a negative or NaN number of tokens ({n})")
        if self.unlimited:
            return 0.0
        self._refill(now)
        self._level -= n
        if self._level >= 0:
            return 0.0
        return -self._level / self.rate

    def refund(self, n: float, now: float) -> None:
        """Give back `n` tokens a caller reserved but will not use (it was cancelled).

        The level never rises above `burst`, so a refund cannot create a burst larger than
        the bucket allows.
        """
        if n < 0 or math.isnan(n):
            raise ValueError(f"cannot refund a negative or NaN number of tokens ({n})")
        if self.unlimited:
            return
        self._refill(now)
        self._level = min(self.burst, self._level + n)

    def available(self, now: float) -> float:
        """Tokens that could be taken at `now` without waiting (negative: the current debt)."""
        if self.unlimited:
            return math.inf
        self._refill(now)
        return self._level

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r}, level={self._level!r})"
