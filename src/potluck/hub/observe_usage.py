"""The dashboard's daily figures, read from the ``usage_daily`` rollups (never from usage records one by one).

Each read first writes what the usage journal still holds (as the reports do), so the charts include every
request that has finished and agree with ``GET /api/usage``, ``GET /api/earnings`` and the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from potluck.hub.errors import InvalidRequestError
from potluck.hub.groups import MANAGERS
from potluck.hub.metering import UsageJournal
from potluck.store.database import Store
from potluck.store.rollups import DailyModel, Share
from potluck.store.users import User

MAX_DAYS = 366

__all__ = ["DailyModel", "GroupShares", "Share", "UsageCharts", "User"]


@dataclass(frozen=True, slots=True)
class GroupShares:
    group_id: str
    name: str
    members: list[tuple[str, str, str]]
    """(user id, username, role) of every member."""
    consumed: dict[str, Share]
    """By member."""
    contributed: dict[str, Share]
    """By member."""


class UsageCharts:
    def __init__(self, store: Store, journal: UsageJournal) -> None:
        self._store = store
        self._journal = journal

    @staticmethod
    def days(today: date, days: int) -> tuple[str, str]:
        """(first day, last day) of a report over ``days`` UTC days up to ``today``."""
        if not 1 <= days <= MAX_DAYS:
            raise InvalidRequestError(f"`days` must be 1 to {MAX_DAYS}", param="days")
        return (today - timedelta(days=days - 1)).isoformat(), today.isoformat()

    async def daily(self, user: User, since: str, until: str) -> list[DailyModel]:
        """Per day and model: what the user spent, and what their agents served and earned."""
        await self._journal.flush()
        return await self._store.rollups.daily(user.id, since, until)

    async def shares(self, user: User, admin: bool, since: str, until: str) -> list[GroupShares]:
        """Each member's consumed and contributed share of every group the user owns or administers
        (every group for an admin), by group name. Three queries whatever the number of groups."""
        if admin:
            groups = [(g.id, g.name) for g in await self._store.groups.all()]
        else:
            groups = [(g.id, g.name) for g, role in await self._store.groups.for_user(user.id) if role in MANAGERS]
        if not groups:
            return []
        await self._journal.flush()
        ids = [g for g, _name in groups]
        consumed, contributed = await self._store.rollups.shares(ids, since, until)
        members = await self._store.rollups.members_of(ids)
        result = []
        for group_id, name in sorted(groups, key=lambda g: (g[1], g[0])):
            result.append(
                GroupShares(
                    group_id,
                    name,
                    sorted(members.get(group_id, []), key=lambda m: m[1]),
                    {s.user_id: s for s in consumed if s.group_id == group_id},
                    {s.user_id: s for s in contributed if s.group_id == group_id},
                )
            )
        return result
