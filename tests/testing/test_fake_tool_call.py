"""The fake backend's scripted tool turn (knob `tool_call`), checked through the openai SDK's own parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from testing.fake_backend import FakeBackend, ToolCall

ARGUMENTS = json.dumps({"file_path": "/home/me/project/notes.txt", "limit": 20})
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}},
        },
    }
]
ASK: list[Any] = [{"role": "user", "content": "what is in notes.txt?"}]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(["m"], tool_call=ToolCall(name="read_file", arguments=ARGUMENTS))


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[openai.OpenAI]:
    with backend.running() as url, openai.OpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0, timeout=5) as sdk:
        yield sdk


def answered(call_id: str) -> list[Any]:
    """The conversation after the client ran the tool: the assistant's call, then the tool's result."""
    call = {"id": call_id, "type": "function", "function": {"name": "read_file", "arguments": ARGUMENTS}}
    return [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "buy milk"},
    ]


def test_a_request_offering_the_function_gets_the_call_then_text_once_the_result_is_sent(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert (call.function.name, call.function.arguments) == ("read_file", ARGUMENTS)
    assert first.usage is not None
    assert first.usage.completion_tokens >= 1

    second = client.chat.completions.create(model="m", messages=answered(call.id), tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert (second.choices[0].message.content or "").startswith("tok0 ")


def test_the_streamed_call_assembles_in_the_sdks_stream_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="m", messages=ASK, tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.function.name == "read_file"
    assert call.function.arguments == ARGUMENTS
    assert final.usage is not None
    assert final.usage.completion_tokens >= 1


def test_the_arguments_stream_in_pieces_after_a_head_with_id_and_name(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, stream=True))
    head = chunks[0].choices[0].delta
    assert head.role == "assistant"
    assert head.tool_calls is not None
    assert head.tool_calls[0].id is not None
    assert head.tool_calls[0].function is not None
    assert (head.tool_calls[0].function.name, head.tool_calls[0].function.arguments) == ("read_file", "")
    pieces = [c.choices[0].delta.tool_calls for c in chunks[1:-1]]
    assert len(pieces) > 1
    assert "".join(p[0].function.arguments or "" for p in pieces if p and p[0].function) == ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_request_not_offering_the_function_gets_text(client: openai.OpenAI) -> None:
    other: list[Any] = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]
    for answer in (
        client.chat.completions.create(model="m", messages=ASK),
        client.chat.completions.create(model="m", messages=ASK, tools=other),
    ):
        assert answer.choices[0].finish_reason == "stop"
        assert answer.choices[0].message.tool_calls is None


def test_the_knob_can_be_given_per_request(client: openai.OpenAI) -> None:
    knob = {"tool_call": {"name": "write_file", "arguments": "{}"}}
    tools: list[Any] = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]
    answer = client.chat.completions.create(model="m", messages=ASK, tools=tools, extra_body={"fake": knob})
    assert answer.choices[0].message.tool_calls is not None
    [call] = answer.choices[0].message.tool_calls
    assert call.type == "function"
    assert call.function.name == "write_file"
