"""`ClusterRateLimiter` on a real Redis: two limiters (two replicas) share every limit; without Redis each
enforces the limit divided by the live replicas."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from potluck._shared.clock import SystemClock
from potluck.hub.cluster_limits import ClusterRateLimiter
from potluck.hub.limits import NO_LIMITS, Limits, RateLimitError
from testing.processes import free_port
from testing.redis import RedisServer


async def _admitted(limiter: ClusterRateLimiter, key: Limits, n: int, key_id: str) -> int:
    admitted = 0
    for _ in range(n):
        admission = limiter.admit(key_id, key, "u1", NO_LIMITS)
        try:
            await limiter.confirm(admission)
        except RateLimitError:
            continue
        admitted += 1
    return admitted


async def test_two_replicas_share_one_requests_per_minute_bucket(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        a = ClusterRateLimiter(client, SystemClock(), lambda: 2)
        b = ClusterRateLimiter(client, SystemClock(), lambda: 2)
        limits, key_id = Limits(rpm=10), uuid.uuid4().hex  # a key of its own in the shared Redis
        assert await _admitted(a, limits, 6, key_id) + await _admitted(b, limits, 6, key_id) == 10
        refused = b.admit(key_id, limits, "u1", NO_LIMITS)
        with pytest.raises(RateLimitError) as exc:
            await b.confirm(refused)
        assert exc.value.headers["x-ratelimit-remaining"] == "0"
        assert 1 <= exc.value.retry_after <= 7
    finally:
        await client.aclose()


async def test_concurrency_is_counted_across_replicas_and_given_back(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    a = ClusterRateLimiter(client, SystemClock(), lambda: 2)
    b = ClusterRateLimiter(client, SystemClock(), lambda: 2)
    try:
        limits, key_id = Limits(max_concurrency=1), uuid.uuid4().hex
        running = a.admit(key_id, limits, "u1", NO_LIMITS)
        await a.confirm(running)
        with pytest.raises(RateLimitError, match="running"):
            await b.confirm(b.admit(key_id, limits, "u1", NO_LIMITS))
        a.finish(running, 0)
        await a.drain()
        await b.confirm(b.admit(key_id, limits, "u1", NO_LIMITS))
    finally:
        await client.aclose()


async def test_without_redis_each_replica_enforces_its_share() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        limiter = ClusterRateLimiter(client, SystemClock(), lambda: 3)
        assert await _admitted(limiter, Limits(rpm=9), 10, "k") == 3  # 9 ÷ 3 live replicas, never the whole 9
    finally:
        await client.aclose()
