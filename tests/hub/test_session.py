"""Agent sessions, their streams, and the dispatcher relaying through them (memory channels, manual clock)."""

from __future__ import annotations

import asyncio

import pytest

from potluck._shared.clock import ManualClock
from potluck.hub.errors import AgentLostError, HubError, ShuttingDownError, UpstreamError, UpstreamTimeoutError
from potluck.hub.outcome import Outcome
from potluck.hub.scheduler import Want
from potluck.hub.session import AgentSession, IllegalTransitionError, SessionState
from potluck.hub.stream import Stream
from potluck.protocol.agent import (
    CancelMessage,
    CreditMessage,
    EndMessage,
    ErrorInfo,
    FrameType,
    HeadMessage,
    HelloMessage,
    PingMessage,
    PongMessage,
    ProtocolError,
    RequestMessage,
    StateMessage,
    Usage,
)
from testing.memory_channel import HubCore, MemoryChannel, make_session, send_data, send_end, send_head

REQUEST = RequestMessage("req_x", "POST", "/v1/chat/completions", "m", stream=True)


def manual(session: AgentSession) -> ManualClock:
    assert isinstance(session.clock, ManualClock)
    return session.clock


def advance(session: AgentSession, seconds: float) -> None:
    manual(session).advance(seconds)


def open_stream(credit_window: int = 1024) -> tuple[AgentSession, MemoryChannel, Stream]:
    clock = ManualClock()
    session, channel = make_session("a", clock, credit_window=credit_window)
    stream = session.open_stream(REQUEST, b'{"model":"m"}')
    return session, channel, stream


# -- session and stream ---------------------------------------------------------------------------


async def test_open_stream_sends_request_frame_with_body_as_payload() -> None:
    session, channel, stream = open_stream()
    (frame,) = channel.of_type(FrameType.REQUEST)
    assert frame.message == REQUEST
    assert frame.payload == b'{"model":"m"}'
    assert frame.stream_id == stream.stream_id
    assert session.streams == {stream.stream_id: stream}
    other = session.open_stream(REQUEST, b"")
    assert other.stream_id != stream.stream_id


async def test_stream_relays_head_data_and_end_in_order() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id, 201)
    send_data(session, stream.stream_id, b"ab")
    send_data(session, stream.stream_id, b"cd")
    send_end(session, stream.stream_id, EndMessage("req_x", usage=Usage(1, 2, 3)))
    async with asyncio.timeout(2):
        assert (await stream.head()).status == 201
        assert await stream.read() == b"abcd"  # coalesced
        assert await stream.read() is None
    assert stream.end is not None
    assert stream.end.usage == Usage(1, 2, 3)
    assert stream.bytes_received == 4


async def test_read_waits_for_data_without_polling() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    reader = asyncio.create_task(stream.read())
    await asyncio.sleep(0)  # one loop turn: the reader runs, and must block rather than return
    assert not reader.done()
    send_data(session, stream.stream_id, b"x")
    async with asyncio.timeout(2):
        assert await reader == b"x"


async def test_a_sink_takes_data_as_it_arrives_and_never_reorders_it() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    delivered: list[bytes] = []
    open_ = True  # whether the client's socket takes more right now

    def sink(data: bytes) -> bool:
        if open_:
            delivered.append(data)
        return open_

    stream.sink = sink
    send_data(session, stream.stream_id, b"a")
    assert delivered == [b"a"]  # written from the frame loop: nothing for read to wake up for
    open_ = False
    send_data(session, stream.stream_id, b"b")  # refused: kept for read
    open_ = True
    send_data(session, stream.stream_id, b"c")  # would fit, but "b" is still waiting: queued behind it
    assert delivered == [b"a"]
    async with asyncio.timeout(2):
        assert await stream.read() == b"bc"
    send_data(session, stream.stream_id, b"d")  # read caught up: straight through again
    assert delivered == [b"a", b"d"]
    assert stream.bytes_received == len(b"abcd")
    send_end(session, stream.stream_id, EndMessage("req_x", error=ErrorInfo(502, "upstream_error", "boom")))
    send_data(session, stream.stream_id, b"late")  # after a failure the relay task decides what goes out
    assert delivered == [b"a", b"d"]
    async with asyncio.timeout(2):
        assert await stream.read() == b"late"
        with pytest.raises(UpstreamError):
            await stream.read()


