"""The credit ledger in memory: authoritative for this hub process, made durable by group commit.

`hold`, `settle`, `release` and `grant` are dictionary updates plus a list append; no database
round trip on the hot path. Every change is a balanced double-entry transaction (see
store/ledger.py for the accounts). A background task (`run`) appends whatever accumulated every
``flush_interval`` seconds in one database transaction, in order, so the database always holds a
consistent prefix of the ledger. A failed batch is kept, in order, ahead of newer ones and retried;
the store skips what it already has, so an uncertain failure never charges twice.

One transaction that cannot be written never blocks the others. Every change is refused up front
(`LedgerLimitError`) if an amount or a resulting balance would pass `MAX_AMOUNT`, so no sum ever
overflows the database's integers. Should a batch still fail, it is written again one transaction
at a time: one the store calls unwritable is dropped (logged, counted, and undone in memory so the
balances stay what the database holds), and the rest are written; a failure of any other kind
(an outage, a lock) leaves them all pending, in order.

After a crash (`kill -9`) the hub rebuilds the balances from the database with `load`, and releases
every hold that was never settled: the consumer gets the credits back and nobody is paid, since the
settlement (if any) was lost with the unflushed batch. A crash therefore loses at most the last
``flush_interval`` of settlements, always in the consumer's favour, and never settles a request twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from potluck._shared.ids import new_id
from potluck._shared.waiting import uncut
from potluck.hub.errors import InvalidRequestError
from potluck.hub.pricing import MICRO
from potluck.store.errors import UnwritableError
from potluck.store.ledger import (
    HOLD_PREFIX,
    MAX_AMOUNT,
    MINT,
    LedgerTxn,
    OpenHold,
    StoredReceipt,
    hold_account,
    user_account,
)

log = logging.getLogger(__name__)

AppendBatch = Callable[[Sequence[LedgerTxn], Sequence[StoredReceipt]], Awaitable[None]]
OnDrop = Callable[[LedgerTxn], None]

RECOVERED_REASON = "recovered after restart"


class LedgerLimitError(InvalidRequestError, ValueError):
    """A change would take an amount or a balance beyond `MAX_AMOUNT`; nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="amount")


class LedgerSource(Protocol):
    """What recovery reads: the store's `LedgerRepository` provides it."""

    async def balances(self) -> dict[str, int]: ...

    async def open_holds(self) -> list[OpenHold]: ...


