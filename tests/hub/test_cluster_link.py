"""Peer links in memory: a proxy session on replica A and the real agent session on replica B, joined by
a pair of in-memory transports. What the agent sees and what A's stream gets are the one-process frames,
under each side's own stream ids."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.cluster_link import InboundLink, OutboundLink, PeerChannel
from potluck.hub.errors import AgentLostError, ReplicaRefusedError, UpstreamError
from potluck.hub.registry import Registry
from potluck.hub.scheduler import Scheduler, Want
from potluck.hub.session import AgentSession
from potluck.hub.stream import WaitingStream
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
from testing.memory_channel import HubCore, MemoryChannel, make_session, send_head


class Wire:
    """One direction of a peer link: bytes sent are handed to the other end at once."""

    def __init__(self) -> None:
        self.to: OutboundLink | InboundLink | None = None
        self.closed = False
        self.sent: asyncio.Event | None = None
        """Set once bytes crossed (they were handled on the other end by then)."""

    def send(self, data: bytes) -> None:
        assert self.to is not None
        self.to.receive(data)
        if self.sent is not None:
            self.sent.set()

    def close(self) -> None:
        self.closed = True


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro)


def _link(
    clock: ManualClock, *, max_concurrency: int = 4, queue_timeout: float = 30.0
) -> tuple[AgentSession, MemoryChannel, AgentSession, OutboundLink, InboundLink, Registry]:
    """Replica B's real session with agent "x" (its channel is what the agent receives) in B's registry, A's
    proxy of it, and B's registry."""
    agent_session, agent_channel = make_session("x", clock, max_concurrency=max_concurrency)
    b = Registry(Scheduler(clock, queue_timeout=queue_timeout), clock, heartbeat_timeout=15.0)
    b.attach(agent_session)
    a_to_b, b_to_a = Wire(), Wire()
    outbound = OutboundLink("b", a_to_b, clock)
    inbound = InboundLink("a", b_to_a, b, _spawn)
    a_to_b.to, b_to_a.to = inbound, outbound
    channel = outbound.channel("x")
    proxy = AgentSession(
        agent_id="x",
        name="x",
        channel=channel,
        clock=clock,
        models=[ModelInfo("m")],
        backends=[],
        max_concurrency=max_concurrency,
        credit_window=1024,
        version="test",
    )
    channel.session = proxy
    return agent_session, agent_channel, proxy, outbound, inbound, b


def _request(request_id: str = "req_1") -> RequestMessage:
    return RequestMessage(request_id, "POST", "/v1/chat/completions", "m", True)


async def test_a_request_and_its_answer_cross_the_link_relabelled() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock)
    proxy._next_stream_id = 7  # A's stream ids and B's differ: the link relabels both ways
    stream = proxy.open_stream(_request(), b'{"model":"m"}')

    frame = await agent_channel.next_frame(FrameType.REQUEST)
    assert frame.payload == b'{"model":"m"}'
    assert isinstance(frame.message, RequestMessage)
    assert frame.message.request_id == "req_1"
    b_sid = frame.stream_id
    assert b_sid != stream.stream_id
    assert inbound.running == 1
    assert _slots_taken(b) == 1  # B counts the slot A's request holds on its agent

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
    assert _slots_taken(b) == 0


async def test_a_cancel_reaches_the_agent_and_its_end_comes_back() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound, _b = _link(clock)
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
    agent_session, agent_channel, proxy, _outbound, inbound, _b = _link(clock)
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
    agent_session, agent_channel, proxy, _outbound, _inbound, _b = _link(clock)
    stream = proxy.open_stream(_request(), b"{}")
    await agent_channel.next_frame(FrameType.REQUEST)

    agent_session.close(AgentLostError())
    with pytest.raises(UpstreamError) as failure:
        await stream.head()
    assert failure.value.retriable


async def test_a_request_for_an_agent_b_does_not_hold_is_refused_retriably() -> None:
    clock = ManualClock()
    _agent_session, _agent_channel, _proxy, outbound, _inbound, _b = _link(clock)
    stray = outbound.channel("gone")
    stray_session, _ = make_session("gone", clock)
    stray.session = stray_session
    stray_session.channel = stray
    stream = stray_session.open_stream(_request("req_2"), b"{}")
    with pytest.raises(ReplicaRefusedError) as failure:
        await stream.head()
    assert failure.value.retriable
    assert failure.value.status == 503


async def test_the_link_closing_fails_the_proxies_streams() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, outbound, _inbound, _b = _link(clock)
    stream = proxy.open_stream(_request(), b"{}")
    await agent_channel.next_frame(FrameType.REQUEST)

    assert outbound.close() == [proxy]
    proxy.close(AgentLostError())
    with pytest.raises(AgentLostError):
        await stream.head()
    proxy.channel.send(encode_frame(CancelMessage("req_1", "timeout"), stream.stream_id))  # dropped, no error