async def test_a_sink_gets_what_one_message_of_the_agent_brought_in_one_write() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    delivered: list[bytes] = []

    def sink(data: bytes) -> bool:
        delivered.append(data)
        return True

    stream.sink = sink
    for piece in (b"a", b"b", b"c"):  # three DATA frames of one WebSocket message
        session.on_frame(FrameType.DATA, stream.stream_id, None, piece)
    assert delivered == []  # the message is still being read
    session.deliver()
    assert delivered == [b"abc"]
    session.deliver()
    assert delivered == [b"abc"]


async def test_frames_for_unknown_streams_are_ignored() -> None:
    session, channel, stream = open_stream()
    sent = len(channel.frames)
    send_head(session, 999)
    send_data(session, 999, b"x")
    send_end(session, 999, EndMessage("other"))
    assert session.streams == {stream.stream_id: stream}  # nothing created for them
    assert len(channel.frames) == sent  # no cancel, credit or error sent back
    assert session.state is SessionState.ACTIVE
    assert (stream.bytes_received, stream.end, stream.failure) == (0, None, None)
    send_head(session, stream.stream_id, 201)  # and the session still relays its own streams
    send_data(session, stream.stream_id, b"ok")
    async with asyncio.timeout(2):
        assert (await stream.head()).status == 201
        assert await stream.read() == b"ok"


async def test_unexpected_frame_type_from_agent_is_a_protocol_error() -> None:
    session, _, _ = open_stream()
    hello = HelloMessage(1, "v", b"k" * 32, b"s" * 64, "n", 1)
    with pytest.raises(ProtocolError):
        session.on_frame(FrameType.HELLO, 0, hello, b"")


async def test_agent_ping_is_answered_with_pong_echoing_its_time() -> None:
    session, channel, _ = open_stream()
    session.on_frame(FrameType.PING, 0, PingMessage(42.5), b"")
    assert channel.messages(FrameType.PONG) == [PongMessage(42.5)]


async def test_head_deadline_raises_upstream_timeout() -> None:
    session, _, stream = open_stream()
    stream.set_deadline(0.01, "no head")
    advance(session, 0.01)
    with pytest.raises(UpstreamTimeoutError, match="no head"):
        await stream.head()


async def test_idle_deadline_raises_upstream_timeout() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    stream.set_deadline(0.01, "idle")
    advance(session, 0.01)
    with pytest.raises(UpstreamTimeoutError, match="idle"):
        await stream.read()


async def test_data_pushes_the_idle_deadline_back() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    stream.set_deadline(0.05, "idle")
    clock = session.clock
    assert isinstance(clock, ManualClock)
    for i in range(5):  # 0.1 s in all, longer than the deadline, but never 0.05 s without data
        clock.advance(0.02)
        send_data(session, stream.stream_id, b"%d" % i)
        assert await stream.read() == b"%d" % i
    assert stream.failure is None
    clock.advance(0.05)
    with pytest.raises(UpstreamTimeoutError):
        await stream.read()


async def test_one_timer_serves_the_first_byte_deadline_and_the_idle_deadline_after_it() -> None:
    session, _, stream = open_stream()
    clock = manual(session)
    before = clock.scheduled
    stream.set_deadline(10, "no head", check_within=3)
    clock.advance(1)
    send_head(session, stream.stream_id)
    stream.set_deadline(3, "idle")  # due at 4: the timer armed for 3 checks first and re-arms
    assert clock.scheduled - before == 1
    clock.advance(2.99)
    assert stream.failure is None
    clock.advance(0.01)
    with pytest.raises(UpstreamTimeoutError, match="idle"):
        await stream.read()


async def test_a_first_byte_deadline_longer_than_its_first_check_fires_at_its_own_time() -> None:
    session, _, stream = open_stream()
    stream.set_deadline(10, "no head", check_within=3)
    advance(session, 9.99)
    assert stream.failure is None
    advance(session, 0.01)
    with pytest.raises(UpstreamTimeoutError, match="no head"):
        await stream.head()


async def test_a_stream_already_over_arms_no_deadline() -> None:
    session, _, stream = open_stream()
    clock = manual(session)
    stream.set_deadline(10, "no head", check_within=3)
    send_head(session, stream.stream_id)
    send_end(session, stream.stream_id, EndMessage("req_x"))
    before = clock.scheduled
    stream.set_deadline(3, "idle")
    assert clock.scheduled == before
    assert not stream.deadline_armed


