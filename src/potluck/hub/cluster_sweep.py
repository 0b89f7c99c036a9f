"""The sweeper: a dead replica's open credit holds go back to their users, and its usage records are repaired.

A replica that dies (its lease expires) cannot settle the holds it placed, nor write the usage records it
still had in memory. The first replica that finds the lease gone:

1. releases its open holds (`SharedHolds.open_holds(replica_id=...)`, then `release`). A release races the
   dead replica's own late settlement to exactly one (store/holds.py), and two replicas sweeping at once
   release each hold once;
2. makes its usage records agree with the ledger (`UsageRepository.reconcile_with_receipts`, scoped to the
   requests it held): a record charged for a settlement that never reached the database is set back to
   zero, and a receipt whose record was lost gets one rebuilt from it. Both are idempotent.

Both run before the replica is forgotten in Redis, so a sweep that fails (the database is down) is tried
again at the next view refresh.
"""

from __future__ import annotations

import logging

from potluck._shared.clock import Clock
from potluck._shared.ids import new_id
from potluck.store.holds import SharedHolds
from potluck.store.usage import UsageRepository

log = logging.getLogger(__name__)


async def sweep_dead_replica(
    holds: SharedHolds, usage: UsageRepository, clock: Clock, replica_id: str
) -> tuple[int, int, int]:
    """Release every open hold ``replica_id`` placed and repair its usage records: (released, zeroed, rebuilt)
    by this call."""
    released = 0
    for hold in await holds.open_holds(replica_id=replica_id):
        if await holds.release(new_id("txn"), hold.request_id, clock.wall(), f"replica {replica_id} died"):
            released += 1
    zeroed, rebuilt = await usage.reconcile_with_receipts(replica_id)
    if released or zeroed or rebuilt:
        log.warning(
            "dead replica %s: released %d open credit holds, unbilled %d usage records, rebuilt %d from receipts",
            replica_id,
            released,
            zeroed,
            rebuilt,
        )
    return released, zeroed, rebuilt
