"""The ledger's invariants, checked against the database: after a test, a crash, or a replica's death.

Store-level, so it sees what every writer (each replica's hold book, the write-behind ledger, a sweeper)
left, not one process's view.
"""

from __future__ import annotations

from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from potluck.store.ledger import HOLD_PREFIX, UNTRACKED, USER_PREFIX
from potluck.store.tables import ledger_accounts, ledger_entries, ledger_txns, receipts


class LedgerAudit:
    """The ledger's invariants, checked against the database (after a test, a crash, a replica's death)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def problems(self, *, allow_open_holds: bool = True) -> list[str]:
        """Every broken invariant, in words; empty when the ledger is sound:

        every transaction has entries that sum to zero; each account's balance row is the sum of its
        entries (``mint`` and ``platform`` have none); no ``user:`` or ``hold:`` account is below zero;
        each ``hold:<user>`` balance is the sum of that user's open holds; no request is settled twice or
        settled without a hold; every receipt belongs to a settlement; and, unless ``allow_open_holds``,
        no hold is left open.
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
                if acct in UNTRACKED:
                    if acct in rows:
                        found.append(f"account {acct} has a balance row, which it never should")
                elif sums.get(acct, 0) != rows.get(acct, 0):
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