def _new_txn_id() -> str:
    return new_id("txn")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Balances, holds and settlements in micro-credits; see the module docstring."""

    def __init__(
        self,
        append: AppendBatch,
        *,
        flush_interval: float = 0.05,
        new_txn_id: Callable[[], str] = _new_txn_id,
        now: Callable[[], datetime] = _utc_now,
        remember_settled: int = 100_000,
        on_drop: OnDrop | None = None,
    ) -> None:
        self._append = append
        self._on_drop = on_drop
        self.dropped = 0
        """Transactions dropped because the database can never store them (see the module docstring)."""
        self._flush_interval = flush_interval
        self._new_txn_id = new_txn_id
        self._now = now
        self._remember = remember_settled
        self._balances: dict[str, int] = {}
        self._holds: dict[str, tuple[str, int]] = {}
        """request_id -> (user_id, amount) of every open hold."""
        self._closed: dict[str, None] = {}
        """Recently settled request ids, oldest first (bounded): a request id is never held twice."""
        self._txns: list[LedgerTxn] = []
        self._receipts: list[StoredReceipt] = []
        self._pending_settles: set[str] = set()
        self._writing_settles: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._flushed = asyncio.Event()

    # -- recovery -----------------------------------------------------------------------------------

    async def load(self, source: LedgerSource) -> int:
        """Take the balances from the database and release every hold that was never settled.

        Call once, before serving. The releases are written before this returns; how many there were.
        """
        if self._balances or self._txns or self._holds:
            raise RuntimeError("load() must run on a fresh ledger, before any change")
        self._balances = dict(await source.balances())
        holds = await source.open_holds()
        for hold in holds:
            self._holds[hold.request_id] = (hold.user_id, hold.amount)
        for hold in holds:
            self.release(hold.request_id, reason=RECOVERED_REASON)
        await self.flush()
        if holds:
            log.warning("released %d credit holds left open by the previous run", len(holds))
        return len(holds)

    @classmethod
    async def recover(
        cls,
        repository: LedgerSource,
        append: AppendBatch,
        *,
        flush_interval: float = 0.05,
        on_drop: OnDrop | None = None,
    ) -> tuple[Ledger, int]:
        """A ledger rebuilt from the database (see `load`), and how many open holds it released."""
        ledger = cls(append, flush_interval=flush_interval, on_drop=on_drop)
        released = await ledger.load(repository)
        return ledger, released

    # -- reads --------------------------------------------------------------------------------------

    def balance(self, user_id: str) -> int:
        """Spendable micro-credits of a user."""
        return self._balances.get(user_account(user_id), 0)

    def held(self, user_id: str) -> int:
        """Micro-credits held for the user's requests in flight."""
        return self._balances.get(hold_account(user_id), 0)

    def account(self, account: str) -> int:
        """The balance of any account (``platform``, ``mint``, ``user:<id>``...)."""
        return self._balances.get(account, 0)

    def balances(self) -> dict[str, int]:
        """A copy of every account's balance."""
        return dict(self._balances)

    def holds_of(self, user_id: str) -> list[tuple[str, int]]:
        """(request id, micro-credits) of the user's open holds; they sum to `held`. O(open holds)."""
        return [(request_id, amount) for request_id, (user, amount) in self._holds.items() if user == user_id]

    @property
    def open_holds(self) -> int:
        return len(self._holds)

    @property
    def pending(self) -> int:
        """Transactions not yet written to the database."""
        return len(self._txns)

    # -- changes ------------------------------------------------------------------------------------

    def grant(self, user_id: str, amount: int, reason: str) -> str:
        """Give a user credits from the mint; the transaction id.

        LedgerLimitError if the credits in circulation would pass `MAX_AMOUNT`.
        """
        if amount <= 0:
            raise ValueError(f"a grant must be positive, not {amount}")
        return self._record("grant", None, reason, ((MINT, -amount), (user_account(user_id), amount)))

    def adjust(self, user_id: str, amount: int, reason: str) -> str:
        """Correct a user's balance by a signed amount against the mint; the transaction id.

        ValueError if it is zero or would take the balance below zero.
        """
        if amount == 0:
            raise ValueError("an adjustment cannot be zero")
        if self.balance(user_id) + amount < 0:
            raise ValueError(f"the adjustment would leave {user_id} below zero")
        return self._record("adjust", None, reason, ((MINT, -amount), (user_account(user_id), amount)))

    def hold(self, request_id: str, user_id: str, amount: int) -> bool:
        """Reserve ``amount`` of the user's credits for a request; False (and no change) if too few.

        Synchronous, so concurrent requests cannot both pass the check on the same credits.
        """
        if amount < 0:
            raise ValueError(f"a hold cannot be negative ({amount})")
        if request_id in self._holds or request_id in self._closed:
            raise ValueError(f"request {request_id} already has a hold")
        if self.balance(user_id) < amount:
            return False
        self._holds[request_id] = (user_id, amount)
        self._record("hold", request_id, None, ((user_account(user_id), -amount), (hold_account(user_id), amount)))
        return True

    def settle(
        self,
        request_id: str,
        charge: int,
        payouts: Iterable[tuple[str, int]] = (),
        receipt: StoredReceipt | None = None,
        *,
        reason: str | None = None,
    ) -> bool:
        """Close the request's hold: pay ``charge`` out of it to ``payouts`` and return the rest to the user.

        ``payouts`` are (account, amount) pairs that sum to ``charge``, e.g. the owner's ``user:<id>``
        and ``platform``. A charge above the hold is capped at the hold (the payouts shrink in
        proportion) and logged. The receipt, if any, is written in the same batch as the settlement.
        False, and no change, if the request has no open hold (never held, or already settled).
        """
        payouts = list(payouts)
        _check_settlement(request_id, charge, payouts, receipt)
        hold = self._holds.get(request_id)
        if hold is None:
            log.debug("settle of %s ignored: no open hold", request_id)
            return False
        user_id, held = hold
        if charge > held:
            log.warning("request %s: charge %d capped at its hold of %d", request_id, charge, held)
            payouts = _scaled(payouts, held, charge)
            charge = held
        entries: dict[str, int] = {hold_account(user_id): -held}
        for acct, amount in payouts:
            entries[acct] = entries.get(acct, 0) + amount
        refund = user_account(user_id)
        entries[refund] = entries.get(refund, 0) + held - charge
        kept = tuple((acct, amount) for acct, amount in entries.items() if amount) or ((hold_account(user_id), 0),)
        self._record("settle", request_id, reason, kept)
        del self._holds[request_id]
        self._pending_settles.add(request_id)
        if receipt is not None:
            self._receipts.append(receipt)
        self._closed[request_id] = None
        if len(self._closed) > self._remember:
            del self._closed[next(iter(self._closed))]
        return True

    def release(self, request_id: str, *, reason: str | None = None) -> bool:
        """Settle with no charge: the whole hold goes back to the user."""
        return self.settle(request_id, 0, reason=reason)

    def _record(
        self, kind: str, request_id: str | None, reason: str | None, entries: tuple[tuple[str, int], ...]
    ) -> str:
        balances = self._balances
        for acct, amount in entries:
            after = balances.get(acct, 0) + amount
            if not (-MAX_AMOUNT <= amount <= MAX_AMOUNT and -MAX_AMOUNT <= after <= MAX_AMOUNT):
                raise LedgerLimitError(
                    f"this {kind} would take {acct} to {after} µcr; the ledger holds at most "
                    f"{MAX_AMOUNT // MICRO:,} credits in any account and in circulation"
                )
        txn = LedgerTxn(self._new_txn_id(), kind, request_id, reason, self._now(), entries)
        for acct, amount in entries:
            balances[acct] = balances.get(acct, 0) + amount
        self._txns.append(txn)
        return txn.id

    # -- durability ---------------------------------------------------------------------------------

    def durable(self, request_id: str) -> bool:
        """The request was settled recently in this process and its settlement is in the database."""
        return (
            request_id in self._closed
            and request_id not in self._pending_settles
            and request_id not in self._writing_settles
        )

    async def settled_durably(self, request_id: str) -> bool:
        """Wait until the request's settlement (and receipt) is in the database; False if it was not settled
        here recently. Waits across failed flushes, so callers bound it with `asyncio.timeout`."""
        while request_id in self._pending_settles or request_id in self._writing_settles:
            await self._flushed.wait()
        return request_id in self._closed

    async def flush(self) -> None:
        """Write everything pending in one database transaction.

        If that fails, write it again one transaction at a time, dropping any the store calls
        unwritable. What could not be written stays pending, in order, and the error is raised.
        """
        async with self._flush_lock:
            if not self._txns and not self._receipts:
                return
            txns, self._txns = self._txns, []
            receipts, self._receipts = self._receipts, []
            self._writing_settles, self._pending_settles = self._pending_settles, set()
            try:
                await self._write(txns, receipts)
            except BaseException as exc:
                # Also on cancellation: the write may or may not have happened, and a retry is idempotent.
                if not isinstance(exc, asyncio.CancelledError):
                    log.exception("writing the ledger failed; %d transactions wait for the next try", len(self._txns))
                self._pending_settles |= self._writing_settles
                raise
            finally:
                self._writing_settles = set()
                flushed, self._flushed = self._flushed, asyncio.Event()
                flushed.set()

    async def _write(self, txns: list[LedgerTxn], receipts: list[StoredReceipt]) -> None:
        """Write a batch; on failure, what was not written is back at the head of the pending lists."""
        try:
            await self._append(txns, receipts)
        except Exception:
            log.warning(
                "writing %d ledger transactions in one batch failed; trying one by one", len(txns), exc_info=True
            )
        except BaseException:
            self._txns[:0] = txns
            self._receipts[:0] = receipts
            raise
        else:
            return
        await self._write_singly(txns, receipts)

    async def _write_singly(self, txns: list[LedgerTxn], receipts: list[StoredReceipt]) -> None:
        """Write each transaction alone, with its receipt, in order, dropping the unwritable ones.

        Any other failure puts what is not written yet back at the head of the pending lists and propagates.
        """
        receipt_of = {r.request_id: r for r in receipts}
        units: list[tuple[LedgerTxn | None, list[StoredReceipt]]] = []
        for txn in txns:
            own = receipt_of.pop(txn.request_id, None) if txn.kind == "settle" and txn.request_id else None
            units.append((txn, [] if own is None else [own]))
        if receipt_of:  # receipts of settlements written earlier (none in practice): on their own, last
            units.append((None, list(receipt_of.values())))
        lost_holds: set[str] = set()
        for index, (unit, own_receipts) in enumerate(units):
            request_id = None if unit is None else unit.request_id
            if unit is not None and request_id in lost_holds:
                self._drop(unit, own_receipts, "the hold it settles was dropped")
                continue
            try:
                await self._append(() if unit is None else (unit,), own_receipts)
            except UnwritableError as exc:
                self._drop(unit, own_receipts, exc)
                if unit is not None and unit.kind == "hold" and request_id is not None:
                    lost_holds.add(request_id)
            except BaseException:
                rest = units[index:]
                self._txns[:0] = [t for t, _ in rest if t is not None]
                self._receipts[:0] = [r for _, rs in rest for r in rs]
                raise
            else:
                if unit is not None and unit.kind == "settle" and request_id is not None:
                    self._writing_settles.discard(request_id)

    def _drop(self, txn: LedgerTxn | None, receipts: list[StoredReceipt], why: object) -> None:
        """Forget a transaction (and its receipt) the database will never hold, and undo it in memory."""
        if txn is None:
            log.error("dropped %d receipts that can never be written: %s", len(receipts), why)
            return
        self.dropped += 1
        log.error(
            "dropped ledger transaction %s (%s, request %s, reason %r, entries %s%s): it can never be written: %s",
            txn.id,
            txn.kind,
            txn.request_id,
            txn.reason,
            txn.entries,
            ", with its receipt" if receipts else "",
            why,
        )
        balances = self._balances
        for acct, amount in txn.entries:
            balances[acct] = balances.get(acct, 0) - amount
        request_id = txn.request_id
        if request_id is not None:
            if txn.kind == "hold":
                # Its settlement would take from a hold the database never had: the request goes free.
                self._holds.pop(request_id, None)
            elif txn.kind == "settle":
                # The hold stays in the database, where the next start releases it (as after a crash).
                self._writing_settles.discard(request_id)
                self._closed.pop(request_id, None)
        if self._on_drop is not None:
            self._on_drop(txn)

    async def run(self) -> None:
        """Flush on a fixed cadence until cancelled (group commit)."""
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await uncut(self.flush())  # a shutdown waits for the write under way, then `close` writes the rest
            except Exception:  # noqa: BLE001 - logged in flush; the batch is kept and the next tick retries
                await asyncio.sleep(self._flush_interval)

    async def close(self) -> None:
        """Write the rest (raises if the database refuses it: the caller decides whether to retry)."""
        await self.flush()


def _check_settlement(
    request_id: str, charge: int, payouts: list[tuple[str, int]], receipt: StoredReceipt | None
) -> None:
    if charge < 0:
        raise ValueError(f"a charge cannot be negative ({charge})")
    for acct, amount in payouts:
        if amount < 0:
            raise ValueError(f"a payout cannot be negative ({acct}: {amount})")
        if acct == MINT or acct.startswith(HOLD_PREFIX):
            raise ValueError(f"cannot pay out to {acct}")
    if sum(amount for _, amount in payouts) != charge:
        raise ValueError(f"payouts sum to {sum(a for _, a in payouts)}, not the charge {charge}")
    if receipt is not None and receipt.request_id != request_id:
        raise ValueError(f"the receipt is for {receipt.request_id}, not {request_id}")


def _scaled(payouts: list[tuple[str, int]], cap: int, charge: int) -> list[tuple[str, int]]:
    """Payouts that sum to ``charge`` shrunk in proportion to sum to ``cap`` (rounding goes to the first)."""
    scaled = [(acct, amount * cap // charge) for acct, amount in payouts]
    short = cap - sum(amount for _, amount in scaled)
    if scaled and short:
        acct, amount = scaled[0]
        scaled[0] = (acct, amount + short)
    return scaled
