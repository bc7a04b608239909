"""A circuit breaker per bridge: stop sending to a provider that keeps failing. Pure: no I/O.

The dispatcher asks `allow(now)` before each request to a bridge and reports how the
request ended with `record_success` (the provider answered sensibly: Submitted or
Rejected), `record_failure` (a retryable failure: RetryLater, 5xx, transport error) or
`release` (neither: throttled, or cancelled before an answer). Throttles are not
failures: a busy provider is healthy, and the token bucket already slows down for it.

States and their rules, as a table (`_TRANSITIONS`, below, is that table in code):

    state      event                          next       why
    ─────────  ─────────────────────────────  ─────────  ───────────────────────────────
    closed     success                        closed     forget the failure streak
    closed     failure, streak < threshold    closed     count it
    closed     failure, streak = threshold    open       N failures in a row, within
                                                         window_s: the provider is down
    open       open_for elapsed               half_open  time to try again
    open       success / failure              open       late answers to requests sent
                                                         before the trip: no news
    half_open  success                        closed     the trial went through
    half_open  failure                        open       still down; open_for doubles,
                                                         up to max_open_s
    any        trip (account refused)         open       wrong credentials, a blocked
                                                         account or no credit: retries
                                                         cannot mend it (`reason` says)

The trip rule is "`failure_threshold` consecutive failures, all within the last
`window_s`": consecutive, so one failure among many successes never trips a healthy
bridge; within a window, so a streak spread over a quiet night does not trip it either.
In half-open, `allow` lets `half_open_max` trial requests through and refuses the rest
until one of them reports back.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]
CircuitEvent = Literal["success", "failure", "trip", "elapsed"]

# (state, event) -> next state. "trip" is the failure that completes the streak;
# "elapsed" is open_for having passed since the circuit opened.
_TRANSITIONS: dict[tuple[CircuitState, CircuitEvent], CircuitState] = {
    ("closed", "success"): "closed",
    ("closed", "failure"): "closed",
    ("closed", "trip"): "open",
    ("open", "success"): "open",
    ("open", "failure"): "open",
    ("open", "elapsed"): "half_open",
    ("half_open", "success"): "closed",
    ("half_open", "failure"): "open",
    ("half_open", "trip"): "open",
    ("open", "trip"): "open",
}


class CircuitBreaker:
    """Closed → open after a failure streak; open → half-open after `open_for`; see the module."""

    __slots__ = (
        "_failure_times",
        "_open_for",
        "_opened_at",
        "_state",
        "_trials_in_flight",
        "failure_threshold",
        "half_open_max",
        "max_open_s",
        "open_s",
        "reason",
        "window_s",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        window_s: float = 30.0,
        open_s: float = 10.0,
        half_open_max: int = 1,
        max_open_s: float = 300.0,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        if not 0 < open_s <= max_open_s:
            raise ValueError(f"open_s must be positive and at most max_open_s, not {open_s}")
        if half_open_max < 1:
            raise ValueError(f"half_open_max must be at least 1, not {half_open_max}")
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.open_s = open_s
        self.half_open_max = half_open_max
        self.max_open_s = max_open_s
        self._state: CircuitState = "closed"
        # Times of the current streak's failures, oldest first; emptied by a success.
        self._failure_times: deque[float] = deque(maxlen=failure_threshold)
        self._opened_at = 0.0
        self._open_for = open_s
        self._trials_in_flight = 0
        # Why it opened, when that was an account fault (a sentence for /readyz and logs).
        self.reason: str | None = None

    # ── Queries ──────────────────────────────────────────────────────────────────

    def state(self, now: float) -> CircuitState:
        """The state at `now`: an open circuit whose time is up reads as half-open."""
        if self._state == "open":
            self._advance(now)
        return self._state

    def allow(self, now: float) -> bool:
        """May a request go to this bridge now? In half-open, True reserves a trial slot."""
        if self._state == "closed":
            return True
        self._advance(now)
        if self._state == "open":
            return False
        if self._trials_in_flight < self.half_open_max:
            self._trials_in_flight += 1
            return True
        return False

    def retry_at(self, now: float) -> float:
        """When `allow` may next say True: `now` unless open, else when the open time ends."""
        self._advance(now)
        return self._opened_at + self._open_for if self._state == "open" else now

    @property
    def open_for_s(self) -> float:
        """How long the circuit stays open when it next opens (or now, if it is open)."""
        return self._open_for

    # ── Events ───────────────────────────────────────────────────────────────────

    def record_success(self, now: float) -> None:
        """The provider answered a request sensibly."""
        if self._state == "closed":
            # The table's (closed, success) row, the common case, without its lookup.
            self._failure_times.clear()
            return
        self._advance(now)
        self._apply("success", now)

    def record_failure(self, now: float) -> None:
        """A request ended in a retryable failure."""
        self._advance(now)
        event: CircuitEvent = "failure"
        if self._state == "closed":
            self._failure_times.append(now)
            while self._failure_times and self._failure_times[0] <= now - self.window_s:
                self._failure_times.popleft()
            if len(self._failure_times) >= self.failure_threshold:
                event = "trip"
        self._apply(event, now)

    def trip(self, now: float, reason: str) -> None:
        """Open now, whatever the streak: the provider refused the account (credentials,
        a blocked account, no credit), which no number of retries mends."""
        self._advance(now)
        self.reason = reason
        self._apply("trip", now)

    def release(self, now: float) -> None:
        """A request allowed by `allow` ended with no verdict; give back its trial slot."""
        self._advance(now)
        if self._state == "half_open" and self._trials_in_flight > 0:
            self._trials_in_flight -= 1

    # ── The table at work ────────────────────────────────────────────────────────

    def _advance(self, now: float) -> None:
        """Open -> half-open once open_for has passed (the "elapsed" event); nothing else."""
        if self._state == "open" and now >= self._opened_at + self._open_for:
            self._apply("elapsed", now)

    def _apply(self, event: CircuitEvent, now: float) -> None:
        before = self._state
        after = _TRANSITIONS[(before, event)]
        self._state = after
        if after == "closed":
            if before != "closed":
                self._open_for = self.open_s
                self.reason = None
            if event == "success":
                self._failure_times.clear()
        elif after == "open" and before != "open":
            if before == "half_open":
                # The provider is still down: wait longer each time, up to the cap.
                self._open_for = min(self._open_for * 2, self.max_open_s)
            self._opened_at = now
            self._failure_times.clear()
        elif after == "half_open":
            self._trials_in_flight = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self._state!r}, open_for={self._open_for!r})"
