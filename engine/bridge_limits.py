"""What a bridge's requests wait for: one gate over its requests/s and messages/s, kept by
this process alone or shared by every node of a cluster.

A send asks `reserve(1, n)` (one request of n messages), a status poll `reserve(1, 0)`;
both go through the same gate, because the provider counts both. The answer is either the
seconds to wait before the request may go (the turn is reserved, whatever the caller does
next) or a `Hold`: no turn was given, ask again after `retry_s`. Callers commit what they
hold before any wait, then sleep, so they need not know which gate they have:

    LocalGate    engine.ratelimit's RequestLimiter and TokenBucket, on this process's
                 clock; never holds (the single node, `[cluster] redis` unset)
    SharedGate   engine.cluster_limits: one GCRA script in Redis for every node; holds
                 while Redis cannot be reached (nothing goes through the bridge then)
                 and when the next turn is further ahead than it grants
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import structlog

from engine.ratelimit import Limiter, RequestLimiter, TokenBucket

if TYPE_CHECKING:
    from engine.config import BridgeConfig

log = structlog.get_logger("septet.bridge_limits")


class HoldCause(enum.Enum):
    """Why a gate gave no turn."""

    # The shared limiter's next free turn is further ahead than it reserves (a backlog):
    # ask again when it is near.
    AHEAD = "ahead"
    # The shared limiter's store cannot be reached: nothing may go, or the cluster could
    # pass the provider's limit.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Hold:
    """No turn this time: ask again after `retry_s` seconds."""

    cause: HoldCause
    retry_s: float


class BridgeGate(Protocol):
    """A bridge's rate limits, as dispatch and the status poller use them."""

    async def reserve(self, requests: int, messages: int, /) -> float | Hold:
        """Reserve a turn for `requests` requests carrying `messages` messages: the seconds
        to wait before they may go, or a Hold."""
        ...

    @property
    def fault(self) -> str | None:
        """While the gate cannot give turns, a sentence saying why (for /readyz); else None."""
        ...


class LocalGate:
    """The bridge's limits in this process: a request limiter and a message bucket."""

    __slots__ = ("_clock", "messages", "requests")

    def __init__(
        self,
        requests: Limiter,
        messages: TokenBucket,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.requests = requests
        self.messages = messages
        self._clock = clock

    async def reserve(self, requests: int, messages: int, /) -> float:
        return self.take(requests, messages, self._clock())

    def take_now(self, requests: int, messages: int) -> float:
        """`reserve` without a coroutine: this gate never waits on I/O to answer, so the
        dispatcher asks it directly (no Hold: a local gate always gives a turn)."""
        return self.take(requests, messages, self._clock())

    def take(self, requests: int, messages: int, now: float) -> float:
        """`reserve` at `now`, without a coroutine (pure code and tests drive time)."""
        wait = self.requests.take(requests, now) if requests else 0.0
        if messages:
            # Only a request that carries messages takes from (or waits on) their bucket:
            # a status poll is no message.
            wait = max(wait, self.messages.take(messages, now))
        return wait

    @property
    def fault(self) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"LocalGate({self.requests!r}, {self.messages!r})"


async def wait_for_turn(
    gate: BridgeGate,
    requests: int,
    messages: int,
    *,
    sleep: Callable[[float], Awaitable[None]],
    before_wait: Callable[[float], Awaitable[None]] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Reserve a turn from `gate` and sleep until it comes, asking again after each Hold;
    False when `stop()` said to give up while held (no turn is then reserved).

    `before_wait(seconds)` runs before any sleep (the dispatcher commits what it holds
    there, so no outcome waits on a rate limit); a poll or a balance ask has none."""
    while True:
        answer = await gate.reserve(requests, messages)
        if isinstance(answer, Hold):
            if before_wait is not None:
                await before_wait(answer.retry_s)
            await sleep(answer.retry_s)
            if stop():
                return False
            continue
        if answer > 0:
            if before_wait is not None:
                await before_wait(answer)
            await sleep(answer)
        return True


class SharedLimits(NamedTuple):
    """The cluster's Redis client (redis-py's asyncio `Redis`), and where it points."""

    client: Any
    where: str


async def open_shared_limits(url: str | None, stack: AsyncExitStack) -> SharedLimits | None:
    """With `[cluster] redis` (`url`), the client every bridge's shared gate uses, closed
    with `stack`; without, None. redis-py is imported only then: a single node needs none
    of it. Nothing is connected yet: an unreachable Redis pauses the bridges, it does not
    stop the start."""
    if url is None:
        return None
    from engine import cluster_limits

    client = cluster_limits.open_client(url)
    stack.push_async_callback(client.aclose)
    where = cluster_limits.location(url)
    log.info("cluster_limits", where=where)
    return SharedLimits(client, where)


def gate_for(name: str, bridge: BridgeConfig, shared: SharedLimits | None) -> BridgeGate:
    """Bridge `name`'s rate limits: shared by the cluster in Redis, or kept in this process."""
    if shared is None:
        return LocalGate(
            RequestLimiter(bridge.requests_per_s, bridge.request_burst),
            TokenBucket(bridge.messages_per_s, bridge.messages_burst),
        )
    from engine.cluster_limits import SharedGate

    return SharedGate(
        shared.client,
        name,
        requests_per_s=bridge.requests_per_s,
        requests_burst=bridge.request_burst,
        messages_per_s=bridge.messages_per_s,
        messages_burst=bridge.messages_burst,
        where=shared.where,
    )
