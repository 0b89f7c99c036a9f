"""Hold books: replicas' `SharedHoldBook`s on one real PostgreSQL decide holds together and settle each
request once; the single hub's `LocalHoldBook` answers from memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from potluck.hub.errors import OverloadedError
from potluck.hub.holds import HoldBook, LocalHoldBook, SharedHoldBook
from potluck.hub.ledger import Ledger
from potluck.store.database import Store
from potluck.store.errors import StoreError
from potluck.store.ledger import StoredReceipt
from testing.processes import free_port

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[list[Store]]:
    """Three replicas' stores: three engines on one database."""
    opened = [await Store.open(postgres_url) for _ in range(3)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_twenty_holds_split_over_three_replicas_admit_exactly_one_when_the_balance_covers_one(
    stores: list[Store],
) -> None:
    books = [SharedHoldBook(store.holds) for store in stores]
    await books[0].grant("alice", 5_000, "welcome")

    placed = await asyncio.gather(*(books[i % 3].hold(f"req_{i}", "alice", 5_000) for i in range(20)))

    assert sum(placed) == 1
    assert await books[1].balance("alice") == (0, 5_000)
    assert await stores[2].audit.problems() == []


async def test_the_same_request_settled_by_two_replicas_is_paid_once(stores: list[Store]) -> None:
    a, b = SharedHoldBook(stores[0].holds), SharedHoldBook(stores[1].holds)
    await a.grant("alice", 1_000, "welcome")
    assert await a.hold("req_1", "alice", 600)
    receipt = StoredReceipt("req_1", "{}", "sig", "alice", "bob", T0)

    a.settle("req_1", 300, [("user:bob", 270), ("platform", 30)], receipt)
    b.settle("req_1", 300, [("user:bob", 270), ("platform", 30)], receipt)
    a.settle("req_1", 300, [("user:bob", 270), ("platform", 30)], receipt)  # a repeat here is dropped at once
    assert (a.pending, b.pending) == (1, 1)
    await asyncio.gather(a.flush(), b.flush())

    assert await a.settled_durably("req_1")
    balances = await stores[2].ledger.balances()
    assert (balances["user:alice"], balances["hold:alice"], balances["user:bob"], balances["platform"]) == (
        700,
        0,
        270,
        30,
    )
    assert await stores[2].ledger.receipt("req_1") == receipt
    assert await stores[2].audit.problems(allow_open_holds=False) == []


async def test_a_replica_reads_its_own_settlements_back_at_once(stores: list[Store]) -> None:
    book = SharedHoldBook(stores[0].holds)
    await book.grant("alice", 1_000, "welcome")
    assert await book.hold("req_1", "alice", 400)
    book.release("req_1")
    assert await book.balance("alice") == (1_000, 0)


async def test_a_second_hold_for_a_request_is_refused_like_the_local_ledger_refuses_it(stores: list[Store]) -> None:
    shared = SharedHoldBook(stores[0].holds)
    local = LocalHoldBook(Ledger(_discard))
    books: list[HoldBook] = [shared, local]
    for book in books:
        await book.grant("alice", 1_000, "welcome")
        assert await book.hold("req_1", "alice", 100)
        with pytest.raises(ValueError, match="already has a hold"):
            await book.hold("req_1", "alice", 100)
        assert await book.balance("alice") == (900, 100)


async def _discard(_txns: object, _receipts: object) -> None:
    return None


async def test_a_restarted_replica_releases_only_the_holds_its_earlier_run_left(stores: list[Store]) -> None:
    crashed = SharedHoldBook(stores[0].holds, replica_id="hub-a")
    other = SharedHoldBook(stores[1].holds, replica_id="hub-b")
    await crashed.grant("alice", 1_000, "welcome")
    assert await crashed.hold("req_1", "alice", 100)
    assert await other.hold("req_2", "alice", 200)

    restarted = SharedHoldBook(stores[2].holds, replica_id="hub-a")
    assert await restarted.recover() == 1
    assert await restarted.recover() == 0

    assert await restarted.balance("alice") == (800, 200)  # hub-b's request is still in flight
    assert [h.request_id for h in await stores[2].holds.open_holds()] == ["req_2"]


async def test_an_unreachable_database_refuses_the_hold_with_a_retryable_overload_and_holds_nothing() -> None:
    store = Store(f"postgresql://potluck@127.0.0.1:{free_port()}/gone")
    try:
        with pytest.raises(OverloadedError) as refused:
            await SharedHoldBook(store.holds).hold("req_1", "alice", 100)
    finally:
        await store.close()
    assert refused.value.retry_after == 1
    assert isinstance(refused.value.__cause__, StoreError)
