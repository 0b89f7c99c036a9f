"""When the agent dials the hub again: soon after losing a hub that was up, exponentially otherwise.

A hub restart drops every agent at once, and the hub is back within seconds. Plain exponential
backoff would have grown to several seconds by then, and clients would meanwhile find no agent for
their model. So for `FAST_WINDOW_S` after losing a connection the hub had accepted, a retry waits
at most `FAST_MAX_S` (or ``base``, if larger). Outside that window, and when connections keep
dropping soon after they are made (two in a row shorter than `STABLE_AFTER_S`: a hub in a crash
loop, or two agents sharing one key and replacing each other), the delay's cap doubles with each
failure up to ``cap``. Every delay is drawn at random from its range, so a fleet spreads out.
"""

from __future__ import annotations

import random

FAST_WINDOW_S = 60.0
FAST_MAX_S = 1.0
STABLE_AFTER_S = 10.0


class Backoff:
    """Reconnect delays for one agent; time comes in as ``now`` (monotonic seconds)."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self._attempt = 0
        self._up_since: float | None = None
        self._lost_at: float | None = None
        self._short_sessions = 0

    def connected(self, now: float) -> None:
        """The hub accepted this agent (its welcome arrived)."""
        self._up_since = now

    def next_delay(self, now: float) -> float:
        """Seconds to wait before the next try, after a connection ended or could not be made."""
        if self._up_since is not None:
            lived = now - self._up_since
            self._up_since = None
            self._short_sessions = 0 if lived >= STABLE_AFTER_S else self._short_sessions + 1
            if self._short_sessions < 2:
                self._lost_at = now
                self._attempt = 0
            else:
                self._lost_at = None
        if self._lost_at is not None and now - self._lost_at < FAST_WINDOW_S:
            return self._rng.uniform(self.base / 2, max(self.base, FAST_MAX_S))
        self._attempt += 1
        ceiling = min(self.cap, self.base * 2 ** (self._attempt - 1))
        return self._rng.uniform(self.base / 2, max(self.base, ceiling))