async def test_a_deadline_sooner_than_the_armed_timer_re_arms_it() -> None:
    session, _, stream = open_stream()
    stream.set_deadline(10, "no head")
    stream.set_deadline(2, "sooner")
    assert manual(session).pending == 1
    advance(session, 2)
    with pytest.raises(UpstreamTimeoutError, match="sooner"):
        await stream.head()


async def test_finished_stream_cancels_its_deadline_timer() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    stream.set_deadline(0.01, "idle")
    armed = stream.deadline_armed  # a local, so mypy does not narrow the property for the next assert
    send_end(session, stream.stream_id, EndMessage("req_x"))
    assert armed
    assert not stream.deadline_armed
    assert manual(session).pending == 0
    advance(session, 0.03)
    assert stream.failure is None


async def test_end_with_error_fails_the_stream_after_its_bytes_are_read() -> None:
    session, _, stream = open_stream()
    send_head(session, stream.stream_id)
    send_data(session, stream.stream_id, b"partial")
    send_end(session, stream.stream_id, EndMessage("req_x", error=ErrorInfo(502, "upstream_error", "boom")))
    assert await stream.read() == b"partial"
    with pytest.raises(UpstreamError, match="boom") as info:
        await stream.read()
    assert info.value.code == "upstream_error"
    assert info.value.status == 502


async def test_end_before_head_fails_the_head() -> None:
    session, _, stream = open_stream()
    send_end(session, stream.stream_id, EndMessage("req_x"))
    with pytest.raises(UpstreamError):
        await stream.head()


async def test_session_close_fails_every_open_stream() -> None:
    session, channel, stream = open_stream()
    second = session.open_stream(REQUEST, b"")
    send_head(session, second.stream_id)
    send_data(session, second.stream_id, b"early")
    sent = len(channel.frames)

    session.close()

    assert session.state is SessionState.CLOSED
    assert session.streams == {}
    assert isinstance(stream.failure, AgentLostError)
    assert stream.failure.retriable
    with pytest.raises(AgentLostError):
        await stream.head()
    assert await second.read() == b"early"
    with pytest.raises(AgentLostError):
        await second.read()
    with pytest.raises(AgentLostError):
        session.open_stream(REQUEST, b"")
    session.send(PingMessage(1.0))
    assert len(channel.frames) == sent  # nothing goes out on a closed session


async def test_session_close_with_an_explicit_error_uses_it() -> None:
    session, _, stream = open_stream()
    error = UpstreamError("gone", retriable=False)
    session.close(error)
    assert stream.failure is error


async def test_credit_is_sent_after_half_a_window_is_consumed() -> None:
    session, channel, stream = open_stream(credit_window=100)
    send_head(session, stream.stream_id)
    stream.consumed(30)
    stream.consumed(19)
    assert channel.of_type(FrameType.CREDIT) == []

    stream.consumed(1)

    (frame,) = channel.of_type(FrameType.CREDIT)
    assert frame.stream_id == stream.stream_id
    assert frame.message == CreditMessage(50)
    stream.consumed(70)
    assert channel.messages(FrameType.CREDIT) == [CreditMessage(50), CreditMessage(70)]


async def test_credit_for_bytes_delivered_inside_a_burst_is_sent_after_it() -> None:
    session, channel, stream = open_stream(credit_window=100)
    send_head(session, stream.stream_id)
    stream.consumed_soon(30)
    stream.consumed_soon(30)  # a CREDIT falls due, but not inside the agent's message being read
    assert channel.of_type(FrameType.CREDIT) == []
    await asyncio.sleep(0)  # one loop turn: the message is read
    assert channel.messages(FrameType.CREDIT) == [CreditMessage(60)]
    # Deferred bytes below half a window go out with the next CREDIT, whichever path makes it due.
    stream.consumed_soon(20)
    stream.consumed(30)
    assert channel.messages(FrameType.CREDIT) == [CreditMessage(60), CreditMessage(50)]
    await asyncio.sleep(0)
    assert channel.messages(FrameType.CREDIT) == [CreditMessage(60), CreditMessage(50)]


async def test_no_credit_is_sent_once_the_stream_ended() -> None:
    session, channel, stream = open_stream(credit_window=100)
    send_head(session, stream.stream_id)
    send_end(session, stream.stream_id, EndMessage("req_x"))
    stream.consumed(100)
    assert channel.of_type(FrameType.CREDIT) == []


