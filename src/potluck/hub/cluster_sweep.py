"""The sweeper: a dead replica's open credit holds go back to their users.

A replica that dies (its lease expires) cannot settle the holds it placed. The first replica that finds
the lease gone releases them (`SharedHolds.open_holds(replica_id=...)`, then `release`), before it
forgets the replica in Redis, so a sweep that fails (the database is down) is tried again at the next
view refresh. A release races the dead replica's own late settlement to exactly one (store/holds.py),
and two replicas sweeping at once release each hold once.
"""

from __future__ import annotations

import logging

from potluck._shared.clock import Clock
from potluck._shared.ids import new_id
from potluck.store.holds import SharedHolds

log = logging.getLogger(__name__)


async def sweep_holds(holds: SharedHolds, clock: Clock, replica_id: str) -> int:
    """Release every open hold ``replica_id`` placed; how many this call released."""
    released = 0
    for hold in await holds.open_holds(replica_id=replica_id):
        if await holds.release(new_id("txn"), hold.request_id, clock.wall(), f"replica {replica_id} died"):
            released += 1
    if released:
        log.warning("released %d open credit holds of dead replica %s", released, replica_id)
    return released
