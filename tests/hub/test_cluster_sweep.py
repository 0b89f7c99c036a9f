"""The sweeper releases a dead replica's open holds, once, and leaves a live replica's alone (PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.cluster_sweep import sweep_holds
from potluck.store.database import Store
from potluck.store.ledger import LedgerTxn

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
    assert await sweep_holds(store.holds, clock, "r-dead") == 2
    assert await sweep_holds(store.holds, clock, "r-dead") == 0  # another replica sweeping too: nothing twice

    assert (await store.holds.balance("alice"))[0] == 900
    assert [h.request_id for h in await store.holds.open_holds(replica_id="r-live")] == ["req_3"]
    assert await store.audit.problems() == []
