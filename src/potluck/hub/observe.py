"""The dashboard's live numbers: rolling windows over finished requests, kept in memory.

`Observer.finished` is the request owner's one call per finished request (after its usage record is
made): a few dict and list operations, no lock, no database, no I/O. It updates

- one-minute buckets over the last 15 minutes per (agent, group, model): requests, errors, completion
  tokens, decode speed and a log-scale histogram of the time to first byte;
- per user, what they were charged and what their agents earned, per hour over the last 24 hours;
- a bounded ring of the latest records, which `potluck.hub.observe_stream` fans out to dashboards.

The dashboard reads `Observer.window` for whatever set of agents a viewer may see. Nothing here is
durable: the daily figures come from the ``usage_daily`` rollup table; the 24-hour sums are seeded
from the usage records at start (`seed_day`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from potluck._shared.clock import Clock
from potluck.hub.outcome import Outcome
from potluck.store.usage import UsageRecord

__all__ = ["Observer", "UsageRecord", "Window", "WindowKey"]

BUCKET_S = 60
BUCKETS = 15
WINDOW_S = BUCKET_S * BUCKETS
HOUR_S = 3600
DAY_HOURS = 24
RECENT = 1024
"""Finished requests kept for the live tail (a dashboard behind by more loses the oldest)."""
MAX_KEYS = 4096
"""Window keys (agent, group, model) kept. When they are full, keys with nothing in the window are forgotten
(once a minute at most); a request beyond them is counted under a catch-all key, so a client naming endless
unknown models cannot grow the hub's memory."""
_RATIO = 1.2
"""Histogram bins grow by 20 %: a percentile read from the bin's middle is within 10 % of the truth."""
_LOG_RATIO = math.log(_RATIO)
_BINS = 80
"""Up to 1.2**79 ms, about 30 minutes."""
_NOT_ERRORS = frozenset({Outcome.OK.value, Outcome.CLIENT_CANCELLED.value})
_OVERFLOW: WindowKey = (None, None, "")

WindowKey = tuple[str | None, str | None, str]
"""(agent id, group id, model): the agent that served it (None: none did) and the group it went through."""


def ttft_bin(ms: int) -> int:
    """The histogram bin of a time to first byte in milliseconds."""
    if ms < 1:
        return 0
    return min(_BINS - 1, 1 + int(math.log(ms) / _LOG_RATIO))


def bin_value(index: int) -> float:
    """The middle of a bin, in milliseconds (geometric)."""
    if index == 0:
        return 0.5
    return float(_RATIO ** (index - 0.5))


class _Bucket:
    __slots__ = ("completion_tokens", "decode_ms", "decode_tokens", "errors", "minute", "requests", "ttft")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.requests = 0
        self.errors = 0
        self.completion_tokens = 0
        self.decode_tokens = 0
        self.decode_ms = 0
        self.ttft: list[int] | None = None


