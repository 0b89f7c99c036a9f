"""The credit ledger: double-entry transactions in micro-credits, and the signed receipts of settled requests.

Accounts: ``user:<user_id>`` (spendable), ``hold:<user_id>`` (held for requests in flight),
``platform`` (fees) and ``mint`` (the source of grants; negative by the total granted). Every
transaction's entries sum to zero, so the sum over all accounts is always zero.

The hub keeps the ledger in memory and appends it here in batches (group commit). `append` is
idempotent, so a batch retried after an uncertain failure never charges anyone twice: a
transaction whose id, or whose (request_id, kind), is already stored is skipped, and the unique
constraint on (request_id, kind) is the last line of defence.

A transaction that can never be written (malformed, or an amount beyond `MAX_AMOUNT`) makes
`append` raise `UnwritableError` and write nothing of its batch; the caller then isolates it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, exists, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck.store.engine import uncut_write
from potluck.store.errors import ConflictError, UnwritableError
from potluck.store.tables import ledger_accounts, ledger_entries, ledger_txns, receipts

log = logging.getLogger(__name__)
_T = TypeVar("_T")

TXN_KINDS = frozenset({"grant", "hold", "settle", "adjust"})
MINT = "mint"
PLATFORM = "platform"
USER_PREFIX = "user:"
HOLD_PREFIX = "hold:"

UNTRACKED = frozenset({MINT, PLATFORM})
"""Accounts without a balance row in `ledger_accounts`: nothing is ever checked against their balance,
and every settlement pays the platform, so its row would make all settlements, cluster-wide, queue on
one row lock. Their balance is the sum of their entries, as for every account."""

MAX_AMOUNT = 10**15
"""The largest amount (µcr, one billion credits) of any entry and of any account's balance.

Far below a 64-bit integer (9.2e18), so no sum the database computes over an account's entries
can overflow, and exact as a JSON number in any client (below 2**53)."""

# Keeps IN lists well under every backend's bound-parameter limit.
_CHUNK = 500
# A concurrent writer (another hub on the same database) can store the same transaction between
# our read and our write; the retried transaction then sees it and skips it.
_CONFLICT_RETRIES = 3


def user_account(user_id: str) -> str:
    return USER_PREFIX + user_id


def hold_account(user_id: str) -> str:
    return HOLD_PREFIX + user_id


@dataclass(frozen=True, slots=True)
class LedgerTxn:
    id: str
    kind: str
    """``grant``, ``hold``, ``settle`` or ``adjust``."""
    request_id: str | None
    reason: str | None
    created_at: datetime
    entries: tuple[tuple[str, int], ...]
    """(account, signed amount in micro-credits); the amounts sum to zero."""


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    request_id: str
    payload: str
    """The canonical JSON that was signed."""
    signature: str
    consumer_id: str
    owner_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A hold with no settle transaction for its request (the request never finished, e.g. a crash)."""

    request_id: str
    user_id: str
    amount: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    txn_id: str
    kind: str
    request_id: str | None
    reason: str | None
    account: str
    amount: int
    created_at: datetime


def check_txn(txn: LedgerTxn) -> None:
    """UnwritableError (a ValueError) unless the transaction is well formed: a known kind, entries
    that sum to zero, every amount within `MAX_AMOUNT`."""
    if txn.kind not in TXN_KINDS:
        raise UnwritableError(f"txn {txn.id}: unknown kind {txn.kind!r}")
    if not txn.entries:
        raise UnwritableError(f"txn {txn.id}: no entries")
    if sum(amount for _, amount in txn.entries) != 0:
        raise UnwritableError(f"txn {txn.id}: entries sum to {sum(a for _, a in txn.entries)}, not 0")
    for account, amount in txn.entries:
        if not -MAX_AMOUNT <= amount <= MAX_AMOUNT:
            raise UnwritableError(f"txn {txn.id}: {account} {amount} is beyond the ledger's limit of {MAX_AMOUNT}")


class LedgerRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def append(self, txns: Sequence[LedgerTxn], receipts: Sequence[StoredReceipt] = ()) -> None:
        """Write a batch, in order, in one database transaction; skip what is already stored.

        UnwritableError (and nothing of the batch written) if a transaction or receipt can never be
        stored: one that `check_txn` refuses, or a value the database rejects as out of range.
        ConflictError if concurrent writers keep colliding with this batch. Other database errors
        (an outage, a lock) propagate as they are: the same batch may succeed later.
        """
        for txn in txns:
            check_txn(txn)
        if not txns and not receipts:
            return
        for attempt in range(_CONFLICT_RETRIES):
            try:
                async with self._engine.begin() as conn:
                    await _append(conn, txns, receipts)
            except IntegrityError as exc:
                if attempt == _CONFLICT_RETRIES - 1:
                    raise ConflictError(f"ledger batch conflicts with stored transactions: {exc}") from exc
                log.warning("ledger batch collided with a concurrent writer; retrying")
            except Exception as exc:
                if _is_unwritable(exc):
                    raise UnwritableError(f"the database refuses this ledger batch: {exc}") from exc
                raise
            else:
                return

    async def balances(self) -> dict[str, int]:
        """Account -> balance in micro-credits."""
        query = select(ledger_entries.c.account, func.sum(ledger_entries.c.amount)).group_by(ledger_entries.c.account)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(account): int(total) for account, total in rows}

    async def total(self) -> int:
        """The sum of every entry; zero unless the ledger is corrupt."""
        async with self._engine.connect() as conn:
            value = (await conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount), 0)))).scalar_one()
        return int(value)

    async def open_holds(self) -> list[OpenHold]:
        """Holds whose request has no settle transaction, oldest first."""
        t, e = ledger_txns.c, ledger_entries.c
        settled = ledger_txns.alias("settled")
        query = (
            select(t.request_id, e.account, e.amount, t.created_at)
            .join_from(ledger_txns, ledger_entries, e.txn_id == t.id)
            .where(
                t.kind == "hold",
                e.account.startswith(HOLD_PREFIX),
                ~exists().where(and_(settled.c.request_id == t.request_id, settled.c.kind == "settle")),
            )
            .order_by(t.created_at, t.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            OpenHold(str(request_id), str(account)[len(HOLD_PREFIX) :], int(amount), created_at)
            for request_id, account, amount, created_at in rows
        ]

    async def settled_request_ids(self, request_ids: Iterable[str]) -> set[str]:
        """Which of these requests have a settle transaction stored."""
        ids = list(dict.fromkeys(request_ids))
        found: set[str] = set()
        async with self._engine.connect() as conn:
            for chunk in _chunks(ids):
                query = select(ledger_txns.c.request_id).where(
                    ledger_txns.c.request_id.in_(chunk), ledger_txns.c.kind == "settle"
                )
                found.update(str(r) for r in (await conn.execute(query)).scalars())
        return found

    async def entries(
        self, account: str | None = None, request_id: str | None = None, limit: int = 100
    ) -> list[LedgerEntry]:
        """Entries, newest first, of one account and/or one request (or all)."""
        t, e = ledger_txns.c, ledger_entries.c
        query = select(e.txn_id, t.kind, t.request_id, t.reason, e.account, e.amount, t.created_at).join_from(
            ledger_entries, ledger_txns, e.txn_id == t.id
        )
        if account is not None:
            query = query.where(e.account == account)
        if request_id is not None:
            query = query.where(t.request_id == request_id)
        query = query.order_by(e.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LedgerEntry(str(txn_id), str(kind), rid, reason, str(acct), int(amount), created_at)
            for txn_id, kind, rid, reason, acct, amount, created_at in rows
        ]

    async def receipt(self, request_id: str) -> StoredReceipt | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_receipts().where(receipts.c.request_id == request_id))).first()
        return None if row is None else StoredReceipt(*row)

    async def receipts(
        self, consumer_id: str | None = None, owner_id: str | None = None, limit: int = 100
    ) -> list[StoredReceipt]:
        """Receipts, newest first, of one consumer and/or one agent owner (or all)."""
        query = _receipts()
        if consumer_id is not None:
            query = query.where(receipts.c.consumer_id == consumer_id)
        if owner_id is not None:
            query = query.where(receipts.c.owner_id == owner_id)
        query = query.order_by(receipts.c.created_at.desc(), receipts.c.request_id).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [StoredReceipt(*row) for row in rows]


