"""Who may bind: password checks in constant time, and a limit on failed binds per
account and peer. Pure: no I/O; time is passed in.

Issue 8: a wrong password must not be found faster than a right one (timing), and a
peer guessing passwords is cut off after `max_failures` failed binds within `window_s`
seconds, until the oldest of them leaves the window.

Issue 16: failures are counted per (system_id, peer address), so a client guessing one
account's password locks out only that account from that address; another account
binding from the same address (an ESME host with several logins, or a NAT) is not
punished for it. Binds naming no known account are counted together per peer under
`UNKNOWN_ACCOUNT`, so a peer trying system_ids cannot grow the table one name at a time.
"""

from __future__ import annotations

import hmac
from collections import deque
from typing import Final

# The key of failed binds: (system_id, or UNKNOWN_ACCOUNT, peer address).
BindKey = tuple[str | None, str]
UNKNOWN_ACCOUNT: Final = None


def password_matches(given: str, expected: str) -> bool:
    """Constant time in the content of the strings (hmac.compare_digest)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bind_key(system_id: str, known: bool, peer: str) -> BindKey:
    """Whose failures a bind counts against: the account it names, from this peer."""
    return (system_id if known else UNKNOWN_ACCOUNT, peer)


class BindGuard:
    """Counts failed binds per (account, peer address) over a sliding window."""

    def __init__(self, max_failures: int, window_s: float, max_peers: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_peers = max_peers
        self._failures: dict[BindKey, deque[float]] = {}

    def _recent(self, key: BindKey, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, key: BindKey, now: float) -> bool:
        if self.max_failures <= 0:
            return False
        times = self._recent(key, now)
        return times is not None and len(times) >= self.max_failures

    def failed(self, key: BindKey, now: float) -> None:
        times = self._recent(key, now)
        if times is None:
            if len(self._failures) >= self._max_peers:
                self._forget_oldest()
            times = self._failures[key] = deque()
        times.append(now)

    def succeeded(self, key: BindKey) -> None:
        self._failures.pop(key, None)

    def _forget_oldest(self) -> None:
        """Bounded memory under a flood of peers: forget the one idle the longest."""
        oldest = min(self._failures, key=lambda key: self._failures[key][-1])
        del self._failures[oldest]