async def test_close_stream_before_end_sends_cancel() -> None:
    session, channel, stream = open_stream()
    session.close_stream(stream, cancel_reason="client_disconnect")
    (frame,) = channel.of_type(FrameType.CANCEL)
    assert frame.stream_id == stream.stream_id
    assert frame.message == CancelMessage("req_x", "client_disconnect")
    session.close_stream(stream, cancel_reason="client_disconnect")
    assert len(channel.of_type(FrameType.CANCEL)) == 1


async def test_close_stream_after_end_sends_no_cancel() -> None:
    session, channel, stream = open_stream()
    send_head(session, stream.stream_id)
    send_end(session, stream.stream_id, EndMessage("req_x"))
    session.close_stream(stream, cancel_reason="client_disconnect")
    assert channel.of_type(FrameType.CANCEL) == []
    assert session.streams == {}


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ([SessionState.DRAINING], True),
        ([SessionState.DRAINING, SessionState.ACTIVE], True),
        ([SessionState.CLOSED], True),
        ([SessionState.DRAINING, SessionState.CLOSED], True),
        ([SessionState.ACTIVE, SessionState.ACTIVE], True),
        ([SessionState.CLOSED, SessionState.ACTIVE], False),
        ([SessionState.CLOSED, SessionState.DRAINING], False),
    ],
)
async def test_session_state_transitions(path: list[SessionState], allowed: bool) -> None:
    session, _ = make_session("a", ManualClock())
    *before, last = path
    for state in before:
        session.transition(state)
    if allowed:
        session.transition(last)
        assert session.state is last
    else:
        with pytest.raises(IllegalTransitionError):
            session.transition(last)
        assert session.state is before[-1]


async def test_closed_session_cannot_be_reopened_by_transition() -> None:
    session, _ = make_session("a", ManualClock())
    session.close()
    with pytest.raises(IllegalTransitionError, match="closed to active"):
        session.transition(SessionState.ACTIVE)


# -- dispatcher -----------------------------------------------------------------------------------


async def test_dispatch_relays_a_request_and_records_its_usage() -> None:
    hub = HubCore()
    session, channel = hub.attach("a", max_concurrency=2)
    req = hub.request(body=b'{"model":"m","stream":true}')
    opening = asyncio.create_task(hub.owner.relay(req))
    frame = await channel.next_frame(FrameType.REQUEST)
    assert isinstance(frame.message, RequestMessage)
    assert frame.message.request_id == req.request_id
    assert frame.message.model == "m"
    assert frame.payload == req.body
    hub.clock.advance(0.5)
    send_head(session, frame.stream_id)
    send_data(session, frame.stream_id, b"data: 1\n\n")
    async with asyncio.timeout(2):
        exchange = await opening
    assert exchange.status == 200
    assert exchange.session is session
    send_data(session, frame.stream_id, b"data: 2\n\n")
    send_end(session, frame.stream_id, EndMessage(req.request_id, usage=Usage(3, 4, 7)))

    async with asyncio.timeout(2):
        body = b"".join([chunk async for chunk in exchange.chunks()])
    exchange.close(Outcome.OK)

    assert body == b"data: 1\n\ndata: 2\n\n"
    assert channel.of_type(FrameType.CANCEL) == []
    assert hub.in_flight("a") == 0
    assert hub.dispatcher.in_flight == 0
    await hub.journal.flush()
    (record,) = hub.records
    assert (record.request_id, record.agent_id, record.outcome, record.status) == (req.request_id, "a", "ok", 200)
    assert (record.prompt_tokens, record.completion_tokens) == (3, 4)
    assert record.ttft_ms == 500
    assert record.created_at.tzinfo is not None


async def test_exchange_closed_before_end_sends_cancel_and_frees_the_slot() -> None:
    hub = HubCore()
    session, channel = hub.attach("a")
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await channel.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id)
    send_data(session, frame.stream_id, b"data: 1\n\n")
    async with asyncio.timeout(2):
        exchange = await opening

    exchange.close(Outcome.CLIENT_CANCELLED)
    exchange.close(Outcome.CLIENT_CANCELLED)  # idempotent

    (cancel,) = channel.of_type(FrameType.CANCEL)
    assert cancel.stream_id == frame.stream_id
    assert isinstance(cancel.message, CancelMessage)
    assert cancel.message.request_id == exchange.request.request_id
    assert hub.in_flight("a") == 0
    assert hub.dispatcher.in_flight == 0
    # The stream lingers only to hear the agent's END, which carries the usage delivered so far:
    # a client that hangs up right after the last event still gets its usage recorded.
    await hub.journal.flush()
    assert hub.records == []
    send_end(session, frame.stream_id, EndMessage(exchange.request.request_id, cancelled=True, usage=Usage(3, 2, 5)))
    assert session.streams == {}
    await hub.journal.flush()
    (record,) = hub.records
    assert (record.outcome, record.prompt_tokens, record.completion_tokens) == ("client_cancelled", 3, 2)


