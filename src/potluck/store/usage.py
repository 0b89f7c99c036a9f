"""Usage records: one per client request, appended in batches (no write per request on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck.store.tables import usage_records


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    key_id: str | None
    agent_id: str | None
    model: str
    path: str
    outcome: str
    """``ok``, ``client_cancelled``, ``agent_failed``, ``upstream_error``, ``timeout``, ``overloaded``..."""
    status: int
    prompt_tokens: int
    completion_tokens: int
    queue_ms: int
    ttft_ms: int | None
    total_ms: int
    created_at: datetime


_FIELDS = tuple(f.name for f in fields(UsageRecord))


class UsageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, records: list[UsageRecord]) -> None:
        """Write a batch in one transaction (group commit)."""
        if not records:
            return
        # Built by hand: dataclasses.asdict deep-copies every field and cost more than the insert.
        rows = [{name: getattr(r, name) for name in _FIELDS} for r in records]
        async with self._engine.begin() as conn:
            await conn.execute(insert(usage_records), rows)

    async def recent(self, limit: int = 100) -> list[UsageRecord]:
        query = select(usage_records).order_by(usage_records.c.created_at.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [UsageRecord(**row) for row in rows]
