"""One user's requests, newest first, a page at a time: the usage records behind ``GET /api/requests``."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck.store.errors import NotFoundError
from potluck.store.tables import usage_records
from potluck.store.usage import UsageRecord

_c = usage_records.c
_COLUMNS = tuple(_c[name] for name in UsageRecord.__struct_fields__)


class RequestHistoryRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def page(self, user_id: str, *, limit: int, before: str | None = None) -> list[UsageRecord]:
        """Up to ``limit`` of the usage records of ``user_id``'s requests, newest first.

        The order is by time, then by request id (both descending), so that records made in the same
        instant page in a stable order. With ``before`` (a request id), the page starts just after
        that record. Raises `NotFoundError` when ``before`` is not a request of this user: another
        user's request id reveals nothing, not even where it falls.
        """
        query = select(*_COLUMNS).where(_c.user_id == user_id)
        async with self._engine.connect() as conn:
            if before is not None:
                cursor = select(_c.created_at).where(_c.request_id == before, _c.user_id == user_id)
                at = (await conn.execute(cursor)).scalar_one_or_none()
                if at is None:
                    raise NotFoundError(f"no request {before} of this user")
                query = query.where(or_(_c.created_at < at, and_(_c.created_at == at, _c.request_id < before)))
            query = query.order_by(_c.created_at.desc(), _c.request_id.desc()).limit(limit)
            rows = (await conn.execute(query)).mappings().all()
        return [UsageRecord(**row) for row in rows]
