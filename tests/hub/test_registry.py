"""The registry: sessions, slots, the asyncio side of waiting, and heartbeats. No sockets: memory channels."""

from __future__ import annotations

import asyncio

import pytest

from potluck.hub.errors import AgentLostError, ModelNotFoundError, OverloadedError, ShuttingDownError
from potluck.hub.outcome import Outcome
from potluck.hub.scheduler import Want
from potluck.hub.session import AgentSession, SessionState
from potluck.protocol.agent import (
    DrainMessage,
    FrameType,
    ModelInfo,
    ModelsMessage,
    PingMessage,
    PongMessage,
    RequestMessage,
    StateMessage,
)
from testing.memory_channel import HubCore, make_session, send_data, send_head


def state_of(session: AgentSession) -> SessionState:
    return session.state


async def test_unknown_model_is_refused_at_once() -> None:
    hub = HubCore()
    hub.attach("a", models=("m",))
    with pytest.raises(ModelNotFoundError) as info:
        await hub.registry.acquire(Want(("nope",)))
    assert info.value.status == 404
    assert info.value.param == "model"
    assert hub.scheduler.queue_depth == 0


async def test_acquire_returns_session_with_free_slot_immediately() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=2)
    slot = await hub.registry.acquire(Want(("m",)))
    got, queued_s = slot.session, slot.queued_s
    assert got is session
    assert queued_s == 0.0
    assert hub.in_flight("a") == 1


async def test_queued_request_gets_the_slot_in_the_turn_it_is_released() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)
    hub.clock.advance(3.0)

    hub.registry.release(session)

    # Granted synchronously inside release(): no polling, no timer.
    assert hub.scheduler.queue_depth == 0
    assert hub.in_flight("a") == 1
    await asyncio.sleep(0)  # one loop turn, exactly the waiter's wake-up
    assert waiter.done()
    slot = waiter.result()
    got, queued_s = slot.session, slot.queued_s
    assert got is session
    assert queued_s == 3.0


async def test_queued_waiters_are_served_first_come_first_served() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    order: list[int] = []

    async def wait(i: int) -> None:
        await hub.registry.acquire(Want(("m",)))
        order.append(i)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(wait(i)))
        await hub.queued(i + 1)
    async with asyncio.timeout(2):
        for _ in range(3):
            hub.registry.release(session)
            await asyncio.wait([t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_cancelled_queued_request_leaves_the_queue_and_takes_no_slot() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert hub.scheduler.queue_depth == 0
    assert hub.in_flight("a") == 1
    hub.registry.release(session)
    assert hub.in_flight("a") == 0


async def test_request_cancelled_in_the_turn_it_was_granted_gives_the_slot_back_once() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    cancelled = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)
    next_in_line = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(2)

    hub.registry.release(session)  # grants `cancelled`...
    cancelled.cancel()  # ...whose client leaves before it wakes up

    with pytest.raises(asyncio.CancelledError):
        await cancelled
    async with asyncio.timeout(2):
        got = (await next_in_line).session
    assert got is session
    assert hub.in_flight("a") == 1
    hub.registry.release(session)
    assert hub.in_flight("a") == 0
    assert hub.scheduler.queue_depth == 0


async def test_request_cancelled_in_the_turn_it_was_granted_frees_the_slot_when_nobody_waits() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    hub.registry.release(session)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert hub.in_flight("a") == 0
    assert await hub.registry.acquire(Want(("m",))) is not None


async def test_a_request_withdrawn_in_the_turn_it_was_granted_gives_the_slot_to_the_next_in_line() -> None:
    """`join` and `withdraw` without a task (a request another replica placed here and then cancelled)."""
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    withdrawn = hub.registry.join(Want(("m",)))
    next_in_line = hub.registry.join(Want(("m",)))
    assert hub.scheduler.queue_depth == 2

    hub.registry.release(session)  # grants `withdrawn`, which nobody awaits yet
    hub.registry.withdraw(withdrawn)

    got = await hub.registry.granted(next_in_line, Want(("m",)))
    assert (got.session, got.position) == (session, 2)
    assert (hub.in_flight("a"), hub.scheduler.queue_depth) == (1, 0)
    with pytest.raises(asyncio.CancelledError):
        await hub.registry.granted(withdrawn, Want(("m",)))  # its wait is over before it began


async def test_detaching_an_agent_fails_the_requests_pinned_to_it_and_no_other() -> None:
    hub = HubCore()
    gone, _ = hub.attach("x", max_concurrency=1)
    hub.attach("y", max_concurrency=1)
    await hub.registry.acquire(Want(("m",), exclude=frozenset({"y"})))
    await hub.registry.acquire(Want(("m",), exclude=frozenset({"x"})))
    pinned = hub.registry.join(Want(("m",), requester="replica:a", pinned="x"))
    other = asyncio.create_task(hub.registry.granted(hub.registry.join(Want(("m",))), Want(("m",))))

    hub.registry.detach(gone)

    with pytest.raises(AgentLostError):
        await hub.registry.granted(pinned, Want(("m",), requester="replica:a", pinned="x"))
    assert hub.scheduler.queue_depth == 1
    other.cancel()


async def test_queue_wait_timeout_raises_overloaded_with_bounded_retry_after() -> None:
    hub = HubCore(queue_timeout=0.02)
    hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))

    with pytest.raises(OverloadedError) as info:
        await hub.registry.acquire(Want(("m",)))

    assert info.value.status == 503
    assert info.value.code == "server_overloaded"
    assert 1 <= info.value.retry_after <= 60
    assert hub.scheduler.queue_depth == 0
    assert hub.in_flight("a") == 1


