"""Anthropic's Messages API and OpenAI's Responses API through a real hub and agent, with the official SDKs.

The fake backend speaks chat completions only, so the agent translates; with `messages=True` it also speaks
Messages natively and the agent passes those requests through. Either way the hub meters them like any
request: one usage record each, with the backend's tokens.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from testing.fake_backend import FakeBackend, ToolCall
from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow

WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def last_body(backend: FakeBackend) -> Any:
    body = backend.records[-1].json
    assert body is not None
    return body


def claude(fleet: Fleet) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=fleet.hub.url, api_key=fleet.key, max_retries=0)
    fleet.closing(client)
    return client


@pytest.mark.parametrize("native", [False, True], ids=["translated", "passed-through"])
def test_messages_answer_stream_and_count_tokens(fleet: Fleet, native: bool) -> None:
    model = fleet.model("claude-local")
    _backend, url = fleet.backend(model, chunks=5, messages=native)
    fleet.agent(url)
    client = claude(fleet)

    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    )
    message = raw.parse()
    assert message.role == "assistant"
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.usage.output_tokens > 0
    request_id = raw.headers["request-id"]
    assert raw.headers["x-request-id"] == request_id
    record = fleet.hub.usage_of(request_id)
    assert (record["path"], record["outcome"], record["status"]) == ("/v1/messages", "ok", 200)
    assert record["completion_tokens"] == message.usage.output_tokens
    assert record["prompt_tokens"] == (
        message.usage.input_tokens
        + (message.usage.cache_read_input_tokens or 0)
        + (message.usage.cache_creation_input_tokens or 0)
    )

    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0

    counted = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hello there"}])
    assert counted.input_tokens > 0


def test_messages_tool_use_round_trip_and_claude_names(tmp_path: Any, hub_factory: Any) -> None:
    fleet: Fleet = hub_factory("--model-alias", "sonnet=tool-model")
    call = ToolCall(name="get_weather", arguments=json.dumps({"city": "Paris"}))
    backend, url = fleet.backend("tool-model", chunks=4, tool_call=call)
    fleet.agent(url)
    client = claude(fleet)
    asked: Any = [{"role": "user", "content": "Weather in Paris?"}]

    first = client.messages.create(
        model="claude-sonnet-4-5-20250929",
        max_tokens=128,
        tools=[WEATHER],
        messages=asked,
    )
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    assert last_body(backend)["model"] == "tool-model"  # the family name found the hub's alias

    turns: Any = [
        *asked,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18°C, sunny"}]},
    ]
    answer = client.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=128, tools=[WEATHER], messages=turns)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"
    sent = last_body(backend)["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "18°C, sunny"}


async def test_messages_async_client_and_errors_in_anthropics_shape(fleet: Fleet) -> None:
    model = fleet.model("claude-async")
    _backend, url = fleet.backend(model, chunks=3)
    fleet.agent(url)
    async with anthropic.AsyncAnthropic(base_url=fleet.hub.url, api_key=fleet.key, max_retries=0) as client:
        await _async_calls(client, fleet, model)


async def _async_calls(client: anthropic.AsyncAnthropic, fleet: Fleet, model: str) -> None:
    message = await client.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert message.content[0].type == "text"
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(
            model=fleet.model("nobody"), max_tokens=16, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.request_id is not None
    odd: Any = [{"role": "moderator", "content": "x"}]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(model=model, max_tokens=16, messages=odd)


def test_responses_answer_and_stream(fleet: Fleet) -> None:
    model = fleet.model("codex-local")
    _backend, url = fleet.backend(model, chunks=5)
    fleet.agent(url)
    client = openai.OpenAI(base_url=fleet.hub.url + "/v1", api_key=fleet.key, max_retries=0)
    fleet.closing(client)

    raw = client.responses.with_raw_response.create(model=model, input="hello", max_output_tokens=64)
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    record = fleet.hub.usage_of(raw.headers["x-request-id"])
    assert (record["path"], record["outcome"]) == ("/v1/responses", "ok")
    assert record["completion_tokens"] == response.usage.output_tokens

    with client.responses.stream(model=model, input="hi", instructions="be brief") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text
    assert final.status == "completed"

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=model, input="again", previous_response_id=response.id)
    assert "previous_response_id" in str(refused.value)


@pytest.mark.parametrize("native", [False, True], ids=["translated", "passed-through"])
def test_a_client_that_leaves_a_messages_stream_cancels_it_on_the_backend(fleet: Fleet, native: bool) -> None:
    model = fleet.model("claude-cancel")
    backend, url = fleet.backend(model, chunks=200, delay=0.05, messages=native)
    fleet.agent(url)
    client = claude(fleet)
    with client.messages.with_streaming_response.create(
        model=model, max_tokens=500, stream=True, messages=[{"role": "user", "content": "talk"}]
    ) as response:
        request_id = response.headers["request-id"]
        events = []
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if events[-1:] == ["content_block_delta"]:
                break  # one token in: hang up
    # What reached the client before it left is a well-formed beginning of Anthropic's event grammar.
    assert [e for e in events if e != "ping"] == ["message_start", "content_block_start", "content_block_delta"]
    assert backend.wait_for(lambda: backend.records[-1].disconnected, timeout=5), "the backend never saw the cancel"
    record = fleet.hub.usage_of(request_id)
    assert record["outcome"] == "client_cancelled"
    assert record["completion_tokens"] < 200
