"""Rate and concurrency limits per key and per user, admitted before any work is done.

Requests per minute and tokens per minute are token buckets that refill continuously (a limit of
60 RPM allows a burst of 60, then one a second). A request needs one request token from every
bucket that applies and a positive token balance; its real token count is charged when it ends,
so a balance can go negative and then blocks until it refills. Concurrency is a counter.

`RateLimiter` is the interface; `MemoryRateLimiter` serves one hub process. The cluster mode
implements the same interface on Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from potluck._shared.clock import Clock
from potluck.hub.errors import HubError
from potluck.protocol.errors import ErrorCode


class RateLimitError(HubError):
    code = ErrorCode.RATE_LIMIT_EXCEEDED

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers


class Limits(msgspec.Struct, frozen=True, gc=False):
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None


NO_LIMITS = Limits()


@dataclass(slots=True)
class Admission:
    """What one admitted request holds; give it back with `RateLimiter.finish`."""

    key_id: str
    user_id: str
    headers: dict[str, str] = field(default_factory=dict)
    """``x-ratelimit-*`` headers for the response."""
    finished: bool = False


class RateLimiter(Protocol):
    def admit(self, key_id: str, key: Limits, user_id: str, user: Limits) -> Admission: ...

    async def confirm(self, admission: Admission) -> None:
        """Count an admitted request where the limits are shared (cluster mode, hub/cluster_limits.py); raises
        `RateLimitError` if that refuses it. A limiter that decided everything in `admit` does nothing here."""

    def finish(self, admission: Admission, tokens: int) -> None: ...


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    def seconds_until(self, need: float) -> float:
        """Seconds until the level reaches ``need`` (0 if it is there)."""
        missing = need - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.capacity


class MemoryRateLimiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._running: dict[str, int] = {}

    def _bucket(self, name: str, capacity: int, now: float) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[name] = _Bucket(float(capacity), float(capacity), now)
        bucket.refill(now)
        return bucket

    def admit(self, key_id: str, key: Limits, user_id: str, user: Limits) -> Admission:
        running = self._running.get(key_id, 0)
        if key == NO_LIMITS and user == NO_LIMITS:
            # The common case: nothing to check or report, only the key's running count to keep.
            self._running[key_id] = running + 1
            return Admission(key_id, user_id)
        now = self._clock.now()
        checks: list[tuple[str, str, _Bucket, float]] = []  # (what, scope, bucket, need)
        for scope, owner, limits in (("key", key_id, key), ("user", user_id, user)):
            if limits.rpm is not None:
                checks.append(("requests", scope, self._bucket(f"{scope}:{owner}:rpm", limits.rpm, now), 1.0))
            if limits.tpm is not None:
                # Tokens are charged when the request ends; admit while the balance is positive.
                checks.append(("tokens", scope, self._bucket(f"{scope}:{owner}:tpm", limits.tpm, now), 1e-9))
        refused = [(what, scope, b, need) for what, scope, b, need in checks if b.level < need]
        headers = _headers(checks)
        if refused:
            wait = max(b.seconds_until(need) for _, _, b, need in refused)
            what, scope = refused[0][0], refused[0][1]
            retry_after = max(1, math.ceil(wait))
            raise RateLimitError(
                f"Rate limit of {what} per minute for this {scope} reached; retry in {retry_after} s",
                retry_after=retry_after,
                headers=headers,
            )
        if key.max_concurrency is not None and running >= key.max_concurrency:
            raise RateLimitError(
                f"This key already has {running} requests running (its limit is {key.max_concurrency})",
                retry_after=1,
                headers=headers,
            )
        for what, _scope, bucket, _need in checks:
            if what == "requests":
                bucket.level -= 1.0
        self._running[key_id] = running + 1
        return Admission(key_id, user_id, _headers(checks))  # what is left once this request is counted

    async def confirm(self, admission: Admission) -> None:
        """Nothing: one process decides in `admit`."""

    def finish(self, admission: Admission, tokens: int) -> None:
        if admission.finished:
            return
        admission.finished = True
        left = self._running.get(admission.key_id, 1) - 1
        if left > 0:
            self._running[admission.key_id] = left
        else:
            self._running.pop(admission.key_id, None)
        if tokens <= 0:
            return
        now = self._clock.now()
        for scope, owner in (("key", admission.key_id), ("user", admission.user_id)):
            bucket = self._buckets.get(f"{scope}:{owner}:tpm")
            if bucket is not None:
                bucket.refill(now)
                bucket.level -= tokens


def _headers(checks: list[tuple[str, str, _Bucket, float]]) -> dict[str, str]:
    """``x-ratelimit-limit/remaining/reset`` for the tightest request limit (reset: seconds to full)."""
    requests = [b for what, _, b, _ in checks if what == "requests"]
    if not requests:
        return {}
    tightest = min(requests, key=lambda b: b.level)
    return {
        "x-ratelimit-limit": str(int(tightest.capacity)),
        "x-ratelimit-remaining": str(max(0, math.floor(tightest.level))),
        "x-ratelimit-reset": str(math.ceil(tightest.seconds_until(tightest.capacity))),
    }
