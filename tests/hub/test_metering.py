"""The usage journal: a flush returns only once every record made before it is written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from potluck.hub.metering import UsageJournal
from potluck.store.usage import UsageRecord


def record(n: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{n}",
        key_id=None,
        agent_id=None,
        model="m",
        path="/v1/chat/completions",
        outcome="ok",
        status=200,
        prompt_tokens=1,
        completion_tokens=1,
        queue_ms=0,
        ttft_ms=None,
        total_ms=1,
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


async def test_a_flush_waits_for_the_batch_another_flush_is_writing() -> None:
    written: list[str] = []
    writing, release = asyncio.Event(), asyncio.Event()

    async def append(batch: list[UsageRecord]) -> None:
        writing.set()
        await release.wait()
        written.extend(r.request_id for r in batch)

    journal = UsageJournal(append)
    journal.record(record(1))
    async with asyncio.timeout(2):
        background = asyncio.create_task(journal.flush())  # as the journal's own task does
        await writing.wait()
        reader = asyncio.create_task(journal.flush())  # as a report does before its query
        await asyncio.sleep(0)  # one loop turn: without the wait, this flush has already returned
        assert not reader.done(), "the reader's flush returned while the batch was still being written"
        release.set()
        await reader
        assert written == ["req_1"]
        await background


async def test_a_flush_cancelled_mid_write_keeps_its_batch_for_the_next() -> None:
    """A report's flush whose client hung up: the batch stays pending (the store skips what went in already)."""
    written: list[str] = []
    writing = asyncio.Event()
    calls = 0

    async def append(batch: list[UsageRecord]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writing.set()
            await asyncio.Event().wait()  # never ends: cancelled
        written.extend(r.request_id for r in batch)

    journal = UsageJournal(append)
    journal.record(record(1))
    reader = asyncio.create_task(journal.flush())
    async with asyncio.timeout(2):
        await writing.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    await journal.close()

    assert written == ["req_1"]


async def test_records_wait_for_a_database_that_is_away_and_an_overflow_is_counted_and_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[str] = []
    away = True

    async def append(batch: list[UsageRecord]) -> None:
        if away:
            raise ConnectionRefusedError("the database is restarting")
        written.extend(r.request_id for r in batch)

    drops: list[None] = []
    journal = UsageJournal(append, max_pending=3, on_drop=lambda: drops.append(None))
    journal.record(record(1))
    journal.record(record(2))
    with pytest.raises(ConnectionRefusedError):
        await journal.flush()
    for n in (3, 4, 5):  # the batch that failed is kept: only 3 fits, 4 and 5 are dropped
        journal.record(record(n))
    assert (journal.dropped, len(drops)) == (2, 2)
    assert len([r for r in caplog.records if "dropping new records" in r.getMessage()]) == 1

    away = False
    await journal.flush()
    assert written == ["req_1", "req_2", "req_3"]
