"""A bridge's rate limits shared by every node of a cluster: one GCRA script in Redis.

With `[cluster] redis` set, each bridge's requests/s and messages/s are kept in Redis, not
in each process, so N nodes sending through one bridge never pass what one node may. A
turn is one atomic script call (`reserve(requests, messages)`), on the Redis server's
clock (`TIME`), so the nodes' clocks do not matter. Per bridge and per limit (requests,
and messages), the same two rules as engine.ratelimit's RequestLimiter both hold for
every grant:

    spacing (GCRA)   grant ≥ TAT - (burst - n) ÷ rate    then TAT = max(TAT, grant) + n ÷ rate
    window (a log)   the units granted in (grant - 1 s, grant] plus n ≤ ⌊rate⌋

so **no one-second window holds more than ⌊rate⌋ requests, or ⌊rate⌋ messages** (a batch
larger than a whole second's messages goes alone, once the window is empty), and grants
come in the order asked. The log is a Redis list of (grant time, running total) pairs,
trimmed from its head as grants leave the window: a call costs a few list reads, not a
scan.

A grant is a reservation (the caller sleeps until it, as with the local limiters), at
most `horizon_s` ahead; a turn further ahead is not given: the answer is a Hold and the
caller asks again when it is near. That bound is what makes a Redis that lost its data
safe: a bridge's state that is missing (a restarted Redis without persistence, a flush,
or the bridge's first use) starts with nothing granted before `horizon_s + 1 s` from
then, by when every grant made before the loss has left its window.

While Redis cannot be reached the answer is a Hold too (nothing goes through the bridge,
so the cluster cannot pass the limit); the first failure is logged in one sentence,
`fault` names it for /readyz, and the first answer after it is logged as the end of it.

Keys, per bridge: `septet:limits:{<bridge>}:state` (a hash), `…:requests` and
`…:messages` (the logs). They have no expiry and stay small (at most one second of
grants); every node must configure a bridge's limits alike (each call carries them).

An account's messages/s and burst (`[accounts.NAME] messages_per_s`, `burst`) are shared
the same way, by `SharedAccountBucket`: a token bucket kept as one GCRA time in Redis
(`septet:accounts:{<account>}:tat`, expiring once the bucket is full again). It does not
reserve: a take that does not fit is refused with the seconds until it would (the accept
path's "throttled"), as the account's local bucket answers. While Redis cannot be reached
the caller falls back to its own node's bucket (engine.accounts.AccountLimit): accepting
passes no provider's limit (the bridges' gates still hold), so an unreachable Redis should
not stop the cluster from accepting.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.bridge_limits import Hold, HoldCause

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = structlog.get_logger("septet.cluster_limits")

# Providers state their limits per second: the window the ⌊rate⌋ holds in.
WINDOW_S = 1.0
# The furthest ahead a turn is reserved; bounds the wait after Redis lost its data.
HORIZON_S = 1.0
# How soon a node asks again while Redis cannot be reached.
UNREACHABLE_RETRY_S = 0.5
# The shortest Hold for a turn further ahead than the horizon (no busy loop).
MIN_RETRY_S = 0.005
US = 1_000_000

# A call that takes longer than this is a Redis that cannot be reached (a turn is a few
# list reads; milliseconds even on a loaded host).
SOCKET_TIMEOUT_S = 1.0

# KEYS: state hash, request log, message log.
# ARGV: requests, messages, then per limit (requests, messages) interval µs, burst, limit
# per window; window µs, horizon µs, hold µs when the state is missing.
# Returns {granted 1|0, grant time µs, server time µs}.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n_req, n_msg = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, horizon, hold = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local st = redis.call('HMGET', KEYS[1], 'floor', 'last', 'rtat', 'rbase', 'rtotal',
                      'mtat', 'mbase', 'mtotal')
local floor = tonumber(st[1])
if floor == nil then
  -- No state: first use, or Redis lost it. Grants made before the loss were at most
  -- `horizon` ahead; none of them may share a window with a new one.
  floor = now + hold
  redis.call('HSET', KEYS[1], 'floor', floor)
end
local at = math.max(now, floor, tonumber(st[2]) or 0)

-- spacing (GCRA): a batch of n fits when its last unit is within the burst
local function spacing(at, n, tat, interval, burst)
  if n == 0 or interval == 0 then return at end
  return math.max(at, tat - math.max(0, burst - n) * interval)
end

-- window: walk the log from its oldest entry; returns the grant time, the running
-- total that left the window, and how many entries left it
local function window_rule(key, at, n, limit, base, total)
  local gone = 0
  if n == 0 or limit == 0 then return at, base, gone end
  while true do
    local entry = redis.call('LRANGE', key, 2 * gone, 2 * gone + 1)
    if #entry == 0 then break end
    local granted, cum = tonumber(entry[1]), tonumber(entry[2])
    if granted + window <= at then
      base, gone = cum, gone + 1
    elseif total - base + n > limit then
      at, base, gone = granted + window, cum, gone + 1
    else
      break
    end
  end
  return at, base, gone
end

local r_int, r_burst, r_limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local m_int, m_burst, m_limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local rtat, mtat = tonumber(st[3]) or 0, tonumber(st[6]) or 0
local rbase, rtotal = tonumber(st[4]) or 0, tonumber(st[5]) or 0
local mbase, mtotal = tonumber(st[7]) or 0, tonumber(st[8]) or 0
at = spacing(at, n_req, rtat, r_int, r_burst)
at = spacing(at, n_msg, mtat, m_int, m_burst)
local r_gone, m_gone
at, rbase, r_gone = window_rule(KEYS[2], at, n_req, r_limit, rbase, rtotal)
at, mbase, m_gone = window_rule(KEYS[3], at, n_msg, m_limit, mbase, mtotal)
at = math.ceil(at)
if at - now > horizon then
  return {0, at, now}
end

if n_req > 0 and r_int > 0 then
  rtat = math.max(rtat, at) + n_req * r_int
  if r_limit > 0 then
    if r_gone > 0 then redis.call('LTRIM', KEYS[2], 2 * r_gone, -1) end
    rtotal = rtotal + n_req
    redis.call('RPUSH', KEYS[2], at, rtotal)
  end
end
if n_msg > 0 and m_int > 0 then
  mtat = math.max(mtat, at) + n_msg * m_int
  if m_limit > 0 then
    if m_gone > 0 then redis.call('LTRIM', KEYS[3], 2 * m_gone, -1) end
    mtotal = mtotal + n_msg
    redis.call('RPUSH', KEYS[3], at, mtotal)
  end
end
redis.call('HSET', KEYS[1], 'last', at, 'rtat', rtat, 'rbase', rbase, 'rtotal', rtotal,
           'mtat', mtat, 'mbase', mbase, 'mtotal', mtotal)
return {1, at, now}
"""


