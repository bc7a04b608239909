"""What to do after a send attempt: done, retry at a time, fail over, or give up. Pure: no I/O.

The dispatcher asks `RetryPolicy.decide` with the driver's `Outcome` for a message, or
`RetryPolicy.decide_transport` when the HTTP call itself failed, and acts on the
`Decision`:

    outcome          decision
    ───────────────  ──────────────────────────────────────────────────────────────
    Submitted        Done
    Rejected         GiveUp(provider's reason)            final: resending won't help
    RetryLater       RetryAt(backoff, ≥ Retry-After)      until max_attempts, then
                                                          Failover (if allowed) or GiveUp
    Throttled        RetryAt(max(Retry-After, backoff))   until throttle_patience ×
                                                          max_attempts, then as above
    Unknown          GiveUp("outcome unknown: …")         never resend (could double-send)
    AccountRefused   Failover, else RetryAt(max delay)    the bridge's fault: never a give-up

    transport failure
    not sent         as RetryLater
    maybe sent       idempotency "reference":         RetryAt (the provider dedups)
                     idempotency "duplicate-window":  RetryAt while the resend lands inside
                                                      the window, else GiveUp(unknown)
                     idempotency "none":              GiveUp("outcome unknown: …")

`attempt` is the number (from 1) of the attempt that just ended on the current bridge;
the dispatcher starts it again at 1 after a `Failover`. Time and randomness come in as
arguments: `now` is the caller's clock in seconds, `jitter` returns a float in [0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import msgspec

from bridges.base import (
    AccountRefused,
    Idempotency,
    Outcome,
    Rejected,
    RetryLater,
    Submitted,
    Throttled,
    Unknown,
)

# ── Decisions ────────────────────────────────────────────────────────────────────


class RetryAt(msgspec.Struct, frozen=True, tag="retry_at"):
    """Send again on the same bridge at time `at` (the caller's clock)."""

    at: float
    reason: str


GiveUpWhy = Literal["refused", "attempts_used", "no_idempotency", "window_passed", "unknown"]


class GiveUp(msgspec.Struct, frozen=True, tag="give_up"):
    """Stop trying. `code` is the provider's code where it gave one; `why` is the rule that
    stopped it (engine.lifecycle decides the state from it, never from `reason`'s words):
    the provider refused, the attempts are used up, or the request may have reached the
    provider and a resend is not safe (no idempotency, the duplicate window has passed,
    the provider itself could not say)."""

    reason: str
    code: str | None = None
    why: GiveUpWhy = "refused"
    # The last attempt may have reached the provider.
    maybe_sent: bool = False

    @property
    def outcome_unknown(self) -> bool:
        return self.maybe_sent or self.why == "unknown"


class Failover(msgspec.Struct, frozen=True, tag="failover"):
    """Try the next bridge of the message's route now (GiveUp when there is none)."""

    reason: str


class Done(msgspec.Struct, frozen=True, tag="done"):
    """The provider took the message; nothing more to do here."""


Decision = RetryAt | GiveUp | Failover | Done


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff with jitter, bounded attempts, and the resend-safety rules.

    The delay before retry number k (after attempt k failed) is
    `min(max_delay_s, base_s × factor^(k-1))`, then spread by ±`jitter` (0.2: ±20%) so
    messages that failed together do not all come back together.
    """

    base_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 300.0
    max_attempts: int = 8
    jitter: float = 0.2
    # A throttle says the bridge is healthy but busy: the token bucket slows the whole
    # bridge, so throttled attempts are allowed this many times longer before failing
    # over to a bridge that may cost more or deliver worse.
    throttle_patience: int = 2
    # SMS Club answers 453 to "the same message again within 2 minutes" (docs/providers.md,
    # smsclub): a resend inside the window is safe, one after it could double-send.
    duplicate_window_s: float = 120.0
    # The window runs from when the provider received the first attempt, which we only
    # bound from below by when we sent it; the margin covers the resend's own transit.
    duplicate_window_margin_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.base_s >= 0:
            raise ValueError(f"retry base_s must be 0 or more, not {self.base_s}")
        if not self.factor >= 1:
            raise ValueError(f"retry factor must be at least 1, not {self.factor}")
        if not self.max_delay_s >= self.base_s:
            raise ValueError(
                f"retry max_delay_s ({self.max_delay_s}) must be at least base_s ({self.base_s})"
            )
        if self.max_attempts < 1:
            raise ValueError(f"retry max_attempts must be at least 1, not {self.max_attempts}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"retry jitter must be between 0 and 1, not {self.jitter}")
        if self.throttle_patience < 1:
            raise ValueError(
                f"retry throttle_patience must be at least 1, not {self.throttle_patience}"
            )
        if not 0 <= self.duplicate_window_margin_s < self.duplicate_window_s:
            raise ValueError("retry duplicate_window_margin_s must be within the window")

    # ── Delays ──────────────────────────────────────────────────────────────────

    def backoff_s(self, attempt: int) -> float:
        """The delay after attempt `attempt` failed, before jitter: exponential, capped."""
        exponent = max(0, attempt - 1)
        if self.base_s == 0 or self.factor == 1:
            return min(self.max_delay_s, self.base_s)
        # Past the cap the exact power does not matter, and a huge one would overflow.
        if exponent * math.log(self.factor) >= math.log(self.max_delay_s) - math.log(self.base_s):
            return self.max_delay_s
        return min(self.max_delay_s, self.base_s * self.factor**exponent)

    def jittered_s(self, attempt: int, jitter: Callable[[], float]) -> float:
        """`backoff_s(attempt)` spread uniformly over ±`self.jitter` of itself."""
        spread = 1.0 + self.jitter * (2.0 * jitter() - 1.0)
        return self.backoff_s(attempt) * spread

    # ── Decisions on outcomes ────────────────────────────────────────────────────

    def decide(
        self,
        outcome: Outcome,
        attempt: int,
        now: float,
        jitter: Callable[[], float],
        idempotency: Idempotency,
        can_failover: bool = False,
    ) -> Decision:
        """The decision after a send attempt whose reply the driver parsed into `outcome`.

        `idempotency` does not change the answer here: an `Unknown` outcome is the
        driver's verdict after weighing what its provider deduplicates (Route Mobile's
        1715, docs/providers.md), and a resend the provider would deduplicate comes back as
        `RetryLater`. It is taken so both entry points read the same.
        """
        match outcome:
            case Submitted():
                return Done()
            case Rejected(code=code, reason=reason):
                return GiveUp(reason, code=code)
            case RetryLater(code=code, reason=reason, delay_s=delay_s):
                return self._retry_or_stop(
                    f"{code}: {reason}",
                    attempt,
                    self.max_attempts,
                    now,
                    jitter,
                    delay_s,
                    can_failover,
                    code,
                )
            case Throttled(code=code, reason=reason, delay_s=delay_s):
                return self._retry_or_stop(
                    f"throttled ({code}: {reason})",
                    attempt,
                    self.max_attempts * self.throttle_patience,
                    now,
                    jitter,
                    delay_s,
                    can_failover,
                    code,
                )
            case Unknown(code=code, reason=reason):
                return GiveUp(f"outcome unknown: {reason}", code=code, why="unknown")
            case AccountRefused(code=code, reason=reason):
                # The bridge's fault, not the message's: nothing was sent, so another
                # bridge may take it now; without one it waits for the bridge to mend
                # (its circuit is open) until its validity ends. Never a give-up.
                if can_failover:
                    return Failover(f"account refused ({code}: {reason})")
                return RetryAt(now + self.max_delay_s, f"account refused ({code}: {reason})")

    def decide_transport(
        self,
        maybe_sent: bool,
        attempt: int,
        now: float,
        jitter: Callable[[], float],
        idempotency: Idempotency,
        can_failover: bool,
        first_attempt_at: float,
    ) -> Decision:
        """The decision after the HTTP call failed without a reply to parse.

        `maybe_sent` is False when the request provably never reached the provider
        (connection refused, DNS failure, pool timeout) and True when it may have (a
        timeout or reset after the request was written). `first_attempt_at` is when the
        earliest attempt that may have reached the provider was sent; a duplicate window
        runs from that attempt, whichever later one went through.
        """
        if not maybe_sent:
            return self._retry_or_stop(
                "transport failure before the request was sent",
                attempt,
                self.max_attempts,
                now,
                jitter,
                None,
                can_failover,
                None,
            )
        return self._resend_maybe_sent(attempt, now, jitter, idempotency, first_attempt_at)

    def _resend_maybe_sent(
        self,
        attempt: int,
        now: float,
        jitter: Callable[[], float],
        idempotency: Idempotency,
        first_attempt_at: float,
    ) -> Decision:
        """After a failure that may have reached the provider, which may now hold the
        message: never fail over (another provider would not deduplicate) and never resend
        unless this provider would deduplicate the resend."""
        if idempotency == "none":
            return GiveUp(
                "outcome unknown: the request may have reached the provider and it offers "
                "no way to resend safely",
                why="no_idempotency",
                maybe_sent=True,
            )
        if attempt >= self.max_attempts:
            return GiveUp(
                f"outcome unknown: the request may have reached the provider and "
                f"{attempt} attempts are used up",
                why="attempts_used",
                maybe_sent=True,
            )
        at = now + self.jittered_s(attempt, jitter)
        if idempotency == "reference":
            return RetryAt(
                at, "the request may have reached the provider; it deduplicates by reference"
            )
        window_closes_at = first_attempt_at + self.duplicate_window_s
        latest_safe_at = window_closes_at - self.duplicate_window_margin_s
        at = min(at, latest_safe_at)
        if at < now:
            return GiveUp(
                f"outcome unknown: the request may have reached the provider and its "
                f"{self.duplicate_window_s:g} s duplicate window has passed",
                why="window_passed",
                maybe_sent=True,
            )
        return RetryAt(
            at,
            f"the request may have reached the provider; the resend is "
            f"{at - first_attempt_at:.1f} s after the first attempt, inside its "
            f"{self.duplicate_window_s:g} s duplicate window",
        )

    def _retry_or_stop(
        self,
        reason: str,
        attempt: int,
        attempts_allowed: int,
        now: float,
        jitter: Callable[[], float],
        retry_after_s: float | None,
        can_failover: bool,
        code: str | None,
    ) -> Decision:
        if attempt >= attempts_allowed:
            if can_failover:
                return Failover(f"{reason}; {attempt} attempts on this bridge")
            return GiveUp(
                f"{reason}; gave up after {attempt} attempts", code=code, why="attempts_used"
            )
        delay = self.jittered_s(attempt, jitter)
        # Retry-After is the provider's floor (RFC 9110 §10.2.3): coming back sooner only
        # earns another refusal, so it wins over a shorter backoff.
        if retry_after_s is not None and retry_after_s > delay:
            delay = retry_after_s
        return RetryAt(now + delay, reason)
