"""Credit holds decided by the database (store/holds.py), as hub replicas sharing one database use them,
and the ledger audit: on SQLite and on PostgreSQL, with several stores (engines) racing on one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from potluck.store.database import Store
from potluck.store.engine import MIGRATIONS_DIR, create_engine, head_revision
from potluck.store.errors import ConflictError, SchemaOutdatedError, StoreError, is_database_unavailable
from potluck.store.holds import settlement_entries
from potluck.store.ledger import LedgerTxn, StoredReceipt
from testing.postgres import PostgresServer
from testing.processes import free_port

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def grant(txn_id: str, user: str, amount: int) -> LedgerTxn:
    return LedgerTxn(txn_id, "grant", None, "welcome", T0, (("mint", -amount), (f"user:{user}", amount)))


@pytest.fixture
async def replicas(store: Store, store_url: str) -> AsyncIterator[list[Store]]:
    """Three stores on one database, as three hub replicas have: three engines, three connection pools."""
    others = [await Store.open(store_url) for _ in range(2)]
    try:
        yield [store, *others]
    finally:
        for other in others:
            await other.close()


async def test_twenty_concurrent_holds_over_three_replicas_admit_exactly_one_when_the_balance_covers_one(
    replicas: list[Store],
) -> None:
    store = replicas[0]
    await store.holds.record(grant("txn_g", "alice", 700))

    placed = await asyncio.gather(
        *(replicas[i % 3].holds.hold(f"txn_{i}", f"req_{i}", "alice", 700, T0) for i in range(20))
    )

    assert sum(placed) == 1
    assert await store.holds.balance("alice") == (0, 700)
    assert await store.audit.problems() == []


async def test_concurrent_holds_take_the_balance_to_exactly_zero_and_never_below(replicas: list[Store]) -> None:
    store = replicas[0]
    await store.holds.record(grant("txn_g", "alice", 1000))

    placed = await asyncio.gather(
        *(replicas[i % 3].holds.hold(f"txn_{i}", f"req_{i}", "alice", 300, T0) for i in range(12))
    )

    assert sum(placed) == 3  # 3 x 300 fit in 1000, a fourth does not
    assert await store.holds.balance("alice") == (100, 900)
    assert await store.audit.problems() == []


async def test_zero_and_paid_holds_of_one_user_at_the_same_moment_never_deadlock(replicas: list[Store]) -> None:
    """A free request (a zero hold) and paid ones of the same user, placed at once: each statement locks the
    user's balance row before the hold's, whatever the amount (PostgreSQL found a deadlock here before)."""
    store = replicas[0]
    await store.holds.record(grant("txn_g", "alice", 1_000_000))

    for round_ in range(8):  # the first plans PostgreSQL makes are for the values given: zero and not
        placed = await asyncio.gather(
            *(
                replicas[i % 3].holds.hold(f"txn_{round_}_{i}", f"req_{round_}_{i}", "alice", 100 * (i % 2), T0)
                for i in range(12)
            )
        )
        assert all(placed)
    assert await store.holds.balance("alice") == (1_000_000 - 8 * 6 * 100, 8 * 6 * 100)
    assert await store.audit.problems() == []


async def test_a_request_settled_by_two_replicas_at_once_is_paid_once_with_one_receipt(replicas: list[Store]) -> None:
    a, b, c = replicas
    await a.holds.record(grant("txn_g", "alice", 1000))
    assert await a.holds.hold("txn_h", "req_1", "alice", 500, T0)
    signed = StoredReceipt("req_1", '{"request_id":"req_1"}', "sig", "alice", "bob", T0)

    settled = await asyncio.gather(
        a.holds.settle("txn_s1", "req_1", 200, [("user:bob", 180), ("platform", 20)], T0, signed, held=("alice", 500)),
        b.holds.settle("txn_s2", "req_1", 200, [("user:bob", 180), ("platform", 20)], T0, signed),
        c.holds.release("txn_s3", "req_1", T0),
    )

    assert sorted(settled) == [False, False, True]
    balances = await a.ledger.balances()
    assert balances["hold:alice"] == 0
    if settled[2]:  # the release won: nobody is paid, alice has it all back
        assert (balances["user:alice"], balances.get("user:bob", 0)) == (1000, 0)
        assert await a.ledger.receipt("req_1") is None
    else:
        assert (balances["user:alice"], balances["user:bob"], balances["platform"]) == (800, 180, 20)
        assert await a.ledger.receipt("req_1") == signed
    assert await a.audit.problems(allow_open_holds=False) == []
    # A retry after the fact (a sweeper, an uncertain failure) changes nothing.
    assert not await b.holds.release("txn_s4", "req_1", T0)
    assert not await b.holds.settle("txn_s5", "req_1", 1, [("platform", 1)], T0)
    assert await a.ledger.balances() == balances


async def test_a_charge_above_the_hold_is_capped_at_it_and_a_request_without_a_hold_settles_nothing(
    store: Store,
) -> None:
    await store.holds.record(grant("txn_g", "alice", 1000))
    assert await store.holds.hold("txn_h", "req_1", "alice", 100, T0)

    assert await store.holds.settle("txn_s", "req_1", 400, [("user:bob", 300), ("platform", 100)], T0)
    assert not await store.holds.settle("txn_x", "req_unknown", 0, [], T0)

    balances = await store.ledger.balances()
    assert (balances["user:alice"], balances["user:bob"], balances["platform"]) == (900, 75, 25)
    assert await store.audit.problems(allow_open_holds=False) == []


def test_settlement_entries_cap_the_charge_and_return_the_rest_to_the_user() -> None:
    entries, charged = settlement_entries("alice", 100, 30, [("user:bob", 27), ("platform", 3)])
    assert charged == 30
    assert dict(entries) == {"hold:alice": -100, "user:bob": 27, "platform": 3, "user:alice": 70}
    entries, charged = settlement_entries("alice", 10, 30, [("user:bob", 20), ("platform", 10)])
    assert charged == 10
    assert dict(entries) == {"hold:alice": -10, "user:bob": 7, "platform": 3}
    assert settlement_entries("alice", 0, 0, []) == ((("hold:alice", 0),), 0)


async def test_a_settler_that_names_the_wrong_hold_changes_nothing(store: Store) -> None:
    await store.holds.record(grant("txn_g", "alice", 1000))
    assert await store.holds.hold("txn_h", "req_1", "alice", 100, T0)

    assert not await store.holds.settle("txn_s1", "req_1", 50, [("platform", 50)], T0, held=("alice", 99))
    assert not await store.holds.settle("txn_s2", "req_1", 50, [("platform", 50)], T0, held=("bob", 100))
    assert await store.holds.balance("alice") == (900, 100)
    assert await store.holds.settle("txn_s3", "req_1", 50, [("platform", 50)], T0, held=("alice", 100))
    assert await store.holds.balance("alice") == (950, 0)
    assert await store.audit.problems(allow_open_holds=False) == []


async def test_a_second_hold_for_one_request_is_a_conflict_and_changes_nothing(store: Store) -> None:
    await store.holds.record(grant("txn_g", "alice", 1000))
    assert await store.holds.hold("txn_1", "req_1", "alice", 100, T0)
    with pytest.raises(ConflictError):
        await store.holds.hold("txn_2", "req_1", "alice", 100, T0)
    assert await store.holds.balance("alice") == (900, 100)


async def test_a_zero_hold_needs_no_balance_and_a_user_never_granted_gets_no_credit(store: Store) -> None:
    assert await store.holds.hold("txn_1", "req_1", "nobody", 0, T0)
    assert not await store.holds.hold("txn_2", "req_2", "nobody", 1, T0)
    assert await store.holds.balance("nobody") == (0, 0)
    assert await store.holds.release("txn_3", "req_1", T0)
    assert await store.audit.problems(allow_open_holds=False) == []


async def test_the_write_behind_ledger_keeps_the_balance_rows_that_holds_decide_on(store: Store) -> None:
    hold = LedgerTxn("txn_2", "hold", "req_1", None, T0, (("user:alice", -300), ("hold:alice", 300)))
    await store.ledger.append([grant("txn_1", "alice", 1000), hold])

    assert await store.holds.balance("alice") == (700, 300)
    assert not await store.holds.hold("txn_3", "req_2", "alice", 701, T0)
    assert await store.holds.hold("txn_4", "req_3", "alice", 700, T0)
    assert await store.audit.problems() == []
    assert sorted(await store.audit.problems(allow_open_holds=False)) == [
        "request req_1 still holds 300 of hold:alice",
        "request req_3 still holds 700 of hold:alice",
    ]


async def test_the_audit_names_each_broken_invariant(store: Store, store_url: str) -> None:
    await store.holds.record(grant("txn_g", "alice", 100))
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            # Written behind the store's back: money from nowhere, a stale balance row, a settle with no hold.
            await conn.execute(text("INSERT INTO ledger_entries (txn_id, account, amount) VALUES ('txn_g', 'x', 5)"))
            await conn.execute(text("UPDATE ledger_accounts SET balance = 99 WHERE account = 'user:alice'"))
            await conn.execute(text("INSERT INTO ledger_accounts (account, balance) VALUES ('platform', 0)"))
            await conn.execute(
                text(
                    "INSERT INTO ledger_txns (id, kind, request_id, created_at) "
                    "VALUES ('txn_s', 'settle', 'req_9', :at)"
                ),
                {"at": T0},
            )
    finally:
        await engine.dispose()

    assert sorted(await store.audit.problems()) == [
        "account platform has a balance row, which it never should",
        "account user:alice: balance row 99 but its entries sum to 100",
        "account x: balance row None but its entries sum to 5",
        "request req_9 is settled without a hold",
        "transaction txn_g sums to 5, not 0",
        "transaction txn_s has no entries",
    ]


# -- schema -------------------------------------------------------------------------------------


def _upgrade_to(revision: str, *, down: bool = False) -> object:
    def run(connection: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)

    return run


async def test_migration_0011_gives_existing_accounts_their_balance_rows(empty_url: str) -> None:
    engine = create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0009"))  # type: ignore[arg-type]
            await conn.execute(
                text("INSERT INTO ledger_txns (id, kind, request_id, created_at) VALUES ('t1', 'grant', NULL, :at)"),
                {"at": T0},
            )
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (txn_id, account, amount) "
                    "VALUES ('t1', 'mint', -5000000000), ('t1', 'user:alice', 5000000000)"
                )
            )
    finally:
        await engine.dispose()

    store = await Store.open(empty_url, migrate=True)
    try:
        assert await store.holds.balance("alice") == (5_000_000_000, 0)  # beyond 32 bits
        assert await store.audit.problems() == []
    finally:
        await store.close()

    engine = create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0009", down=True))  # type: ignore[arg-type]
            tables = await conn.run_sync(lambda sync: sa_inspect(sync).get_table_names())
            columns = await conn.run_sync(lambda sync: [c["name"] for c in sa_inspect(sync).get_columns("ledger_txns")])
    finally:
        await engine.dispose()
    assert "ledger_accounts" not in tables
    assert "replica_id" not in columns


async def test_postgresql_is_migrated_only_on_request_and_sqlite_on_open(empty_url: str) -> None:
    if empty_url.startswith("sqlite"):
        store = await Store.open(empty_url)
        await store.close()
        return
    with pytest.raises(SchemaOutdatedError, match=r"none \(empty database\).*potluck hub migrate"):
        await Store.open(empty_url)
    engine = create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0009"))  # type: ignore[arg-type]
    finally:
        await engine.dispose()
    with pytest.raises(SchemaOutdatedError, match=f"at revision 0009 and this hub needs {head_revision()}"):
        await Store.open(empty_url)
    await (await Store.open(empty_url, migrate=True)).close()
    store = await Store.open(empty_url)
    assert await store.ping()
    await store.close()


async def test_holds_and_settlements_go_on_after_a_postgresql_restart(
    postgres: PostgresServer, postgres_url: str
) -> None:
    store = await Store.open(postgres_url)
    try:
        await store.holds.record(grant("txn_g", "alice", 1000))
        assert await store.holds.hold("txn_1", "req_1", "alice", 100, T0)  # the pools now hold live connections

        postgres.restart()

        assert await store.holds.hold("txn_2", "req_2", "alice", 100, T0)
        assert await store.holds.settle("txn_3", "req_1", 10, [("platform", 10)], T0, held=("alice", 100))
        assert await store.holds.balance("alice") == (890, 100)
    finally:
        await store.close()


async def test_a_database_that_cannot_be_reached_is_told_apart_from_a_failing_statement(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    nobody_listens = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{free_port()}"))
    dead = Store(nobody_listens)
    try:
        assert not await dead.ping()  # the refused connection is a database error, not a bare OSError
        with pytest.raises(DBAPIError) as refused:
            await dead.usage.recent()
        assert is_database_unavailable(refused.value)
        with pytest.raises(StoreError) as not_held:
            await dead.holds.hold("txn_1", "req_1", "alice", 100, T0)
        assert is_database_unavailable(not_held.value)
    finally:
        await dead.close()
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as failing:
                await conn.execute(text("SELECT 1 / 0"))
        assert not is_database_unavailable(failing.value)
    finally:
        await engine.dispose()


async def test_a_sweeper_finds_a_dead_replicas_open_holds_and_releases_each_once(replicas: list[Store]) -> None:
    alive, dead, sweeper = replicas
    await alive.holds.record(grant("txn_g", "alice", 1000))
    assert await dead.holds.hold("txn_1", "req_1", "alice", 100, T0, replica_id="hub-b")
    assert await dead.holds.hold("txn_2", "req_2", "alice", 200, T0 + timedelta(seconds=1), replica_id="hub-b")
    assert await alive.holds.hold("txn_3", "req_3", "alice", 300, T0, replica_id="hub-a")
    assert await dead.holds.settle("txn_4", "req_1", 50, [("platform", 50)], T0)  # finished before it died

    orphans = await sweeper.holds.open_holds(replica_id="hub-b")
    assert [(h.request_id, h.user_id, h.amount, h.replica_id) for h in orphans] == [("req_2", "alice", 200, "hub-b")]
    assert [h.request_id for h in await sweeper.holds.open_holds(placed_before=T0 + timedelta(seconds=1))] == ["req_3"]

    # The sweeper and a late settlement from the replica itself race: one of them wins, once.
    released, late = await asyncio.gather(
        sweeper.holds.release("txn_5", "req_2", T0, reason="replica hub-b died"),
        dead.holds.settle("txn_6", "req_2", 200, [("platform", 200)], T0, held=("alice", 200)),
    )
    assert released != late
    assert await sweeper.holds.open_holds(replica_id="hub-b") == []
    assert await sweeper.audit.problems() == []
    assert await sweeper.holds.balance("alice") == (650 if released else 450, 300)