# An account's token bucket as a GCRA time (TAT, µs) on the server's clock.
# KEYS: the TAT. ARGV: n, µs per token, burst, 'take' or 'give'.
# Returns {taken 1|0, µs until n tokens would fit}.
ACCOUNT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
if ARGV[4] == 'give' then
  tat = math.max(now, tat - n * interval)
else
  local fits_at = tat + n * interval - burst * interval
  if fits_at > now then return {0, math.ceil(fits_at - now)} end
  tat = tat + n * interval
end
if tat > now then
  redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit as the script takes it: µs between units, burst, units per window."""

    interval_us: float
    burst: float
    limit: int

    @classmethod
    def of(cls, rate: float, burst: float) -> Rule:
        """`rate` units a second (0 or infinity: no limit), `burst` of them back to back."""
        if math.isnan(rate) or rate < 0:
            raise ValueError(f"a rate must be 0 (unlimited) or positive, not {rate}")
        if rate == 0 or math.isinf(rate):
            return cls(0.0, 0.0, 0)
        if not burst > 0:
            raise ValueError(f"a burst must be positive, not {burst}")
        # ⌊rate⌋ per window, as RequestLimiter; at least one, so a slow rate still moves.
        limit = max(1, math.floor(rate * WINDOW_S + 1e-9))
        return cls(US / rate, burst, limit)


@dataclass(frozen=True, slots=True)
class Grant:
    """A turn given: when it comes and when it was asked, both on the Redis server's clock
    (µs), so figures from several nodes line up."""

    at_us: int
    asked_us: int

    @property
    def wait_s(self) -> float:
        return (self.at_us - self.asked_us) / US


def open_client(url: str) -> Redis:
    """redis-py's asyncio client for `url` (connections are made on first use). No retries
    of its own: a failed call is a Hold, and the gate asks again."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def location(url: str) -> str:
    """Where `url` points, for logs and /readyz: scheme, host, port and database, never a
    user name or password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"Redis at {parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    database = parts.path.lstrip("/") or "0"
    return f"Redis at {parts.scheme}://{host}:{port}/{database}"


def keys_of(bridge: str) -> list[str]:
    """The bridge's state hash and logs; one hash tag, so a Redis Cluster keeps them on one
    shard (a script may only touch one)."""
    prefix = f"septet:limits:{{{bridge}}}"
    return [f"{prefix}:state", f"{prefix}:requests", f"{prefix}:messages"]


class SharedGate:
    """A bridge's requests/s and messages/s for the whole cluster (engine.bridge_limits)."""

    def __init__(
        self,
        client: Redis,
        bridge: str,
        *,
        requests_per_s: float,
        requests_burst: float,
        messages_per_s: float,
        messages_burst: float,
        where: str = "Redis",
        horizon_s: float = HORIZON_S,
        fresh_hold_s: float | None = None,
    ) -> None:
        self.bridge = bridge
        self.where = where
        self._keys = keys_of(bridge)
        self._script: AsyncScript = client.register_script(GCRA_SCRIPT)
        requests = Rule.of(requests_per_s, requests_burst)
        messages = Rule.of(messages_per_s, messages_burst)
        if requests.limit and not 1 <= requests_burst <= requests.limit:
            raise ValueError(
                f"a request burst must be between 1 and {requests.limit}, not {requests_burst}"
            )
        self._horizon_us = round(horizon_s * US)
        hold = horizon_s + WINDOW_S if fresh_hold_s is None else fresh_hold_s
        # Everything but the counts, as the script reads them (ARGV[3] on).
        self._args: list[float | int] = [
            requests.interval_us,
            requests.burst,
            requests.limit,
            messages.interval_us,
            messages.burst,
            messages.limit,
            round(WINDOW_S * US),
            self._horizon_us,
            round(hold * US),
        ]
        self._fault: str | None = None
        self._fault_since = 0.0
        # Seconds between two turns of a request, and of a message (0: no limit).
        self._request_s = requests.interval_us / US
        self._message_s = messages.interval_us / US
        # Until when (monotonic) this node knows the next turn is beyond the horizon, and
        # when the last asker it put in line was told to come back (see `reserve`).
        self._ahead_until = 0.0
        self._line_end = 0.0

    @property
    def fault(self) -> str | None:
        return self._fault

    async def grant(self, requests: int, messages: int, /) -> Grant | Hold:
        """One turn asked of the script: a Grant (server times), or a Hold."""
        if requests < 0 or messages < 0:
            raise ValueError(f"cannot reserve a negative count ({requests}, {messages})")
        try:
            answer: Any = await self._script(
                keys=self._keys, args=[requests, messages, *self._args]
            )
        except (RedisError, OSError) as error:
            self._unreachable(error)
            return Hold(HoldCause.UNREACHABLE, UNREACHABLE_RETRY_S)
        if self._fault is not None:
            log.info(
                "cluster_limits_back",
                bridge=self.bridge,
                paused_s=round(time.monotonic() - self._fault_since, 3),
            )
            self._fault = None
        granted, at_us, now_us = (int(value) for value in answer)
        if not granted:
            ahead = (at_us - now_us - self._horizon_us) / US
            return Hold(HoldCause.AHEAD, max(MIN_RETRY_S, ahead))
        return Grant(at_us=at_us, asked_us=now_us)

    async def reserve(self, requests: int, messages: int, /) -> float | Hold:
        """`grant` as the gate's callers take it: seconds to wait, or a Hold.

        Once Redis said the next turn is beyond the horizon, this node's askers do not ask
        it again before then: they get in a line, each told to come back one turn (the
        bridge's spacing for what it carries) after the one before. A hundred askers on
        an 8/s bridge for 5 s (bench.cluster_rates, "backlog") had 47–48 turns for 215–375
        script calls with the line, 3,729 without (docs/design.md). The line only spaces
        the asking: every turn is still Redis's to give."""
        now = time.monotonic()
        if now < self._ahead_until:
            spacing = max(self._request_s * requests, self._message_s * messages)
            self._line_end = max(self._line_end, self._ahead_until) + spacing
            return Hold(HoldCause.AHEAD, self._line_end - now)
        answer = await self.grant(requests, messages)
        if isinstance(answer, Grant):
            return answer.wait_s
        if answer.cause is HoldCause.AHEAD:
            self._ahead_until = time.monotonic() + answer.retry_s
        return answer

    def _unreachable(self, error: BaseException) -> None:
        if self._fault is None:
            self._fault = (
                f"the cluster's rate limits ({self.where}) cannot be reached"
                f" ({type(error).__name__}: {error}); nothing is sent through bridge"
                f" {self.bridge} until they answer"
            )
            self._fault_since = time.monotonic()
            log.error("cluster_limits_unreachable", bridge=self.bridge, problem=self._fault)

    def __repr__(self) -> str:
        return f"SharedGate({self.bridge!r}, {self.where})"


