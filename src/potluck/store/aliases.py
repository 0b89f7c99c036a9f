"""Model aliases per group: a name clients use ("qwen") for concrete models in order of preference."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck.store.engine import uncut_write
from potluck.store.errors import NotFoundError
from potluck.store.tables import model_aliases


@dataclass(frozen=True, slots=True)
class ModelAlias:
    group_id: str
    alias: str
    models: tuple[str, ...]
    """Concrete model names, most preferred first."""
    updated_at: datetime


class AliasRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def put(self, group_id: str, alias: str, models: Sequence[str]) -> ModelAlias:
        """Create or replace the alias in this group."""
        row = ModelAlias(group_id, alias, tuple(models), datetime.now(UTC))
        values = {
            "group_id": group_id,
            "alias": alias,
            "models": json.dumps(list(models)),
            "updated_at": row.updated_at,
        }
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(model_aliases).where(model_aliases.c.group_id == group_id, model_aliases.c.alias == alias)
            )
            await conn.execute(model_aliases.insert().values(**values))
        return row

    @uncut_write
    async def delete(self, group_id: str, alias: str) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(model_aliases).where(model_aliases.c.group_id == group_id, model_aliases.c.alias == alias)
            )
        if not result.rowcount:
            raise NotFoundError(f"no alias {alias} in this group")

    async def list(self, group_id: str | None = None) -> list[ModelAlias]:
        query = select(model_aliases).order_by(model_aliases.c.group_id, model_aliases.c.alias)
        if group_id is not None:
            query = query.where(model_aliases.c.group_id == group_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            ModelAlias(row["group_id"], row["alias"], tuple(json.loads(row["models"])), row["updated_at"])
            for row in rows
        ]
