"""The hub's side of the credit window and of cancels, enforced whatever the agent does (memory channels)."""

from __future__ import annotations

import asyncio

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.errors import UpstreamError
from potluck.hub.session import AgentSession
from potluck.hub.stream import Stream
from potluck.protocol.agent import (
    CancelMessage,
    CancelReason,
    EndMessage,
    FrameType,
    HeadMessage,
    RequestMessage,
    Usage,
)
from testing.memory_channel import HubCore, MemoryChannel, make_session, send_data, send_end, send_head

REQUEST = RequestMessage("req_x", "POST", "/v1/chat/completions", "m", stream=True)
WINDOW = 1024


def open_stream() -> tuple[AgentSession, MemoryChannel, Stream]:
    session, channel = make_session("a", ManualClock(), credit_window=WINDOW)
    return session, channel, session.open_stream(REQUEST, b"{}")


def cancels(channel: MemoryChannel) -> list[CancelMessage]:
    return [m for m in channel.messages(FrameType.CANCEL) if isinstance(m, CancelMessage)]


async def test_data_within_the_window_is_kept() -> None:
    session, channel, stream = open_stream()
    send_head(session, stream.stream_id)
    send_data(session, stream.stream_id, b"x" * WINDOW)
    assert stream.failure is None
    assert not cancels(channel)
    async with asyncio.timeout(2):
        assert await stream.read() == b"x" * WINDOW


async def test_data_past_the_window_resets_the_stream() -> None:
    session, channel, stream = open_stream()
    send_head(session, stream.stream_id)
    send_data(session, stream.stream_id, b"x" * (WINDOW - 1))
    send_data(session, stream.stream_id, b"xx")
    (cancel,) = cancels(channel)
    assert cancel.reason == CancelReason.PROTOCOL_ERROR
    assert "credit window" in cancel.detail
    assert stream.stream_id not in session.streams  # later frames for it are dropped
    assert session.protocol_errors == 1
    assert stream.bytes_received == 0  # what it buffered is dropped, never relayed
    send_data(session, stream.stream_id, b"y" * (10 * WINDOW))
    with pytest.raises(UpstreamError, match="credit window"):
        await stream.read()


async def test_credit_granted_widens_what_the_agent_may_send() -> None:
    session, channel, stream = open_stream()
    send_head(session, stream.stream_id)
    send_data(session, stream.stream_id, b"x" * WINDOW)
    async with asyncio.timeout(2):
        data = await stream.read()
    assert data is not None
    stream.consumed(len(data))  # the client took it: the hub grants a window more
    send_data(session, stream.stream_id, b"x" * WINDOW)
    assert not cancels(channel)
    send_data(session, stream.stream_id, b"x")
    assert len(cancels(channel)) == 1
    assert isinstance(stream.failure, UpstreamError)


async def test_a_cancelled_end_the_hub_never_asked_for_fails_the_stream() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    send_data(session, stream.stream_id, b"data: {}\n\n")
    send_end(session, stream.stream_id, EndMessage("req_x", cancelled=True, usage=Usage(1, 1, 2)))
    async with asyncio.timeout(2):
        assert await stream.read() == b"data: {}\n\n"
        with pytest.raises(UpstreamError, match="cancelled the request on its own"):
            await stream.read()


async def test_a_cancelled_end_after_the_hubs_cancel_is_a_clean_end() -> None:
    session, channel, stream = open_stream()
    send_head(session, stream.stream_id)
    ends: list[EndMessage | None] = []
    stream.after_cancel = ends.append
    session.close_stream(stream, cancel_reason=CancelReason.CLIENT_DISCONNECT)
    assert cancels(channel)[0].reason == CancelReason.CLIENT_DISCONNECT
    send_end(session, stream.stream_id, EndMessage("req_x", cancelled=True, usage=Usage(1, 1, 2)))
    assert stream.failure is None
    assert ends == [EndMessage("req_x", cancelled=True, usage=Usage(1, 1, 2))]


async def test_a_malformed_head_resets_the_stream_and_fails_its_head() -> None:
    session, channel, stream = open_stream()
    session.on_frame(FrameType.HEAD, stream.stream_id, HeadMessage(200, [("Content-Type", "text/html")]), b"")
    assert cancels(channel)[0].reason == CancelReason.PROTOCOL_ERROR
    with pytest.raises(UpstreamError, match="content type"):
        await stream.head()


async def test_the_hub_counts_resets_for_its_metrics_past_the_agents_connection() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", credit_window=WINDOW)
    for _ in range(2):
        stream = session.open_stream(REQUEST, b"{}")
        send_head(session, stream.stream_id)
        send_data(session, stream.stream_id, b"x" * (WINDOW + 1))
    assert hub.registry.stream_resets() == 2
    hub.registry.detach(session)  # the rogue goes away; what it did is still counted
    again, _ = hub.attach("a", credit_window=WINDOW)
    assert hub.registry.stream_resets() == 2
    stream = again.open_stream(REQUEST, b"{}")
    send_data(again, stream.stream_id, b"x" * (WINDOW + 1))
    assert hub.registry.stream_resets() == 3
