"""The store facade: one engine, one repository per aggregate."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from potluck.store.agents import AgentRepository
from potluck.store.aliases import AliasRepository
from potluck.store.billing import BillingRepository
from potluck.store.claims import ClaimRepository
from potluck.store.engine import (
    async_url,
    create_engine,
    head_revision,
    is_known_revision,
    is_sqlite,
    schema_revision,
    upgrade_schema,
)
from potluck.store.errors import SchemaOutdatedError, StoreError
from potluck.store.groups import GroupRepository
from potluck.store.history import RequestHistoryRepository
from potluck.store.holds import SharedHolds
from potluck.store.keys import KeyRepository
from potluck.store.ledger import LedgerRepository
from potluck.store.ledger_audit import LedgerAudit
from potluck.store.reports import ReportRepository
from potluck.store.rollups import RollupRepository
from potluck.store.usage import UsageRepository
from potluck.store.users import UserRepository


class Store:
    """Owns the database engine. Open with `Store.open(url)`, close with `close()`."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.is_sqlite = is_sqlite(self.url)
        self._engine = create_engine(self.url)
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
        # Holds are on the admission path of every credits request: their own pool skips the pre-ping
        # round trip and retries once on a connection a restart broke instead (store/holds.py).
        self._holds_engine = self._engine if self.is_sqlite else create_engine(self.url, pre_ping=False)
        self.holds = SharedHolds(self._engine, self._holds_engine)
        self.audit = LedgerAudit(self._engine)

    @classmethod
    async def open(cls, url: str, *, migrate: bool | None = None) -> Store:
        """Open the database. ``migrate`` (default: on SQLite only) upgrades the schema to the newest
        revision first; without it, a schema that is not the newest raises `SchemaOutdatedError`.

        PostgreSQL is shared by hub replicas, so one explicit `potluck hub migrate` upgrades it, never
        whichever replica starts first while older ones still serve.
        """
        store = cls(url)
        try:
            if migrate if migrate is not None else store.is_sqlite:
                await upgrade_schema(store._engine)
            else:
                have, want = await schema_revision(store._engine), head_revision()
                # A revision this code does not know is a newer one (a rolling upgrade migrated ahead of
                # this replica); migrations only add, so an older replica keeps serving on it.
                if have != want and (have is None or is_known_revision(have)):
                    raise SchemaOutdatedError(
                        f"the database schema is at revision {have or 'none (empty database)'} and this hub "
                        f"needs {want}: run `potluck hub migrate` against it first"
                    )
        except SQLAlchemyError as exc:
            await store.close()
            raise StoreError(f"cannot open the database: {exc}") from exc
        except StoreError:
            await store.close()
            raise
        return store

    async def ping(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError:
            return False
        return True

    async def close(self) -> None:
        if self._holds_engine is not self._engine:
            await self._holds_engine.dispose()
        await self._engine.dispose()
