"""The agent never sends a stream more DATA than the hub's credit allows: a chunk is split at the window's edge."""

from __future__ import annotations

import asyncio
from typing import cast

from potluck.agent.connection import HubConnection, _Outgoing
from potluck.protocol.agent import iter_frames


class _Frames:
    """Stands in for the connection: only `send` is used by a stream's sink."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.payloads.extend(f.payload for f in iter_frames(frame))


async def test_a_chunk_over_the_credit_left_is_split_and_the_rest_waits_for_credit() -> None:
    frames = _Frames()
    sink = _Outgoing(cast("HubConnection", frames), 1, 10)
    await sink.data(b"a" * 6)
    sending = asyncio.create_task(sink.data(b"b" * 9))
    await asyncio.sleep(0)  # one loop turn: the sink sends what the window allows, then must wait
    assert frames.payloads == [b"a" * 6, b"b" * 4]
    assert not sending.done()
    sink.grant(3)
    await asyncio.sleep(0)
    assert frames.payloads[-1] == b"b" * 3
    assert not sending.done()
    sink.grant(100)
    async with asyncio.timeout(2):
        await sending
    assert frames.payloads == [b"a" * 6, b"b" * 4, b"b" * 3, b"b" * 2]
    assert sum(map(len, frames.payloads)) == 10 + 3 + 2  # never more than the window plus what was granted
