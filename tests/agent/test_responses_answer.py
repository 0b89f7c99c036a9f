"""A whole chat completion → a whole Response, and backends' error bodies → OpenAI's envelope
(agent/dialects/responses/answer.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response

from potluck.agent.backends.base import ResponseTranslator
from potluck.agent.dialects.responses import ResponsesJSONTranslator, translate_error, translate_request, translator_for
from potluck.protocol.agent import ErrorInfo, Usage

RESPONSE_ID = "resp_" + "a1" * 24
DIGITS = "a1" * 24


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen3-8b",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    return json.dumps(body).encode()


def answer(raw: bytes, request: dict[str, Any] | None = None) -> tuple[ResponsesJSONTranslator, dict[str, Any]]:
    body = request or {"model": "qwen3-8b", "input": "hi", "max_output_tokens": 64, "temperature": 0.3}
    translation = translate_request(json.dumps(body).encode())
    translator = translator_for(translation, response_id=RESPONSE_ID, created_at=5)
    assert isinstance(translator, ResponsesJSONTranslator)
    half = len(raw) // 2
    assert translator.feed(raw[:half]) == b""
    assert translator.feed(raw[half:]) == b""
    out = translator.finish()
    return translator, json.loads(out) if out else {}


def test_a_completion_with_reasoning_text_and_calls_becomes_these_items() -> None:
    raw = completion(
        {
            "content": "Checking.",
            "reasoning_content": "Weather needs a tool.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        finish="tool_calls",
        usage={
            "prompt_tokens": 100,
            "completion_tokens": 30,
            "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 12},
        },
    )
    translator, body = answer(raw)
    assert body["output"] == [
        {
            "type": "reasoning",
            "id": f"rs_{DIGITS}0000",
            "status": "completed",
            "content": [{"type": "reasoning_text", "text": "Weather needs a tool."}],
            "summary": [],
        },
        {
            "type": "message",
            "id": f"msg_{DIGITS}0001",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            "role": "assistant",
        },
        {
            "type": "function_call",
            "id": f"fc_{DIGITS}0002",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
            "status": "completed",
        },
        {
            "type": "function_call",
            "id": f"fc_{DIGITS}0003",
            "call_id": "call_2",
            "name": "get_time",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    assert body["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 130,
    }
    # The hub gets the cached and reasoning parts too, inside the same totals.
    assert translator.usage == Usage(
        prompt_tokens=100, completion_tokens=30, total_tokens=130, cache_read_tokens=64, reasoning_tokens=12
    )
    response = Response.model_validate(body)
    assert (response.id, response.object, response.status, response.created_at) == (
        RESPONSE_ID,
        "response",
        "completed",
        5,
    )
    assert (response.model, response.max_output_tokens, response.temperature) == ("qwen3-8b", 64, 0.3)
    assert response.output_text == "Checking."


def test_a_completion_cut_by_the_token_limit_is_incomplete() -> None:
    _, body = answer(completion({"content": "one two"}, finish="length"))
    response = Response.model_validate(body)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert body["output"][-1]["status"] == "incomplete"


def test_a_filtered_completion_is_incomplete_for_that_reason() -> None:
    _, body = answer(completion({"content": ""}, finish="content_filter"))
    assert (body["status"], body["incomplete_details"], body["output"]) == (
        "incomplete",
        {"reason": "content_filter"},
        [],
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"error":{"code":500,"message":"out of memory","type":"server_error"}}', "out of memory"),
        (b"<html>bad gateway</html>", "the backend's answer is not a chat completion"),
        (b'{"choices":"nope"}', "the backend's answer is not a chat completion"),
    ],
    ids=["an error object", "not JSON", "not a completion"],
)
def test_a_200_that_is_no_completion_is_an_error_for_the_hub(raw: bytes, message: str) -> None:
    translator, body = answer(raw)
    assert body == {}
    assert translator.error == ErrorInfo(502, "upstream_error", message)
    assert translator.usage is None


def test_it_has_the_agents_translator_shape() -> None:
    shaped: ResponseTranslator = ResponsesJSONTranslator(translate_request(b'{"model":"m","input":"x"}').echo)
    assert shaped.content_type == "application/json"


OPENAI_ENVELOPE = (
    b'{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}'
)

ERRORS: list[tuple[str, int, bytes, dict[str, Any] | None]] = [
    ("OpenAI's envelope goes through untouched", 400, OPENAI_ENVELOPE, None),
    (
        "llama.cpp's numeric code is replaced",
        400,
        b'{"error":{"code":400,"message":"tools param requires --jinja flag","type":"invalid_request_error"}}',
        {
            "message": "tools param requires --jinja flag",
            "type": "invalid_request_error",
            "code": "invalid_request_error",
        },
    ),
    (
        "llama.cpp's context overflow becomes context_length_exceeded",
        400,
        b'{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it",'
        b'"type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}',
        {
            "message": "the request exceeds the available context size, try increasing it",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    ),
    (
        "vLLM's older top-level error, a context overflow",
        400,
        b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens.",'
        b'"type":"BadRequestError","param":null,"code":400}',
        {
            "message": "This model's maximum context length is 4096 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    ),
    (
        "Ollama's string error",
        404,
        b'{"error":"model \\"qwen9\\" not found, try pulling it first"}',
        {
            "message": 'model "qwen9" not found, try pulling it first',
            "type": "invalid_request_error",
            "code": "model_not_found",
        },
    ),
    (
        "FastAPI's validation detail",
        422,
        b'{"detail":[{"loc":["body","messages"],"msg":"field required"}]}',
        {
            "message": '[{"loc":["body","messages"],"msg":"field required"}]',
            "type": "invalid_request_error",
            "code": "invalid_request_error",
        },
    ),
    (
        "a body that is not JSON",
        502,
        b"Bad Gateway\n",
        {"message": "Bad Gateway", "type": "server_error", "code": "upstream_error"},
    ),
    (
        "an empty body",
        503,
        b"",
        {"message": "the backend answered HTTP 503", "type": "server_error", "code": "server_overloaded"},
    ),
]


@pytest.mark.parametrize(("status", "body", "error"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_a_backend_error_in_openais_envelope(status: int, body: bytes, error: dict[str, Any] | None) -> None:
    out = translate_error(status, body)
    if error is None:
        assert out == body
    else:
        assert json.loads(out) == {"error": error}
