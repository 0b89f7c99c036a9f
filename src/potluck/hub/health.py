"""What readiness probes ask of the hub's dependencies."""

from __future__ import annotations

from potluck.store.database import Store


class Health:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def database_reachable(self) -> bool:
        """Whether the database answers ``SELECT 1``."""
        return await self._store.ping()
