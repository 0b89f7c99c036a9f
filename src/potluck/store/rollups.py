"""Daily rollups of the usage records (``usage_daily``), for the dashboard's charts and shares.

`add_batch` runs inside the transaction that appends a batch of usage records (`UsageRepository.append`),
so the rollups and the records they sum are committed together and agree exactly; recovery that changes
records (`UsageRepository.reconcile_with_receipts`) changes their rows by the same amounts.
Reads sum rollup rows only: a page load never scans usage records.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck.store.tables import ROLLUP_DIMENSIONS, ROLLUP_SUMS, memberships, usage_daily, usage_records, users

_d = usage_daily.c
_KEY = ("day", *ROLLUP_DIMENSIONS, "model")


@dataclass(frozen=True, slots=True)
class DailyModel:
    """One user's traffic of one model on one UTC day: as a consumer and as the owner of serving agents."""

    day: str
    model: str
    requests: int = 0
    """Their requests an agent served."""
    not_served: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spent: int = 0
    """Micro-credits they were charged."""
    served: int = 0
    """Requests their agents served."""
    earned: int = 0
    """Micro-credits their agents earned."""


@dataclass(frozen=True, slots=True)
class Share:
    """One member's consumption or contribution in one group over some days."""

    group_id: str
    user_id: str
    requests: int
    tokens: int
    amount: int
    """Micro-credits charged (consumption) or earned (contribution)."""


def day_of(at: datetime) -> str:
    """The UTC day of a timestamp, as ``usage_daily`` keys it."""
    return at.astimezone(UTC).date().isoformat()


def _rolled(rows: Iterable[Mapping[str, Any]], *, count_requests: bool = True) -> list[dict[str, Any]]:
    """Usage record rows summed per rollup key (without counting them as requests when not `count_requests`).

    Runs for every batch of usage records, so it is written for speed: one key tuple per row and the sums
    as a list, made into dicts once per key."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    days: dict[datetime, str] = {}
    names = ROLLUP_SUMS[2:]
    for row in rows:
        at = row["created_at"]
        day = days.get(at)
        if day is None:
            day = days[at] = day_of(at)
        key = (day, *[row[d] or "" for d in ROLLUP_DIMENSIONS], row["model"])
        entry = sums.get(key)
        if entry is None:
            entry = sums[key] = [0] * len(ROLLUP_SUMS)
        if count_requests:
            entry[0 if row["agent_id"] is not None else 1] += 1
        for i, name in enumerate(names, 2):
            value = row.get(name)
            if value:
                entry[i] += value
    return [
        dict(zip(_KEY, key, strict=True)) | dict(zip(ROLLUP_SUMS, entry, strict=True)) for key, entry in sums.items()
    ]


def uncharged(row: Mapping[str, Any]) -> dict[str, Any]:
    """What setting a record's charge back to zero changes in its rollup row: minus its charge and earnings."""
    return {**row, "charged": -(row["charged"] or 0), "earned": -(row["earned"] or 0)}


async def add_batch(conn: AsyncConnection, rows: Iterable[Mapping[str, Any]], *, count_requests: bool = True) -> None:
    """Add a batch of usage record rows (as inserted) to the rollups, in the caller's transaction. Rows that
    change records already counted (`uncharged`) go in with `count_requests` False."""
    rolled = _rolled(rows, count_requests=count_requests)
    if not rolled:
        return
    await conn.execute(_upsert(conn.dialect.name), rolled)


@functools.cache
def _upsert(dialect: str) -> Any:
    """The rollup upsert for this database (built once: building it cost more than running it)."""
    upsert = postgresql.insert(usage_daily) if dialect == "postgresql" else sqlite.insert(usage_daily)
    return upsert.on_conflict_do_update(
        index_elements=list(_KEY), set_={name: _d[name] + upsert.excluded[name] for name in ROLLUP_SUMS}
    )


class RollupRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def daily(self, user_id: str, since: str, until: str) -> list[DailyModel]:
        """Per day and model from ``since`` to ``until`` (inclusive): what the user spent and their agents earned."""
        spent = (
            select(
                _d.day,
                _d.model,
                func.sum(_d.requests),
                func.sum(_d.not_served),
                func.sum(_d.prompt_tokens),
                func.sum(_d.completion_tokens),
                func.sum(_d.charged),
            )
            .where(_d.user_id == user_id, _d.day >= since, _d.day <= until)
            .group_by(_d.day, _d.model)
        )
        earned = (
            select(_d.day, _d.model, func.sum(_d.requests), func.sum(_d.earned))
            .where(_d.owner_id == user_id, _d.day >= since, _d.day <= until)
            .group_by(_d.day, _d.model)
        )
        rows: dict[tuple[str, str], dict[str, int]] = {}
        for day, model, requests, not_served, prompt, completion, charged in await self._rows(spent):
            rows[(day, model)] = {
                "requests": int(requests),
                "not_served": int(not_served),
                "prompt_tokens": int(prompt),
                "completion_tokens": int(completion),
                "spent": int(charged),
            }
        for day, model, served, amount in await self._rows(earned):
            entry = rows.setdefault((day, model), {})
            entry["served"] = int(served)
            entry["earned"] = int(amount)
        return [DailyModel(day, model, **sums) for (day, model), sums in sorted(rows.items())]

    async def shares(self, group_ids: list[str], since: str, until: str) -> tuple[list[Share], list[Share]]:
        """Per group and member from ``since`` to ``until``: (consumed, contributed)."""
        if not group_ids:
            return [], []
        tokens = func.sum(_d.prompt_tokens + _d.completion_tokens)
        where = (_d.group_id.in_(group_ids), _d.day >= since, _d.day <= until)
        consumed = (
            select(_d.group_id, _d.user_id, func.sum(_d.requests), tokens, func.sum(_d.charged))
            .where(*where, _d.user_id != "")
            .group_by(_d.group_id, _d.user_id)
        )
        contributed = (
            select(_d.group_id, _d.owner_id, func.sum(_d.requests), tokens, func.sum(_d.earned))
            .where(*where, _d.owner_id != "")
            .group_by(_d.group_id, _d.owner_id)
        )
        return (
            [Share(g, u, int(n), int(t), int(a)) for g, u, n, t, a in await self._rows(consumed)],
            [Share(g, u, int(n), int(t), int(a)) for g, u, n, t, a in await self._rows(contributed)],
        )

    async def members_of(self, group_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
        """Group -> (user id, username, role) of its members, for several groups in one query."""
        m = memberships.c
        query = (
            select(m.group_id, m.user_id, users.c.username, m.role)
            .join(users, users.c.id == m.user_id)
            .where(m.group_id.in_(group_ids))
        )
        members: dict[str, list[tuple[str, str, str]]] = {}
        for group_id, user_id, username, role in await self._rows(query):
            members.setdefault(str(group_id), []).append((str(user_id), str(username), str(role)))
        return members

    async def last_day(self, since: datetime) -> list[tuple[datetime, str | None, str | None, int, int]]:
        """Charged and earned amounts of the usage records since ``since`` (for the 24-hour sums at start):
        (created_at, user, owner, charged, earned), only those that moved credits."""
        r = usage_records.c
        query = select(r.created_at, r.user_id, r.owner_id, r.charged, r.earned).where(
            r.created_at >= since, (r.charged > 0) | (r.earned > 0)
        )
        return [(at, user, owner, int(c), int(e)) for at, user, owner, c, e in await self._rows(query)]

    async def _rows(self, query: Select[Any]) -> list[tuple[Any, ...]]:
        async with self._engine.connect() as conn:
            return [tuple(row) for row in (await conn.execute(query)).all()]
