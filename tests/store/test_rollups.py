"""The ``usage_daily`` rollups: written with each batch of usage records, they sum to exactly what the usage,
earnings and group reports (which scan the records) say; recovery rebuilds them; the migration fills them."""

from __future__ import annotations

import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path

from potluck.store.database import Store
from potluck.store.engine import sqlite_url
from potluck.store.rollups import DailyModel, Share
from tests.store.test_ledger import _migrate
from tests.store.test_reports import DAY1, DAY2, record

ROLLUP_MIGRATION = Path(__file__).resolve().parents[2] / "src/potluck/store/migrations/versions/0012_usage_daily.py"


BATCH_1 = [
    record(1, DAY1),
    record(2, DAY1 + timedelta(minutes=10), prompt_tokens=20, charged=300, earned=270),
    record(3, DAY1, model="qwen"),
    record(8, DAY2, agent_id=None, owner_id=None, charged=0, earned=0, prompt_tokens=0, completion_tokens=0),
]
BATCH_2 = [
    record(5, DAY2),
    record(6, DAY2, key_id="key_b", agent_id="agt_2"),
    record(7, DAY2, user_id="bob", key_id="key_c", owner_id="alice", charged=7, earned=6),
]


async def test_daily_series_agree_with_the_reports_across_batches(store: Store) -> None:
    await store.usage.append(BATCH_1)
    await store.usage.append(BATCH_2)  # the same day and key again: the rollup rows are added to

    daily = await store.rollups.daily("alice", "2030-03-01", "2030-03-02")

    assert daily == [
        DailyModel("2030-03-01", "llama", 2, 0, 30, 10, 400, 0, 0),
        DailyModel("2030-03-01", "qwen", 1, 0, 10, 5, 100, 0, 0),
        DailyModel("2030-03-02", "llama", 2, 1, 20, 10, 200, 1, 6),
    ]
    usage = await store.reports.usage(user_id="alice")
    assert sum(d.spent for d in daily) == sum(r.spend for r in usage)
    assert sum(d.requests for d in daily) == sum(r.requests for r in usage)
    assert sum(d.not_served for d in daily) == sum(r.not_served for r in usage)
    earnings = await store.reports.earnings("alice")
    assert sum(d.earned for d in daily) == sum(r.earned for r in earnings) == 6


async def test_group_shares_are_each_members_consumption_and_contribution(store: Store) -> None:
    await store.usage.append(BATCH_1 + BATCH_2)

    consumed, contributed = await store.rollups.shares(["grp_1"], "2030-01-01", "2030-12-31")

    assert sorted(consumed, key=lambda s: s.user_id) == [
        Share("grp_1", "alice", 5, 85, 700),
        Share("grp_1", "bob", 1, 15, 7),
    ]
    assert sorted(contributed, key=lambda s: s.user_id) == [
        Share("grp_1", "alice", 1, 15, 6),
        Share("grp_1", "olga", 5, 85, 630),
    ]
    totals = await store.reports.group_totals("grp_1")
    assert sum(c.amount for c in consumed) == sum(t.spend for t in totals)
    assert sum(c.amount for c in contributed) == sum(t.earned for t in totals)


async def test_recovery_that_changes_records_rebuilds_the_rollups(store: Store) -> None:
    # Charged, but no receipt reached the database (a crash between the two batches): recovery zeroes it.
    await store.usage.append([record(1, DAY1, charged=500, earned=450)])

    zeroed, _rebuilt = await store.usage.reconcile_with_receipts()

    assert zeroed == 1
    assert await store.rollups.daily("alice", "2030-03-01", "2030-03-01") == [
        DailyModel("2030-03-01", "llama", 1, 0, 10, 5, 0, 0, 0)
    ]


async def test_the_migration_fills_the_rollups_from_records_kept_before_it(tmp_path: Path) -> None:
    path = tmp_path / "potluck.db"
    store = await Store.open(sqlite_url(path))
    await store.usage.append(BATCH_1 + BATCH_2)
    await store.close()
    # Back to before the rollups existed (later migrations undone too), with the records kept.
    await _migrate(path, runpy.run_path(str(ROLLUP_MIGRATION))["down_revision"], down=True)
    store = await Store.open(sqlite_url(path))
    try:
        assert await store.rollups.daily("alice", "2030-03-02", "2030-03-02") == [
            DailyModel("2030-03-02", "llama", 2, 1, 20, 10, 200, 1, 6)
        ]
    finally:
        await store.close()


async def test_last_day_lists_only_records_that_moved_credits(store: Store) -> None:
    await store.usage.append(BATCH_1)

    rows = await store.rollups.last_day(datetime(2030, 3, 1, tzinfo=UTC))

    assert sorted((c, e) for _at, _u, _o, c, e in rows) == [(100, 90), (100, 90), (300, 270)]
