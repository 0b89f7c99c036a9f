"""`wait_set`: True once the event is set, False when the timeout comes first."""

from __future__ import annotations

import asyncio

import pytest

from potluck._shared.waiting import uncut, wait_set


async def test_true_when_the_event_is_set_before_the_timeout() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_set(event, 5.0)


async def test_false_when_the_timeout_comes_first() -> None:
    assert not await wait_set(asyncio.Event(), 0.0)


# -- uncut: a write the caller's cancellation does not cut short -------------------------------------------------


async def test_uncut_passes_the_writes_result_and_its_failure_through() -> None:
    async def ok() -> int:
        return 7

    async def failing() -> int:
        raise ValueError("refused")

    assert await uncut(ok()) == 7
    with pytest.raises(ValueError, match="refused"):
        await uncut(failing())


async def test_a_cancelled_caller_waits_for_the_write_to_end_then_is_cancelled() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def write() -> None:
        started.set()
        await release.wait()
        finished.append("written")

    caller = asyncio.create_task(uncut(write()))
    await started.wait()
    caller.cancel()
    caller.cancel()  # a second cancel does not cut it short either
    await asyncio.sleep(0)
    assert not caller.done()
    assert finished == []

    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["written"]


async def test_a_cancelled_caller_of_a_write_that_fails_is_cancelled() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        started.set()
        await release.wait()
        raise OSError("database is locked")

    caller = asyncio.create_task(uncut(write()))
    await started.wait()
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
