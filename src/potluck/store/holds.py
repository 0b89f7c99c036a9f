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
account's entries (`LedgerAudit` checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck.store.errors import ConflictError
from potluck.store.ledger import (
    HOLD_PREFIX,
    USER_PREFIX,
    LedgerTxn,
    StoredReceipt,
    add_to_accounts,
    check_txn,
    hold_account,
    upsert,
    user_account,
)
from potluck.store.tables import ledger_accounts, ledger_entries, ledger_txns, receipts

# One round trip: the debit, the transaction, its two entries and the hold account's credit, all or
# nothing. Every part is conditional on `debit` having matched a row (or on a zero amount).
_PG_HOLD = text(
    """
WITH debit AS (
    UPDATE ledger_accounts SET balance = balance - CAST(:amount AS BIGINT)
    WHERE account = CAST(:user_account AS VARCHAR) AND balance >= CAST(:amount AS BIGINT)
    RETURNING account
), txn AS (
    INSERT INTO ledger_txns (id, kind, request_id, reason, created_at)
    SELECT CAST(:txn_id AS VARCHAR), 'hold', CAST(:request_id AS VARCHAR), NULL, CAST(:at AS TIMESTAMPTZ)
    WHERE EXISTS (SELECT 1 FROM debit) OR CAST(:amount AS BIGINT) = 0
    RETURNING id
), entries AS (
    INSERT INTO ledger_entries (txn_id, account, amount)
    SELECT id, CAST(:user_account AS VARCHAR), -CAST(:amount AS BIGINT) FROM txn
    UNION ALL SELECT id, CAST(:hold_account AS VARCHAR), CAST(:amount AS BIGINT) FROM txn
), credit AS (
    INSERT INTO ledger_accounts (account, balance)
    SELECT CAST(:hold_account AS VARCHAR), CAST(:amount AS BIGINT) FROM txn
    ON CONFLICT (account) DO UPDATE SET balance = ledger_accounts.balance + EXCLUDED.balance
)
SELECT count(*) FROM txn
"""
)


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

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def hold(self, txn_id: str, request_id: str, user_id: str, amount: int, at: datetime) -> bool:
        """Move ``amount`` from the user's spendable credits to their hold for the request; False (and no
        change) if the balance does not cover it. ConflictError if the request already has a hold."""
        if amount < 0:
            raise ValueError(f"a hold cannot be negative ({amount})")
        check_txn(_hold_txn(txn_id, request_id, user_id, amount, at))
        try:
            if self._engine.dialect.name == "postgresql":
                return await self._hold_in_one_statement(txn_id, request_id, user_id, amount, at)
            async with self._engine.begin() as conn:
                return await _hold(conn, txn_id, request_id, user_id, amount, at)
        except IntegrityError as exc:
            raise ConflictError(f"request {request_id} already has a hold") from exc

    async def _hold_in_one_statement(
        self, txn_id: str, request_id: str, user_id: str, amount: int, at: datetime
    ) -> bool:
        params = {
            "amount": amount,
            "user_account": user_account(user_id),
            "hold_account": hold_account(user_id),
            "txn_id": txn_id,
            "request_id": request_id,
            "at": at,
        }
        async with self._autocommit.connect() as conn:
            placed = (await conn.execute(_PG_HOLD, params)).scalar_one()
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
    ) -> bool:
        """Close the request's hold: ``payouts`` (summing to ``charge``, capped at the hold) out of it, the rest
        back to the user, and the receipt stored with it. False, and no change, if the request has no hold
        or is already settled (by anyone): a request is settled exactly once."""
        if charge < 0 or any(amount < 0 for _, amount in payouts) or sum(a for _, a in payouts) != charge:
            raise ValueError(f"request {request_id}: payouts {payouts} must be non-negative and sum to {charge}")
        async with self._engine.begin() as conn:
            found = await _held(conn, request_id)
            if found is None:
                return False
            user_id, held = found
            stmt = upsert(conn, ledger_txns)
            inserted = await conn.execute(
                stmt.values(id=txn_id, kind="settle", request_id=request_id, reason=reason, created_at=at)
                .on_conflict_do_nothing(index_elements=[ledger_txns.c.request_id, ledger_txns.c.kind])
                .returning(ledger_txns.c.id)
            )
            if inserted.first() is None:
                return False
            entries, _charged = settlement_entries(user_id, held, charge, payouts)
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