async def test_a_cancelled_stream_without_an_end_is_recorded_after_the_linger_time() -> None:
    hub = HubCore()
    session, channel = hub.attach("a")
    session.linger_s = 0.01
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await channel.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id)
    send_data(session, frame.stream_id, b"data: 1\n\n")
    async with asyncio.timeout(2):
        exchange = await opening
    exchange.close(Outcome.CLIENT_CANCELLED)
    assert session.streams  # lingering for the agent's END
    hub.clock.advance(0.01)
    assert not session.streams
    await hub.journal.flush()
    (record,) = hub.records
    assert (record.outcome, record.completion_tokens) == ("client_cancelled", 0)
    send_end(session, frame.stream_id, EndMessage(exchange.request.request_id, cancelled=True))  # too late: ignored
    await hub.journal.flush()
    assert len(hub.records) == 1


async def test_agent_lost_before_any_byte_is_retried_on_another_agent() -> None:
    hub = HubCore()
    a, chan_a = hub.attach("a", max_concurrency=4)
    b, chan_b = hub.attach("b", max_concurrency=4)
    hub.scheduler.acquire("m", frozenset({"a"}))  # b is busier, so a is tried first
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    await chan_a.next_frame(FrameType.REQUEST)

    hub.registry.detach(a)  # the connection drops before the agent answered

    retry = await chan_b.next_frame(FrameType.REQUEST)
    send_head(b, retry.stream_id)
    send_data(b, retry.stream_id, b"data: ok\n\n")
    async with asyncio.timeout(2):
        exchange = await opening
    assert exchange.session is b
    assert hub.metrics.registry.get_sample_value("potluck_hub_retries_total") == 1
    exchange.close(Outcome.CLIENT_CANCELLED)
    assert hub.in_flight("b") == 1  # only the slot taken by hand above


async def test_retries_beyond_the_retry_budget_are_not_made() -> None:
    hub = HubCore(retry_budget_percent=0, min_retry_concurrency=0)
    a, chan_a = hub.attach("a", max_concurrency=4)
    hub.attach("b", max_concurrency=4)
    hub.scheduler.acquire("m", frozenset({"a"}))
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    await chan_a.next_frame(FrameType.REQUEST)

    hub.registry.detach(a)

    with pytest.raises(AgentLostError):
        async with asyncio.timeout(2):
            await opening
    sample = hub.metrics.registry.get_sample_value
    assert sample("potluck_hub_retries_over_budget_total") == 1
    assert sample("potluck_hub_retries_total") == 1  # counted as attempted, then refused by the budget
    assert hub.dispatcher.retrying == 0


async def test_failures_before_the_first_byte_and_5xx_answers_count_against_the_agent() -> None:
    hub = HubCore()
    session, chan = hub.attach("a", max_concurrency=4)
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await chan.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id, status=503)
    send_data(session, frame.stream_id, b'{"error": {"message": "overloaded"}}')
    async with asyncio.timeout(2):
        exchange = await opening
    exchange.close(Outcome.UPSTREAM_ERROR)
    stats = hub.scheduler.stats("a", "m")
    assert stats is not None
    assert (stats.failures, stats.reliability < 1.0) == (1, True)

    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await chan.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id, status=400)
    send_data(session, frame.stream_id, b'{"error": {"message": "bad"}}')
    async with asyncio.timeout(2):
        exchange = await opening
    exchange.close(Outcome.UPSTREAM_ERROR)
    assert stats.failures == 1  # a client error says nothing about the agent

    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await chan.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id)
    send_data(session, frame.stream_id, b"data: ok\n\n")
    async with asyncio.timeout(2):
        exchange = await opening
    assert await exchange.read() == b"data: ok\n\n"
    hub.clock.advance(0.5)
    send_end(session, frame.stream_id, EndMessage(exchange.request.request_id, usage=Usage(5, 11, 16)))
    while await exchange.read() is not None:
        pass
    exchange.close(Outcome.OK)
    assert stats.failures == 0
    assert stats.decode == pytest.approx(20.0)
    assert stats.ttft == 0.0  # the manual clock did not move before the first byte


