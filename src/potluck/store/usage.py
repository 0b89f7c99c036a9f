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
    user_id: str | None = None
    """The consumer: the key's user."""
    group_id: str | None = None
    """The group the request was served through and billed in."""
    owner_id: str | None = None
    """The serving agent's owner."""
    tokens_estimated: bool = False
    """The backend reported no usage, so the hub estimated the tokens."""
    flagged: bool = False
    """The agent's reported counts were implausible (the hub's estimate was billed instead)."""
    charged: int = 0
    """What the consumer paid, in micro-credits (0 in a mutual group)."""
    earned: int = 0
    """What the agent's owner earned, in micro-credits."""


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
        query = select(*(usage_records.c[name] for name in _FIELDS)).order_by(usage_records.c.created_at.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [UsageRecord(**row) for row in rows]
