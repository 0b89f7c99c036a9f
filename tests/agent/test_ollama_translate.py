"""OpenAI requests to Ollama's native API, and its NDJSON answers back to OpenAI's SSE and JSON (backends.md 5.2)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from potluck.agent.backends.base import ResponseTranslator
from potluck.agent.backends.ollama_translate import (
    NATIVE_PATHS,
    TRANSLATORS,
    ChatTranslator,
    CompletionTranslator,
    EmbeddingTranslator,
    native_request,
    translate_error,
)
from potluck.protocol.agent import Usage

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


def ndjson(*objects: dict[str, Any]) -> bytes:
    return b"".join(msgspec.json.encode(o) + b"\n" for o in objects)


def chat_line(content: str = "", **extra: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **extra.pop("message", {})}
    return {"model": "llama3.2", "created_at": "2026-01-01T00:00:00.1Z", "message": message, "done": False, **extra}


def done_line(
    key: str = "message", done_reason: str = "stop", prompt: int = 26, completion: int = 259
) -> dict[str, Any]:
    line: dict[str, Any] = {"model": "llama3.2", "created_at": "2026-01-01T00:00:01Z", "done": True}
    line[key] = {"role": "assistant", "content": ""} if key == "message" else ""
    line |= {"done_reason": done_reason, "total_duration": 10706818083, "load_duration": 6338219291}
    line |= {"prompt_eval_count": prompt, "prompt_eval_duration": 130079000}
    line |= {"eval_count": completion, "eval_duration": 4232710000}
    return line


CHAT_STREAM = ndjson(chat_line("Hé"), chat_line("llo ✓ "), chat_line("world"), done_line())
TOOL_STREAM = ndjson(
    chat_line(
        message={
            "tool_calls": [
                {"id": "call_abcd1234", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}
            ]
        }
    ),
    done_line(),
)


def events(raw: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except the final `[DONE]`; every event is whole."""
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"", "the body ends with a blank line"
    out: list[Any] = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: "), frame
        data = frame.removeprefix(b"data: ")
        out.append("[DONE]" if data == b"[DONE]" else msgspec.json.decode(data))
    return out


def chunks(raw: bytes) -> list[ChatCompletionChunk]:
    decoded = events(raw)
    assert decoded[-1] == "[DONE]"
    assert "[DONE]" not in decoded[:-1]
    return [ChatCompletionChunk.model_validate(e) for e in decoded[:-1]]


def chat(stream: bool = True, include_usage: bool = False) -> ChatTranslator:
    translator = ChatTranslator("llama3.2", stream=stream, include_usage=include_usage)
    # Fixed, so that the outputs of two translators can be compared byte for byte.
    translator.id = "chatcmpl-fixed"
    translator.created = 1_700_000_000
    return translator


def run(translator: ResponseTranslator, *pieces: bytes) -> bytes:
    return b"".join(translator.feed(p) for p in pieces) + translator.finish()


# -- native_request ------------------------------------------------------------------------------------


def test_native_paths_cover_the_three_inference_endpoints() -> None:
    assert NATIVE_PATHS == {CHAT: "/api/chat", COMPLETIONS: "/api/generate", EMBEDDINGS: "/api/embed"}
    assert set(TRANSLATORS) == set(NATIVE_PATHS)


def test_chat_sampling_fields_become_options() -> None:
    body = {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "repeat_penalty": 1.1,
        "stop": "\n\n",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert native_request(CHAT, body) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "options": {
            "num_predict": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "min_p": 0.05,
            "seed": 7,
            "stop": ["\n\n"],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "repeat_penalty": 1.1,
        },
    }


def test_max_completion_tokens_and_a_stop_list_are_kept() -> None:
    native = native_request(CHAT, {"model": "m", "messages": [], "max_completion_tokens": 9, "stop": ["a", "b"]})
    assert native["options"] == {"num_predict": 9, "stop": ["a", "b"]}


def test_stream_defaults_to_false_as_in_openai_and_no_empty_options() -> None:
    native = native_request(CHAT, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert native == {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": False}


def test_explicit_options_win_over_openai_fields() -> None:
    body = {
        "model": "m",
        "messages": [],
        "temperature": 0.2,
        "max_tokens": 5,
        "options": {"temperature": 0.9, "num_ctx": 8192},
    }
    assert native_request(CHAT, body)["options"] == {"num_predict": 5, "temperature": 0.9, "num_ctx": 8192}


def test_response_format_json_object_becomes_json() -> None:
    body = {"model": "m", "messages": [], "response_format": {"type": "json_object"}}
    assert native_request(CHAT, body)["format"] == "json"


def test_response_format_json_schema_becomes_the_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {
        "model": "m",
        "messages": [],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "strict": True, "schema": schema}},
    }
    assert native_request(CHAT, body)["format"] == schema


