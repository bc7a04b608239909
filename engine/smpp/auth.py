"""Who may bind: password checks in constant time, and a limit on failed binds per peer.
Pure: no I/O; time is passed in.

Issue 8: a wrong password must not be found faster than a right one (timing), and a
peer guessing passwords is cut off after `max_failures` failed binds within `window_s`
seconds, until the oldest of them leaves the window.
"""

from __future__ import annotations

import hmac
from collections import deque


def password_matches(given: str, expected: str) -> bool:
    """Constant time in the content of the strings (hmac.compare_digest)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class BindGuard:
    """Counts failed binds per peer address over a sliding window."""

    def __init__(self, max_failures: int, window_s: float, max_peers: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_peers = max_peers
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, peer: str, now: float) -> deque[float] | None:
        times = self._failures.get(peer)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[peer]
            return None
        return times

    def blocked(self, peer: str, now: float) -> bool:
        if self.max_failures <= 0:
            return False
        times = self._recent(peer, now)
        return times is not None and len(times) >= self.max_failures

    def failed(self, peer: str, now: float) -> None:
        times = self._recent(peer, now)
        if times is None:
            if len(self._failures) >= self._max_peers:
                self._forget_oldest()
            times = self._failures[peer] = deque()
        times.append(now)

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)

    def _forget_oldest(self) -> None:
        """Bounded memory under a flood of peers: forget the one idle the longest."""
        oldest = min(self._failures, key=lambda peer: self._failures[peer][-1])
        del self._failures[oldest]
