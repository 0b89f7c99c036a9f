"""The store facade: one engine, one repository per aggregate."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from potluck.store.agents import AgentRepository
from potluck.store.aliases import AliasRepository
from potluck.store.billing import BillingRepository
from potluck.store.claims import ClaimRepository
from potluck.store.engine import create_engine, upgrade_schema
from potluck.store.errors import StoreError
from potluck.store.groups import GroupRepository
from potluck.store.history import RequestHistoryRepository
from potluck.store.keys import KeyRepository
from potluck.store.ledger import LedgerRepository
from potluck.store.reports import ReportRepository
from potluck.store.rollups import RollupRepository
from potluck.store.usage import UsageRepository
from potluck.store.users import UserRepository


class Store:
    """Owns the database engine. Open with `Store.open(url)`, close with `close()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = create_engine(url)
        self.keys = KeyRepository(self._engine)
        self.aliases = AliasRepository(self._engine)
        self.agents = AgentRepository(self._engine)
        self.usage = UsageRepository(self._engine)
        self.users = UserRepository(self._engine)
        self.groups = GroupRepository(self._engine)
        self.ledger = LedgerRepository(self._engine)
        self.billing = BillingRepository(self._engine)
        self.reports = ReportRepository(self._engine)
        self.rollups = RollupRepository(self._engine)
        self.history = RequestHistoryRepository(self._engine)
        self.claims = ClaimRepository(self._engine)

    @classmethod
    async def open(cls, url: str) -> Store:
        store = cls(url)
        try:
            await upgrade_schema(store._engine)
        except SQLAlchemyError as exc:
            await store.close()
            raise StoreError(f"cannot open the database: {exc}") from exc
        return store

    async def ping(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError:
            return False
        return True

    async def close(self) -> None:
        await self._engine.dispose()
