"""Rate limits that say how long to wait before a request may go. Pure: no I/O.

Two limiters, both fed the caller's clock and answering with a wait; callers are served
in the order they asked, nobody polls, and a reservation stands whatever the caller does
next (the debt form of the generic cell rate algorithm, GCRA).

`RequestLimiter(rate, burst)` is a provider's requests per second, for sends and status
polls together (one per bridge, shared by engine.dispatch and engine.dlr's poller). It
guarantees what providers enforce: **at most N requests in any one-second window**, N
the whole part of `rate`. A token bucket cannot: full at the start, it lets `burst`
go at once and then refills at `rate`, so 8/s with a burst of 8 grants 16 requests in
the first second (SMS Club allows 9: issue 17). Here two rules both hold for every
grant:

    spacing (GCRA)   grant ≥ previous grants' theoretical time - (burst - 1) ÷ rate
    window (a log)   grant ≥ the N-th most recent grant + 1 s

    requests ▲ N ┤ ▮▮▮            ▮▮▮          the log keeps the last N grant times;
             │   ▮▮▮▮▮▮▮▮▮ ...    ▮▮▮▮ ...     a grant waits until the N-th most
             └────────────────────────── t     recent one is a full second old
               0              1 s

`burst` (1 ≤ burst ≤ N) is how many may go back to back; with 1 they are spread evenly,
1 ÷ rate apart, which also leaves the most room for network jitter. The window is
checked on the times granted, so a caller that sleeps longer than told (a busy event
loop) can still bunch up with the next: configure a rate below the provider's limit
(the embedded default runs SMS Club at 8/s against its 9).

`TokenBucket(rate, burst)` refills `rate` tokens per second up to `burst`; `take(n)`
reserves `n` at once. The level may go below zero: the bucket then holds a debt, and
the next caller's wait includes it. Over any stretch of time the tokens granted never
exceed `burst + rate × elapsed`. It meters messages per second (a batch takes one token
per message) and SMPP submissions, where no per-second window is promised.

    level ▲ burst ─────╮        ╭────────        take(n) subtracts n at once;
          │            ╰──╮  ╭──╯                the wait is the time the refill
          0 ──────────────╲╱───────── time       needs to climb back to zero
          │  (debt)

A rate of 0 or infinity means no limit: every take is granted at once.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

# The window a RequestLimiter's N holds in: providers state their limits per second.
WINDOW_S = 1.0


class Limiter(Protocol):
    """What a caller that reserves and then waits needs: `take(n, now)` → seconds to wait."""

    def take(self, n: int, now: float, /) -> float: ...


class RequestLimiter:
    """At most N = ⌊`rate`⌋ requests in any window of `window_s`, and at most `burst` at once.

    Time never runs backwards for it: a `now` earlier than one seen before counts as
    that earlier time, so a clock step back cannot grant early.
    """

    __slots__ = (
        "_granted",
        "_last_grant",
        "_last_now",
        "_tat",
        "_tolerance",
        "burst",
        "limit",
        "rate",
        "window_s",
    )

    def __init__(self, rate: float, burst: float = 1.0, *, window_s: float = WINDOW_S) -> None:
        if math.isnan(rate) or rate < 0:
            raise ValueError(
                f"a request limiter's rate must be 0 (unlimited) or positive, not {rate}"
            )
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"a request limiter's window must be positive, not {window_s}")
        self.rate = rate
        self.window_s = window_s
        unlimited = rate == 0 or math.isinf(rate)
        # A fractional rate keeps its whole part per window (8.5/s: at most 8 in any
        # second); below one per window, the spacing alone is the limit.
        self.limit = 0 if unlimited else max(1, math.floor(rate * window_s + 1e-9))
        if not unlimited and not 1 <= burst <= self.limit:
            raise ValueError(
                f"a request limiter's burst must be between 1 and {self.limit} (the requests"
                f" a window of {window_s:g} s may hold at {rate:g}/s), not {burst}"
            )
        self.burst = burst
        interval = 0.0 if unlimited else 1.0 / rate
        # GCRA: a grant may come this long before its theoretical arrival time.
        self._tolerance = (burst - 1.0) * interval
        self._tat = -math.inf  # the theoretical arrival time of the next request
        self._last_now = -math.inf
        self._last_grant = -math.inf
        # The last `limit` grant times, oldest first (fewer once older ones left the window).
        self._granted: deque[float] = deque()

    @property
    def unlimited(self) -> bool:
        """True when the limiter never makes anyone wait (rate 0 or infinity)."""
        return self.limit == 0

    def take(self, n: int, now: float, /) -> float:
        """Reserve `n` requests; return the seconds to wait until the last is granted.

        The grant time is the earliest both rules allow (module docstring); requests
        reserved later are granted no earlier, so callers go in the order they asked.
        """
        if n < 0:
            raise ValueError(f"cannot take a negative number of requests ({n})")
        if self.limit == 0:
            return 0.0
        if now < self._last_now:
            now = self._last_now
        self._last_now = now
        granted = self._granted
        limit = self.limit
        window = self.window_s
        interval = 1.0 / self.rate
        at = now
        for _ in range(n):
            # Never before an earlier grant: first come, first served.
            at = max(now, self._tat - self._tolerance, self._last_grant)
            # Grants a full window before `at` no longer count against it. Written as
            # `t + window <= at`, the same sum a grant below is made of, so a grant set
            # exactly one window after another sees that one leave.
            while granted and granted[0] + window <= at:
                granted.popleft()
            if len(granted) >= limit:
                at = granted[-limit] + window
                while granted and granted[0] + window <= at:
                    granted.popleft()
            granted.append(at)
            self._last_grant = at
            self._tat = max(self._tat, at) + interval
        return at - now

    def __repr__(self) -> str:
        return (
            f"RequestLimiter(rate={self.rate!r}, burst={self.burst!r},"
            f" window_s={self.window_s!r}, limit={self.limit!r})"
        )


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
        rate = self.rate  # _is_unlimited_rate, inline: asked for every API request
        return rate == 0 or rate == math.inf

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
        rate = self.rate
        if rate == 0 or rate == math.inf:  # `unlimited`, asked without two calls
            return 0.0
        self._refill(now)
        level = self._level = self._level - n
        if level >= 0:
            return 0.0
        return -level / rate

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
