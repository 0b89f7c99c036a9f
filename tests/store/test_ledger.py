"""The credit ledger in the store: migration 0007, double entry, idempotent batches, open holds, receipts."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from potluck.store.database import Store
from potluck.store.engine import MIGRATIONS_DIR, create_engine, sqlite_url
from potluck.store.errors import ConflictError
from potluck.store.ledger import LedgerTxn, StoredReceipt

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def grant(txn_id: str, user: str, amount: int, at: datetime = T0) -> LedgerTxn:
    return LedgerTxn(txn_id, "grant", None, "welcome", at, (("mint", -amount), (f"user:{user}", amount)))


def hold(txn_id: str, request_id: str, user: str, amount: int, at: datetime = T0) -> LedgerTxn:
    return LedgerTxn(txn_id, "hold", request_id, None, at, ((f"user:{user}", -amount), (f"hold:{user}", amount)))


def settle(txn_id: str, request_id: str, user: str, held: int, charge: int, owner: str = "own") -> LedgerTxn:
    fee = charge // 10
    entries = (
        (f"hold:{user}", -held),
        (f"user:{owner}", charge - fee),
        ("platform", fee),
        (f"user:{user}", held - charge),
    )
    return LedgerTxn(txn_id, "settle", request_id, None, T0, entries)


def receipt(request_id: str, consumer: str = "alice", owner: str | None = "own", at: datetime = T0) -> StoredReceipt:
    return StoredReceipt(request_id, f'{{"request_id":"{request_id}"}}', "sig-" + request_id, consumer, owner, at)


# -- migration ----------------------------------------------------------------------------------


async def _migrate(db_path: Path, revision: str, *, down: bool = False) -> None:
    """Run Alembic to a revision on the file, the way the store does (on a connection it hands over)."""

    def run(connection: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)

    engine = create_engine(sqlite_url(db_path))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


def _columns(db_path: Path, table: str) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    conn.close()
    return names


def _tables(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return names


async def test_migration_0007_adds_accounting_to_a_0006_database_and_downgrades_cleanly(db_path: Path) -> None:
    await _migrate(db_path, "0006")
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO users VALUES ('usr_1', 'ann', NULL, 'user', '2030-01-01 00:00:00', NULL, NULL)")
        conn.execute("INSERT INTO groups VALUES ('grp_1', 'lab', 'usr_1', '2030-01-01 00:00:00', 0)")
        conn.execute(
            "INSERT INTO usage_records VALUES ('req_1', NULL, NULL, 'm', '/v1/x', 'ok', 200, 1, 2, 0, NULL, 3,"
            " '2030-01-01 00:00:00')"
        )
    conn.close()
    assert "ledger_txns" not in _tables(db_path)

    store = await Store.open(sqlite_url(db_path))
    try:
        group = await store.groups.get("grp_1")
        [record] = await store.usage.recent()
    finally:
        await store.close()
    assert group is not None
    assert (group.billing, group.dynamic_pricing, group.max_tokens_cap) == ("mutual", False, 4096)
    assert (group.default_input_per_mtok, group.min_price_per_mtok) == (0.0, None)
    assert (record.charged, record.earned, record.tokens_estimated, record.flagged, record.user_id) == (
        0,
        0,
        False,
        False,
        None,
    )
    assert {"ledger_txns", "ledger_entries", "receipts", "agent_prices"} <= _tables(db_path)

    await _migrate(db_path, "0006", down=True)
    assert not {"ledger_txns", "ledger_entries", "receipts", "agent_prices"} & _tables(db_path)
    assert "billing" not in _columns(db_path, "groups")
    assert not {"charged", "earned", "user_id", "owner_id", "group_id"} & _columns(db_path, "usage_records")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT name FROM groups").fetchall() == [("lab",)]
        assert conn.execute("SELECT request_id FROM usage_records").fetchall() == [("req_1",)]
    conn.close()


# -- double entry -------------------------------------------------------------------------------


async def test_a_txn_that_does_not_sum_to_zero_is_refused_and_nothing_of_its_batch_is_written(store: Store) -> None:
    unbalanced = LedgerTxn("txn_bad", "grant", None, None, T0, (("mint", -5), ("user:alice", 6)))
    with pytest.raises(ValueError, match="sum"):
        await store.ledger.append([grant("txn_1", "alice", 10), unbalanced])
    assert await store.ledger.balances() == {}


async def test_unknown_kinds_and_empty_txns_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="kind"):
        await store.ledger.append([LedgerTxn("txn_x", "gift", None, None, T0, (("mint", -1), ("user:a", 1)))])
    with pytest.raises(ValueError, match="no entries"):
        await store.ledger.append([LedgerTxn("txn_y", "adjust", None, None, T0, ())])


async def test_balances_follow_grant_hold_settle_and_every_account_sums_to_zero(store: Store) -> None:
    await store.ledger.append(
        [
            grant("txn_1", "alice", 1000),
            hold("txn_2", "req_1", "alice", 300),
            settle("txn_3", "req_1", "alice", 300, 200),
        ]
    )

    assert await store.ledger.balances() == {
        "mint": -1000,
        "user:alice": 800,
        "hold:alice": 0,
        "user:own": 180,
        "platform": 20,
    }
    assert await store.ledger.total() == 0


async def test_a_batch_whose_caller_is_cancelled_is_written_whole_and_later_writes_go_through(store: Store) -> None:
    """A client hanging up cancels its handler, and a shutdown cancels the hub's loops: a write under way ends
    first. (Cut short, an aiosqlite transaction could leave SQLite's write lock held, and the next write waited
    out the busy timeout: the teardown hang once seen in CI.)"""
    loop = asyncio.get_running_loop()
    cancelled = 0
    for attempt in range(12):
        batch = [grant(f"t{attempt}_{n}", f"u{attempt}_{n}", 1) for n in range(20)]
        writing = asyncio.create_task(store.ledger.append(batch))
        loop.call_later(attempt * 0.0004, writing.cancel)  # from its very first step, then deeper into it
        [outcome] = await asyncio.gather(writing, return_exceptions=True)
        cancelled += isinstance(outcome, asyncio.CancelledError)  # (a later cancel may come after the write)
        balances = await store.ledger.balances()
        assert all(balances.get(f"user:u{attempt}_{n}") == 1 for n in range(20)), attempt
    assert cancelled >= 1
    async with asyncio.timeout(5):
        await store.ledger.append([grant("last", "zoe", 1)])
    assert await store.ledger.total() == 0
    assert (await store.ledger.balances())["mint"] == -241


async def test_total_of_an_empty_ledger_is_zero(store: Store) -> None:
    assert await store.ledger.total() == 0
    assert await store.ledger.open_holds() == []


async def test_replaying_the_same_batch_changes_nothing(store: Store) -> None:
    batch = [
        grant("txn_1", "alice", 1000),
        hold("txn_2", "req_1", "alice", 300),
        settle("txn_3", "req_1", "alice", 300, 200),
    ]
    await store.ledger.append(batch, [receipt("req_1")])
    before = await store.ledger.balances()

    await store.ledger.append(batch, [receipt("req_1")])
    await store.ledger.append(batch[1:])

    assert await store.ledger.balances() == before
    assert len(await store.ledger.entries(account="user:alice")) == 3
    assert len(await store.ledger.receipts()) == 1


async def test_a_second_settle_of_a_request_under_another_id_is_skipped(store: Store) -> None:
    await store.ledger.append([grant("txn_1", "alice", 1000), hold("txn_2", "req_1", "alice", 300)])
    await store.ledger.append([settle("txn_3", "req_1", "alice", 300, 200)])

    await store.ledger.append([settle("txn_4", "req_1", "alice", 300, 300), grant("txn_5", "bob", 7)])

    balances = await store.ledger.balances()
    assert balances["user:alice"] == 800
    assert balances["user:bob"] == 7  # the rest of the batch is still written
    assert [e.txn_id for e in await store.ledger.entries(request_id="req_1") if e.kind == "settle"] == ["txn_3"] * 4


async def test_a_repeat_inside_one_batch_is_written_once(store: Store) -> None:
    await store.ledger.append(
        [grant("txn_1", "alice", 1000), hold("txn_2", "req_1", "alice", 300), hold("txn_3", "req_1", "alice", 300)]
    )
    assert (await store.ledger.balances())["hold:alice"] == 300


async def test_the_unique_request_kind_constraint_refuses_a_second_settle_written_behind_the_repository(
    sqlite_store: Store, db_path: Path
) -> None:
    await sqlite_store.ledger.append([grant("txn_1", "alice", 10), hold("txn_2", "req_1", "alice", 5)])
    await sqlite_store.ledger.append([settle("txn_3", "req_1", "alice", 5, 5)])
    with sqlite3.connect(db_path) as conn, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(
            "INSERT INTO ledger_txns (id, kind, request_id, reason, created_at) "
            "VALUES ('txn_4', 'settle', 'req_1', NULL, '2030-01-01 00:00:00')"
        )
    conn.close()
    # Grants carry no request id and may repeat freely.
    await sqlite_store.ledger.append([grant("txn_5", "alice", 1), grant("txn_6", "alice", 1)])
    assert (await sqlite_store.ledger.balances())["user:alice"] == 7


async def test_a_collision_that_persists_is_a_conflict_error_and_writes_nothing(
    sqlite_store: Store, db_path: Path
) -> None:
    # A trigger stands in for a concurrent writer that keeps winning the race for the same row.
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER always_taken BEFORE INSERT ON receipts BEGIN "
            "SELECT RAISE(ABORT, 'UNIQUE constraint failed: receipts.request_id'); END"
        )
    conn.close()
    with pytest.raises(ConflictError) as caught:
        await sqlite_store.ledger.append([grant("txn_1", "alice", 10)], [receipt("req_1")])
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert await sqlite_store.ledger.balances() == {}


async def test_two_writers_appending_the_same_batch_at_once_store_it_once(store: Store, store_url: str) -> None:
    other = await Store.open(store_url)
    try:
        batch = [grant(f"txn_{i}", "alice", 1) for i in range(50)] + [hold("txn_h", "req_1", "alice", 5)]
        for _ in range(5):
            await asyncio.gather(store.ledger.append(batch), other.ledger.append(batch))
    finally:
        await other.close()
    assert await store.ledger.balances() == {"mint": -50, "user:alice": 45, "hold:alice": 5}


# -- holds and receipts --------------------------------------------------------------------------


async def test_open_holds_are_the_holds_without_a_settle(store: Store) -> None:
    later = T0 + timedelta(minutes=1)
    await store.ledger.append(
        [
            grant("txn_1", "alice", 1000),
            grant("txn_2", "bob", 1000),
            hold("txn_3", "req_1", "alice", 100),
            hold("txn_4", "req_2", "alice", 200, at=later),
            hold("txn_5", "req_3", "bob", 50),
            settle("txn_6", "req_1", "alice", 100, 100),
        ]
    )

    holds = await store.ledger.open_holds()

    assert [(h.request_id, h.user_id, h.amount, h.created_at) for h in holds] == [
        ("req_3", "bob", 50, T0),
        ("req_2", "alice", 200, later),
    ]
    assert await store.ledger.settled_request_ids(["req_1", "req_2", "req_9"]) == {"req_1"}


async def test_receipts_round_trip_and_filter_by_consumer_and_owner(store: Store) -> None:
    first = receipt("req_1", consumer="alice", owner="own")
    second = receipt("req_2", consumer="bob", owner="own", at=T0 + timedelta(seconds=1))
    third = receipt("req_3", consumer="alice", owner=None, at=T0 + timedelta(seconds=2))
    await store.ledger.append([], [first, second, third])

    assert await store.ledger.receipt("req_1") == first
    assert await store.ledger.receipt("req_9") is None
    assert await store.ledger.receipts(consumer_id="alice") == [third, first]
    assert await store.ledger.receipts(owner_id="own") == [second, first]
    assert await store.ledger.receipts(consumer_id="bob", owner_id="own") == [second]
    assert await store.ledger.receipts(limit=1) == [third]


async def test_entries_filter_by_account_and_request_newest_first(store: Store) -> None:
    await store.ledger.append([grant("txn_1", "alice", 10), hold("txn_2", "req_1", "alice", 4)])

    alice = await store.ledger.entries(account="user:alice")
    assert [(e.txn_id, e.amount, e.kind) for e in alice] == [("txn_2", -4, "hold"), ("txn_1", 10, "grant")]
    assert {(e.account, e.amount) for e in await store.ledger.entries(request_id="req_1")} == {
        ("user:alice", -4),
        ("hold:alice", 4),
    }
    assert len(await store.ledger.entries(limit=3)) == 3


async def test_large_batches_are_written_whole(store: Store) -> None:
    batch = [grant(f"txn_{i}", "alice", 1) for i in range(1200)]
    await store.ledger.append(batch)
    await store.ledger.append(batch)
    assert (await store.ledger.balances())["user:alice"] == 1200
