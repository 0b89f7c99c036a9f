"""Usage metering: one record per client request, written in batches off the hot path.

`UsageJournal.record` is a list append. A background task commits whatever accumulated every
``flush_interval`` seconds in one transaction (group commit), and `close` flushes the rest, so a
clean shutdown loses nothing. Credits and holds (the accounting issue) build on these records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from potluck._shared.waiting import uncut
from potluck.store.usage import UsageRecord

log = logging.getLogger(__name__)


class UsageJournal:
    def __init__(
        self,
        append: Callable[[list[UsageRecord]], Awaitable[None]],
        *,
        flush_interval: float = 0.25,
        max_pending: int = 100_000,
        on_drop: Callable[[], object] = lambda: None,
    ) -> None:
        self._append = append
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._on_drop = on_drop
        self._pending: list[UsageRecord] = []
        self._wakeup = asyncio.Event()
        self._flushing = asyncio.Lock()
        self.dropped = 0
        self._dropping = False

    def record(self, record: UsageRecord) -> None:
        if len(self._pending) >= self._max_pending:
            # The database is far behind (or away); keep serving, count what could not be kept, and say so once
            # per overflow: the receipts of charged requests are kept by the hold book, their records are not.
            self.dropped += 1
            self._on_drop()
            if not self._dropping:
                self._dropping = True
                log.error("usage journal full (%d records not written yet): dropping new records", self._max_pending)
            return
        self._dropping = False
        self._pending.append(record)

    async def flush(self) -> None:
        """Write what is pending; on return, every record made before the call is in the database.

        One flush at a time: a reader that flushes before a query (reports, request history) must
        also wait for the batch the background task took a moment earlier and is still writing.
        """
        async with self._flushing:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                await self._append(batch)
            except BaseException as exc:
                # Also when a reader's flush is cancelled (its client hung up): whether the batch went in is then
                # unknown, and writing it again skips the records already stored.
                if not isinstance(exc, asyncio.CancelledError):
                    log.exception("writing %d usage records failed; will retry", len(batch))
                self._pending[:0] = batch
                raise

    async def run(self) -> None:
        """Flush on a fixed cadence until cancelled."""
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await uncut(self.flush())  # a shutdown waits for the write under way, then `close` writes the rest
            except Exception:  # noqa: BLE001 - logged in flush; the next tick retries
                await asyncio.sleep(self._flush_interval)

    async def close(self) -> None:
        await self.flush()
