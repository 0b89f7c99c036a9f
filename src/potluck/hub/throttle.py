"""Password guessing: failed sign-ins are counted per username and per client address.

After `LoginThrottle.per_name` failures for one username, or `per_address` from one address, within
`window_s`, further attempts for it are refused with 429 and ``Retry-After`` until the oldest failure
ages out. The refusal comes before the password is checked, so a guesser learns nothing and costs the
hub no hashing. A success clears its username's count. Counts live in memory, bounded by `max_keys`
(the least recently failed key goes first); a restart forgets them.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

from potluck._shared.clock import Clock
from potluck.hub.limits import RateLimitError


class LoginThrottle:
    """Failed sign-ins per username and per address, over a sliding window."""

    def __init__(
        self,
        clock: Clock,
        *,
        per_name: int = 5,
        per_address: int = 20,
        window_s: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self._clock = clock
        self.per_name = per_name
        self.per_address = per_address
        self.window_s = window_s
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, username: str, address: str | None) -> None:
        """Raise `RateLimitError` when this username or address has failed too often lately."""
        now = self._clock.now()
        for key, limit in self._keys(username, address):
            times = self._recent(key, now)
            if times is not None and len(times) >= limit:
                wait = max(1, math.ceil(times[0] + self.window_s - now))
                raise RateLimitError("Too many failed sign-ins; try again later", retry_after=wait, headers={})

    def failed(self, username: str, address: str | None) -> None:
        """Count a failed attempt against the username and the address."""
        now = self._clock.now()
        for key, _limit in self._keys(username, address):
            times = self._failures.pop(key, None) or deque()
            times.append(now)
            self._failures[key] = times
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        """The right password: the username's failures are forgiven (the address's are not)."""
        self._failures.pop(_name_key(username), None)

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(_name_key(username), self.per_name)]
        if address:
            keys.append(("a:" + address, self.per_address))
        return keys

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


def _name_key(username: str) -> str:
    return "n:" + username.casefold()
