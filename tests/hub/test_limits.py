"""Rate, token and concurrency limits: pure, on a manual clock."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.limits import NO_LIMITS, Limits, MemoryRateLimiter, RateLimitError


def test_rpm_allows_a_burst_then_refills_continuously() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    key = Limits(rpm=2)
    first = limiter.admit("k", key, "u", NO_LIMITS)
    assert first.headers == {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "30"}
    limiter.admit("k", key, "u", NO_LIMITS)
    with pytest.raises(RateLimitError) as refused:
        limiter.admit("k", key, "u", NO_LIMITS)
    assert refused.value.status == 429
    assert refused.value.retry_after == 30
    assert refused.value.headers["x-ratelimit-remaining"] == "0"
    clock.advance(30)
    assert limiter.admit("k", key, "u", NO_LIMITS).headers["x-ratelimit-remaining"] == "0"


def test_tokens_are_charged_when_a_request_ends_and_block_until_refilled() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    key = Limits(tpm=600)
    admission = limiter.admit("k", key, "u", NO_LIMITS)
    limiter.finish(admission, 900)  # the balance goes negative: 600 - 900 = -300
    with pytest.raises(RateLimitError, match="tokens"):
        limiter.admit("k", key, "u", NO_LIMITS)
    clock.advance(31)  # 10 tokens a second
    limiter.admit("k", key, "u", NO_LIMITS)


def test_a_user_limit_spans_all_of_the_users_keys() -> None:
    limiter = MemoryRateLimiter(ManualClock())
    user = Limits(rpm=1)
    limiter.admit("k1", NO_LIMITS, "u", user)
    with pytest.raises(RateLimitError, match="user"):
        limiter.admit("k2", NO_LIMITS, "u", user)
    limiter.admit("k3", NO_LIMITS, "someone-else", user)


def test_concurrency_per_key_is_released_once_per_request() -> None:
    limiter = MemoryRateLimiter(ManualClock())
    key = Limits(max_concurrency=1)
    running = limiter.admit("k", key, "u", NO_LIMITS)
    with pytest.raises(RateLimitError, match="running"):
        limiter.admit("k", key, "u", NO_LIMITS)
    limiter.finish(running, 0)
    limiter.finish(running, 0)  # a second finish changes nothing
    second = limiter.admit("k", key, "u", NO_LIMITS)
    with pytest.raises(RateLimitError):
        limiter.admit("k", key, "u", NO_LIMITS)
    limiter.finish(second, 0)


def test_no_limits_no_headers() -> None:
    assert MemoryRateLimiter(ManualClock()).admit("k", NO_LIMITS, "u", NO_LIMITS).headers == {}
