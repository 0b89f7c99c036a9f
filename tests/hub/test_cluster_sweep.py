"""The sweeper releases a dead replica's open holds, once, repairs its usage records against its receipts, and
leaves a live replica's alone (PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.cluster_sweep import sweep_dead_replica
from potluck.store.database import Store
from potluck.store.ledger import LedgerTxn, StoredReceipt
from potluck.store.rollups import DailyModel
from tests.store.test_reports import record

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(postgres_url)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_dead_replicas_holds_go_back_to_their_users_once(store: Store) -> None:
    grant = LedgerTxn("txn_g", "grant", None, "welcome", T0, (("mint", -1000), ("user:alice", 1000)))
    await store.holds.record(grant)
    assert await store.holds.hold("txn_1", "req_1", "alice", 300, T0, "r-dead")
    assert await store.holds.hold("txn_2", "req_2", "alice", 200, T0, "r-dead")
    assert await store.holds.hold("txn_3", "req_3", "alice", 100, T0, "r-live")
    assert (await store.holds.balance("alice"))[0] == 400

    clock = ManualClock(epoch=T0)
    assert await sweep_dead_replica(store.holds, store.usage, clock, "r-dead") == (2, 0, 0)
    # Another replica sweeping too: nothing twice.
    assert await sweep_dead_replica(store.holds, store.usage, clock, "r-dead") == (0, 0, 0)

    assert (await store.holds.balance("alice"))[0] == 900
    assert [h.request_id for h in await store.holds.open_holds(replica_id="r-live")] == ["req_3"]
    assert await store.audit.problems() == []


def _receipt(n: int, charged: int, earned: int) -> StoredReceipt:
    payload = {
        "request_id": f"req_{n}",
        "key_id": "key_a",
        "agent_id": "agt_1",
        "model": "llama",
        "outcome": "ok",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "consumer_id": "alice",
        "group_id": "grp_1",
        "owner_id": "olga",
        "charged": charged,
        "earned": earned,
    }
    return StoredReceipt(f"req_{n}", json.dumps(payload), "sig", "alice", "olga", T0)


async def test_a_dead_replicas_usage_records_are_made_to_agree_with_its_receipts(store: Store) -> None:
    grant = LedgerTxn("txn_g", "grant", None, "welcome", T0, (("mint", -1000), ("user:alice", 1000)))
    await store.holds.record(grant)
    for n, replica in ((1, "r-dead"), (2, "r-dead"), (3, "r-live"), (4, "r-live")):
        assert await store.holds.hold(f"txn_h{n}", f"req_{n}", "alice", 200, T0, replica)
    payout = (("user:olga", 135), ("platform", 15))
    # r-dead settled req_1 (receipt written) but died before its usage batch; it wrote req_2's record as
    # charged, but its settlement never reached the database.
    assert await store.holds.settle("txn_s1", "req_1", 150, payout, T0, _receipt(1, 150, 135))
    await store.usage.append([record(2, T0, charged=200, earned=180)])
    # r-live is in the middle of the same two writes: they must be left as they are.
    assert await store.holds.settle("txn_s4", "req_4", 150, payout, T0, _receipt(4, 150, 135))
    await store.usage.append([record(3, T0, charged=100, earned=90)])

    clock = ManualClock(epoch=T0)
    assert await sweep_dead_replica(store.holds, store.usage, clock, "r-dead") == (1, 1, 1)
    assert await sweep_dead_replica(store.holds, store.usage, clock, "r-dead") == (0, 0, 0)

    records = {r.request_id: r for r in await store.usage.recent()}
    assert sorted(records) == ["req_1", "req_2", "req_3"]  # req_4's record is r-live's to write
    assert [(records[r].charged, records[r].earned) for r in sorted(records)] == [(150, 135), (0, 0), (100, 90)]
    assert records["req_1"].user_id == "alice"
    # The rollups moved with the records: req_1 added, req_2's charge taken out, req_3 kept.
    day = T0.date().isoformat()
    assert await store.rollups.daily("alice", day, day) == [DailyModel(day, "llama", 3, 0, 30, 15, 250, 0, 0)]
    assert (await store.holds.balance("alice"))[0] == 1000 - 150 - 200 - 150  # req_3's hold is still open
    assert await store.audit.problems() == []
