"""Registry.poll: a request that waited for a hot slot as long as a load takes gets a cold one."""

from __future__ import annotations

import asyncio

from potluck.hub.scheduler import Want
from potluck.protocol.agent import ModelInfo, ModelsMessage
from testing.memory_channel import HubCore

GB = 1_000_000_000


async def test_poll_hands_a_request_that_waited_out_its_patience_a_cold_slot() -> None:
    hub = HubCore(queue_timeout=60.0)
    hot, _ = hub.attach("hot", max_concurrency=1)
    cold, _ = hub.attach("cold", max_concurrency=1)
    hub.registry.on_models(cold, ModelsMessage(models=[ModelInfo("m", hot=False, size_bytes=20 * GB)], backends=[]))
    first = await hub.registry.acquire(Want(("m",)))
    assert first.session is hot
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    async with asyncio.timeout(2):
        while hub.scheduler.queue_depth < 1:
            await asyncio.sleep(0)
    hub.registry.poll()  # grants in this very turn, if at all
    assert hub.scheduler.queue_depth == 1  # a hot slot is expected within seconds; loading takes 20
    assert not waiter.done()
    hub.clock.advance(20)
    hub.registry.poll()
    async with asyncio.timeout(2):
        slot = await waiter
    assert slot.session is cold
    assert slot.placement.hot is False
    assert slot.queued_s == 20.0
