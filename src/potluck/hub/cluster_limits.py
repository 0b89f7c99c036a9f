"""Rate and concurrency limits that hold across the replicas of a cluster.

The same buckets as `MemoryRateLimiter` (hub/limits.py: requests and tokens per minute refilling
continuously, a concurrency count per key), kept in Redis and changed only by Lua scripts, which Redis
runs atomically, on Redis's own clock (``TIME`` inside the script): replicas with skewed clocks or a burst
split over every replica still admit at most the limit.

Only requests whose key or user has a limit pay a Redis round trip (`confirm`, awaited before the request
is placed); the rest never touch Redis. While Redis does not answer, each replica enforces the limits
divided by the number of live replicas it last knew, in memory: never the whole limit per replica.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from potluck._shared.clock import Clock
from potluck.hub.limits import NO_LIMITS, Admission, Limits, MemoryRateLimiter, RateLimitError

log = logging.getLogger(__name__)

PREFIX = "potluck:rl:"
CONCURRENCY_TTL_S = 900
"""A running request's concurrency entry expires after this long even if its replica died without releasing it."""

# KEYS: the buckets, then the concurrency set (or none). ARGV: bucket count, then per bucket capacity and
# need (1: a request token is taken; 0: the token balance must be positive), then the concurrency limit,
# member and expiry. Returns {admitted, refused bucket (0: concurrency), wait ms, levels...}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local levels = {}
local refused, wait = -1, 0
for i = 1, n do
  local cap = tonumber(ARGV[2 * i])
  local need = tonumber(ARGV[2 * i + 1])
  local h = redis.call('HMGET', KEYS[i], 'level', 'ts')
  local level, ts = tonumber(h[1]), tonumber(h[2])
  if level == nil then level, ts = cap, now end
  level = math.min(cap, level + (now - ts) * cap / 60)
  levels[i] = level
  local short = (need > 0 and level < need) or (need == 0 and level <= 0)
  if short then
    if refused < 0 then refused = i end
    local w = ((need > 0 and need or 0.000001) - level) * 60 / cap
    if w > wait then wait = w end
  end
end
local climit = tonumber(ARGV[2 * n + 2])
local ckey = KEYS[n + 1]
if refused < 0 and ckey then
  redis.call('ZREMRANGEBYSCORE', ckey, '-inf', now)
  if climit >= 0 and redis.call('ZCARD', ckey) >= climit then
    refused, wait = 0, 1
  end
end
local out = {}
if refused >= 0 then
  out[1], out[2], out[3] = 0, refused, math.ceil(wait * 1000)
