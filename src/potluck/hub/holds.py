"""Where credit holds are decided: in this process (one hub) or in the shared database (hub replicas).

`HoldBook` is the strategy the accounting service talks to:

- `LocalHoldBook` (SQLite, one hub process, the default) wraps the in-memory `Ledger`: a hold is a
  dictionary check, with no database round trip, and the ledger is written behind (hub/ledger.py).
- `SharedHoldBook` (PostgreSQL, any number of replicas) asks the database for every hold
  (store/holds.py: one conditional UPDATE, one round trip), so no two replicas can spend the same
  credits, and writes settlements behind, in order, each one exactly once (the database refuses a
  second settle of a request, whoever sends it). A settlement that cannot be written yet (the
  database is away) is kept and retried; one lost with its replica is the dead-replica sweeper's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from potluck._shared.ids import new_id
from potluck.hub.errors import OverloadedError
from potluck.hub.ledger import RECOVERED_REASON, Ledger
from potluck.store.errors import ConflictError, StoreError
from potluck.store.holds import SharedHolds
from potluck.store.ledger import MINT, LedgerTxn, StoredReceipt, user_account

log = logging.getLogger(__name__)


class HoldBook(Protocol):
    """Credit holds, settlements and grants, in micro-credits (see the module docstring)."""

    async def hold(self, request_id: str, user_id: str, amount: int) -> bool:
        """Reserve ``amount`` of the user's credits for the request; False (no change) if they have too few."""
        ...

    def settle(
        self, request_id: str, charge: int, payouts: Sequence[tuple[str, int]], receipt: StoredReceipt | None = None
    ) -> None:
        """Close the request's hold: ``payouts`` (summing to ``charge``) out of it, the rest back. Never waits."""
        ...

    def release(self, request_id: str) -> None:
        """Close the request's hold with no charge. Never waits."""
        ...

    async def balance(self, user_id: str) -> tuple[int, int]:
        """(spendable, held) micro-credits of the user."""
        ...

    async def grant(self, user_id: str, amount: int, reason: str) -> str:
        """Give the user credits from the mint; the transaction id."""
        ...

    async def settled_durably(self, request_id: str) -> bool:
        """Wait until the request's settlement (and receipt) is in the database; False if it was not settled
        here recently. Callers bound it with `asyncio.timeout`."""
        ...

    async def run(self) -> None:
        """Write behind until cancelled."""
        ...

    async def close(self) -> None:
        """Write what is left (raises if the database refuses it)."""
        ...


