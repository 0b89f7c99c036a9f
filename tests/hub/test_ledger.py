"""The in-memory credit ledger: atomic holds, settlement, group commit to a real SQLite store, crash recovery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from potluck.hub.ledger import RECOVERED_REASON, Ledger
from potluck.store.database import Store
from potluck.store.engine import sqlite_url
from potluck.store.errors import StoreError
from potluck.store.ledger import LedgerTxn, StoredReceipt


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(sqlite_url(tmp_path / "potluck.db"))
    yield store
    await store.close()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return Ledger(store.ledger.append)


class Flaky:
    """The store's append behind a switch: fails while ``failures`` is positive, and records what it wrote."""

    def __init__(self, store: Store, failures: int = 0) -> None:
        self.store = store
        self.failures = failures
        self.batches: list[tuple[list[LedgerTxn], list[StoredReceipt]]] = []

    async def __call__(self, txns: Sequence[LedgerTxn], receipts: Sequence[StoredReceipt]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database is locked")
        await self.store.ledger.append(txns, receipts)
        self.batches.append((list(txns), list(receipts)))


def receipt(request_id: str) -> StoredReceipt:
    return StoredReceipt(request_id, "{}", "sig", "alice", "olga", datetime(2030, 1, 1, tzinfo=UTC))


async def txn_kinds_in_write_order(store: Store) -> list[tuple[str, str | None]]:
    entries = reversed(await store.ledger.entries(limit=1000))
    seen: dict[str, tuple[str, str | None]] = {}
    for e in entries:
        seen.setdefault(e.txn_id, (e.kind, e.request_id))
    return list(seen.values())


# -- holds --------------------------------------------------------------------------------------


async def test_twenty_concurrent_holds_against_a_balance_covering_one_admit_exactly_one(ledger: Ledger) -> None:
    ledger.grant("alice", 100, "welcome")

    async def admit(n: int) -> bool:
        await asyncio.sleep(0)  # every admission yields once first, so all twenty are in flight together
        return ledger.hold(f"req_{n}", "alice", 100)

    results = await asyncio.gather(*(admit(n) for n in range(20)))

    assert results.count(True) == 1
    assert (ledger.balance("alice"), ledger.held("alice"), ledger.open_holds) == (0, 100, 1)


async def test_a_refused_hold_changes_nothing(ledger: Ledger) -> None:
    ledger.grant("alice", 50, "welcome")
    before, pending = ledger.balances(), ledger.pending

    assert not ledger.hold("req_1", "alice", 51)
    assert not ledger.hold("req_2", "bob", 1)

    assert (ledger.balances(), ledger.pending, ledger.open_holds) == (before, pending, 0)


async def test_a_request_id_cannot_be_held_twice(ledger: Ledger) -> None:
    ledger.grant("alice", 50, "welcome")
    assert ledger.hold("req_1", "alice", 10)
    with pytest.raises(ValueError, match="already"):
        ledger.hold("req_1", "alice", 10)
    ledger.release("req_1")
    with pytest.raises(ValueError, match="already"):
        ledger.hold("req_1", "alice", 10)
    assert ledger.balance("alice") == 50


# -- settlement ---------------------------------------------------------------------------------


async def test_settle_pays_owner_and_platform_and_returns_the_rest_of_the_hold(ledger: Ledger, store: Store) -> None:
    ledger.grant("alice", 1000, "welcome")
    assert ledger.hold("req_1", "alice", 600)

    assert ledger.settle("req_1", 400, [("user:olga", 360), ("platform", 40)])

    assert (ledger.balance("alice"), ledger.held("alice")) == (600, 0)
    assert (ledger.balance("olga"), ledger.account("platform"), ledger.account("mint")) == (360, 40, -1000)
    await ledger.flush()
    assert await store.ledger.balances() == ledger.balances()
    assert await store.ledger.total() == 0


async def test_settling_twice_or_without_a_hold_is_a_no_op(ledger: Ledger) -> None:
    ledger.grant("alice", 1000, "welcome")
    ledger.hold("req_1", "alice", 100)
    assert ledger.settle("req_1", 100, [("user:olga", 100)])
    balances, pending = ledger.balances(), ledger.pending

    assert not ledger.settle("req_1", 100, [("user:olga", 100)])
    assert not ledger.release("req_1")
    assert not ledger.settle("req_unknown", 5, [("platform", 5)])

    assert (ledger.balances(), ledger.pending) == (balances, pending)


async def test_a_charge_above_the_hold_is_capped_and_the_payouts_shrink_in_proportion(ledger: Ledger) -> None:
    ledger.grant("alice", 1000, "welcome")
    ledger.hold("req_1", "alice", 101)

    assert ledger.settle("req_1", 150, [("user:olga", 135), ("platform", 15)])

    assert (ledger.balance("alice"), ledger.held("alice")) == (899, 0)
    assert ledger.balance("olga") + ledger.account("platform") == 101
    assert (ledger.balance("olga"), ledger.account("platform")) == (91, 10)


async def test_an_owner_settling_their_own_request_gets_one_entry(ledger: Ledger, store: Store) -> None:
    ledger.grant("alice", 100, "welcome")
    ledger.hold("req_1", "alice", 100)
    ledger.settle("req_1", 30, [("user:alice", 27), ("platform", 3)])
    await ledger.flush()

    settle = [e for e in await store.ledger.entries(request_id="req_1") if e.kind == "settle"]
    assert sorted((e.account, e.amount) for e in settle) == [("hold:alice", -100), ("platform", 3), ("user:alice", 97)]
    assert ledger.balance("alice") == 97


@pytest.mark.parametrize(
    ("charge", "payouts", "match"),
    [
        (-1, [], "negative"),
        (10, [("user:olga", 9)], "sum"),
        (10, [("user:olga", 11), ("platform", -1)], "negative"),
        (10, [("mint", 10)], "pay out"),
        (10, [("hold:olga", 10)], "pay out"),
    ],
)
async def test_malformed_settlements_are_refused_and_keep_the_hold(
    ledger: Ledger, charge: int, payouts: list[tuple[str, int]], match: str
) -> None:
    ledger.grant("alice", 100, "welcome")
    ledger.hold("req_1", "alice", 50)
    with pytest.raises(ValueError, match=match):
        ledger.settle("req_1", charge, payouts)
    assert (ledger.held("alice"), ledger.open_holds) == (50, 1)


async def test_grants_and_adjustments_are_validated(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="positive"):
        ledger.grant("alice", 0, "nothing")
    with pytest.raises(ValueError, match="negative"):
        ledger.hold("req_1", "alice", -1)
    ledger.grant("alice", 10, "welcome")
    with pytest.raises(ValueError, match="below zero"):
        ledger.adjust("alice", -11, "clawback")
    with pytest.raises(ValueError, match="zero"):
        ledger.adjust("alice", 0, "nothing")
    ledger.adjust("alice", -4, "clawback")
    assert (ledger.balance("alice"), ledger.account("mint")) == (6, -6)


async def test_a_receipt_for_another_request_is_refused(ledger: Ledger) -> None:
    ledger.grant("alice", 10, "welcome")
    ledger.hold("req_1", "alice", 1)
    with pytest.raises(ValueError, match="receipt"):
        ledger.settle("req_1", 0, receipt=receipt("req_other"))
    assert ledger.open_holds == 1


async def test_balances_never_go_below_zero_and_always_sum_to_zero(ledger: Ledger, store: Store) -> None:
    rng = random.Random(6)
    users = ["alice", "bob", "carol"]
    open_requests: list[str] = []
    for user in users:
        ledger.grant(user, 5_000, "welcome")
    for n in range(400):
        if open_requests and rng.random() < 0.5:
            request_id = open_requests.pop(rng.randrange(len(open_requests)))
            charge = rng.randrange(0, 3_000)
            fee = charge // 10
            ledger.settle(request_id, charge, [(f"user:{rng.choice(users)}", charge - fee), ("platform", fee)])
        elif ledger.hold(f"req_{n}", rng.choice(users), rng.randrange(0, 2_000)):
            open_requests.append(f"req_{n}")
        balances = ledger.balances()
        assert sum(balances.values()) == 0
        assert all(v >= 0 for acct, v in balances.items() if acct != "mint")
    await ledger.flush()
    assert await store.ledger.balances() == ledger.balances()
    assert await store.ledger.total() == 0


# -- durability ---------------------------------------------------------------------------------


async def test_the_receipt_is_written_in_the_same_batch_as_its_settlement(store: Store) -> None:
    append = Flaky(store)
    ledger = Ledger(append)
    ledger.grant("alice", 100, "welcome")
    ledger.hold("req_1", "alice", 100)
    await ledger.flush()
    ledger.settle("req_1", 10, [("platform", 10)], receipt("req_1"))
    assert not ledger.durable("req_1")

    await ledger.flush()

    txns, receipts = append.batches[-1]
    assert [(t.kind, t.request_id) for t in txns] == [("settle", "req_1")]
    assert receipts == [receipt("req_1")]
    assert await store.ledger.receipt("req_1") == receipt("req_1")
    assert ledger.durable("req_1")
    assert not ledger.durable("req_unknown")


async def test_a_failed_flush_keeps_the_batch_and_the_retry_writes_it_in_order(store: Store) -> None:
    append = Flaky(store, failures=2)  # the batch, then its first transaction written alone
    ledger = Ledger(append)
    ledger.grant("alice", 100, "welcome")
    ledger.hold("req_1", "alice", 60)
    with pytest.raises(StoreError):
        await ledger.flush()
    ledger.settle("req_1", 60, [("user:olga", 60)])
    ledger.hold("req_2", "alice", 40)
    assert (ledger.pending, ledger.durable("req_1")) == (4, False)

    await ledger.flush()

    assert ledger.pending == 0
    assert ledger.durable("req_1")
    assert await txn_kinds_in_write_order(store) == [
        ("grant", None),
        ("hold", "req_1"),
        ("settle", "req_1"),
        ("hold", "req_2"),
    ]
    assert await store.ledger.balances() == ledger.balances()


async def test_run_retries_failed_flushes_until_settlements_are_durable(store: Store) -> None:
    ledger = Ledger(Flaky(store, failures=2), flush_interval=0.001)
    ledger.grant("alice", 100, "welcome")
    ledger.hold("req_1", "alice", 10)
    ledger.release("req_1")

    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(ledger.run())
        async with asyncio.timeout(2):
            assert await ledger.settled_durably("req_1")
        runner.cancel()

    assert await store.ledger.settled_request_ids(["req_1"]) == {"req_1"}
    assert not await ledger.settled_durably("req_unknown")


class FirstWriteWaits:
    """The store's append, but the first call waits for `proceed` (having set `entered`) before it writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0
        self.entered, self.proceed = asyncio.Event(), asyncio.Event()

    async def __call__(self, txns: Sequence[LedgerTxn], receipts: Sequence[StoredReceipt]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await self.proceed.wait()
        await self.store.ledger.append(txns, receipts)


async def test_a_flush_cancelled_mid_write_is_kept_and_close_writes_it_once(store: Store) -> None:
    append = FirstWriteWaits(store)
    ledger = Ledger(append)
    ledger.grant("alice", 100, "welcome")
    flushing = asyncio.create_task(ledger.flush())
    async with asyncio.timeout(2):
        await append.entered.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert ledger.pending == 1

    await ledger.close()

    assert (ledger.pending, append.calls) == (0, 2)
    assert await store.ledger.balances() == {"mint": -100, "user:alice": 100}


async def test_a_shutdown_cancelling_the_loop_mid_write_waits_for_the_write_and_close_writes_the_rest(
    store: Store,
) -> None:
    """The loop's write is not cut short (one cut mid-transaction can leave SQLite's write lock held, and the
    shutdown's own write would then wait out the busy timeout and fail): the loop ends once it is written."""
    append = FirstWriteWaits(store)
    ledger = Ledger(append, flush_interval=0.001)
    ledger.grant("alice", 100, "welcome")
    runner = asyncio.create_task(ledger.run())
    async with asyncio.timeout(2):
        await append.entered.wait()
    ledger.grant("bob", 50, "welcome")  # arrives while the loop writes
    runner.cancel()
    await asyncio.sleep(0)
    assert not runner.done()  # still writing

    append.proceed.set()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert (ledger.pending, append.calls) == (1, 1)  # alice's grant was written whole, once
    await ledger.close()

    assert (ledger.pending, append.calls) == (0, 2)
    assert await store.ledger.balances() == {"mint": -150, "user:alice": 100, "user:bob": 50}


# -- recovery -----------------------------------------------------------------------------------


async def test_recovery_releases_holds_left_open_by_a_crash_and_settles_nothing_twice(store: Store) -> None:
    before = Ledger(store.ledger.append)
    before.grant("alice", 1000, "welcome")
    before.hold("req_orphan", "alice", 300)
    before.hold("req_done", "alice", 200)
    before.settle("req_done", 100, [("user:olga", 90), ("platform", 10)])
    await before.flush()
    before.hold("req_lost", "alice", 50)  # never flushed: lost with the process
    del before  # kill -9: no settle, no close

    after, released = await Ledger.recover(store.ledger, store.ledger.append)

    assert released == 1
    assert (after.balance("alice"), after.held("alice"), after.balance("olga"), after.account("platform")) == (
        900,
        0,
        90,
        10,
    )
    assert await store.ledger.open_holds() == []
    assert await store.ledger.total() == 0
    assert await store.ledger.balances() == after.balances()
    releases = [e for e in await store.ledger.entries(request_id="req_orphan") if e.kind == "settle"]
    assert {(e.account, e.amount, e.reason) for e in releases} == {
        ("hold:alice", -300, RECOVERED_REASON),
        ("user:alice", 300, RECOVERED_REASON),
    }
    settles = [e.txn_id for e in await store.ledger.entries(request_id="req_done") if e.kind == "settle"]
    assert len(set(settles)) == 1
    assert not after.settle("req_orphan", 300, [("platform", 300)])

    again, released_again = await Ledger.recover(store.ledger, store.ledger.append)
    assert released_again == 0
    assert again.balances() == after.balances()


async def test_load_refuses_a_ledger_already_in_use(ledger: Ledger, store: Store) -> None:
    ledger.grant("alice", 1, "welcome")
    with pytest.raises(RuntimeError, match="fresh"):
        await ledger.load(store.ledger)