async def _hold(conn: AsyncConnection, txn_id: str, request_id: str, user_id: str, amount: int, at: datetime) -> bool:
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
    await conn.execute(insert(ledger_txns).values(id=txn_id, kind="hold", request_id=request_id, created_at=at))
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


class LedgerAudit:
    """The ledger's invariants, checked against the database (after a test, a crash, a replica's death)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def problems(self, *, allow_open_holds: bool = True) -> list[str]:
        """Every broken invariant, in words; empty when the ledger is sound:

        every transaction has entries that sum to zero; each account's balance row is the sum of its
        entries; no ``user:`` or ``hold:`` account is below zero; each ``hold:<user>`` balance is the sum
        of that user's open holds; no request is settled twice or settled without a hold; every receipt
        belongs to a settlement; and, unless ``allow_open_holds``, no hold is left open.
        """
        t, e, a = ledger_txns.c, ledger_entries.c, ledger_accounts.c
        found: list[str] = []
        async with self._engine.connect() as conn:
            unbalanced = await conn.execute(
                select(e.txn_id, func.sum(e.amount)).group_by(e.txn_id).having(func.sum(e.amount) != 0)
            )
            found += [f"transaction {txn} sums to {total}, not 0" for txn, total in unbalanced.all()]
            empty = await conn.execute(select(t.id).where(~exists().where(e.txn_id == t.id)).order_by(t.id))
            found += [f"transaction {txn} has no entries" for txn in empty.scalars()]
            sums = {
                str(acct): int(total)
                for acct, total in await conn.execute(select(e.account, func.sum(e.amount)).group_by(e.account))
            }
            rows = {str(acct): int(bal) for acct, bal in await conn.execute(select(a.account, a.balance))}
            for acct in sorted(sums.keys() | rows.keys()):
                if sums.get(acct, 0) != rows.get(acct, 0):
                    found.append(
                        f"account {acct}: balance row {rows.get(acct)} but its entries sum to {sums.get(acct, 0)}"
                    )
                if acct.startswith((USER_PREFIX, HOLD_PREFIX)) and sums.get(acct, 0) < 0:
                    found.append(f"account {acct} is below zero: {sums[acct]}")
            twice = await conn.execute(
                select(t.request_id, func.count())
                .where(t.kind == "settle")
                .group_by(t.request_id)
                .having(func.count() > 1)
            )
            found += [f"request {rid} is settled {n} times" for rid, n in twice.all()]
            holds = ledger_txns.alias("holds")
            orphan = await conn.execute(
                select(t.request_id).where(
                    t.kind == "settle",
                    ~exists().where(and_(holds.c.request_id == t.request_id, holds.c.kind == "hold")),
                )
            )
            found += [f"request {rid} is settled without a hold" for rid in orphan.scalars()]
            settles = ledger_txns.alias("settles")
            unsettled_receipts = await conn.execute(
                select(receipts.c.request_id).where(
                    ~exists().where(and_(settles.c.request_id == receipts.c.request_id, settles.c.kind == "settle"))
                )
            )
            found += [f"receipt {rid} has no settlement" for rid in unsettled_receipts.scalars()]
            open_rows = await conn.execute(
                select(t.request_id, e.account, e.amount)
                .join_from(ledger_txns, ledger_entries, e.txn_id == t.id)
                .where(
                    t.kind == "hold",
                    e.account.startswith(HOLD_PREFIX),
                    ~exists().where(and_(settles.c.request_id == t.request_id, settles.c.kind == "settle")),
                )
            )
            open_by_account: dict[str, int] = {}
            for rid, acct, amount in open_rows.all():
                open_by_account[str(acct)] = open_by_account.get(str(acct), 0) + int(amount)
                if not allow_open_holds:
                    found.append(f"request {rid} still holds {amount} of {acct}")
        for acct in sorted({k for k in sums if k.startswith(HOLD_PREFIX)} | open_by_account.keys()):
            if sums.get(acct, 0) != open_by_account.get(acct, 0):
                found.append(
                    f"account {acct} is {sums.get(acct, 0)} but its open holds add up to {open_by_account.get(acct, 0)}"
                )
        return found