def test_response_format_text_sets_no_format() -> None:
    assert "format" not in native_request(CHAT, {"model": "m", "messages": [], "response_format": {"type": "text"}})


def test_content_parts_become_text_and_inline_images() -> None:
    body = {
        "model": "llava",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "text", "text": "in this picture?"},
                ],
            }
        ],
    }
    assert native_request(CHAT, body)["messages"] == [
        {"role": "user", "content": "What is in this picture?", "images": [PNG_B64]}
    ]


def test_an_http_image_url_is_neither_fetched_nor_passed_on() -> None:
    # Fetching a client-chosen URL from the agent's host would be a server-side request forgery.
    url = "http://169.254.169.254/latest/meta-data/image.png"
    body = {
        "model": "llava",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
    }
    native = native_request(CHAT, body)
    assert native["messages"] == [{"role": "user", "content": "look"}]
    assert "169.254" not in msgspec.json.encode(native).decode()


def test_assistant_tool_calls_get_object_arguments_and_null_content_becomes_empty() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    native = native_request(CHAT, {"model": "m", "messages": messages})
    assert native["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}
        ],
    }
    assert native["messages"][2] == messages[2]


def test_tool_call_arguments_that_are_not_json_stay_as_they_are() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    native = native_request(CHAT, {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]})
    assert native["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{not json"


def test_keep_alive_think_and_tools_pass_as_they_are() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    body = {"model": "m", "messages": [], "keep_alive": "10m", "think": True, "tools": tools}
    native = native_request(CHAT, body)
    assert native["keep_alive"] == "10m"
    assert native["think"] is True
    assert native["tools"] == tools


def test_completions_take_the_prompt_and_suffix() -> None:
    body = {"model": "m", "prompt": ["def f(", "ignored"], "suffix": "return x", "max_tokens": 3, "stream": True}
    assert native_request(COMPLETIONS, body) == {
        "model": "m",
        "prompt": "def f(",
        "stream": True,
        "options": {"num_predict": 3},
        "suffix": "return x",
    }
    assert native_request(COMPLETIONS, {"model": "m", "prompt": "hi", "keep_alive": 0})["keep_alive"] == 0


def test_embeddings_take_the_input_and_never_a_format_or_stream() -> None:
    body = {
        "model": "nomic-embed-text",
        "input": ["a", "b"],
        "dimensions": 4,
        "truncate": True,
        "keep_alive": -1,
        "response_format": {"type": "json_object"},
        "options": {"num_ctx": 512},
    }
    assert native_request(EMBEDDINGS, body) == {
        "model": "nomic-embed-text",
        "input": ["a", "b"],
        "options": {"num_ctx": 512},
        "keep_alive": -1,
        "truncate": True,
        "dimensions": 4,
    }


# -- ChatTranslator, streaming -------------------------------------------------------------------------


def test_chat_stream_role_chunk_then_content_then_finish_then_done() -> None:
    out = run(chat(), CHAT_STREAM)
    parsed = chunks(out)
    assert [c.choices[0].delta.model_dump(exclude_none=True) for c in parsed] == [
        {"role": "assistant", "content": ""},
        {"content": "Hé"},
        {"content": "llo ✓ "},
        {"content": "world"},
        {},
    ]
    assert [c.choices[0].finish_reason for c in parsed] == [None, None, None, None, "stop"]
    assert {c.id for c in parsed} == {"chatcmpl-fixed"}
    assert {c.object for c in parsed} == {"chat.completion.chunk"}
    assert {c.model for c in parsed} == {"llama3.2"}
    assert out.endswith(b"data: [DONE]\n\n")


def test_chat_stream_split_at_every_byte_boundary_gives_the_same_output() -> None:
    whole = run(chat(include_usage=True), CHAT_STREAM)
    for cut in range(len(CHAT_STREAM) + 1):
        assert run(chat(include_usage=True), CHAT_STREAM[:cut], CHAT_STREAM[cut:]) == whole, cut
    one_byte_at_a_time = [CHAT_STREAM[i : i + 1] for i in range(len(CHAT_STREAM))]
    assert run(chat(include_usage=True), *one_byte_at_a_time) == whole


def test_chat_stream_usage_chunk_only_with_include_usage() -> None:
    with_usage = chat(include_usage=True)
    parsed = chunks(run(with_usage, CHAT_STREAM))
    assert parsed[-1].choices == []
    assert parsed[-1].usage is not None
    assert parsed[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 26,
        "completion_tokens": 259,
        "total_tokens": 285,
    }
    assert with_usage.usage == Usage(prompt_tokens=26, completion_tokens=259, total_tokens=285)

    without = chat(include_usage=False)
    parsed = chunks(run(without, CHAT_STREAM))
    assert all(c.usage is None for c in parsed)
    assert parsed[-1].choices[0].finish_reason == "stop"
    # The agent still meters what it did not show.
    assert without.usage == Usage(prompt_tokens=26, completion_tokens=259, total_tokens=285)


def test_chat_stream_tool_calls_get_string_arguments_and_finish_reason_tool_calls() -> None:
    parsed = chunks(run(chat(), TOOL_STREAM))
    calls = [c for c in parsed if c.choices and c.choices[0].delta.tool_calls]
    assert len(calls) == 1
    (call,) = calls[0].choices[0].delta.tool_calls or []
    assert call.index == 0
    assert call.id == "call_abcd1234"
    assert call.type == "function"
    assert call.function is not None
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str)
    assert msgspec.json.decode(call.function.arguments) == {"city": "Tokyo"}
    assert parsed[-1].choices[0].finish_reason == "tool_calls"


