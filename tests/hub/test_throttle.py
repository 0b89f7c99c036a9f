"""Password guessing is throttled per username and per address, over a sliding window on the hub's clock."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.limits import RateLimitError
from potluck.hub.throttle import LoginThrottle


def fail(throttle: LoginThrottle, times: int, name: str = "alice", address: str | None = "10.0.0.1") -> None:
    for _ in range(times):
        throttle.check(name, address)
        throttle.failed(name, address)


def test_a_username_is_refused_after_its_failures_until_the_oldest_ages_out() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, per_name=3, per_address=100, window_s=60)
    fail(throttle, 2)
    clock.advance(30)
    fail(throttle, 1)
    with pytest.raises(RateLimitError) as refused:
        throttle.check("ALICE", "10.0.0.2")  # the name counts whatever its case and wherever it comes from
    assert refused.value.status == 429
    assert refused.value.retry_after == 30  # the first failure leaves the window 60 s after it
    clock.advance(30)
    throttle.check("alice", "10.0.0.1")  # one failure aged out: two left, under the limit


def test_an_address_is_refused_across_usernames() -> None:
    throttle = LoginThrottle(ManualClock(), per_name=100, per_address=4, window_s=60)
    for name in ("a", "b", "c", "d"):
        fail(throttle, 1, name=name)
    with pytest.raises(RateLimitError):
        throttle.check("e", "10.0.0.1")
    throttle.check("e", "10.0.0.9")  # another address is not held back


def test_success_forgives_the_username_but_not_the_address() -> None:
    throttle = LoginThrottle(ManualClock(), per_name=2, per_address=3, window_s=60)
    fail(throttle, 2)
    throttle.succeeded("alice")
    throttle.check("alice", None)
    with pytest.raises(RateLimitError):
        fail(throttle, 2)  # the address reached its three failures on the way


def test_memory_stays_bounded_by_max_keys() -> None:
    throttle = LoginThrottle(ManualClock(), per_name=1, per_address=1, window_s=60, max_keys=10)
    for n in range(1000):
        throttle.failed(f"user{n}", f"10.0.{n // 256}.{n % 256}")
    assert len(throttle._failures) == 10
    throttle.check("user0", "10.0.0.0")  # the oldest keys went first
    with pytest.raises(RateLimitError):
        throttle.check("user999", None)
