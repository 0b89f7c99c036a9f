"""Peer links in memory: a proxy session on replica A and the real agent session on replica B, joined by
a pair of in-memory transports. What the agent sees and what A's stream gets are the one-process frames,
under each side's own stream ids."""

from __future__ import annotations

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.cluster_link import InboundLink, OutboundLink, PeerChannel
from potluck.hub.errors import AgentLostError, UpstreamError
from potluck.hub.session import AgentSession
from potluck.protocol.agent import (
    CancelMessage,
    CreditMessage,
    EndMessage,
    FrameType,
    HeadMessage,
    ModelInfo,
    PingMessage,
    ProtocolError,
    RequestMessage,
    Usage,
    encode_data,
    encode_frame,
)
from testing.memory_channel import MemoryChannel, make_session


class Wire:
    """One direction of a peer link: bytes sent are handed to the other end at once."""

    def __init__(self) -> None:
        self.to: OutboundLink | InboundLink | None = None
        self.closed = False

    def send(self, data: bytes) -> None:
        assert self.to is not None
        self.to.receive(data)

    def close(self) -> None:
        self.closed = True


def _link(clock: ManualClock) -> tuple[AgentSession, MemoryChannel, AgentSession, OutboundLink, InboundLink]:
    """Replica B's real session with agent "x" (its channel is what the agent receives), and A's proxy of it."""
    agent_session, agent_channel = make_session("x", clock, max_concurrency=4)
    a_to_b, b_to_a = Wire(), Wire()
    outbound = OutboundLink("b", a_to_b, clock)
    inbound = InboundLink("a", b_to_a, lambda agent_id: agent_session if agent_id == "x" else None)
    a_to_b.to, b_to_a.to = inbound, outbound
    channel = outbound.channel("x")
    proxy = AgentSession(
        agent_id="x",
        name="x",
        channel=channel,
        clock=clock,
        models=[ModelInfo("m")],
        backends=[],
        max_concurrency=4,
        credit_window=1024,
        version="test",
    )
    channel.session = proxy
    return agent_session, agent_channel, proxy, outbound, inbound


def _request(request_id: str = "req_1") -> RequestMessage:
    return RequestMessage(request_id, "POST", "/v1/chat/completions", "m", True)


async def test_a_request_and_its_answer_cross_the_link_relabelled() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound = _link(clock)
    proxy._next_stream_id = 7  # A's stream ids and B's differ: the link relabels both ways
    stream = proxy.open_stream(_request(), b'{"model":"m"}')

    frame = await agent_channel.next_frame(FrameType.REQUEST)
    assert frame.payload == b'{"model":"m"}'
    assert isinstance(frame.message, RequestMessage)
    assert frame.message.request_id == "req_1"
    b_sid = frame.stream_id
    assert b_sid != stream.stream_id
    assert inbound.running == 1

    agent_session.on_frame(FrameType.HEAD, b_sid, HeadMessage(200, [("content-type", "text/event-stream")]), b"")
    agent_session.on_frame(FrameType.DATA, b_sid, None, b"data: tok0\n\n")
    assert (await stream.head()).status == 200
    assert await stream.read() == b"data: tok0\n\n"

    stream.consumed(600)  # past half the window: A's credit reaches the agent under B's stream id
    credit = await agent_channel.next_frame(FrameType.CREDIT)
    assert (credit.stream_id, credit.message) == (b_sid, CreditMessage(600))

    end = EndMessage("req_1", usage=Usage(3, 5, 8))
    agent_session.on_frame(FrameType.END, b_sid, end, b"")
    assert await stream.read() is None
    assert stream.end == end
    assert inbound.running == 0
    assert b_sid not in agent_session.streams


async def test_a_cancel_reaches_the_agent_and_its_end_comes_back() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound = _link(clock)
    stream = proxy.open_stream(_request(), b"{}")
    b_sid = (await agent_channel.next_frame(FrameType.REQUEST)).stream_id
    ended: list[EndMessage | None] = []
    stream.after_cancel = ended.append

    proxy.close_stream(stream, cancel_reason="client_disconnect")
    cancel = await agent_channel.next_frame(FrameType.CANCEL)
    assert (cancel.stream_id, cancel.message) == (b_sid, CancelMessage("req_1", "client_disconnect"))

    final = EndMessage("req_1", cancelled=True, usage=Usage(3, 1, 4))
    agent_session.on_frame(FrameType.END, b_sid, final, b"")
    assert ended == [final]  # the usage the agent saw reaches A's owner, for billing
    assert inbound.running == 0