def test_chat_stream_done_reason_length_becomes_finish_reason_length() -> None:
    parsed = chunks(run(chat(), ndjson(chat_line("tok"), done_line(done_reason="length"))))
    assert parsed[-1].choices[0].finish_reason == "length"


def test_chat_stream_thinking_becomes_reasoning_content() -> None:
    parsed = chunks(run(chat(), ndjson(chat_line(message={"thinking": "hmm"}), chat_line("ok"), done_line())))
    assert [(c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in parsed[:3]] == [None, "hmm", None]


def test_chat_stream_error_line_sets_error_and_emits_nothing_more() -> None:
    translator = chat()
    before = translator.feed(ndjson(chat_line("partial")))
    error_before = translator.error
    assert error_before is None
    out = translator.feed(ndjson({"error": "model runner has unexpectedly stopped"}, chat_line("more"), done_line()))
    assert translator.error is not None
    assert translator.error.status == 502
    assert translator.error.code == "upstream_error"
    assert "unexpectedly stopped" in translator.error.message
    # The relay sends whatever `feed` returned before it looks at `error`: nothing after the error may be in it.
    assert out == b""
    assert translator.feed(ndjson(chat_line("late"), done_line())) + translator.finish() == b""
    assert b"partial" in before


def test_chat_stream_a_line_that_is_not_json_is_an_error() -> None:
    translator = chat()
    out = translator.feed(b"<html>502 Bad Gateway</html>\n")
    assert out == b""
    assert translator.error is not None
    assert translator.error.code == "upstream_error"


# -- ChatTranslator, whole answers ---------------------------------------------------------------------


def test_chat_without_stream_is_one_chat_completion_with_usage() -> None:
    translator = chat(stream=False)
    assert translator.content_type == "application/json"
    whole = {
        **done_line(),
        "message": {"role": "assistant", "content": "Hello there"},
    }
    # Ollama's gin writes the object without a trailing newline.
    body = run(translator, msgspec.json.encode(whole)[:10], msgspec.json.encode(whole)[10:])
    completion = ChatCompletion.model_validate_json(body)
    assert completion.object == "chat.completion"
    assert completion.id == "chatcmpl-fixed"
    assert completion.model == "llama3.2"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        26,
        259,
        285,
    )
    assert translator.usage == Usage(26, 259, 285)


def test_chat_without_stream_tool_calls() -> None:
    translator = chat(stream=False)
    completion = ChatCompletion.model_validate_json(run(translator, TOOL_STREAM))
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert msgspec.json.decode(message.tool_calls[0].function.arguments) == {"city": "Tokyo"}  # type: ignore[union-attr]


def test_chat_without_stream_error_body_sets_error() -> None:
    translator = chat(stream=False)
    assert run(translator, b'{"error":"llama runner process has terminated"}') == b""
    assert translator.error is not None
    assert translator.error.message == "llama runner process has terminated"


# -- CompletionTranslator ------------------------------------------------------------------------------


GENERATE_STREAM = ndjson(
    {"model": "llama3.2", "created_at": "2026-01-01T00:00:00Z", "response": "The", "done": False},
    {"model": "llama3.2", "created_at": "2026-01-01T00:00:00Z", "response": " sky", "done": False},
    {**done_line(key="response", done_reason="length", prompt=5, completion=2), "context": [1, 2, 3]},
)


