"""What users may look up about past requests: usage and earnings reports, their own requests one
by one with their ids (``GET /api/requests``), the admin's recent usage, and signed receipts. Each
read first writes what the usage journal still holds, so a report includes every request that has
finished. Only usage records are read: prompts and completions are never stored, so never shown."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime

from potluck.hub.accounting import Accounting
from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.hub.groups import MANAGERS, Groups
from potluck.hub.metering import UsageJournal
from potluck.store import errors as store_errors
from potluck.store.database import Store
from potluck.store.ledger import StoredReceipt
from potluck.store.reports import EarningsRow, GroupTotalRow, UsageRow
from potluck.store.usage import UsageRecord
from potluck.store.users import User

__all__ = [
    "EarningsRow",
    "GroupTotalRow",
    "Reports",
    "RequestEntry",
    "RequestPage",
    "StoredReceipt",
    "UsageRecord",
    "UsageRow",
]

RECEIPT_WAIT_S = 2.0
DEFAULT_REQUEST_PAGE = 50
MAX_REQUEST_PAGE = 500


@dataclass(frozen=True, slots=True)
class RequestEntry:
    """One request as its consumer sees it."""

    request_id: str
    created_at: datetime
    model: str
    agent_id: str | None
    """The agent that served it; None when none did (it never reached one)."""
    key_id: str | None
    group_id: str | None
    outcome: str
    status: int
    """The HTTP status the client got."""
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool
    """The backend reported no usage, so the hub estimated the tokens."""
    charged: int
    """Micro-credits charged."""
    ttft_ms: int | None
    """Time to the first byte of the answer, from arrival (None: no byte came)."""
    duration_ms: int
    """From arrival to the end, queue included."""

    @classmethod
    def of(cls, record: UsageRecord) -> RequestEntry:
        return cls(
            request_id=record.request_id,
            created_at=record.created_at,
            model=record.model,
            agent_id=record.agent_id,
            key_id=record.key_id,
            group_id=record.group_id,
            outcome=record.outcome,
            status=record.status,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            tokens_estimated=record.tokens_estimated,
            charged=record.charged,
            ttft_ms=record.ttft_ms,
            duration_ms=record.total_ms,
        )


@dataclass(frozen=True, slots=True)
class RequestPage:
    entries: list[RequestEntry]
    """Newest first."""
    next_before: str | None
    """The ``before`` of the next (older) page; None when this one is the last."""


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

    async def requests(
        self, user_id: str, *, limit: int = DEFAULT_REQUEST_PAGE, before: str | None = None
    ) -> RequestPage:
        """Up to ``limit`` (1 to `MAX_REQUEST_PAGE`) of ``user_id``'s requests, newest first, older than the
        request ``before`` (one of this user's request ids: the ``next_before`` of the previous page).

        Whose requests these are is the caller's decision (the API lists the caller's own, or the user
        an admin asks for); one page never holds two users' requests, and another user's request id is
        refused as ``before`` exactly like an unknown one.
        """
        if not 1 <= limit <= MAX_REQUEST_PAGE:
            raise InvalidRequestError(f"`limit` must be 1 to {MAX_REQUEST_PAGE}", param="limit")
        if await self._store.users.get(user_id) is None:
            raise NotFoundError(f"No user {user_id}")
        await self._journal.flush()
        try:
            records = await self._store.history.page(user_id, limit=limit + 1, before=before)
        except store_errors.NotFoundError:
            raise InvalidRequestError(
                f"`before`: {before} is not one of the listed requests (pass the `next_before` of the previous page)",
                param="before",
            ) from None
        entries = [RequestEntry.of(r) for r in records[:limit]]
        return RequestPage(entries, entries[-1].request_id if len(records) > limit else None)

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
                    if await self._accounting.book.settled_durably(request_id):
                        stored = await self._store.ledger.receipt(request_id)
        if stored is None or user.id not in (stored.consumer_id, stored.owner_id):
            raise NotFoundError(f"No receipt for {request_id}")
        return stored
