"""Hub memory under rogue agents is bounded by the credit windows, not by what the agents send.

Ten rogue agents each push 100 MiB, ignoring every credit window, at a client that reads nothing. The
hub resets each stream once it passes its window and drops the rest unread; its resident memory, read
with psutil while the floods run, must stay within 50 MiB of where it was before. Each client then
reads what it was sent: the start of its stream and a terminal error event, never ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import aiohttp
import msgspec
import psutil
import pytest

from potluck.protocol.agent import CancelReason
from testing.processes import HubProcess
from testing.rogue_agent import RogueAgent
from tests.e2e.conftest import FAST_HUB_ARGS

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

AGENTS = 10
PUSH = 100 << 20
BOUND = 50 << 20
EVENT = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path_factory.mktemp("memory-hub"), *FAST_HUB_ARGS)
    yield hub
    hub.stop()


async def _silent_client(hub: HubProcess, key: str, model: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends a stream request and then reads nothing (until the test lets it)."""
    host, port = hub.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = msgspec.json.encode({"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    return reader, writer


async def _peak_rss(process: psutil.Process, done: asyncio.Event) -> int:
    peak = process.memory_info().rss
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        # A sampling period, not a synchronisation: the floods run meanwhile.
        await asyncio.sleep(0.02)
    return max(peak, process.memory_info().rss)


async def test_hub_memory_stays_bounded_under_ten_rogue_agents_pushing_100_mib_each(hub: HubProcess) -> None:
    key = hub.create_key("memory")
    process = psutil.Process(hub.proc.pid)
    async with aiohttp.ClientSession() as http:
        agents = []
        for i in range(AGENTS):
            name = f"flood-{i}-{uuid.uuid4().hex[:6]}"
            agent = RogueAgent(http, hub.url, hub.create_agent_token(name), [f"flood-{i}"], name)
            agents.append(await agent.__aenter__())
        try:
            clients = [await _silent_client(hub, key, f"flood-{i}") for i in range(AGENTS)]
            streams = [await agent.next_request() for agent in agents]
            for agent, (sid, _request, _body) in zip(agents, streams, strict=True):
                await agent.head(sid, 200, [("Content-Type", "text/event-stream")])
                await agent.data(sid, EVENT)
            before = process.memory_info().rss
            done = asyncio.Event()
            sampler = asyncio.create_task(_peak_rss(process, done))
            pushed = await asyncio.gather(
                *(agent.flood(sid, PUSH) for agent, (sid, _r, _b) in zip(agents, streams, strict=True))
            )
            cancels = [await agent.wait_cancel(sid) for agent, (sid, _r, _b) in zip(agents, streams, strict=True)]
            done.set()
            peak = await sampler
            answers = [await asyncio.wait_for(reader.read(-1), 10) for reader, _writer in clients]
            for _reader, writer in clients:
                writer.close()
        finally:
            for agent in agents:
                await agent.__aexit__(None, None, None)
    log.info("hub RSS before the floods %.1f MiB, peak %.1f MiB", before / 2**20, peak / 2**20)
    assert pushed == [PUSH] * AGENTS  # every rogue got its 100 MiB out: the hub read and dropped them
    assert all(cancel.reason == CancelReason.PROTOCOL_ERROR for cancel in cancels)
    assert peak - before < BOUND
    for answer in answers:
        # A 200 stream ended by an error event, or a 502 when the reset came before the hub took the first event.
        assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 502"))
        assert b'"code":"upstream_error"' in answer
        assert b"[DONE]" not in answer
        assert len(answer) < 1 << 20