def test_completion_stream_text_chunks_finish_usage_and_done() -> None:
    translator = CompletionTranslator("llama3.2", stream=True, include_usage=True)
    assert translator.content_type == "text/event-stream"
    decoded = events(run(translator, GENERATE_STREAM[:17], GENERATE_STREAM[17:]))
    assert decoded[-1] == "[DONE]"
    # The SDK's Completion type has no None finish_reason (it does not validate stream chunks): check the dicts.
    parsed = decoded[:-1]
    assert {p["object"] for p in parsed} == {"text_completion"}
    assert {p["id"] for p in parsed} == {translator.id}
    assert [c["text"] for p in parsed for c in p["choices"]] == ["The", " sky", ""]
    assert [c["finish_reason"] for p in parsed for c in p["choices"]] == [None, None, "length"]
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert translator.usage == Usage(5, 2, 7)


def test_completion_stream_without_include_usage_has_no_usage_chunk() -> None:
    translator = CompletionTranslator("llama3.2", stream=True, include_usage=False)
    decoded = events(run(translator, GENERATE_STREAM))
    assert all("usage" not in e for e in decoded[:-1])
    assert translator.usage == Usage(5, 2, 7)


def test_completion_without_stream_is_one_text_completion() -> None:
    translator = CompletionTranslator("llama3.2", stream=False, include_usage=False)
    whole = {**done_line(key="response", prompt=3, completion=4), "response": "blue, mostly"}
    completion = Completion.model_validate_json(run(translator, msgspec.json.encode(whole)))
    assert completion.choices[0].text == "blue, mostly"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 4


# -- EmbeddingTranslator -------------------------------------------------------------------------------


def test_embedding_answer_becomes_an_openai_list() -> None:
    translator = EmbeddingTranslator("nomic-embed-text")
    native = {
        "model": "nomic-embed-text",
        "embeddings": [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]],
        "total_duration": 14143917,
        "load_duration": 1019500,
        "prompt_eval_count": 8,
    }
    encoded = msgspec.json.encode(native)
    assert translator.feed(encoded[:20]) == b""
    assert translator.feed(encoded[20:]) == b""
    response = CreateEmbeddingResponse.model_validate_json(translator.finish())
    assert response.object == "list"
    assert response.model == "nomic-embed-text"
    assert [(d.index, d.embedding) for d in response.data] == [(0, [0.1, -0.2, 0.3]), (1, [0.4, 0.5, -0.6])]
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (8, 8)
    assert translator.usage == Usage(prompt_tokens=8, total_tokens=8)
    assert translator.content_type == "application/json"


@pytest.mark.parametrize("body", [b'{"error":"this model does not support embeddings"}', b"not json", b"[1]"])
def test_embedding_error_or_garbage_sets_error(body: bytes) -> None:
    translator = EmbeddingTranslator("m")
    translator.feed(body)
    assert translator.finish() == b""
    assert translator.error is not None
    assert translator.error.code == "upstream_error"


# -- translate_error -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            404,
            b'{"error":"model \'x\' not found"}',
            {"message": "model 'x' not found", "type": "invalid_request_error", "code": "model_not_found"},
        ),
        (
            400,
            b'{"error":"model is required"}',
            {"message": "model is required", "type": "invalid_request_error", "code": "invalid_request_error"},
        ),
        (
            500,
            b'{"error":"llama runner process has terminated: exit status 2"}',
            {
                "message": "llama runner process has terminated: exit status 2",
                "type": "server_error",
                "code": "upstream_error",
            },
        ),
        (
            502,
            b"<html><body>Bad Gateway</body></html>\n",
            {"message": "<html><body>Bad Gateway</body></html>", "type": "server_error", "code": "upstream_error"},
        ),
        (
            503,
            b"",
            {"message": "backend answered HTTP 503", "type": "server_error", "code": "upstream_error"},
        ),
    ],
)
def test_translate_error_gives_openais_shape(status: int, body: bytes, expected: dict[str, str]) -> None:
    assert msgspec.json.decode(translate_error(status, body)) == {"error": expected}
    # Every translator answers errors the same way.
    assert ChatTranslator("m", stream=True, include_usage=False).translate_error(status, body) == translate_error(
        status, body
    )


def test_embeddings_come_back_base64_when_the_client_asks() -> None:
    import base64
    import json
    import struct

    from potluck.agent.backends.ollama_translate import EmbeddingTranslator

    translator = EmbeddingTranslator("embed", encoding_format="base64")
    translator.feed(b'{"model":"embed","embeddings":[[0.5,-1.25]],"prompt_eval_count":2}')
    body = json.loads(translator.finish())
    packed = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<2f", packed) == (0.5, -1.25)
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