async def test_agent_lost_after_head_but_before_bytes_is_retried() -> None:
    hub = HubCore()
    a, chan_a = hub.attach("a", max_concurrency=2)
    b, chan_b = hub.attach("b", max_concurrency=2)
    hub.scheduler.acquire("m", frozenset({"a"}))  # b is busier, so a is tried first
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    first = await chan_a.next_frame(FrameType.REQUEST)
    send_head(a, first.stream_id)
    await asyncio.sleep(0)  # the dispatcher has the head and now waits for the first byte
    hub.registry.detach(a)
    retry = await chan_b.next_frame(FrameType.REQUEST)
    send_head(b, retry.stream_id)
    send_end(b, retry.stream_id, EndMessage("x"))
    async with asyncio.timeout(2):
        exchange = await opening
    assert exchange.session is b
    exchange.close(Outcome.OK)


async def test_retriable_end_error_is_retried_on_another_agent_excluding_the_first() -> None:
    hub = HubCore()
    a, chan_a = hub.attach("a", max_concurrency=4)
    b, chan_b = hub.attach("b", max_concurrency=4)
    hub.scheduler.acquire("m", frozenset({"a"}))  # without the exclusion, a would be picked again
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    first = await chan_a.next_frame(FrameType.REQUEST)

    refused = ErrorInfo(502, "backend_unavailable", "connection refused", retriable=True)
    send_end(a, first.stream_id, EndMessage("x", error=refused))

    retry = await chan_b.next_frame(FrameType.REQUEST)
    send_head(b, retry.stream_id)
    send_data(b, retry.stream_id, b"{}")
    async with asyncio.timeout(2):
        exchange = await opening
    assert exchange.session is b
    assert len(chan_a.of_type(FrameType.REQUEST)) == 1
    assert chan_a.of_type(FrameType.CANCEL) == []  # it had ended already
    assert hub.in_flight("a") == 0
    exchange.close(Outcome.OK)


async def test_non_retriable_end_error_is_raised_without_retry() -> None:
    hub = HubCore()
    a, chan_a = hub.attach("a")
    _, chan_b = hub.attach("b")
    hub.scheduler.acquire("m", frozenset({"a"}))
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    first = await chan_a.next_frame(FrameType.REQUEST)

    send_end(a, first.stream_id, EndMessage("x", error=ErrorInfo(502, "upstream_error", "model crashed")))

    with pytest.raises(UpstreamError, match="model crashed") as info:
        async with asyncio.timeout(2):
            await opening
    assert info.value.code == "upstream_error"
    assert info.value.status == 502
    assert chan_b.of_type(FrameType.REQUEST) == []
    assert hub.in_flight("a") == 0
    assert hub.dispatcher.in_flight == 0
    await hub.journal.flush()
    assert [r.outcome for r in hub.records] == ["agent_failed"]


async def test_retriable_failure_with_no_other_agent_raises_it() -> None:
    hub = HubCore()
    a, chan_a = hub.attach("a")
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    first = await chan_a.next_frame(FrameType.REQUEST)
    send_end(a, first.stream_id, EndMessage("x", error=ErrorInfo(502, "backend_unavailable", "refused", True)))
    with pytest.raises(UpstreamError) as info:
        async with asyncio.timeout(2):
            await opening
    assert info.value.code == "backend_unavailable"
    assert len(chan_a.of_type(FrameType.REQUEST)) == 1
    assert hub.in_flight("a") == 0


async def test_attempts_are_bounded() -> None:
    hub = HubCore(max_attempts=2)
    agents = [hub.attach(name) for name in ("a", "b", "c")]
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    for _ in range(2):
        async with asyncio.timeout(2):
            while True:
                live = [(s, c) for s, c in agents if s.streams]
                if live:
                    break
                await asyncio.sleep(0)
        ((session, _),) = live
        hub.registry.detach(session)
    with pytest.raises(AgentLostError):
        async with asyncio.timeout(2):
            await opening
    assert sum(len(c.of_type(FrameType.REQUEST)) for _, c in agents) == 2


