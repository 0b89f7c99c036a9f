"""Usage, earnings and group reports: sums per UTC day computed in SQL, filtered by user, owner and group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from sqlalchemy import String, cast, insert, select

from potluck.store.database import Store
from potluck.store.engine import create_engine
from potluck.store.reports import EarningsRow, GroupTotalRow, UsageRow
from potluck.store.tables import usage_records
from potluck.store.usage import UsageRecord

DAY1 = datetime(2030, 3, 1, 23, 30, tzinfo=UTC)
DAY2 = datetime(2030, 3, 2, 0, 30, tzinfo=UTC)


def record(n: int, at: datetime, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "key_id": "key_a",
        "agent_id": "agt_1",
        "model": "llama",
        "user_id": "alice",
        "group_id": "grp_1",
        "owner_id": "olga",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "charged": 100,
        "earned": 90,
    }
    values.update(fields)
    return UsageRecord(
        request_id=f"req_{n}",
        path="/v1/chat/completions",
        outcome="ok",
        status=200,
        queue_ms=0,
        ttft_ms=None,
        total_ms=1,
        created_at=at,
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
async def filled(store: Store) -> Store:
    await store.usage.append(
        [
            record(1, DAY1),
            record(2, DAY1 + timedelta(minutes=10), prompt_tokens=20, charged=300, earned=270),
            record(3, DAY1, model="qwen"),
            # 01:30 on March 1 at UTC+2 is 23:30 on February 28 in UTC: days are UTC days.
            record(4, datetime(2030, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))),
            record(5, DAY2),
            record(6, DAY2, key_id="key_b", agent_id="agt_2"),
            record(7, DAY2, user_id="bob", key_id="key_c", group_id="grp_2", owner_id="oscar", charged=7, earned=6),
            record(8, DAY2, user_id=None, key_id=None, group_id="grp_1", charged=0, earned=0),
        ]
    )
    return store


async def test_usage_is_summed_per_utc_day_key_and_model(filled: Store) -> None:
    rows = await filled.reports.usage(user_id="alice")

    assert rows == [
        UsageRow("2030-02-28", "alice", "key_a", "llama", 1, 10, 5, 100),
        UsageRow("2030-03-01", "alice", "key_a", "llama", 2, 30, 10, 400),
        UsageRow("2030-03-01", "alice", "key_a", "qwen", 1, 10, 5, 100),
        UsageRow("2030-03-02", "alice", "key_a", "llama", 1, 10, 5, 100),
        UsageRow("2030-03-02", "alice", "key_b", "llama", 1, 10, 5, 100),
    ]


async def test_usage_counts_requests_that_never_reached_an_agent_apart(store: Store) -> None:
    unserved = {"agent_id": None, "owner_id": None, "group_id": None, "prompt_tokens": 0, "completion_tokens": 0}
    await store.usage.append(
        [
            record(1, DAY1),
            record(2, DAY1, charged=0, earned=0, **unserved),
            record(3, DAY1, charged=0, earned=0, **unserved),
        ]
    )
    (row,) = await store.reports.usage(user_id="alice")
    assert (row.requests, row.not_served) == (1, 2)
    assert (row.cache_read_tokens, row.cache_write_tokens, row.reasoning_tokens) == (0, 0, 0)
    assert (row.prompt_tokens, row.completion_tokens, row.spend) == (10, 5, 100)
    (earned,) = await store.reports.earnings("olga")
    assert earned.requests == row.requests  # the consumer's served requests are the owner's


async def test_usage_sums_the_cache_and_reasoning_parts(store: Store) -> None:
    await store.usage.append(
        [
            record(1, DAY1, prompt_tokens=100, cache_read_tokens=80, completion_tokens=20, reasoning_tokens=5),
            record(2, DAY1, prompt_tokens=50, cache_write_tokens=50, completion_tokens=10),
        ]
    )
    (row,) = await store.reports.usage(user_id="alice")
    assert (row.prompt_tokens, row.cache_read_tokens, row.cache_write_tokens) == (150, 80, 50)
    assert (row.completion_tokens, row.reasoning_tokens) == (30, 5)


async def test_usage_filters_by_group_and_time_half_open(filled: Store) -> None:
    rows = await filled.reports.usage(group_id="grp_1", since=DAY1, until=DAY2)
    assert rows == [
        UsageRow("2030-03-01", "alice", "key_a", "llama", 2, 30, 10, 400),
        UsageRow("2030-03-01", "alice", "key_a", "qwen", 1, 10, 5, 100),
    ]
    everyone = await filled.reports.usage(since=DAY2)
    assert [(r.user_id, r.key_id) for r in everyone] == [
        (None, None),
        ("alice", "key_a"),
        ("alice", "key_b"),
        ("bob", "key_c"),
    ]


async def test_earnings_are_the_owners_only_per_day_agent_and_model(filled: Store) -> None:
    assert await filled.reports.earnings("oscar") == [EarningsRow("2030-03-02", "agt_1", "llama", 1, 10, 5, 6)]
    olga = await filled.reports.earnings("olga", since=DAY2)
    assert olga == [
        EarningsRow("2030-03-02", "agt_1", "llama", 2, 20, 10, 90),
        EarningsRow("2030-03-02", "agt_2", "llama", 1, 10, 5, 90),
    ]
    assert await filled.reports.earnings("nobody") == []


async def test_group_totals_are_per_day_member_and_model(filled: Store) -> None:
    rows = await filled.reports.group_totals("grp_1", since=DAY1)
    assert rows == [
        GroupTotalRow("2030-03-01", "alice", "llama", 2, 40, 400, 360),
        GroupTotalRow("2030-03-01", "alice", "qwen", 1, 15, 100, 90),
        GroupTotalRow("2030-03-02", None, "llama", 1, 15, 0, 0),
        GroupTotalRow("2030-03-02", "alice", "llama", 2, 30, 200, 180),
    ]
    assert await filled.reports.group_totals("grp_2", until=DAY2) == []


async def test_accounting_fields_of_usage_records_round_trip(store: Store) -> None:
    stored = record(1, DAY1, tokens_estimated=True, flagged=True, charged=2**40, earned=2**39)
    await store.usage.append([stored])
    assert await store.usage.recent() == [stored]


async def test_a_batch_is_stored_exactly_as_sqlalchemy_itself_stores_a_record(store_url: str) -> None:
    # `append` hands the driver plain tuples (store/usage.py `_insert_plan`): what lands in the database,
    # down to SQLite's timestamp text, must be what SQLAlchemy's own insert writes.
    engine = create_engine(store_url)
    store = await Store.open(store_url)
    try:
        at = datetime(2030, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
        fast = msgspec.structs.replace(record(1, at, tokens_estimated=True), ttft_ms=None)
        await store.usage.append([fast])
        slow = msgspec.structs.replace(fast, request_id="req_2")
        async with engine.begin() as conn:
            await conn.execute(insert(usage_records), [msgspec.structs.asdict(slow)])
        columns = [cast(c, String) for c in usage_records.c if c.name != "request_id"]
        async with engine.connect() as conn:
            rows = (await conn.execute(select(*columns).order_by(usage_records.c.request_id))).all()
        assert rows[0] == rows[1]
        assert sorted(await store.usage.recent(), key=lambda r: r.request_id) == [fast, slow]
    finally:
        await store.close()
        await engine.dispose()


async def test_a_batch_sent_again_after_it_went_in_counts_once(store: Store) -> None:
    # The usage journal sends a batch again when its commit's answer was lost (a database restart cut the
    # connection): the records already stored are skipped, and the new ones of the batch still go in.
    first = [record(1, DAY1), record(2, DAY1, charged=300, earned=270)]
    await store.usage.append(first)
    await store.usage.append([*first, record(3, DAY1, charged=7, earned=6)])
    await store.usage.append(first)

    assert sorted(r.request_id for r in await store.usage.recent()) == ["req_1", "req_2", "req_3"]
    (day,) = await store.reports.usage(user_id="alice")
    assert (day.requests, day.spend) == (3, 407)
    assert [(d.requests, d.spent) for d in await store.rollups.daily("alice", "2030-03-01", "2030-03-01")] == [(3, 407)]