async def test_full_queue_raises_overloaded_at_once_with_retry_after_at_most_60() -> None:
    hub = HubCore(max_queue=1, queue_timeout=3600.0)
    hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    with pytest.raises(OverloadedError) as info:
        await hub.registry.acquire(Want(("m",)))

    assert 1 <= info.value.retry_after <= 60
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_new_agent_serves_queued_requests_at_once() -> None:
    hub = HubCore()
    hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    b, _ = hub.attach("b", max_concurrency=1)

    async with asyncio.timeout(2):
        got = (await waiter).session
    assert got is b
    assert hub.in_flight("b") == 1


async def test_models_message_updates_what_the_agent_serves() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", models=("m",), max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))  # took the only slot
    hub.registry.on_models(session, ModelsMessage([ModelInfo("m"), ModelInfo("n")], []))
    assert hub.scheduler.serves("n")
    hub.registry.on_models(session, ModelsMessage([ModelInfo("n")], []))
    assert not hub.scheduler.serves("m")
    with pytest.raises(ModelNotFoundError):
        await hub.registry.acquire(Want(("m",)))


async def test_state_message_draining_stops_routing_and_resumes() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=2)

    hub.registry.on_state(session, StateMessage(in_flight=0, draining=True, max_concurrency=2))
    assert state_of(session) is SessionState.DRAINING
    assert hub.scheduler.acquire("m") is None

    hub.registry.on_state(session, StateMessage(in_flight=0, draining=False, max_concurrency=4))
    assert state_of(session) is SessionState.ACTIVE
    slots = hub.scheduler.agent("a")
    assert slots is not None
    assert slots.max_concurrency == 4
    assert hub.scheduler.acquire("m") == "a"


async def test_draining_agent_receives_no_queued_request() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    hub.registry.on_state(session, StateMessage(in_flight=1, draining=True, max_concurrency=1))
    hub.registry.release(session)

    assert hub.scheduler.queue_depth == 1
    assert hub.in_flight("a") == 0
    hub.registry.on_state(session, StateMessage(in_flight=0, draining=False, max_concurrency=1))
    async with asyncio.timeout(2):
        got = (await waiter).session
    assert got is session


async def test_model_served_only_by_draining_agents_is_overloaded_at_once() -> None:
    hub = HubCore(queue_timeout=3600.0)
    session, _ = hub.attach("a", max_concurrency=4)
    hub.registry.on_state(session, StateMessage(in_flight=0, draining=True, max_concurrency=4))

    with pytest.raises(OverloadedError) as info:
        async with asyncio.timeout(2):
            await hub.registry.acquire(Want(("m",)))

    assert 1 <= info.value.retry_after <= 60
    assert hub.scheduler.queue_depth == 0


async def test_release_on_a_closed_session_frees_nothing() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    hub.registry.detach(session)
    hub.registry.release(session)
    assert hub.scheduler.agent("a") is None


async def test_admin_drain_survives_the_agents_own_resume() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    hub.registry.set_admin_drain("a", True)
    hub.registry.on_state(session, StateMessage(in_flight=0, draining=False, max_concurrency=1))
    assert state_of(session) is SessionState.DRAINING
    assert hub.scheduler.acquire("m") is None
    hub.registry.set_admin_drain("a", False)
    assert hub.scheduler.acquire("m") == "a"


async def test_drain_all_tells_every_agent_and_routes_nothing_more() -> None:
    hub = HubCore()
    _, chan_a = hub.attach("a")
    _, chan_b = hub.attach("b")
    hub.registry.drain_all(12.5)
    assert chan_a.messages(FrameType.DRAIN) == [DrainMessage(12.5)]
    assert chan_b.messages(FrameType.DRAIN) == [DrainMessage(12.5)]
    assert hub.scheduler.acquire("m") is None


async def test_drain_all_answers_queued_requests_at_once() -> None:
    hub = HubCore()
    hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiter = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    hub.registry.drain_all(30)

    with pytest.raises(ShuttingDownError):
        async with asyncio.timeout(1):
            await waiter
    assert hub.scheduler.queue_depth == 0


async def test_agent_state_cannot_undo_the_hubs_shutdown_drain() -> None:
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=2)
    hub.registry.drain_all(30)
    hub.registry.on_state(session, StateMessage(in_flight=0, draining=False, max_concurrency=2))
    hub.registry.on_models(session, ModelsMessage([ModelInfo("m")], []))
    assert hub.scheduler.acquire("m") is None