def account_key(account: str) -> str:
    """The account's bucket in Redis (one key; a hash tag for a Redis Cluster)."""
    return f"septet:accounts:{{{account}}}:tat"


class SharedAccountBucket:
    """An account's messages/s and burst for the whole cluster (engine.accounts.AccountLimit
    uses it; see the module's docstring)."""

    def __init__(
        self, client: Redis, account: str, *, rate: float, burst: float, where: str = "Redis"
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"a shared account bucket needs a positive rate, not {rate}")
        if not burst > 0:
            raise ValueError(f"a burst must be positive, not {burst}")
        self.account = account
        self.where = where
        self._keys = [account_key(account)]
        self._script: AsyncScript = client.register_script(ACCOUNT_SCRIPT)
        self._args: list[float] = [US / rate, burst]
        self._fault_since: float | None = None

    async def take(self, count: int) -> float | None:
        """Take `count` tokens: 0.0 when taken, else the seconds until they would fit
        (nothing taken); None when Redis cannot be reached (nothing known, nothing taken)."""
        answer = await self._call(count, "take")
        if answer is None:
            return None
        taken, wait_us = (int(value) for value in answer)
        return 0.0 if taken else max(wait_us / US, 1 / US)

    async def give(self, count: int) -> None:
        """Give back `count` tokens taken for messages that were not accepted after all
        (lost while Redis cannot be reached: the account only waits a little longer)."""
        await self._call(count, "give")

    async def _call(self, count: int, operation: str) -> Any:
        if count < 0:
            raise ValueError(f"cannot take or give a negative count ({count})")
        try:
            answer = await self._script(keys=self._keys, args=[count, *self._args, operation])
        except (RedisError, OSError) as error:
            if self._fault_since is None:
                self._fault_since = time.monotonic()
                log.error(
                    "account_limits_unreachable",
                    account=self.account,
                    problem=f"the cluster's account limits ({self.where}) cannot be reached"
                    f" ({type(error).__name__}: {error}); account {self.account} is held to"
                    " this node's own bucket until they answer",
                )
            return None
        if self._fault_since is not None:
            log.info(
                "account_limits_back",
                account=self.account,
                local_s=round(time.monotonic() - self._fault_since, 3),
            )
            self._fault_since = None
        return answer

    def __repr__(self) -> str:
        return f"SharedAccountBucket({self.account!r}, {self.where})"
