"""The usage journal: a flush returns only once every record made before it is written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

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
