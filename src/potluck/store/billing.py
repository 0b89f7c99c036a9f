"""Agent prices: what an agent's owner asks per model, in credits per million tokens.

A group's billing settings (mutual or credits, default prices, bounds) live on `Group`
(see groups.py); which price applies to a request is the hub's decision, not the store's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck.store.engine import uncut_write
from potluck.store.tables import agent_prices


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    """Credits per million prompt tokens."""
    output_per_mtok: float
    """Credits per million completion tokens."""


class BillingRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def set_prices(self, agent_id: str, prices: Mapping[str, tuple[float, float]]) -> None:
        """Replace the agent's prices with ``{model: (input_per_mtok, output_per_mtok)}`` (empty: clear them).

        ValueError for a negative or non-finite price.
        """
        for model, (input_price, output_price) in prices.items():
            for value in (input_price, output_price):
                if not 0 <= value < float("inf"):
                    raise ValueError(f"invalid price {value!r} for {model}")
        now = datetime.now(UTC)
        rows = [
            {"agent_id": agent_id, "model": m, "input_per_mtok": i, "output_per_mtok": o, "updated_at": now}
            for m, (i, o) in prices.items()
        ]
        async with self._engine.begin() as conn:
            await conn.execute(delete(agent_prices).where(agent_prices.c.agent_id == agent_id))
            if rows:
                await conn.execute(insert(agent_prices), rows)

    async def prices(self) -> dict[str, dict[str, Price]]:
        """Every agent's prices: agent id -> model -> price (for the hub's in-memory cache)."""
        return await self._select(None)

    async def prices_of(self, agent_id: str) -> dict[str, Price]:
        return (await self._select(agent_id)).get(agent_id, {})

    async def _select(self, agent_id: str | None) -> dict[str, dict[str, Price]]:
        c = agent_prices.c
        query = select(c.agent_id, c.model, c.input_per_mtok, c.output_per_mtok).order_by(c.agent_id, c.model)
        if agent_id is not None:
            query = query.where(c.agent_id == agent_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        result: dict[str, dict[str, Price]] = {}
        for aid, model, input_price, output_price in rows:
            result.setdefault(str(aid), {})[str(model)] = Price(float(input_price), float(output_price))
        return result