else
  out[1], out[2], out[3] = 1, -1, 0
  for i = 1, n do
    local need = tonumber(ARGV[2 * i + 1])
    if need > 0 then levels[i] = levels[i] - need end
    redis.call('HSET', KEYS[i], 'level', tostring(levels[i]), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
  if ckey then
    redis.call('ZADD', ckey, now + tonumber(ARGV[2 * n + 4]), ARGV[2 * n + 3])
    redis.call('PEXPIRE', ckey, tonumber(ARGV[2 * n + 4]) * 1000)
  end
end
for i = 1, n do out[3 + i] = tostring(levels[i]) end
return out
"""

# KEYS: the concurrency set (or none), then the token buckets. ARGV: has concurrency (1/0), member, tokens,
# then each token bucket's capacity.
_FINISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local first = 1
if ARGV[1] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  first = 2
end
local tokens = tonumber(ARGV[3])
for i = first, #KEYS do
  local cap = tonumber(ARGV[4 + i - first])
  local h = redis.call('HMGET', KEYS[i], 'level', 'ts')
  local level, ts = tonumber(h[1]), tonumber(h[2])
  if level == nil then level, ts = cap, now end
  level = math.min(cap, level + (now - ts) * cap / 60) - tokens
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], 120000)
end
return 1
"""


@dataclass(slots=True)
class ClusterAdmission(Admission):
    """An admission whose limits are checked in Redis by `ClusterRateLimiter.confirm`."""

    key: Limits = NO_LIMITS
    user: Limits = NO_LIMITS
    member: str = ""
    counted: bool = False
    """Redis counted it (its concurrency entry and token charge go back to Redis)."""
    local: Admission | None = None
    """Redis was down: the per-replica share admitted it in memory."""
    buckets: list[tuple[str, str, str, int, float]] = field(default_factory=list)


class ClusterRateLimiter:
    """`RateLimiter` across replicas, on Redis scripts; limit ÷ live replicas in memory while Redis is down."""

    def __init__(self, redis: aioredis.Redis, clock: Clock, live_replicas: Callable[[], int]) -> None:
        self._redis = redis
        self._live = live_replicas
        self._fallback = MemoryRateLimiter(clock)
        self._admit_script = redis.register_script(_ADMIT)
        self._finish_script = redis.register_script(_FINISH)
        self._finishing: asyncio.Queue[_Finished] = asyncio.Queue()

    def admit(self, key_id: str, key: Limits, user_id: str, user: Limits) -> Admission:
        """Checked later, in `confirm` (limited keys and users only)."""
        return ClusterAdmission(key_id, user_id, key=key, user=user)

    async def confirm(self, admission: Admission) -> None:
        """Count the request against its limits cluster-wide; raises `RateLimitError` when one is reached."""
        if not isinstance(admission, ClusterAdmission) or (admission.key == NO_LIMITS and admission.user == NO_LIMITS):
            return
        buckets: list[tuple[str, str, str, int, float]] = []  # (what, scope, redis key, capacity, need)
        for scope, owner, limits in (
            ("key", admission.key_id, admission.key),
            ("user", admission.user_id, admission.user),
        ):
            if limits.rpm is not None:
                buckets.append(("requests", scope, f"{PREFIX}{scope}:{owner}:rpm", limits.rpm, 1.0))
            if limits.tpm is not None:
                buckets.append(("tokens", scope, f"{PREFIX}{scope}:{owner}:tpm", limits.tpm, 0.0))
        concurrency = admission.key.max_concurrency
        keys = [b[2] for b in buckets]
        if concurrency is not None:
            keys.append(f"{PREFIX}key:{admission.key_id}:running")
        admission.member = secrets.token_hex(8)
        args: list[str | int | float] = [len(buckets)]
        for bucket in buckets:
            args += [bucket[3], bucket[4]]
        args += [concurrency if concurrency is not None else -1, admission.member, CONCURRENCY_TTL_S]
        try:
            result = await self._admit_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            log.warning("Redis did not answer a rate-limit check (%s); enforcing this replica's share", exc)
            admission.local = self._fallback.admit(
                admission.key_id,
                _share(admission.key, self._live()),
                admission.user_id,
                _share(admission.user, self._live()),
            )
            admission.headers = admission.local.headers
            return
        admitted, refused, wait_ms = int(result[0]), int(result[1]), int(result[2])
        levels = [float(x) for x in result[3:]]
        admission.headers = _headers(buckets, levels)
        if not admitted:
            retry_after = max(1, math.ceil(wait_ms / 1000))
            if refused == 0:
                message = f"This key already has its limit of {concurrency} requests running"
            else:
                what, scope = buckets[refused - 1][0], buckets[refused - 1][1]
                message = f"Rate limit of {what} per minute for this {scope} reached; retry in {retry_after} s"
            raise RateLimitError(message, retry_after=retry_after, headers=admission.headers)
        admission.counted = True
        admission.buckets = buckets

    def finish(self, admission: Admission, tokens: int) -> None:
        if admission.finished:
            return
        admission.finished = True
        if not isinstance(admission, ClusterAdmission):
            return
        if admission.local is not None:
            self._fallback.finish(admission.local, tokens)
        elif admission.counted and (tokens > 0 or admission.key.max_concurrency is not None):
            self._finishing.put_nowait(_with_tokens(admission, tokens))

    async def run(self) -> None:
        """Give finished requests back to Redis (their concurrency entry, their tokens), in order."""
        while True:
            await self._give_back(await self._finishing.get())

    async def drain(self) -> None:
        """Give back everything finished so far (at shutdown, and for tests)."""
        while not self._finishing.empty():
            await self._give_back(self._finishing.get_nowait())

    async def _give_back(self, admission: _Finished) -> None:
        tokens = admission.tokens
        token_buckets = [b for b in admission.buckets if b[0] == "tokens"] if tokens > 0 else []
        concurrency = admission.key.max_concurrency is not None
        keys = ([f"{PREFIX}key:{admission.key_id}:running"] if concurrency else []) + [b[2] for b in token_buckets]
        args: list[str | int] = ["1" if concurrency else "0", admission.member, tokens]
        args += [b[3] for b in token_buckets]
        try:
            await self._finish_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            # The entry expires on its own (CONCURRENCY_TTL_S); the tokens are forgiven.
            log.warning("Redis did not take a finished request back (%s)", exc)


@dataclass(slots=True)
class _Finished(ClusterAdmission):
    tokens: int = 0


def _with_tokens(admission: ClusterAdmission, tokens: int) -> _Finished:
    return _Finished(
        admission.key_id,
        admission.user_id,
        key=admission.key,
        user=admission.user,
        member=admission.member,
        counted=True,
        buckets=admission.buckets,
        tokens=tokens,
    )


def _share(limits: Limits, replicas: int) -> Limits:
    """A replica's share of a limit while Redis is down: the limit ÷ live replicas (at least 1)."""
    n = max(1, replicas)

    def part(value: int | None) -> int | None:
        return None if value is None else max(1, value // n)

    return Limits(part(limits.rpm), part(limits.tpm), part(limits.max_concurrency))


def _headers(buckets: list[tuple[str, str, str, int, float]], levels: list[float]) -> dict[str, str]:
    requests = [(b[3], level) for b, level in zip(buckets, levels, strict=True) if b[0] == "requests"]
    if not requests:
        return {}
    capacity, level = min(requests, key=lambda r: r[1])
    return {
        "x-ratelimit-limit": str(capacity),
        "x-ratelimit-remaining": str(max(0, math.floor(level))),
        "x-ratelimit-reset": str(math.ceil(max(0.0, capacity - level) * 60 / capacity)),
    }
