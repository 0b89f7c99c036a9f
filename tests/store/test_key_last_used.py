"""A key's ``last_used_at`` is written with each batch of usage records, never moves back, and its migration
fills it from the records kept before it (on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path

from potluck.store.database import Store
from potluck.store.engine import sqlite_url
from tests.store.test_ledger import _migrate
from tests.store.test_reports import DAY1, DAY2, record

MIGRATION = Path(__file__).resolve().parents[2] / "src/potluck/store/migrations/versions/0013_key_last_used.py"


async def last_used(store: Store) -> dict[str, object]:
    return {key.name: key.last_used_at for key in await store.keys.list()}


async def test_each_batch_moves_a_keys_last_use_forward_only(store: Store) -> None:
    used = (await store.keys.create("used")).key
    await store.keys.create("idle")
    await store.usage.append([record(1, DAY1, key_id=used.id), record(2, DAY2, key_id=used.id)])
    assert await last_used(store) == {"used": DAY2, "idle": None}

    await store.usage.append([record(3, DAY1 + timedelta(minutes=1), key_id=used.id)])  # written late, older
    assert await last_used(store) == {"used": DAY2, "idle": None}


async def test_the_migration_fills_it_from_the_records_kept(tmp_path: Path) -> None:
    path = tmp_path / "potluck.db"
    store = await Store.open(sqlite_url(path))
    key = (await store.keys.create("old")).key
    await store.usage.append([record(1, DAY1, key_id=key.id), record(2, DAY2, key_id=key.id)])
    await store.close()
    await _migrate(path, runpy.run_path(str(MIGRATION))["down_revision"], down=True)  # before it, records kept
    store = await Store.open(sqlite_url(path))
    try:
        assert await last_used(store) == {"old": DAY2}
    finally:
        await store.close()
