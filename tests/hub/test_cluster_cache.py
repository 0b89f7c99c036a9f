"""Cluster mode: a cache reload never puts back what a change made at this replica replaced.

A reload reads the database table by table; a change that commits here meanwhile (an invite redeemed, a key
revoked) may be missing from what it read. Swapping that in would undo the change in this replica's memory
until the next reload: a membership gone (404s), a revoked key that works again. Such a reload is discarded
and read again once the change is done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from potluck._shared.clock import ManualClock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.claims import ClaimView
from potluck.hub.cluster import Cluster
from potluck.hub.cluster_cache import reload_shared
from potluck.hub.keys import Keys
from potluck.hub.ledger import Ledger
from potluck.hub.metering import UsageJournal
from potluck.hub.receipts import HubSigner
from potluck.hub.registry import Registry
from potluck.hub.scheduler import Scheduler
from potluck.store.database import Store
from potluck.store.engine import sqlite_url


class Reads:
    """Stands for `reload_shared`: each call is one read of the database; the test decides when it ends."""

    def __init__(self) -> None:
        self.started = asyncio.Queue[asyncio.Future[None]]()
        self.applied: list[bool] = []

    async def __call__(self, fresh: Callable[[], bool]) -> bool:
        done = asyncio.get_running_loop().create_future()
        await self.started.put(done)
        await done
        self.applied.append(fresh())
        return self.applied[-1]


def _cluster(reads: Reads) -> Cluster:
    clock = ManualClock()
    registry = Registry(Scheduler(clock), clock, heartbeat_timeout=1.5)
    # No Redis is reached: only the reload loop runs.
    return Cluster(
        redis_url="redis://127.0.0.1:9", registry=registry, clock=clock, url="", lease_s=1.5, credit_window=1024,
        on_invalidate=reads,
    )  # fmt: skip


async def test_a_reload_overlapping_a_change_here_is_read_again_after_it() -> None:
    reads = Reads()
    cluster = _cluster(reads)
    loop = asyncio.create_task(cluster.reload_caches())
    try:
        cluster.want_reload()  # another replica changed something
        first = await reads.started.get()
        with cluster.changing():  # an admin call here commits while the read runs
            first.set_result(None)
            # The read ends inside the change: discarded, and no new read starts before the change is done.
            await asyncio.wait_for(_until(lambda: reads.applied == [False]), 5)
            assert reads.started.empty()
        second = await asyncio.wait_for(reads.started.get(), 5)
        second.set_result(None)
        await asyncio.wait_for(_until(lambda: reads.applied == [False, True]), 5)

        # A change that begins and ends within one read discards it too.
        cluster.want_reload()
        third = await reads.started.get()
        with cluster.changing():
            pass
        third.set_result(None)
        fourth = await asyncio.wait_for(reads.started.get(), 5)
        fourth.set_result(None)
        await asyncio.wait_for(_until(lambda: reads.applied == [False, True, False, True]), 5)
        assert reads.started.empty()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0)


async def test_a_discarded_read_replaces_nothing(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path / "hub.db"))
    try:
        clock = ManualClock()
        access = AccessMap("admin", "default")
        access.user_groups = {"u-made-here": {"g-joined-here"}}  # memory a change here updated, newer than the read
        scheduler = Scheduler(clock)
        registry = Registry(scheduler, clock, heartbeat_timeout=1.5, access=access)

        async def discard(txns: object, receipts: object) -> None:
            return None

        accounting = Accounting(Ledger(discard), HubSigner.generate(), access, scheduler, clock=clock)
        journal = UsageJournal(store.usage.append)
        keys = await Keys.load(store, access, journal)
        args = (store, access, keys, accounting, registry, ClaimView())

        assert await reload_shared(*args, lambda: False) is False
        assert access.user_groups == {"u-made-here": {"g-joined-here"}}
        assert await reload_shared(*args, lambda: True) is True
        assert "u-made-here" not in access.user_groups  # the database's picture, now that nothing overlapped
    finally:
        await store.close()
