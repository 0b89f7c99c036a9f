"""Usage, spend and earnings reports: sums over usage records per UTC day, computed by the database.

Time filters are half-open: ``since <= created_at < until``. Days are ``YYYY-MM-DD`` strings in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck.store.tables import usage_records

_c = usage_records.c


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A consumer's usage on one day, through one key, of one model."""

    day: str
    user_id: str | None
    key_id: str | None
    model: str
    requests: int
    """Requests an agent served (whatever their outcome)."""
    prompt_tokens: int
    completion_tokens: int
    spend: int
    """Micro-credits charged."""
    not_served: int = 0
    """Requests that never reached an agent (no agent for the model, all busy, shutting down): 0 tokens, free."""
    cache_read_tokens: int = 0
    """Of ``prompt_tokens``, those the backends read from their prompt caches (as they reported)."""
    cache_write_tokens: int = 0
    """Of ``prompt_tokens``, those the backends wrote to their prompt caches (as they reported)."""
    reasoning_tokens: int = 0
    """Of ``completion_tokens``, those spent reasoning (as the backends reported)."""


@dataclass(frozen=True, slots=True)
class EarningsRow:
    """What one owner's agent served of one model on one day."""

    day: str
    agent_id: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    earned: int
    """Micro-credits earned by the owner."""


@dataclass(frozen=True, slots=True)
class GroupTotalRow:
    """One member's traffic of one model on one day within a group."""

    day: str
    user_id: str | None
    model: str
    requests: int
    tokens: int
    """Prompt plus completion tokens."""
    spend: int
    earned: int


class ReportRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._day = _day_of(engine.dialect.name, _c.created_at)

    async def usage(
        self,
        user_id: str | None = None,
        group_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]:
        """Per day, user, key and model (of one user and/or one group, or everyone)."""
        keys = (self._day, _c.user_id, _c.key_id, _c.model)
        query = self._grouped(
            keys,
            _c.prompt_tokens,
            _c.completion_tokens,
            _c.charged,
            case((_c.agent_id.is_(None), 1), else_=0),
            _c.cache_read_tokens,
            _c.cache_write_tokens,
            _c.reasoning_tokens,
            count=func.count(_c.agent_id),
            since=since,
            until=until,
        )
        if user_id is not None:
            query = query.where(_c.user_id == user_id)
        if group_id is not None:
            query = query.where(_c.group_id == group_id)
        return [UsageRow(*_ints(row, 4)) for row in await self._rows(query)]

    async def earnings(
        self, owner_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[EarningsRow]:
        """Per day, agent and model, of the agents of one owner."""
        keys = (self._day, _c.agent_id, _c.model)
        query = self._grouped(keys, _c.prompt_tokens, _c.completion_tokens, _c.earned, since=since, until=until)
        query = query.where(_c.owner_id == owner_id)
        return [EarningsRow(*_ints(row, 3)) for row in await self._rows(query)]

    async def group_totals(
        self, group_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[GroupTotalRow]:
        """Per day, member and model, of the requests served through one group."""
        keys = (self._day, _c.user_id, _c.model)
        tokens = _c.prompt_tokens + _c.completion_tokens
        query = self._grouped(keys, tokens, _c.charged, _c.earned, since=since, until=until)
        query = query.where(_c.group_id == group_id)
        return [GroupTotalRow(*_ints(row, 3)) for row in await self._rows(query)]

    def _grouped(
        self,
        keys: tuple[ColumnElement[Any], ...],
        *summed: ColumnElement[Any],
        count: ColumnElement[Any] | None = None,
        since: datetime | None,
        until: datetime | None,
    ) -> Select[Any]:
        """Per ``keys``: ``count`` (default: every record), then the sums of ``summed``."""
        sums = [func.coalesce(func.sum(column), 0) for column in summed]
        query = select(*keys, func.count() if count is None else count, *sums).group_by(*keys)
        # NULL keys sort first on both SQLite and PostgreSQL (their defaults differ).
        query = query.order_by(*(key.nulls_first() for key in keys))
        if since is not None:
            query = query.where(_c.created_at >= since)
        if until is not None:
            query = query.where(_c.created_at < until)
        return query

    async def _rows(self, query: Select[Any]) -> list[tuple[Any, ...]]:
        async with self._engine.connect() as conn:
            return [tuple(row) for row in (await conn.execute(query)).all()]


def _day_of(dialect: str, column: ColumnElement[datetime]) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp as ``YYYY-MM-DD``, rendered without bound parameters so the
    SELECT and GROUP BY expressions are textually identical (PostgreSQL requires that)."""
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), column)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
    # SQLite keeps UTC timestamps as ISO text; date() takes the day part.
    return func.date(column)


def _ints(row: tuple[Any, ...], keys: int) -> tuple[Any, ...]:
    """The grouping keys as they are, the aggregates as ints (PostgreSQL sums of BIGINT are numeric)."""
    return (str(row[0]), *row[1:keys], *(int(v) for v in row[keys:]))
