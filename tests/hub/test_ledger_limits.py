"""One transaction that cannot be written never blocks the others: bounded amounts, and isolation of a
poisoned transaction, against a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from potluck.hub.errors import InvalidRequestError
from potluck.hub.ledger import Ledger, LedgerLimitError
from potluck.store.database import Store
from potluck.store.engine import sqlite_url
from potluck.store.errors import StoreError, UnwritableError
from potluck.store.ledger import MAX_AMOUNT, LedgerTxn, StoredReceipt

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(sqlite_url(tmp_path / "potluck.db"))
    yield store
    await store.close()


def receipt(request_id: str) -> StoredReceipt:
    return StoredReceipt(request_id, "{}", "sig", "alice", "olga", T0)


def poisoned_at(*calls: int) -> Callable[[], datetime]:
    """A clock for the ledger's transactions that gives the n-th ones (from 1) a naive time.

    The store's datetime column refuses a naive time when it binds it, the way a database refuses any
    value it can never hold: a transaction that is well formed in memory but can never be written.
    """
    count = 0

    def now() -> datetime:
        nonlocal count
        count += 1
        return T0.replace(tzinfo=None) if count in calls else T0

    return now


def nonzero(balances: dict[str, int]) -> dict[str, int]:
    return {account: amount for account, amount in balances.items() if amount}


async def kinds_stored(store: Store) -> list[tuple[str, str | None, str | None]]:
    seen: dict[str, tuple[str, str | None, str | None]] = {}
    for e in reversed(await store.ledger.entries(limit=1000)):
        seen.setdefault(e.txn_id, (e.kind, e.request_id, e.reason))
    return list(seen.values())


# -- refused before the ledger ------------------------------------------------------------------


async def test_a_grant_beyond_the_limit_is_refused_as_a_bad_request_and_changes_nothing(store: Store) -> None:
    ledger = Ledger(store.ledger.append)
    ledger.grant("alice", 5, "welcome")
    before, pending = ledger.balances(), ledger.pending

    with pytest.raises(LedgerLimitError, match="1,000,000,000 credits") as refused:
        ledger.grant("alice", 10**19, "1e13 credits, as the admin API once took")

    assert isinstance(refused.value, InvalidRequestError)
    assert isinstance(refused.value, ValueError)
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, "invalid_request_error", "amount")
    assert (ledger.balances(), ledger.pending) == (before, pending)


async def test_the_credits_in_circulation_are_bounded_across_grants_and_adjustments(store: Store) -> None:
    ledger = Ledger(store.ledger.append)
    ledger.grant("alice", MAX_AMOUNT - 10, "almost everything")
    ledger.grant("bob", 10, "the rest")
    assert ledger.account("mint") == -MAX_AMOUNT

    with pytest.raises(LedgerLimitError, match="mint"):
        ledger.grant("carol", 1, "one more")
    with pytest.raises(LedgerLimitError, match="mint"):
        ledger.adjust("bob", 1, "one more")
    ledger.adjust("bob", -10, "clawback")
    ledger.grant("carol", 10, "now there is room")

    await ledger.flush()
    assert nonzero(await store.ledger.balances()) == nonzero(ledger.balances())
    assert await store.ledger.total() == 0


async def test_holds_and_settlements_at_the_limit_are_written_and_sum_in_the_database(store: Store) -> None:
    ledger = Ledger(store.ledger.append)
    ledger.grant("alice", MAX_AMOUNT, "everything")
    assert not ledger.hold("req_too_big", "alice", MAX_AMOUNT + 1)
    assert ledger.hold("req_1", "alice", MAX_AMOUNT)
    assert ledger.settle("req_1", MAX_AMOUNT, [("user:olga", MAX_AMOUNT - 1), ("platform", 1)], receipt("req_1"))
    assert ledger.hold("req_2", "olga", MAX_AMOUNT - 1)
    assert ledger.settle("req_2", 2**80, [("user:alice", 2**80)])  # capped at the hold
    await ledger.flush()

    assert nonzero(await store.ledger.balances()) == nonzero(ledger.balances())
    assert ledger.balance("alice") == MAX_AMOUNT - 1
    restarted, released = await Ledger.recover(store.ledger, store.ledger.append)
    assert (released, restarted.balances()) == (0, await store.ledger.balances())


# -- isolated if the database still refuses it --------------------------------------------------


async def test_the_store_refuses_an_unwritable_batch_whole(store: Store) -> None:
    good = LedgerTxn("txn_good", "grant", None, "welcome", T0, (("mint", -5), ("user:alice", 5)))
    naive = LedgerTxn("txn_naive", "grant", None, "x", T0.replace(tzinfo=None), (("mint", -5), ("user:bob", 5)))
    huge = LedgerTxn("txn_huge", "grant", None, "x", T0, (("mint", -(2**63)), ("user:bob", 2**63)))

    for bad in (naive, huge):
        with pytest.raises(UnwritableError):
            await store.ledger.append([good, bad])
    assert await store.ledger.balances() == {}


async def test_a_poisoned_transaction_is_dropped_and_every_later_one_is_durable(store: Store) -> None:
    dropped: list[LedgerTxn] = []
    # Transactions 1-3: three grants, the second poisoned; then a hold and its settlement.
    ledger = Ledger(store.ledger.append, now=poisoned_at(2), on_drop=dropped.append)
    ledger.grant("alice", 1_000, "welcome")
    ledger.grant("bob", 500, "poisoned")
    ledger.grant("carol", 300, "welcome")
    assert ledger.hold("req_1", "alice", 100)
    assert ledger.settle("req_1", 60, [("user:olga", 54), ("platform", 6)], receipt("req_1"))

    await ledger.flush()

    assert ledger.pending == 0
    assert [(t.kind, t.reason) for t in dropped] == [("grant", "poisoned")]
    assert ledger.dropped == 1
    assert await kinds_stored(store) == [
        ("grant", None, "welcome"),
        ("grant", None, "welcome"),
        ("hold", "req_1", None),
        ("settle", "req_1", None),
    ]
    assert ledger.durable("req_1")
    assert await store.ledger.receipt("req_1") == receipt("req_1")
    # Undone in memory: the balances are what the database holds, and what a restart would load.
    assert ledger.balance("bob") == 0
    assert nonzero(ledger.balances()) == nonzero(await store.ledger.balances())

    # The ledger is not stuck: later changes are written by the next flush, in one batch again.
    assert ledger.hold("req_2", "carol", 300)
    assert ledger.release("req_2")
    await ledger.flush()
    assert ledger.durable("req_2")
    assert nonzero(ledger.balances()) == nonzero(await store.ledger.balances())
    assert await store.ledger.total() == 0


async def test_a_poisoned_hold_drops_its_settlement_too_and_the_request_goes_free(store: Store) -> None:
    dropped: list[LedgerTxn] = []
    ledger = Ledger(store.ledger.append, now=poisoned_at(2), on_drop=dropped.append)
    ledger.grant("alice", 1_000, "welcome")
    assert ledger.hold("req_poisoned", "alice", 100)
    assert ledger.settle("req_poisoned", 100, [("user:olga", 100)], receipt("req_poisoned"))
    assert ledger.hold("req_ok", "alice", 10)

    await ledger.flush()

    assert [(t.kind, t.request_id) for t in dropped] == [("hold", "req_poisoned"), ("settle", "req_poisoned")]
    assert await kinds_stored(store) == [("grant", None, "welcome"), ("hold", "req_ok", None)]
    assert await store.ledger.receipt("req_poisoned") is None
    assert not ledger.durable("req_poisoned")
    assert (ledger.balance("alice"), ledger.held("alice"), ledger.balance("olga")) == (990, 10, 0)
    assert nonzero(ledger.balances()) == nonzero(await store.ledger.balances())


async def test_a_poisoned_hold_not_yet_settled_makes_its_later_settlement_a_no_op(store: Store) -> None:
    ledger = Ledger(store.ledger.append, now=poisoned_at(2))
    ledger.grant("alice", 1_000, "welcome")
    assert ledger.hold("req_poisoned", "alice", 100)
    await ledger.flush()

    assert not ledger.settle("req_poisoned", 100, [("user:olga", 100)], receipt("req_poisoned"))
    await ledger.flush()
    assert (ledger.balance("alice"), ledger.held("alice"), ledger.open_holds) == (1_000, 0, 0)
    assert nonzero(ledger.balances()) == nonzero(await store.ledger.balances())


async def test_a_poisoned_settlement_leaves_its_hold_for_the_next_start_to_release(store: Store) -> None:
    ledger = Ledger(store.ledger.append, now=poisoned_at(3))
    ledger.grant("alice", 1_000, "welcome")
    assert ledger.hold("req_1", "alice", 100)
    assert ledger.settle("req_1", 100, [("user:olga", 100)], receipt("req_1"))

    await ledger.flush()

    assert await store.ledger.receipt("req_1") is None
    assert not ledger.durable("req_1")
    assert not await ledger.settled_durably("req_1")
    assert (ledger.balance("alice"), ledger.held("alice"), ledger.balance("olga")) == (900, 100, 0)
    assert nonzero(ledger.balances()) == nonzero(await store.ledger.balances())

    restarted, released = await Ledger.recover(store.ledger, store.ledger.append)
    assert released == 1
    assert (restarted.balance("alice"), restarted.held("alice")) == (1_000, 0)


class FailsFrom:
    """The store's append, failing like a database that went away once ``calls`` writes were made."""

    def __init__(self, store: Store, calls: int) -> None:
        self.store = store
        self.calls = calls

    async def __call__(self, txns: Sequence[LedgerTxn], receipts: Sequence[StoredReceipt]) -> None:
        self.calls -= 1
        if self.calls < 0:
            raise StoreError("disk I/O error")
        await self.store.ledger.append(txns, receipts)


async def test_an_outage_while_writing_one_by_one_keeps_the_rest_pending_in_order(store: Store) -> None:
    # Call 1: the batch (refused: transaction 2 is poisoned); calls 2-3: txns 1-2 alone (2 dropped); then down.
    append = FailsFrom(store, calls=3)
    ledger = Ledger(append, now=poisoned_at(2))
    ledger.grant("alice", 1_000, "welcome")
    ledger.grant("bob", 500, "poisoned")
    assert ledger.hold("req_1", "alice", 100)
    assert ledger.settle("req_1", 60, [("user:olga", 60)], receipt("req_1"))

    with pytest.raises(StoreError, match="disk"):
        await ledger.flush()

    assert (ledger.pending, ledger.dropped, ledger.durable("req_1")) == (2, 1, False)
    assert await kinds_stored(store) == [("grant", None, "welcome")]
    append.calls = 1
    await ledger.flush()
    assert ledger.durable("req_1")
    assert await store.ledger.receipt("req_1") == receipt("req_1")
    assert await kinds_stored(store) == [("grant", None, "welcome"), ("hold", "req_1", None), ("settle", "req_1", None)]
    assert nonzero(ledger.balances()) == nonzero(await store.ledger.balances())