def test_garbage_from_a_peer_is_a_protocol_error() -> None:
    clock = ManualClock()
    _agent_session, _agent_channel, _proxy, _outbound, inbound, _b = _link(clock)
    with pytest.raises(ProtocolError):
        inbound.receive(b"\x00\x00")
    with pytest.raises(ProtocolError):
        inbound.receive(encode_data(1, b"x")[:-1])  # a frame longer than the message


def test_heartbeats_to_a_proxy_stay_on_this_replica() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, _outbound, _inbound, _b = _link(clock)
    clock.advance(30)
    proxy.channel.send(encode_frame(PingMessage(1.0)))
    assert proxy.last_rx == clock.now()  # the live link answers for the agent
    assert agent_channel.frames == []
    assert isinstance(proxy.channel, PeerChannel)


def _slots_taken(b: Registry) -> int:
    agent = b.scheduler.agent("x")
    assert agent is not None
    return agent.in_flight


async def _hold_the_only_slot(b: Registry) -> None:
    """One of B's own clients takes agent x's one slot."""
    slot = await b.acquire(Want(("m",)))
    assert slot.session.agent_id == "x"


async def test_a_request_for_a_full_agent_waits_in_bs_queue_and_starts_when_the_slot_frees() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock, max_concurrency=1)
    await _hold_the_only_slot(b)
    stream = proxy.open_stream(
        _request(), b'{"model":"m"}', factory=WaitingStream
    )  # A counts its own requests only: it saw a free slot

    assert agent_channel.frames == []  # the agent is not sent more than its --max-concurrency
    assert (inbound.running, b.scheduler.queue_depth) == (1, 1)
    b.release(agent_session)  # B's own request ends: the slot goes to the one waiting
    frame = await agent_channel.next_frame(FrameType.REQUEST)
    assert frame.message == _request()
    assert (b.scheduler.queue_depth, _slots_taken(b)) == (0, 1)

    send_head(agent_session, frame.stream_id)
    agent_session.on_frame(FrameType.END, frame.stream_id, EndMessage("req_1", usage=Usage(3, 5, 8)), b"")
    assert (await stream.head()).status == 200
    assert (inbound.running, _slots_taken(b)) == (0, 0)


async def test_a_request_the_placing_replica_could_send_elsewhere_is_refused_at_once_when_the_agent_is_full() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock, max_concurrency=1)
    await _hold_the_only_slot(b)
    stream = proxy.open_stream(_request(), b"{}")  # A has other agents to try: no WaitingStream

    with pytest.raises(ReplicaRefusedError) as refused:
        async with asyncio.timeout(2):  # at once: B's queue timeout is 30 s
            await stream.head()

    assert (refused.value.status, refused.value.code) == (503, "server_overloaded")
    assert (inbound.running, b.scheduler.queue_depth, agent_channel.frames) == (0, 0, [])


async def test_a_cancel_while_waiting_for_a_slot_leaves_bs_queue_and_ends_the_stream_at_a() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock, max_concurrency=1)
    await _hold_the_only_slot(b)
    stream = proxy.open_stream(_request(), b"{}", factory=WaitingStream)
    ended: list[EndMessage | None] = []
    stream.after_cancel = ended.append
    assert b.scheduler.queue_depth == 1

    proxy.close_stream(stream, cancel_reason="client_disconnect")

    assert ended == [EndMessage("req_1", cancelled=True)]  # A's owner settles it at once: nothing was served
    assert (inbound.running, b.scheduler.queue_depth) == (0, 0)
    b.release(agent_session)
    await asyncio.sleep(0)  # the cancelled wait unwinds
    assert agent_channel.frames == []  # the freed slot does not start the cancelled request
    assert _slots_taken(b) == 0


async def test_a_request_that_gets_no_slot_within_bs_queue_timeout_is_refused() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock, max_concurrency=1, queue_timeout=0.05)
    await _hold_the_only_slot(b)
    stream = proxy.open_stream(_request(), b"{}", factory=WaitingStream)

    with pytest.raises(ReplicaRefusedError) as refused:
        await stream.head()  # B's queue timeout (0.05 s on the loop's clock) runs out

    assert (refused.value.status, refused.value.code, refused.value.retriable) == (503, "server_overloaded", True)
    assert "No agent became free" in refused.value.message
    assert (inbound.running, b.scheduler.queue_depth, agent_channel.frames) == (0, 0, [])
    assert stream.end is not None  # the refusal ended the stream at A


async def test_the_agent_leaving_b_refuses_the_requests_waiting_for_it_at_once() -> None:
    clock = ManualClock()
    agent_session, _agent_channel, proxy, _outbound, inbound, b = _link(clock, max_concurrency=1)
    await _hold_the_only_slot(b)
    stream = proxy.open_stream(_request(), b"{}", factory=WaitingStream)

    b.detach(agent_session)

    with pytest.raises(ReplicaRefusedError) as refused:
        await stream.head()
    assert refused.value.retriable
    assert (inbound.running, b.scheduler.queue_depth) == (0, 0)


