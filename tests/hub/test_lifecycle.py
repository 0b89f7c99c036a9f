"""The hub's background loops: owned by one TaskGroup, and a crash stops the hub loudly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from potluck.hub.lifecycle import Lifecycle


async def test_a_crashed_loop_cancels_the_others_and_signals_stop(caplog: pytest.LogCaptureFixture) -> None:
    lifecycle = Lifecycle()
    survivor_cancelled = asyncio.Event()
    crash = asyncio.Event()

    async def survivor() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            survivor_cancelled.set()
            raise

    async def crasher() -> None:
        await crash.wait()
        raise RuntimeError("ledger writer broke")

    lifecycle.start({"survivor": survivor, "crasher": crasher})
    crash.set()
    async with asyncio.timeout(2):
        await lifecycle.stopped.wait()
    assert survivor_cancelled.is_set()
    assert isinstance(lifecycle.crashed, BaseExceptionGroup)
    assert "ledger writer broke" in caplog.text
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    await lifecycle.close()


async def test_close_cancels_running_loops_without_reporting_a_crash() -> None:
    lifecycle = Lifecycle()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    lifecycle.start({"forever": forever})
    async with asyncio.timeout(2):
        await started.wait()
        await lifecycle.close()
    assert lifecycle.crashed is None
    assert not lifecycle.stopped.is_set()


async def test_loops_cannot_be_started_twice() -> None:
    lifecycle = Lifecycle()

    async def idle() -> None:
        await asyncio.Event().wait()

    lifecycle.start({"idle": idle})
    with pytest.raises(RuntimeError, match="already running"):
        lifecycle.start({"idle": idle})
    await lifecycle.close()