@dataclass(slots=True)
class Window:
    """Sums over the last `BUCKETS` minutes of the keys a viewer may see; index ``BUCKETS - 1`` is now."""

    requests: list[int]
    errors: list[int]
    completion_tokens: list[int]
    decode_tokens: int
    decode_ms: int
    ttft: list[list[int]]
    """A histogram per bucket."""
    covered_s: list[float]
    """Seconds each bucket covers (the current one only partly, the ones before the hub started not at all)."""

    @property
    def total_requests(self) -> int:
        return sum(self.requests)

    def ttft_percentile(self, q: float, bucket: int | None = None) -> float | None:
        """The ``q`` quantile (0..1) of the time to first byte, in ms, over the window or one bucket."""
        hist = [sum(col) for col in zip(*self.ttft, strict=True)] if bucket is None else self.ttft[bucket]
        total = sum(hist)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index, count in enumerate(hist):
            seen += count
            if seen >= rank and count:
                return round(bin_value(index), 1)
        return None  # pragma: no cover - the loop always returns once total > 0

    def error_rate(self, bucket: int | None = None) -> float | None:
        requests = self.total_requests if bucket is None else self.requests[bucket]
        errors = sum(self.errors) if bucket is None else self.errors[bucket]
        return None if requests == 0 else errors / requests

    def tokens_per_s(self, bucket: int | None = None) -> float | None:
        """Completion tokens generated per second over the window or one bucket."""
        covered = sum(self.covered_s) if bucket is None else self.covered_s[bucket]
        if covered <= 0:
            return None
        tokens = sum(self.completion_tokens) if bucket is None else self.completion_tokens[bucket]
        return tokens / covered

    def requests_per_min(self, bucket: int | None = None) -> float | None:
        covered = sum(self.covered_s) if bucket is None else self.covered_s[bucket]
        if covered <= 0:
            return None
        requests = self.total_requests if bucket is None else self.requests[bucket]
        return requests * 60 / covered

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Decode speed: completion tokens per second after the first byte."""
        return None if self.decode_ms <= 0 else self.decode_tokens * 1000 / self.decode_ms


class Observer:
    """See the module docstring."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started = clock.now()
        self._rings: dict[WindowKey, list[_Bucket | None]] = {}
        self._spent: dict[str, dict[int, int]] = {}
        """User -> hour -> micro-credits charged."""
        self._earned: dict[str, dict[int, int]] = {}
        """Owner -> hour -> micro-credits earned."""
        self.recent: deque[tuple[int, UsageRecord]] = deque(maxlen=RECENT)
        """(sequence number, record) of the latest finished requests."""
        self.seq = 0
        """Sequence number of the latest record."""
        self._swept = -1
        """The minute of the last sweep of stale keys."""

    # -- the hot path ---------------------------------------------------------------------------------

    def finished(self, record: UsageRecord, now: float) -> None:
        """A request finished and ``record`` is its usage record; ``now`` is the clock's monotonic time."""
        bucket = self._bucket((record.agent_id, record.group_id, record.model), int(now // BUCKET_S))
        bucket.requests += 1
        if record.outcome not in _NOT_ERRORS:
            bucket.errors += 1
        tokens = record.completion_tokens
        bucket.completion_tokens += tokens
        ttft = record.ttft_ms
        if ttft is not None:
            hist = bucket.ttft
            if hist is None:
                hist = bucket.ttft = [0] * _BINS
            hist[ttft_bin(ttft)] += 1
            if tokens and record.total_ms > ttft:
                bucket.decode_tokens += tokens
                bucket.decode_ms += record.total_ms - ttft
        if record.charged or record.earned:
            self._money(record)
        self.seq += 1
        self.recent.append((self.seq, record))

    def _bucket(self, key: WindowKey, minute: int) -> _Bucket:
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= MAX_KEYS and minute != self._swept:
                self._sweep(minute)
            if len(self._rings) >= MAX_KEYS:
                key = _OVERFLOW
                ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = [None] * BUCKETS
        bucket = ring[minute % BUCKETS]
        if bucket is None or bucket.minute != minute:
            bucket = ring[minute % BUCKETS] = _Bucket(minute)
        return bucket

    def _sweep(self, minute: int) -> None:
        """Forget keys with nothing in the window (at most once a minute, and only when the keys are full)."""
        self._swept = minute
        first = minute - BUCKETS + 1
        for key in [k for k, ring in self._rings.items() if all(b is None or b.minute < first for b in ring)]:
            del self._rings[key]

    def _money(self, record: UsageRecord) -> None:
        hour = int(record.created_at.timestamp() // HOUR_S)
        if record.charged and record.user_id is not None:
            _add(self._spent, record.user_id, hour, record.charged)
        if record.earned and record.owner_id is not None:
            _add(self._earned, record.owner_id, hour, record.earned)

    # -- reads ----------------------------------------------------------------------------------------

    def window(self, visible: Callable[[WindowKey], bool]) -> Window:
        """Sums over the keys ``visible`` accepts, one entry per minute bucket, oldest first."""
        first, covered = self._frame()
        window = _empty(covered)
        for key, ring in self._rings.items():
            if visible(key):
                _accumulate(window, ring, first)
        return window

    def by_model(self, visible: Callable[[WindowKey], bool]) -> dict[str, Window]:
        """`window` per model, in one pass over the keys."""
        first, covered = self._frame()
        windows: dict[str, Window] = {}
        for key, ring in self._rings.items():
            if visible(key):
                window = windows.get(key[2])
                if window is None:
                    window = windows[key[2]] = _empty(covered)
                _accumulate(window, ring, first)
        return windows

    def _frame(self) -> tuple[int, list[float]]:
        """The first bucket's minute, and the seconds each bucket of the window covers."""
        now = self._clock.now()
        first = int(now // BUCKET_S) - BUCKETS + 1
        covered = []
        for i in range(BUCKETS):
            start = max((first + i) * BUCKET_S, self._started)
            end = min((first + i + 1) * BUCKET_S, now)
            covered.append(max(0.0, end - start))
        return first, covered

    def keys(self) -> Iterable[WindowKey]:
        return self._rings.keys()

    def spent_24h(self, user_id: str) -> int:
        """Micro-credits charged to the user over the last 24 hours (by the hour)."""
        return self._last_day(self._spent.get(user_id))

    def earned_24h(self, user_id: str) -> int:
        """Micro-credits the user's agents earned over the last 24 hours (by the hour)."""
        return self._last_day(self._earned.get(user_id))

    def _last_day(self, hours: dict[int, int] | None) -> int:
        if not hours:
            return 0
        first = int(self._clock.wall().timestamp() // HOUR_S) - DAY_HOURS + 1
        for hour in [h for h in hours if h < first]:
            del hours[hour]
        return sum(hours.values())

    def seed_day(self, rows: Iterable[tuple[datetime, str | None, str | None, int, int]]) -> None:
        """Take the last day's charges and earnings from the usage records: (hour, user, owner, charged, earned)."""
        for at, user_id, owner_id, charged, earned in rows:
            hour = int(at.timestamp() // HOUR_S)
            if charged and user_id is not None:
                _add(self._spent, user_id, hour, charged)
            if earned and owner_id is not None:
                _add(self._earned, owner_id, hour, earned)


def _empty(covered: list[float]) -> Window:
    return Window(
        [0] * BUCKETS, [0] * BUCKETS, [0] * BUCKETS, 0, 0, [[0] * _BINS for _ in range(BUCKETS)], list(covered)
    )


def _accumulate(window: Window, ring: list[_Bucket | None], first: int) -> None:
    for bucket in ring:
        if bucket is None or bucket.minute < first:
            continue
        i = bucket.minute - first
        window.requests[i] += bucket.requests
        window.errors[i] += bucket.errors
        window.completion_tokens[i] += bucket.completion_tokens
        window.decode_tokens += bucket.decode_tokens
        window.decode_ms += bucket.decode_ms
        if bucket.ttft is not None:
            row = window.ttft[i]
            for b, count in enumerate(bucket.ttft):
                if count:
                    row[b] += count


def _add(table: dict[str, dict[int, int]], who: str, hour: int, amount: int) -> None:
    hours = table.get(who)
    if hours is None:
        hours = table[who] = {}
    if hour not in hours:
        # A new hour: forget those older than a day, so a user nobody looks at keeps 25 numbers, not a history.
        for old in [h for h in hours if h <= hour - DAY_HOURS]:
            del hours[old]
    hours[hour] = hours.get(hour, 0) + amount
