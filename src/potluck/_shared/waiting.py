"""Waiting for an event with a deadline, the one way the hub and the agent do it; and waiting out a write that
a cancellation must not cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set; False if ``timeout`` seconds passed first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def uncut(write: Awaitable[T]) -> T:
    """Await ``write`` to its end even if the caller is cancelled meanwhile; the cancellation is raised after.

    For a background loop's database write: the hub's shutdown cancels its loops, and a write cancelled in
    the middle of a transaction can leave the database's write lock held (SQLite: every later writer waits
    out its busy timeout, then fails), where the shutdown is about to write what is still pending."""
    task = asyncio.ensure_future(write)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # noqa: BLE001, S112 - the write's own failure: `task.result()` raises it below
            continue
    if cancelled:
        if not task.cancelled():
            task.exception()  # seen: the cancellation is what the caller gets
        raise asyncio.CancelledError
    return task.result()