async def _append(conn: AsyncConnection, txns: Sequence[LedgerTxn], batch_receipts: Sequence[StoredReceipt]) -> None:
    if txns:
        new = await _new_txns(conn, txns)
        if new:
            await conn.execute(
                insert(ledger_txns),
                [
                    {
                        "id": t.id,
                        "kind": t.kind,
                        "request_id": t.request_id,
                        "reason": t.reason,
                        "created_at": t.created_at,
                    }
                    for t in new
                ],
            )
            await conn.execute(
                insert(ledger_entries),
                [{"txn_id": t.id, "account": account, "amount": amount} for t in new for account, amount in t.entries],
            )
            deltas: dict[str, int] = {}
            for t in new:
                for account, amount in t.entries:
                    deltas[account] = deltas.get(account, 0) + amount
            await add_to_accounts(conn, deltas)
    if batch_receipts:
        stored: set[str] = set()
        request_ids = list(dict.fromkeys(r.request_id for r in batch_receipts))
        for chunk in _chunks(request_ids):
            query = select(receipts.c.request_id).where(receipts.c.request_id.in_(chunk))
            stored.update(str(r) for r in (await conn.execute(query)).scalars())
        rows = []
        for r in batch_receipts:
            if r.request_id in stored:
                continue
            stored.add(r.request_id)
            rows.append(
                {
                    "request_id": r.request_id,
                    "payload": r.payload,
                    "signature": r.signature,
                    "consumer_id": r.consumer_id,
                    "owner_id": r.owner_id,
                    "created_at": r.created_at,
                }
            )
        if rows:
            await conn.execute(insert(receipts), rows)


async def _new_txns(conn: AsyncConnection, txns: Sequence[LedgerTxn]) -> list[LedgerTxn]:
    """The batch's transactions that are not stored yet (nor repeated earlier in the batch), in order."""
    ids = list(dict.fromkeys(t.id for t in txns))
    request_ids = list(dict.fromkeys(t.request_id for t in txns if t.request_id is not None))
    seen_ids: set[str] = set()
    seen_keys: set[tuple[str | None, str]] = set()
    for chunk in _chunks(ids):
        query = select(ledger_txns.c.id).where(ledger_txns.c.id.in_(chunk))
        seen_ids.update(str(i) for i in (await conn.execute(query)).scalars())
    for rid_chunk in _chunks(request_ids):
        query = select(ledger_txns.c.request_id, ledger_txns.c.kind).where(ledger_txns.c.request_id.in_(rid_chunk))
        seen_keys.update((str(rid), str(kind)) for rid, kind in (await conn.execute(query)).all())
    new: list[LedgerTxn] = []
    for txn in txns:
        key = (txn.request_id, txn.kind)
        if txn.id in seen_ids:
            continue
        if txn.request_id is not None and key in seen_keys:
            log.warning("skipping %s txn %s: request %s already has one", txn.kind, txn.id, txn.request_id)
            continue
        seen_ids.add(txn.id)
        if txn.request_id is not None:
            seen_keys.add(key)
        new.append(txn)
    return new


def lock_order(account: str) -> tuple[bool, str]:
    """Every writer locks balance rows in this order (``user:`` rows first, a hold's own order), so two
    transactions touching the same accounts never deadlock."""
    return (not account.startswith(USER_PREFIX), account)


def upsert(conn: AsyncConnection, table: Any) -> Any:
    """The backend's INSERT that takes ON CONFLICT (PostgreSQL and SQLite spell it alike)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def add_to_accounts(conn: AsyncConnection, deltas: dict[str, int]) -> None:
    """Add signed amounts to the accounts' balance rows (creating missing ones), in the caller's transaction."""
    rows = [
        {"account": a, "balance": deltas[a]} for a in sorted(deltas, key=lock_order) if deltas[a] and a not in UNTRACKED
    ]
    if not rows:
        return
    stmt = upsert(conn, ledger_accounts)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[ledger_accounts.c.account],
            set_={"balance": ledger_accounts.c.balance + stmt.excluded.balance},
        ),
        rows,
    )


def _is_unwritable(exc: Exception) -> bool:
    """Whether the error is about the values written (so the same write always fails), not the database."""
    if isinstance(exc, DataError | OverflowError | ValueError | TypeError):
        return True
    # A value the driver or a column type could not even bind (e.g. a naive datetime, an int beyond 64 bits).
    return (
        isinstance(exc, StatementError)
        and not isinstance(exc, DBAPIError)
        and isinstance(exc.orig, OverflowError | ValueError | TypeError)
    )


def _receipts() -> Select[str, str, str, str, str | None, datetime]:
    c = receipts.c
    return select(c.request_id, c.payload, c.signature, c.consumer_id, c.owner_id, c.created_at)


def _chunks(items: list[_T]) -> Iterable[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
