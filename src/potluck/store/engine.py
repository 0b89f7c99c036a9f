"""Engine creation and schema migration. SQLite (WAL, foreign keys on) by default; PostgreSQL by URL.

A URL without a driver gets the async one: ``postgresql://`` (or ``postgres://``) means asyncpg,
``sqlite://`` means aiosqlite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from potluck._shared.waiting import uncut
from potluck.store.errors import StoreError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_url(url: str) -> str:
    """The URL with the async driver named (``postgresql://`` -> ``postgresql+asyncpg://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{_ASYNC_DRIVERS[scheme]}{sep}{rest}" if sep and scheme in _ASYNC_DRIVERS else url


CONNECT_TIMEOUT_S = 5.0
"""Seconds a new PostgreSQL connection may take."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pre_ping: bool = True) -> AsyncEngine:
    """An engine for the URL. ``pre_ping`` checks each pooled PostgreSQL connection before use (one round
    trip), so one that a server restart broke is replaced instead of failing a statement."""
    url = async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA cache_size=-16384")
            # Checkpoint the WAL every 10,000 pages (40 MiB) rather than 1,000: at thousands of usage records a
            # second, the default checkpoints cost the hub about a tenth of its CPU (measured with bench/relay.py).
            cur.execute("PRAGMA wal_autocheckpoint=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # A database host that stops answering (a failover behind a virtual address) would hold each new connection
    # for asyncpg's default minute; refused quickly, a hold answers a retryable 503 instead of hanging.
    engine = create_async_engine(url, pool_pre_ping=pre_ping, connect_args={"timeout": CONNECT_TIMEOUT_S})
    event.listen(engine.sync_engine, "do_connect", _connect_raising_dbapi_errors)
    return engine


def _connect_raising_dbapi_errors(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect as SQLAlchemy would, with a refused or reset connection (the server is down or restarting)
    raised as the driver's OperationalError. asyncpg raises the bare OSError, which SQLAlchemy passes through
    unwrapped, so every caller that handles `SQLAlchemyError` (the readiness probe, a hold, a usage batch) let
    it escape as an unexpected error: a 500. Wrapped, it is the same error as "the database system is
    shutting down"."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:  # TimeoutError included
        raise dialect.loaded_dbapi.OperationalError(str(exc), exc) from exc


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def upgrade_schema(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def head_revision() -> str:
    """The newest migration this code knows."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def is_known_revision(revision: str) -> bool:
    """Whether a migration of this code has that revision id."""
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The database's migration revision (None: never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def migrate_database(url: str) -> tuple[str | None, str]:
    """Upgrade the database at ``url`` to the newest migration: (revision before, revision now).
    StoreError if it cannot be reached or migrated."""
    engine = create_engine(url)
    try:
        before = await schema_revision(engine)
        await upgrade_schema(engine)
        return before, head_revision()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(str(exc)) from exc
    finally:
        await engine.dispose()


P = ParamSpec("P")
T = TypeVar("T")


def uncut_write(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """A write that runs to its end when its caller is cancelled (`potluck._shared.waiting.uncut`).

    The hub cancels a request's handler when its client disconnects, and its background loops at shutdown.
    An aiosqlite transaction cut off by a cancellation can leave its connection, with SQLite's write lock,
    open: every later write (the ledger's included) then waits out the busy timeout and fails. Measured
    here: a ledger batch cancelled at a random point within its first 4 ms wedged the next write within a
    few tries. So the caller's cancellation takes effect once the transaction has committed or rolled back.
    `SharedHolds` (PostgreSQL only, on each request's path in cluster mode) is left as it is.
    """

    @functools.wraps(method)
    async def write(*args: P.args, **kwargs: P.kwargs) -> T:
        return await uncut(method(*args, **kwargs))

    return write