async def test_the_link_closing_withdraws_the_requests_waiting_at_b() -> None:
    clock = ManualClock()
    agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock, max_concurrency=1)
    await _hold_the_only_slot(b)
    proxy.open_stream(_request(), b"{}", factory=WaitingStream)

    inbound.close()
    await asyncio.sleep(0)  # the cancelled wait unwinds

    assert (inbound.running, b.scheduler.queue_depth) == (0, 0)
    b.release(agent_session)
    assert (agent_channel.frames, _slots_taken(b)) == ([], 0)


async def test_the_link_closing_frees_the_slots_of_the_requests_running_at_b() -> None:
    clock = ManualClock()
    _agent_session, agent_channel, proxy, _outbound, inbound, b = _link(clock)
    proxy.open_stream(_request(), b"{}")
    await agent_channel.next_frame(FrameType.REQUEST)
    assert _slots_taken(b) == 1

    inbound.close()

    assert (await agent_channel.next_frame(FrameType.CANCEL)).message == CancelMessage("req_1", "client_disconnect")
    assert (inbound.running, _slots_taken(b)) == (0, 0)


def _proxy_at_a(a: HubCore, outbound: OutboundLink) -> AgentSession:
    """A's proxy of B's agent "x" (one slot), as `Peering` attaches it."""
    channel = outbound.channel("x")
    proxy, _ = make_session("x", a.clock)
    proxy.channel, proxy.remote = channel, True
    channel.session = proxy
    a.registry.attach(proxy)
    return proxy


def _replicas(b_queue_timeout: float = 30.0, *, a_retry_budget: int = 3) -> tuple[HubCore, HubCore, AgentSession, Wire]:
    """Replica A (placing; ``a_retry_budget`` retries at once at most) and B (holding agent "x", one slot), linked;
    B's session with x, and the A→B wire."""
    a = HubCore(retry_budget_percent=0, min_retry_concurrency=a_retry_budget)
    b = HubCore(queue_timeout=b_queue_timeout)
    remote, _remote_channel = b.attach("x")
    a_to_b, b_to_a = Wire(), Wire()
    outbound = OutboundLink("b", a_to_b, a.clock)
    a_to_b.to, b_to_a.to = InboundLink("a", b_to_a, b.registry, _spawn), outbound
    _proxy_at_a(a, outbound)
    return a, b, remote, a_to_b


async def test_a_request_placed_on_a_full_agent_of_another_replica_goes_to_an_agent_here_without_waiting() -> None:
    """Even with no retry budget left: placing it again after such a refusal is no retry storm (nothing reached an
    agent)."""
    a, b, remote, a_to_b = _replicas(a_retry_budget=0)
    await b.registry.acquire(Want(("m",)))  # B's own client holds x's only slot
    local, local_channel = a.attach("y")
    await a.registry.acquire(Want(("m",), exclude=frozenset({"x"})))  # y is busy at A: A places on x
    forwarded = asyncio.Event()
    a_to_b.sent = forwarded

    request = a.request(stream=False)
    opening = asyncio.ensure_future(a.dispatcher.open(request))
    await forwarded.wait()  # x was A's choice; y could take it too, so B refused it at once rather than queue it
    assert b.scheduler.queue_depth == 0
    await a.queued(1)  # and A queued it for y
    a.registry.release(local)
    frame = await local_channel.next_frame(FrameType.REQUEST)
    send_head(local, frame.stream_id)
    local.on_frame(FrameType.END, frame.stream_id, EndMessage(request.request_id, usage=Usage(1, 1, 2)), b"")
    exchange = await opening

    assert exchange.slot.session is local
    assert remote.requests_total == 0
    stats = a.scheduler.stats("x", "m")
    assert stats is None or stats.failures == 0


async def test_a_refusal_from_the_agents_replica_is_retried_elsewhere_and_not_held_against_the_agent() -> None:
    """At A: the dispatcher tries the next agent, and the refused one is not a step closer to ejection."""
    a, b, remote, a_to_b = _replicas(b_queue_timeout=0.05)
    forwarded = asyncio.Event()
    a_to_b.sent = forwarded
    await b.registry.acquire(Want(("m",)))  # B's own client holds x's only slot

    request = a.request(stream=False)
    opening = asyncio.ensure_future(a.dispatcher.open(request))
    await forwarded.wait()  # placed on x, the only agent A knows, and waiting in B's queue
    assert b.scheduler.queue_depth == 1
    local, local_channel = a.attach("y")  # another agent joins A while it waits

    frame = await local_channel.next_frame(FrameType.REQUEST)  # B refused after its queue timeout: A tries y
    assert isinstance(frame.message, RequestMessage)
    assert frame.message.request_id == request.request_id
    send_head(local, frame.stream_id)
    local.on_frame(FrameType.END, frame.stream_id, EndMessage(request.request_id, usage=Usage(1, 1, 2)), b"")
    exchange = await opening
    assert (exchange.head.status, exchange.slot.session) == (200, local)
    assert remote.requests_total == 0
    assert a.in_flight("x") == 0
    stats = a.scheduler.stats("x", "m")
    assert stats is None or stats.failures == 0  # a refusal for want of a slot is no failure of the agent
