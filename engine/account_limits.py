"""An account's messages per second and burst: this node's token bucket, or the cluster's.

One node (or a cluster without `[cluster] redis`) keeps each account's bucket in its own
process (engine.ratelimit.TokenBucket), so N nodes would accept N times an account's
`messages_per_s`. With `[cluster] redis` the daemon gives each limited account the
cluster's bucket (engine.cluster_limits.SharedAccountBucket), and every node's accepts
take from the same tokens. While Redis cannot be reached, this node's own bucket answers
(and says so in the log once): accepting passes no provider's limit (each bridge's gate
still holds), so an unreachable Redis does not stop the cluster from accepting.

Both answer alike: a take that fits takes its tokens (0.0); one that does not takes
nothing and says how many seconds until it would fit (the accept path's "throttled").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from engine.bridge_limits import SharedLimits
from engine.ratelimit import TokenBucket


class SharedBucket(Protocol):
    """engine.cluster_limits.SharedAccountBucket, as this module uses it."""

    async def take(self, count: int) -> float | None: ...

    async def give(self, count: int) -> None: ...


class AccountLimit:
    """An account's token bucket, local or shared by the cluster (see the module)."""

    __slots__ = ("_refused_until", "local", "shared", "unlimited")

    def __init__(self, rate: float, burst: float) -> None:
        """`rate` messages a second (0: no limit), `burst` of them at once."""
        self.local = TokenBucket(rate if rate > 0 else math.inf, burst)
        # Asked for every accept: an attribute, not the bucket's property (two calls).
        self.unlimited = self.local.unlimited
        self.shared: SharedBucket | None = None
        # Until when (the accept path's clock) the shared bucket said nothing fits.
        self._refused_until = -math.inf

    async def take(self, count: int, now: float) -> float:
        """Take `count` tokens: 0.0 when taken, else seconds until they would fit."""
        if self.unlimited:
            return 0.0
        if self.shared is not None:
            wait = await self.shared.take(count)
            if wait is not None:
                self._refused_until = now + wait if wait > 0 else -math.inf
                return wait
        wait = self.local.take(count, now)
        if wait > 0:
            self.local.refund(count, now)
        return wait

    async def give(self, count: int, now: float) -> None:
        """Give back tokens taken for messages that were not accepted after all."""
        if self.unlimited or count == 0:
            return
        if self.shared is not None:
            await self.shared.give(count)
        else:
            self.local.refund(count, now)

    def has_room(self, now: float) -> bool:
        """Whether one more message may fit now, without asking anyone: the SMPP server's
        check before any work (the take itself comes with the accept). For the shared
        bucket, what its last answer said."""
        if self.unlimited:
            return True
        if self.shared is not None:
            return now >= self._refused_until
        return self.local.available(now) >= 1

    def __repr__(self) -> str:
        where = "shared" if self.shared is not None else "local"
        return f"AccountLimit({where}, {self.local!r})"


def share_limits(limits: Mapping[str, AccountLimit], shared: SharedLimits) -> None:
    """Give each limited account (name -> its limit) the cluster's bucket in `shared`'s
    Redis. redis-py is imported only here: a single node needs none of it."""
    from engine.cluster_limits import SharedAccountBucket

    for name, limit in limits.items():
        if not limit.unlimited:
            limit.shared = SharedAccountBucket(
                shared.client,
                name,
                rate=limit.local.rate,
                burst=limit.local.burst,
                where=shared.where,
            )
