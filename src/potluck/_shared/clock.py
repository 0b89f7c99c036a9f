"""Time as an injectable dependency: code that reads the time, waits, expires or retries takes a `Clock`.

One clock answers both questions a process asks: how much time passed (`now`, monotonic seconds, for
deadlines and rates) and what time it is (`wall`, an aware UTC datetime, for records and receipts),
and it schedules the callbacks that deadlines need (`call_later`). Nothing else in the hub reads
``loop.time()`` or ``datetime.now``, so a `ManualClock` drives every timer in a test.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Timer(Protocol):
    """A scheduled callback (asyncio's TimerHandle is one)."""

    def cancel(self) -> None: ...

    def cancelled(self) -> bool: ...


class Clock(Protocol):
    """Monotonic seconds, the wall time, and timers on the same clock."""

    def now(self) -> float: ...

    def wall(self) -> datetime: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer: ...


class SystemClock:
    """The real clocks; timers run on the running asyncio loop."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    """``time.monotonic`` itself: the hot path asks the time a dozen times per request, without a frame each."""

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)


class _ManualTimer:
    __slots__ = ("_cancelled", "args", "callback", "due")

    def __init__(self, due: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.due = due
        self.callback = callback
        self.args = args
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class ManualClock:
    """A clock that moves only when told to; `advance` fires the timers that fall due, in order."""

    __slots__ = ("_epoch", "_t", "_timers", "scheduled")

    def __init__(self, start: float = 0.0, *, epoch: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self._t = start
        self._epoch = epoch
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self.scheduled = 0
        """Timers scheduled so far, cancelled or not (the next one's place among those due together)."""

    def now(self) -> float:
        return self._t

    def wall(self) -> datetime:
        return self._epoch + timedelta(seconds=self._t)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = _ManualTimer(self._t + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.due, self.scheduled, timer))
        self.scheduled += 1
        return timer

    @property
    def pending(self) -> int:
        """Timers scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled())

    def advance(self, seconds: float) -> None:
        target = self._t + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            self._t = max(self._t, due)
            if not timer.cancelled():
                timer.callback(*timer.args)
        self._t = target