async def test_an_agent_past_its_window_on_a_forwarded_stream_is_reset_at_b_and_counted() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound = _link(clock)
    failed: list[tuple[str, str]] = []
    inbound.agent_failed = lambda agent_id, model: failed.append((agent_id, model))
    stream = proxy.open_stream(_request(), b"{}")
    b_sid = (await agent_channel.next_frame(FrameType.REQUEST)).stream_id
    agent_session.on_frame(FrameType.HEAD, b_sid, HeadMessage(200, [("content-type", "text/event-stream")]), b"")
    # The whole window, then A's client takes 600 bytes: A's credit of 600 passes through B, which allows it.
    agent_session.on_frame(FrameType.DATA, b_sid, None, b"x" * 1024)
    assert await stream.read() == b"x" * 1024
    stream.consumed(600)
    assert (await agent_channel.next_frame(FrameType.CREDIT)).message == CreditMessage(600)
    agent_session.on_frame(FrameType.DATA, b_sid, None, b"y" * 600)
    assert await stream.read() == b"y" * 600

    agent_session.on_frame(FrameType.DATA, b_sid, None, b"z")  # one byte past what it was granted

    cancel = await agent_channel.next_frame(FrameType.CANCEL)
    assert cancel.stream_id == b_sid
    assert cancel.message == CancelMessage(
        "req_1", "protocol_error", "the agent sent more than its credit window allows"
    )
    assert agent_session.protocol_errors == 1
    assert failed == [("x", "m")]
    with pytest.raises(UpstreamError) as reset:
        await stream.read()  # the byte never crossed the link; A's request fails as on one process
    assert "credit window" in reset.value.message
    assert (inbound.running, b_sid in agent_session.streams) == (0, False)
    agent_session.on_frame(FrameType.DATA, b_sid, None, b"more")  # later frames are dropped at B
    assert inbound.running == 0


async def test_losing_the_agent_at_b_fails_the_stream_at_a_retriably() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, _inbound = _link(clock)
    stream = proxy.open_stream(_request(), b"{}")
    await agent_channel.next_frame(FrameType.REQUEST)

    agent_session.close(AgentLostError())
    with pytest.raises(UpstreamError) as failure:
        await stream.head()
    assert failure.value.retriable


async def test_a_request_for_an_agent_b_does_not_hold_is_refused_retriably() -> None:
    clock = ManualClock()
    _agent_session, _agent_channel, _proxy, outbound, _inbound = _link(clock)
    stray = outbound.channel("gone")
    stray_session, _ = make_session("gone", clock)
    stray.session = stray_session
    stray_session.channel = stray
    stream = stray_session.open_stream(_request("req_2"), b"{}")
    with pytest.raises(UpstreamError) as failure:
        await stream.head()
    assert failure.value.retriable


async def test_the_link_closing_fails_the_proxies_streams() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, outbound, _inbound = _link(clock)
    stream = proxy.open_stream(_request(), b"{}")
    await agent_channel.next_frame(FrameType.REQUEST)

    assert outbound.close() == [proxy]
    proxy.close(AgentLostError())
    with pytest.raises(AgentLostError):
        await stream.head()
    proxy.channel.send(encode_frame(CancelMessage("req_1", "timeout"), stream.stream_id))  # dropped, no error


def test_garbage_from_a_peer_is_a_protocol_error() -> None:
    clock = ManualClock()
    _agent_session, _agent_channel, _proxy, _outbound, inbound = _link(clock)
    with pytest.raises(ProtocolError):
        inbound.receive(b"\x00\x00")
    with pytest.raises(ProtocolError):
        inbound.receive(encode_data(1, b"x")[:-1])  # a frame longer than the message


def test_heartbeats_to_a_proxy_stay_on_this_replica() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, _outbound, _inbound = _link(clock)
    clock.advance(30)
    proxy.channel.send(encode_frame(PingMessage(1.0)))
    assert proxy.last_rx == clock.now()  # the live link answers for the agent
    assert agent_channel.frames == []
    assert isinstance(proxy.channel, PeerChannel)
