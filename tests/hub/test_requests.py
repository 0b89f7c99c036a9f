"""The request owner: admission, the outcome decided once, and what is recorded (memory channels, manual clock)."""

from __future__ import annotations

import asyncio

import pytest

from potluck.hub.errors import (
    ModelNotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ShuttingDownError,
    UpstreamError,
    UpstreamTimeoutError,
)
from potluck.hub.outcome import Outcome, outcome_of_failure, outcome_of_response
from potluck.protocol.agent import CancelMessage, EndMessage, FrameType, Usage
from testing.memory_channel import HubCore, send_data, send_end, send_head


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (asyncio.CancelledError(), Outcome.CLIENT_CANCELLED),
        (ModelNotFoundError("m"), Outcome.MODEL_NOT_FOUND),
        (OverloadedError("full", retry_after=1), Outcome.OVERLOADED),
        (ShuttingDownError("bye"), Outcome.OVERLOADED),
        (UpstreamTimeoutError("slow"), Outcome.TIMEOUT),
        (UpstreamError("refused", code="backend_unavailable"), Outcome.AGENT_FAILED),
        (UpstreamError("agent said 503", status=503), Outcome.AGENT_FAILED),
        (PermissionDeniedError("no"), Outcome.ERROR),
    ],
)
def test_a_failure_before_the_response_has_one_outcome(exc: BaseException, outcome: Outcome) -> None:
    assert outcome_of_failure(exc) is outcome


@pytest.mark.parametrize(
    ("status", "failure", "client_gone", "done_sent", "outcome"),
    [
        (200, None, False, False, Outcome.OK),
        (200, None, True, True, Outcome.OK),  # the SDK hangs up right after [DONE]
        (200, None, True, False, Outcome.CLIENT_CANCELLED),
        (200, UpstreamError("lost"), True, False, Outcome.AGENT_FAILED),  # the agent failed first
        (200, UpstreamTimeoutError("idle"), False, False, Outcome.TIMEOUT),
        (400, None, False, False, Outcome.UPSTREAM_ERROR),
        (503, None, False, False, Outcome.UPSTREAM_ERROR),
        (400, None, True, False, Outcome.CLIENT_CANCELLED),
    ],
)
def test_a_response_has_one_outcome(
    status: int, failure: BaseException | None, client_gone: bool, done_sent: bool, outcome: Outcome
) -> None:
    assert outcome_of_response(status=status, failure=failure, client_gone=client_gone, done_sent=done_sent) is outcome


async def test_a_served_request_is_recorded_once_with_the_agents_usage() -> None:
    hub = HubCore()
    session, channel = hub.attach("a")
    serving = hub.owner.serve(hub.client_request())
    entering = asyncio.create_task(serving.__aenter__())
    frame = await channel.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id)
    send_data(session, frame.stream_id, b"data: 1\n\n")
    async with asyncio.timeout(2):
        exchange = await entering
    send_end(session, frame.stream_id, EndMessage("r", usage=Usage(3, 4, 7)))
    async with asyncio.timeout(2):
        while (chunk := await exchange.read()) is not None:
            exchange.sent(chunk)
    await serving.__aexit__(None, None, None)
    await hub.journal.flush()
    (record,) = hub.records
    assert (record.outcome, record.agent_id, record.prompt_tokens, record.completion_tokens) == ("ok", "a", 3, 4)
    assert hub.metrics.outcomes == {Outcome.OK: 1}


async def test_a_client_that_leaves_mid_stream_cancels_on_the_agent_and_is_recorded_as_cancelled() -> None:
    hub = HubCore()
    session, channel = hub.attach("a")
    serving = hub.owner.serve(hub.client_request())
    entering = asyncio.create_task(serving.__aenter__())
    frame = await channel.next_frame(FrameType.REQUEST)
    send_head(session, frame.stream_id)
    send_data(session, frame.stream_id, b"data: 1\n\n")
    async with asyncio.timeout(2):
        exchange = await entering
    exchange.sent(await exchange.read() or b"")
    await serving.__aexit__(ConnectionResetError, ConnectionResetError(), None)  # the adapter could not write
    (cancel,) = channel.of_type(FrameType.CANCEL)
    assert isinstance(cancel.message, CancelMessage)
    assert cancel.message.reason == "client_disconnect"
    send_end(session, frame.stream_id, EndMessage("r", usage=Usage(5, 1, 6), cancelled=True))
    await hub.journal.flush()
    (record,) = hub.records
    assert (record.outcome, record.prompt_tokens) == ("client_cancelled", 5)


async def test_a_model_nobody_serves_is_recorded_with_no_agent_and_no_tokens() -> None:
    hub = HubCore()
    hub.attach("a", models=("other",))
    big = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}]}'
    with pytest.raises(ModelNotFoundError):
        async with hub.owner.serve(hub.client_request(body=big)):
            pytest.fail("never entered")
    await hub.journal.flush()
    (record,) = hub.records
    assert (record.outcome, record.status, record.agent_id) == ("model_not_found", 404, None)
    assert (record.prompt_tokens, record.completion_tokens, record.charged) == (0, 0, 0)


async def test_refusals_at_admission_are_not_recorded() -> None:
    hub = HubCore()
    hub.attach("a")
    hub.owner.lifecycle.closing = True
    with pytest.raises(ShuttingDownError):
        async with hub.owner.serve(hub.client_request()):
            pytest.fail("never entered")
    await hub.journal.flush()
    assert hub.records == []
    assert hub.dispatcher.in_flight == 0
