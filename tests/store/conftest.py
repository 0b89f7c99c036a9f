"""The store suite runs on both backends: every test that takes `store` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from potluck.store.database import Store
from potluck.store.engine import sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database at the newest schema: a SQLite file, or a database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "potluck.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = await Store.open(store_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "potluck.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[Store]:
    """A store on a SQLite file, for tests that read the file itself."""
    store = await Store.open(sqlite_url(db_path))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all: a new SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "empty.db")
    server = request.getfixturevalue("postgres")
    return str(server.create_database())