async def test_reconnect_replaces_and_closes_the_previous_session() -> None:
    hub = HubCore()
    old, old_chan = hub.attach("a")
    new, new_chan = make_session("a", hub.clock)
    hub.registry.attach(new)
    assert hub.registry.sessions["a"] is new
    assert state_of(old) is SessionState.CLOSED
    assert old_chan.closed
    assert not new_chan.closed


async def test_detach_fails_the_agents_open_streams() -> None:
    hub = HubCore()
    session, _ = hub.attach("a")
    stream = session.open_stream(RequestMessage("r", "POST", "/v1/completions", "m", stream=False), b"{}")
    hub.registry.detach(session)
    assert isinstance(stream.failure, AgentLostError)
    assert "a" not in hub.registry.sessions
    assert hub.scheduler.agent("a") is None
    assert not hub.scheduler.serves("m")


async def test_heartbeat_drops_silent_agent_and_pings_live_ones() -> None:
    hub = HubCore(heartbeat_timeout=15.0)
    silent, silent_chan = hub.attach("silent")
    live, live_chan = hub.attach("live")
    stream = silent.open_stream(RequestMessage("r", "POST", "/v1/completions", "m", stream=False), b"{}")
    hub.clock.advance(10)
    live.on_frame(FrameType.PONG, 0, PongMessage(hub.clock.now() - 0.5), b"")
    hub.clock.advance(6)

    hub.registry.heartbeat()

    assert list(hub.registry.sessions) == ["live"]
    assert silent_chan.closed
    assert state_of(silent) is SessionState.CLOSED
    assert isinstance(stream.failure, AgentLostError)
    assert hub.scheduler.agent("silent") is None
    assert live_chan.messages(FrameType.PING) == [PingMessage(hub.clock.now())]
    assert silent_chan.of_type(FrameType.PING) == []
    assert live.rtt_s == pytest.approx(0.5)


async def test_heartbeat_keeps_an_agent_silent_for_exactly_the_timeout() -> None:
    hub = HubCore(heartbeat_timeout=15.0)
    _, chan = hub.attach("a")
    hub.clock.advance(15.0)
    hub.registry.heartbeat()
    assert "a" in hub.registry.sessions
    assert len(chan.of_type(FrameType.PING)) == 1


async def test_any_frame_from_the_agent_counts_as_alive() -> None:
    hub = HubCore(heartbeat_timeout=15.0)
    session, _ = hub.attach("a")
    stream = session.open_stream(RequestMessage("r", "POST", "/v1/completions", "m", stream=True), b"{}")
    for _ in range(5):
        hub.clock.advance(10)
        send_data(session, stream.stream_id, b"data: x\n\n")
        hub.registry.heartbeat()
    assert "a" in hub.registry.sessions


async def test_release_from_a_replaced_session_does_not_free_a_slot_of_the_new_one() -> None:
    """An agent reconnects while a request still runs on its old connection.

    The new connection starts with a fresh slot count and may be handed queued work at once. When
    the old request then finishes, its slot must not be subtracted from the new connection's count,
    or the agent is sent more concurrent requests than it allows.
    """
    hub = HubCore()
    old, old_chan = hub.attach("a", max_concurrency=1)
    running = asyncio.create_task(hub.owner.relay(hub.request()))
    first = await old_chan.next_frame(FrameType.REQUEST)
    send_head(old, first.stream_id)
    send_data(old, first.stream_id, b"data: 1\n\n")
    async with asyncio.timeout(2):
        exchange = await running
    waiting = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    new, _ = make_session("a", hub.clock, max_concurrency=1)
    hub.registry.attach(new)  # the old connection is closed, the waiter gets the new one's only slot
    async with asyncio.timeout(2):
        got = (await waiting).session
    assert got is new
    assert hub.in_flight("a") == 1

    exchange.close(Outcome.AGENT_FAILED)  # the old request ends (its stream failed with AgentLostError)

    assert hub.in_flight("a") == 1, "the new connection's slot was freed by a request from the old one"
    assert hub.scheduler.acquire("m") is None, "a second request was routed to an agent with max_concurrency=1"


async def test_slot_granted_just_before_a_reconnect_is_counted_on_the_session_returned() -> None:
    """A slot is granted on the old connection, and the agent reconnects before the waiter wakes.

    The waiter is handed the new session, so the new session's slot count must include it.
    """
    hub = HubCore()
    session, _ = hub.attach("a", max_concurrency=1)
    await hub.registry.acquire(Want(("m",)))
    waiting = asyncio.create_task(hub.registry.acquire(Want(("m",))))
    await hub.queued(1)

    hub.registry.release(session)  # granted on the old connection's slots...
    new, _ = make_session("a", hub.clock, max_concurrency=1)
    hub.registry.attach(new)  # ...which are replaced before the waiter runs
    async with asyncio.timeout(2):
        got = (await waiting).session

    assert got is new
    assert hub.in_flight("a") == 1, "the request runs on the new connection without holding one of its slots"
