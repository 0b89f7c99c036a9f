"""`wait_set`: True once the event is set, False when the timeout comes first."""

from __future__ import annotations

import asyncio

from potluck._shared.waiting import wait_set


async def test_true_when_the_event_is_set_before_the_timeout() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_set(event, 5.0)


async def test_false_when_the_timeout_comes_first() -> None:
    assert not await wait_set(asyncio.Event(), 0.0)
