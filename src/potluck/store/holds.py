"""Credit holds and settlements decided by the database, for hub replicas that share one PostgreSQL.

A single hub keeps the ledger in memory (hub/ledger.py) and writes it behind. Replicas cannot: each
would trust its own copy of a balance. Here every change is a transaction on the shared database,
and the database decides:

- `hold` debits ``user:<id>`` only if the balance covers the amount, in one conditional UPDATE on the
  account's balance row (`ledger_accounts`). Concurrent holds on the same account queue on that row's
  lock and each re-checks the balance the previous one left, so no interleaving takes a balance below
  zero. On PostgreSQL the whole hold (debit, transaction, entries, credit of ``hold:<id>``) is one
  statement in autocommit: one round trip.
- `settle` pays a request's hold out exactly once: the settle transaction is inserted with
  ON CONFLICT (request_id, kind) DO NOTHING, and only the writer whose row went in moves money.
  A second settle of the same request (another replica, the sweeper, a retry) changes nothing.

Amounts are micro-credits; accounts as in store/ledger.py. Balance rows are always the sum of the
account's entries (store/ledger_audit.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from sqlalchemy import and_, exists, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck.store.errors import ConflictError, StoreError
from potluck.store.holds_sql import PG_HOLD, PG_SETTLE
from potluck.store.ledger import (
    HOLD_PREFIX,
    UNTRACKED,
    LedgerTxn,
    StoredReceipt,
    add_to_accounts,
    check_txn,
    hold_account,
    lock_order,
    upsert,
    user_account,
)
from potluck.store.tables import ledger_accounts, ledger_entries, ledger_txns, receipts

# A statement on a pooled connection that a server restart broke fails before it reaches the server;
# the pool is then invalidated, and one more try runs on a fresh connection.
_TRIES = 2


class Replicas(Enum):
    """Which replicas' holds `SharedHolds.open_holds` lists, beside one replica id (or None: a single hub's)."""

    ANY = "any"


@dataclass(frozen=True, slots=True)
class ReplicaHold:
    """An open hold and the replica that placed it (None: a single hub's)."""

    request_id: str
    user_id: str
    amount: int
    created_at: datetime
    replica_id: str | None


def settlement_entries(
    user_id: str, held: int, charge: int, payouts: Sequence[tuple[str, int]]
) -> tuple[tuple[tuple[str, int], ...], int]:
    """The entries that close a hold of ``held``: ``payouts`` (summing to ``charge``) out of it, the rest back
    to the user. A charge above the hold is capped at it, the payouts shrunk in proportion (rounding to the
    first). Returns (entries, the charge actually made)."""
    payouts = list(payouts)
    if charge > held:
        scaled = [(acct, amount * held // charge) for acct, amount in payouts]
        short = held - sum(amount for _, amount in scaled)
        if scaled and short:
            scaled[0] = (scaled[0][0], scaled[0][1] + short)
        payouts, charge = scaled, held
    entries: dict[str, int] = {hold_account(user_id): -held}
    for acct, amount in payouts:
        entries[acct] = entries.get(acct, 0) + amount
    refund = user_account(user_id)
    entries[refund] = entries.get(refund, 0) + held - charge
    kept = tuple((acct, amount) for acct, amount in entries.items() if amount) or ((hold_account(user_id), 0),)
    return kept, charge


class SharedHolds:
    """Holds, settlements and grants as database transactions; see the module docstring."""

    def __init__(self, engine: AsyncEngine, hot: AsyncEngine | None = None) -> None:
        """``hot`` (default: ``engine``) carries holds and settlements: a pool without the pre-ping round trip
        (they retry once on a broken connection instead); grants and reads go through ``engine``."""
        self._engine = engine
        self._hot = hot or engine
        self._autocommit = self._hot.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"

    async def hold(
        self, txn_id: str, request_id: str, user_id: str, amount: int, at: datetime, replica_id: str | None = None
    ) -> bool:
        """Move ``amount`` from the user's spendable credits to their hold for the request; False (and no
        change) if the balance does not cover it. ConflictError if the request already has a hold;
        StoreError if the database cannot be reached (nothing was held).
        ``replica_id`` names the hub replica placing it (see `open_holds`)."""
        if amount < 0:
            raise ValueError(f"a hold cannot be negative ({amount})")
        check_txn(_hold_txn(txn_id, request_id, user_id, amount, at))
        for attempt in range(_TRIES):
            try:
                if self._postgres:
                    return await self._hold_in_one_statement(txn_id, request_id, user_id, amount, at, replica_id)
                async with self._hot.begin() as conn:
                    return await _hold(conn, txn_id, request_id, user_id, amount, at, replica_id)
            except IntegrityError as exc:
                if attempt and await self._stored(txn_id):
                    return True  # the try that lost its connection had placed it after all
                raise ConflictError(f"request {request_id} already has a hold") from exc
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == _TRIES - 1:
                    raise StoreError(f"cannot place the hold of {request_id}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stored(self, txn_id: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.execute(select(ledger_txns.c.id).where(ledger_txns.c.id == txn_id))
            return found.first() is not None

    async def _hold_in_one_statement(
        self, txn_id: str, request_id: str, user_id: str, amount: int, at: datetime, replica_id: str | None
    ) -> bool:
        params = {
            "amount": amount,
            "user_account": user_account(user_id),
            "hold_account": hold_account(user_id),
            "txn_id": txn_id,
            "request_id": request_id,
            "at": at,
            "replica_id": replica_id,
        }
        async with self._autocommit.connect() as conn:
            placed = (await conn.execute(PG_HOLD, params)).scalar_one()
        return bool(placed)

    async def settle(
        self,
        txn_id: str,
        request_id: str,
        charge: int,
        payouts: Sequence[tuple[str, int]],
        at: datetime,
        receipt: StoredReceipt | None = None,
        reason: str | None = None,
        *,
        held: tuple[str, int] | None = None,
    ) -> bool:
        """Close the request's hold: ``payouts`` (summing to ``charge``, capped at the hold) out of it, the rest
        back to the user, and the receipt stored with it. False, and no change, if the request has no hold
        or is already settled (by anyone): a request is settled exactly once.

        ``held`` is the hold's (user_id, amount) when the caller placed it; on PostgreSQL the settlement is
        then one statement (it still changes nothing unless exactly that hold is stored)."""
        if charge < 0 or any(amount < 0 for _, amount in payouts) or sum(a for _, a in payouts) != charge:
            raise ValueError(f"request {request_id}: payouts {payouts} must be non-negative and sum to {charge}")
        for attempt in range(_TRIES):
            try:
                if self._postgres and held is not None:
                    return await self._settle_in_one_statement(
                        txn_id, request_id, charge, payouts, at, receipt, reason, held
                    )
                return await self._settle(txn_id, request_id, charge, payouts, at, receipt, reason, held)
            except DBAPIError as exc:
                # Safe to repeat: a settlement that did go in makes the repeat change nothing.
                if not exc.connection_invalidated or attempt == _TRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _settle_in_one_statement(
        self,
        txn_id: str,
        request_id: str,
        charge: int,
        payouts: Sequence[tuple[str, int]],
        at: datetime,
        receipt: StoredReceipt | None,
        reason: str | None,
        held: tuple[str, int],
    ) -> bool:
        user_id, amount = held
        entries, _charged = settlement_entries(user_id, amount, charge, payouts)
        check_txn(LedgerTxn(txn_id, "settle", request_id, reason, at, entries))
        moves = sorted(entries, key=lambda e: lock_order(e[0]))
        params = {
            "txn_id": txn_id,
            "request_id": request_id,
            "reason": reason,
            "at": at,
            "hold_account": hold_account(user_id),
            "held": amount,
            "accounts": [acct for acct, _ in moves],
            "amounts": [value for _, value in moves],
            "untracked": sorted(UNTRACKED),
            "has_receipt": receipt is not None,
            "payload": receipt.payload if receipt else None,
            "signature": receipt.signature if receipt else None,
            "consumer_id": receipt.consumer_id if receipt else None,
            "owner_id": receipt.owner_id if receipt else None,
            "receipt_at": receipt.created_at if receipt else None,
        }
        async with self._autocommit.connect() as conn:
            settled = (await conn.execute(PG_SETTLE, params)).scalar_one()
        return bool(settled)

    async def _settle(
        self,
        txn_id: str,
        request_id: str,
        charge: int,
        payouts: Sequence[tuple[str, int]],
        at: datetime,
        receipt: StoredReceipt | None,
        reason: str | None,
        held: tuple[str, int] | None,
    ) -> bool:
        async with self._hot.begin() as conn:
            found = await _held(conn, request_id)
            if found is None or (held is not None and found != held):
                return False
            user_id, amount = found
            stmt = upsert(conn, ledger_txns)
            inserted = await conn.execute(
                stmt.values(id=txn_id, kind="settle", request_id=request_id, reason=reason, created_at=at)
                .on_conflict_do_nothing(index_elements=[ledger_txns.c.request_id, ledger_txns.c.kind])
                .returning(ledger_txns.c.id)
            )
            if inserted.first() is None:
                return False
            entries, _charged = settlement_entries(user_id, amount, charge, payouts)
            check_txn(LedgerTxn(txn_id, "settle", request_id, reason, at, entries))
            await _write_entries(conn, txn_id, entries)
            if receipt is not None:
                await conn.execute(
                    upsert(conn, receipts)
                    .values(
                        request_id=receipt.request_id,
                        payload=receipt.payload,
                        signature=receipt.signature,
                        consumer_id=receipt.consumer_id,
                        owner_id=receipt.owner_id,
                        created_at=receipt.created_at,
                    )
                    .on_conflict_do_nothing(index_elements=[receipts.c.request_id])
                )
        return True

    async def release(self, txn_id: str, request_id: str, at: datetime, reason: str | None = None) -> bool:
        """Settle with no charge: the whole hold goes back to the user (False if already settled)."""
        return await self.settle(txn_id, request_id, 0, (), at, reason=reason)

    async def record(self, txn: LedgerTxn) -> None:
        """Write one transaction that needs no condition (a grant, an adjustment) with its balance changes."""
        check_txn(txn)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(ledger_txns).values(
                    id=txn.id, kind=txn.kind, request_id=txn.request_id, reason=txn.reason, created_at=txn.created_at
                )
            )
            await _write_entries(conn, txn.id, txn.entries)

    async def open_holds(
        self, replica_id: str | Replicas | None = Replicas.ANY, placed_before: datetime | None = None
    ) -> list[ReplicaHold]:
        """Holds with no settlement yet, oldest first: those ``replica_id`` placed (None: a single hub's,
        placed without a replica id; `Replicas.ANY`: all), and/or placed before ``placed_before``. A
        sweeper releases a dead replica's with `release` (exactly once, even if the replica's own
        settlement races it)."""
        t, e = ledger_txns.c, ledger_entries.c
        settled = ledger_txns.alias("settled")
        query = (
            select(t.request_id, e.account, e.amount, t.created_at, t.replica_id)
            .join_from(ledger_txns, ledger_entries, e.txn_id == t.id)
            .where(
                t.kind == "hold",
                e.account.startswith(HOLD_PREFIX),
                ~exists().where(and_(settled.c.request_id == t.request_id, settled.c.kind == "settle")),
            )
            .order_by(t.created_at, t.id)
        )
        if replica_id is None:
            query = query.where(t.replica_id.is_(None))
        elif isinstance(replica_id, str):
            query = query.where(t.replica_id == replica_id)
        if placed_before is not None:
            query = query.where(t.created_at < placed_before)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ReplicaHold(str(rid), str(acct)[len(HOLD_PREFIX) :], int(amount), at, replica)
            for rid, acct, amount, at, replica in rows
        ]

    async def balance(self, user_id: str) -> tuple[int, int]:
        """(spendable, held) micro-credits of a user, as the database has them now."""
        wanted = (user_account(user_id), hold_account(user_id))
        query = select(ledger_accounts.c.account, ledger_accounts.c.balance).where(
            ledger_accounts.c.account.in_(wanted)
        )
        async with self._engine.connect() as conn:
            found = {str(a): int(b) for a, b in (await conn.execute(query)).all()}
        return found.get(wanted[0], 0), found.get(wanted[1], 0)


def _hold_txn(txn_id: str, request_id: str, user_id: str, amount: int, at: datetime) -> LedgerTxn:
    return LedgerTxn(
        txn_id, "hold", request_id, None, at, ((user_account(user_id), -amount), (hold_account(user_id), amount))
    )


async def _hold(
    conn: AsyncConnection,
    txn_id: str,
    request_id: str,
    user_id: str,
    amount: int,
    at: datetime,
    replica_id: str | None,
) -> bool:
    """The portable hold: a conditional debit first (it takes the write lock), then the rest."""
    if amount:
        debited = await conn.execute(
            update(ledger_accounts)
            .where(and_(ledger_accounts.c.account == user_account(user_id), ledger_accounts.c.balance >= amount))
            .values(balance=ledger_accounts.c.balance - amount)
        )
        if debited.rowcount != 1:
            return False
    txn = _hold_txn(txn_id, request_id, user_id, amount, at)
    await conn.execute(
        insert(ledger_txns).values(id=txn_id, kind="hold", request_id=request_id, created_at=at, replica_id=replica_id)
    )
    await conn.execute(
        insert(ledger_entries), [{"txn_id": txn_id, "account": acct, "amount": amt} for acct, amt in txn.entries]
    )
    await add_to_accounts(conn, {hold_account(user_id): amount})
    return True


async def _held(conn: AsyncConnection, request_id: str) -> tuple[str, int] | None:
    """(user_id, amount) of the request's hold, if it has one."""
    t, e = ledger_txns.c, ledger_entries.c
    row = (
        await conn.execute(
            select(e.account, e.amount)
            .join_from(ledger_entries, ledger_txns, e.txn_id == t.id)
            .where(t.request_id == request_id, t.kind == "hold", e.account.startswith(HOLD_PREFIX))
        )
    ).first()
    if row is None:
        return None
    return str(row[0])[len(HOLD_PREFIX) :], int(row[1])


async def _write_entries(conn: AsyncConnection, txn_id: str, entries: Sequence[tuple[str, int]]) -> None:
    await conn.execute(
        insert(ledger_entries), [{"txn_id": txn_id, "account": acct, "amount": amount} for acct, amount in entries]
    )
    deltas: dict[str, int] = {}
    for acct, amount in entries:
        deltas[acct] = deltas.get(acct, 0) + amount
    await add_to_accounts(conn, deltas)
