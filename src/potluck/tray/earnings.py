"""Today's earnings of this agent, from the hub's ``GET /api/earnings`` with its owner's stored login.

The agent itself does not know prices: the hub settles every request. The tray asks the hub it serves
(the owner's own ``--hub``, never a URL from elsewhere), at most every `CACHE_S`, with the session token
`potluck login` stored for that hub; without one the page links to the dashboard instead.
"""

from __future__ import annotations

import datetime as dt
import logging

import aiohttp
import msgspec

from potluck._shared.clock import Clock

log = logging.getLogger(__name__)

CACHE_S = 30.0
TIMEOUT_S = 3.0
MICRO = 1_000_000


class _Row(msgspec.Struct):
    day: str
    agent_id: str | None
    earned_micro: int


class _Report(msgspec.Struct):
    data: list[_Row]


def credits_text(micro: int) -> str:
    """Micro-credits as an exact decimal (no float on the way)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


class Earnings:
    def __init__(self, hub_base: str, token: str, clock: Clock) -> None:
        self._url = hub_base.rstrip("/") + "/api/earnings"
        self._token = token
        self._clock = clock
        self._cached: tuple[float, str | None, dt.date, int | None] | None = None

    async def today(self, agent_id: str | None, day: dt.date) -> int | None:
        """Micro-credits this agent earned on ``day`` (UTC); None when the hub could not say."""
        cached = self._cached
        if cached is not None and cached[1:3] == (agent_id, day) and self._clock.now() - cached[0] < CACHE_S:
            return cached[3]
        earned = await self._fetch(agent_id, day)
        self._cached = (self._clock.now(), agent_id, day, earned)
        return earned

    async def _fetch(self, agent_id: str | None, day: dt.date) -> int | None:
        if agent_id is None:
            return None
        params = {"since": day.isoformat(), "until": day.isoformat(), "format": "json"}
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http,
                http.get(self._url, params=params, headers=headers) as resp,
            ):
                if resp.status != 200:
                    log.info("the hub answered %d for today's earnings", resp.status)
                    return None
                report = msgspec.json.decode(await resp.read(), type=_Report)
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.info("could not read today's earnings from the hub: %r", exc)
            return None
        return sum(row.earned_micro for row in report.data if row.agent_id == agent_id and row.day == day.isoformat())