class LocalHoldBook:
    """The single-process book: the in-memory ledger decides (no database round trip per hold)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def hold(self, request_id: str, user_id: str, amount: int) -> bool:
        return self.ledger.hold(request_id, user_id, amount)

    def settle(
        self, request_id: str, charge: int, payouts: Sequence[tuple[str, int]], receipt: StoredReceipt | None = None
    ) -> None:
        self.ledger.settle(request_id, charge, payouts, receipt)

    def release(self, request_id: str) -> None:
        self.ledger.release(request_id)

    async def balance(self, user_id: str) -> tuple[int, int]:
        return self.ledger.balance(user_id), self.ledger.held(user_id)

    async def grant(self, user_id: str, amount: int, reason: str) -> str:
        return self.ledger.grant(user_id, amount, reason)

    async def settled_durably(self, request_id: str) -> bool:
        return await self.ledger.settled_durably(request_id)

    async def run(self) -> None:
        await self.ledger.run()

    async def close(self) -> None:
        await self.ledger.close()


@dataclass(frozen=True, slots=True)
class _Settlement:
    txn_id: str
    """Fixed when the settlement is decided, so a retry is the same transaction."""
    request_id: str
    charge: int
    payouts: tuple[tuple[str, int], ...]
    receipt: StoredReceipt | None
    at: datetime
    held: tuple[str, int] | None
    """(user_id, amount) of the hold when this replica placed it (lets the database settle in one statement)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SharedHoldBook:
    """The replicas' book: the shared database decides every hold; settlements are written behind."""

    def __init__(
        self,
        holds: SharedHolds,
        *,
        replica_id: str | None = None,
        retry_interval: float = 0.5,
        new_txn_id: Callable[[], str] = lambda: new_id("txn"),
        now: Callable[[], datetime] = _utc_now,
        remember_settled: int = 100_000,
    ) -> None:
        self._holds = holds
        self.replica_id = replica_id
        """Stored with each hold, so a sweeper can release this replica's holds if it dies."""
        self._retry_interval = retry_interval
        self._new_txn_id = new_txn_id
        self._now = now
        self._remember = remember_settled
        self._placed: dict[str, tuple[str, int]] = {}
        """request_id -> (user_id, amount) of the holds this replica placed and has not settled."""
        self._pending: deque[_Settlement] = deque()
        self._pending_ids: set[str] = set()
        self._settled: dict[str, None] = {}
        """Recently written settlements, oldest first (bounded), for `settled_durably`."""
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._write_lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Settlements not yet written."""
        return len(self._pending)

    async def recover(self) -> int:
        """Release the open holds an earlier run of this replica left (a crash); how many. Holds of other
        replicas are left alone: they may be serving them. Call once, before serving."""
        released = 0
        for hold in await self._holds.open_holds(replica_id=self.replica_id):
            released += await self._holds.release(self._new_txn_id(), hold.request_id, self._now(), RECOVERED_REASON)
        return released

    async def hold(self, request_id: str, user_id: str, amount: int) -> bool:
        try:
            placed = await self._holds.hold(
                self._new_txn_id(), request_id, user_id, amount, self._now(), self.replica_id
            )
        except ConflictError as exc:
            raise ValueError(f"request {request_id} already has a hold") from exc
        except StoreError as exc:
            log.warning("placing a credit hold failed: %s", exc)
            raise OverloadedError(
                "The credit ledger cannot be reached right now; retry shortly", retry_after=1
            ) from exc
        if placed:
            self._placed[request_id] = (user_id, amount)
        return placed

    def settle(
        self, request_id: str, charge: int, payouts: Sequence[tuple[str, int]], receipt: StoredReceipt | None = None
    ) -> None:
        if request_id in self._pending_ids:
            log.debug("settle of %s ignored: already settling", request_id)
            return
        held = self._placed.pop(request_id, None)
        self._pending.append(
            _Settlement(self._new_txn_id(), request_id, charge, tuple(payouts), receipt, self._now(), held)
        )
        self._pending_ids.add(request_id)
        self._wake.set()

    def release(self, request_id: str) -> None:
        self.settle(request_id, 0, ())

    async def balance(self, user_id: str) -> tuple[int, int]:
        if self._pending:  # read this replica's own settlements back, as the local book does
            await self.flush()
        return await self._holds.balance(user_id)

    async def grant(self, user_id: str, amount: int, reason: str) -> str:
        if amount <= 0:
            raise ValueError(f"a grant must be positive, not {amount}")
        txn = LedgerTxn(
            self._new_txn_id(), "grant", None, reason, self._now(), ((MINT, -amount), (user_account(user_id), amount))
        )
        await self._holds.record(txn)
        return txn.id

    async def settled_durably(self, request_id: str) -> bool:
        while request_id in self._pending_ids:
            await self._written.wait()
        return request_id in self._settled

    async def flush(self) -> None:
        """Write every pending settlement, in order; on a failure the rest stay pending and it raises."""
        async with self._write_lock:
            try:
                while self._pending:
                    item = self._pending[0]
                    try:
                        settled = await self._holds.settle(
                            item.txn_id,
                            item.request_id,
                            item.charge,
                            item.payouts,
                            item.at,
                            item.receipt,
                            held=item.held,
                        )
                    except ValueError:  # UnwritableError too: the same write would fail forever
                        log.exception("dropped the settlement of %s: it can never be written", item.request_id)
                        settled = True
                    if not settled:
                        log.info("request %s was settled already (or never held): nothing to do", item.request_id)
                    self._pending.popleft()
                    self._pending_ids.discard(item.request_id)
                    self._settled[item.request_id] = None
                    if len(self._settled) > self._remember:
                        del self._settled[next(iter(self._settled))]
            finally:
                written, self._written = self._written, asyncio.Event()
                written.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the settlement stays pending; retried after a pause
                log.warning("writing %d settlements failed; retrying", len(self._pending), exc_info=True)
                await asyncio.sleep(self._retry_interval)
                self._wake.set()

    async def close(self) -> None:
        await self.flush()