async def test_client_leaving_while_waiting_for_the_agent_sends_cancel_and_frees_the_slot() -> None:
    hub = HubCore()
    _, channel = hub.attach("a")
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await channel.next_frame(FrameType.REQUEST)

    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening

    (cancel,) = channel.of_type(FrameType.CANCEL)
    assert cancel.stream_id == frame.stream_id
    assert isinstance(cancel.message, CancelMessage)
    assert cancel.message.reason == "client_disconnect"
    assert hub.in_flight("a") == 0
    assert hub.dispatcher.in_flight == 0
    await hub.journal.flush()
    assert [r.outcome for r in hub.records] == ["client_cancelled"]


async def test_client_leaving_while_queued_leaks_no_slot_and_no_in_flight() -> None:
    hub = HubCore()
    session, _ = hub.attach("a")
    await hub.registry.acquire(Want(("m",)))
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    async with asyncio.timeout(2):
        while hub.scheduler.queue_depth == 0:
            await asyncio.sleep(0)

    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening

    assert hub.scheduler.queue_depth == 0
    assert hub.in_flight("a") == 1
    assert hub.dispatcher.in_flight == 0
    hub.registry.release(session)
    assert hub.in_flight("a") == 0


async def test_first_byte_timeout_cancels_on_the_agent() -> None:
    hub = HubCore(first_byte_timeout=0.01)
    session, channel = hub.attach("a")
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await channel.next_frame(FrameType.REQUEST)
    hub.clock.advance(0.01)
    with pytest.raises(UpstreamTimeoutError):
        async with asyncio.timeout(2):
            await opening
    (cancel,) = channel.of_type(FrameType.CANCEL)
    assert cancel.stream_id == frame.stream_id
    assert isinstance(cancel.message, CancelMessage)
    assert cancel.message.reason == "timeout"
    assert hub.in_flight("a") == 0
    assert session.streams == {}


async def test_shutting_down_dispatcher_refuses_new_requests() -> None:
    hub = HubCore()
    hub.attach("a")
    hub.owner.lifecycle.closing = True
    with pytest.raises(ShuttingDownError):
        await hub.owner.admit(hub.client_request())
    assert hub.dispatcher.in_flight == 0


async def test_wait_idle_returns_once_the_last_exchange_closes() -> None:
    hub = HubCore()
    session, channel = hub.attach("a")
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await channel.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id)
    send_end(session, frame.stream_id, EndMessage("x"))
    async with asyncio.timeout(2):
        exchange = await opening
    assert not await hub.dispatcher.wait_idle(0)
    exchange.close(Outcome.OK)
    assert await hub.dispatcher.wait_idle(1)


async def test_error_head_body_is_read_whole_for_the_api_to_check() -> None:
    hub = HubCore()
    session, channel = hub.attach("a")
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    frame = await channel.next_frame(FrameType.REQUEST)
    session.on_frame(FrameType.HEAD, frame.stream_id, HeadMessage(400, []), b"")
    send_data(session, frame.stream_id, b'{"error":')
    send_data(session, frame.stream_id, b'{"message":"bad"}}')
    send_end(session, frame.stream_id, EndMessage("x"))
    async with asyncio.timeout(2):
        exchange = await opening
        assert exchange.status == 400
        assert await exchange.read_all(1 << 20) == b'{"error":{"message":"bad"}}'
    exchange.close(Outcome.UPSTREAM_ERROR)
    assert channel.of_type(FrameType.CANCEL) == []


async def test_retry_does_not_wait_in_the_queue_for_an_agent_that_is_draining() -> None:
    # a's backend refuses the connection; the only other agent serving the model is draining. Nothing
    # can serve the retry, so the client must get its answer now, not after the queue timeout.
    hub = HubCore(queue_timeout=30.0)
    a, chan_a = hub.attach("a")
    b, chan_b = hub.attach("b")
    hub.registry.on_state(b, StateMessage(in_flight=0, draining=True, max_concurrency=1))
    opening = asyncio.create_task(hub.owner.relay(hub.request()))
    first = await chan_a.next_frame(FrameType.REQUEST)

    send_end(a, first.stream_id, EndMessage("x", error=ErrorInfo(502, "backend_unavailable", "refused", True)))

    with pytest.raises(HubError):
        async with asyncio.timeout(2):
            await opening
    assert chan_b.of_type(FrameType.REQUEST) == []
    assert hub.scheduler.queue_depth == 0
