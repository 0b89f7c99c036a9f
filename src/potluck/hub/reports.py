"""What users may look up about past requests: usage and earnings reports, the admin's recent
usage, and signed receipts. Each read first writes what the usage journal still holds, so a report
includes every request that has finished."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from potluck.hub.accounting import Accounting
from potluck.hub.errors import NotFoundError
from potluck.hub.groups import MANAGERS, Groups
from potluck.hub.metering import UsageJournal
from potluck.store.database import Store
from potluck.store.ledger import StoredReceipt
from potluck.store.reports import EarningsRow, GroupTotalRow, UsageRow
from potluck.store.usage import UsageRecord
from potluck.store.users import User

__all__ = ["EarningsRow", "GroupTotalRow", "Reports", "StoredReceipt", "UsageRecord", "UsageRow"]

RECEIPT_WAIT_S = 2.0


class Reports:
    def __init__(self, store: Store, journal: UsageJournal, accounting: Accounting, groups: Groups) -> None:
        self._store = store
        self._journal = journal
        self._accounting = accounting
        self._groups = groups

    async def usage(self, user: User, since: datetime | None, until: datetime | None) -> list[UsageRow]:
        """The user's requests per day, key and model, with ``since <= created_at < until``."""
        await self._journal.flush()
        return await self._store.reports.usage(user_id=user.id, since=since, until=until)

    async def earnings(self, user: User, since: datetime | None, until: datetime | None) -> list[EarningsRow]:
        """What the user's agents served per day, agent and model."""
        await self._journal.flush()
        return await self._store.reports.earnings(user.id, since=since, until=until)

    async def group_totals(
        self, user: User, group_id: str, since: datetime | None, until: datetime | None
    ) -> list[GroupTotalRow]:
        """A group's traffic per day, member and model (its owner and admins)."""
        await self._groups.require_role(user, group_id, MANAGERS)
        await self._journal.flush()
        return await self._store.reports.group_totals(group_id, since=since, until=until)

    async def recent(self, limit: int) -> list[UsageRecord]:
        """Admin: the latest usage records, newest first."""
        await self._journal.flush()
        return await self._store.usage.recent(limit)

    async def receipt(self, user: User, request_id: str) -> StoredReceipt:
        """The signed receipt of a settled request, for its consumer and the serving agent's owner only."""
        stored = await self._store.ledger.receipt(request_id)
        if stored is None:
            # Settled a moment ago and still in the ledger's next batch: served once it is in the database.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECEIPT_WAIT_S):
                    if await self._accounting.ledger.settled_durably(request_id):
                        stored = await self._store.ledger.receipt(request_id)
        if stored is None or user.id not in (stored.consumer_id, stored.owner_id):
            raise NotFoundError(f"No receipt for {request_id}")
        return stored
