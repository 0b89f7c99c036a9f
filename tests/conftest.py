"""Suite-wide settings and servers. In CI (CI=true) a missing optional service fails its tests instead of skipping."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from testing.postgres import PostgresServer, PostgresUnavailableError

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
T = TypeVar("T")


# -- PostgreSQL: one real server per test process, one database per test ----------------------------------------------


def required(make: Callable[[], T], missing: type[Exception]) -> T:
    """``make()``: a server the tests need. Where it is not installed (``missing``), that fails the test under
    CI=true, and skips it elsewhere."""
    try:
        return make()
    except missing as exc:
        if IN_CI:
            pytest.fail(f"CI=true and a server the tests need is missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server started for this test process (skipped only outside CI when none is installed)."""
    server = required(lambda: PostgresServer().start(), PostgresUnavailableError)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresServer) -> str:
    """The name of a database migrated to the newest schema once, which tests clone."""
    from potluck.store.engine import create_engine, upgrade_schema

    url = postgres.create_database()

    async def migrate() -> None:
        engine = create_engine(url)
        try:
            await upgrade_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    return url.rsplit("/", 1)[1]


@pytest.fixture
def postgres_url(postgres: PostgresServer, postgres_template: str) -> str:
    """A fresh database at the newest schema (a clone of the template), for this test alone."""
    return postgres.create_database(template=postgres_template)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The collector as it was before the test: `heap.settle` changes it for the whole process."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
