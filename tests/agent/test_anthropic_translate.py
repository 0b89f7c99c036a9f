"""Anthropic Messages requests to chat completions, chat-completion answers and errors back, count_tokens helpers.

Outputs are checked against the official SDKs' types: the chat body against `openai`'s request params,
answers and errors against `anthropic`'s `Message`, `ErrorResponse` and `MessageTokensCount`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from anthropic.types import ErrorResponse, Message, MessageTokensCount
from openai.types.chat import completion_create_params
from pydantic import TypeAdapter

from potluck.agent.dialects.anthropic_count import (
    CountError,
    apply_template_body,
    count_request,
    estimate_input_tokens,
    llamacpp_tokenize_body,
    read_prompt,
    read_token_count,
    token_count_body,
    vllm_tokenize_body,
)
from potluck.agent.dialects.anthropic_request import (
    AnswerContext,
    MessagesRequestError,
    ThinkingControl,
    decode_request,
    translate_request,
)
from potluck.agent.dialects.anthropic_response import (
    BadAnswerError,
    MessageResponse,
    translate_error,
    translate_response,
)
from potluck.protocol.errors import ErrorCode

CHAT_PARAMS: TypeAdapter[Any] = TypeAdapter(completion_create_params.CompletionCreateParamsStreaming)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
PDF = "JVBERi0xLjQKJcfs"
BILLING = "x-anthropic-billing-header: cc_version=2.1.101.e51; cc_entrypoint=cli; cch=a5145;"


def body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "claude-sonnet-4-5", "max_tokens": 1024, **fields})


def chat(**fields: Any) -> dict[str, Any]:
    """The chat body for a Messages body; validated as an OpenAI streaming chat request."""
    translated = translate_request(body(stream=True, **fields))
    out: dict[str, Any] = msgspec.json.decode(translated.body)
    CHAT_PARAMS.validate_python(out)
    return out


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image(source: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image", "source": source}


def tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_result(call_id: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


BASE64_IMAGE = image({"type": "base64", "media_type": "image/png", "data": PNG})
PNG_URL = f"data:image/png;base64,{PNG}"

MESSAGE_CASES: list[Any] = [
    pytest.param({"messages": [user("hi")]}, [user("hi")], id="user-string"),
    pytest.param(
        {"system": "Be brief.", "messages": [user("hi")]},
        [{"role": "system", "content": "Be brief."}, user("hi")],
        id="system-string",
    ),
    pytest.param(
        {"system": [text(BILLING), text("You are Claude Code."), text("Be brief.")], "messages": [user("hi")]},
        [{"role": "system", "content": "You are Claude Code.\n\nBe brief."}, user("hi")],
        id="system-blocks-without-billing-header",
    ),
    pytest.param(
        {"system": f"{BILLING}\nYou are Claude Code.", "messages": [user("hi")]},
        [{"role": "system", "content": "You are Claude Code."}, user("hi")],
        id="system-string-without-billing-header",
    ),
    pytest.param(
        {"messages": [user([text("look"), BASE64_IMAGE, image({"type": "url", "url": "https://x/cat.jpg"})])]},
        [user([text("look"), image_part(PNG_URL), image_part("https://x/cat.jpg")])],
        id="images-base64-and-url",
    ),
    pytest.param(
        {
            "messages": [
                user(
                    [
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A."}},
                        {"type": "document", "title": "T", "source": {"type": "content", "content": [text("B.")]}},
                        {
                            "type": "document",
                            "title": "r.pdf",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        },
                        text("Summarise."),
                    ]
                )
            ]
        },
        [
            user(
                [
                    text("A."),
                    text("T"),
                    text("B."),
                    {"type": "file", "file": {"filename": "r.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}},
                    text("Summarise."),
                ]
            )
        ],
        id="documents",
    ),
    pytest.param(
        {
            "messages": [
                user("weather?"),
                assistant(
                    [
                        {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        text("Checking."),
                        tool_use("toolu_1", "get_weather", {"city": "Paris", "days": [1, 2]}),
                    ]
                ),
                user([tool_result("toolu_1", "18°C")]),
            ]
        },
        [
            user("weather?"),
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [call("toolu_1", "get_weather", '{"city":"Paris","days":[1,2]}')],
                "reasoning_content": "Use the tool.",
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
        ],
        id="tool-use-round-trip",
    ),
    pytest.param(
        {
            "messages": [
                assistant([tool_use("a", "read", {}), tool_use("b", "shot", {})]),
                user(
                    [
                        tool_result("a", [text("line 1"), text("line 2")]),
                        tool_result("b", [text("here"), BASE64_IMAGE], is_error=False),
                        tool_result("c", "no such file", is_error=True),
                        text("and now?"),
                    ]
                ),
            ]
        },
        [
            {"role": "assistant", "content": "", "tool_calls": [call("a", "read", "{}"), call("b", "shot", "{}")]},
            {"role": "tool", "tool_call_id": "a", "content": "line 1\nline 2"},
            {"role": "tool", "tool_call_id": "b", "content": "here"},
            {"role": "tool", "tool_call_id": "c", "content": "Error: no such file"},
            user([image_part(PNG_URL), text("and now?")]),
        ],
        id="tool-results-first-then-images-and-text",
    ),
    pytest.param(
        {"messages": [user("a"), user([text("b")]), assistant("c"), assistant([text("d")])]},
        [user([text("a"), text("b")]), assistant("cd")],
        id="consecutive-turns-merged",
    ),
    pytest.param(
        # Claude Code puts system text inside `messages` too: it joins the system prompt, billing header dropped.
        {
            "system": [text("x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=cli;"), text("be brief")],
            "messages": [
                user("hi"),
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "tools changed", "cache_control": {"type": "ephemeral"}}],
                },
                assistant("ok"),
                {"role": "system", "content": "later note"},
                user("bye"),
            ],
        },
        [
            {"role": "system", "content": "be brief\n\ntools changed\n\nlater note"},
            user("hi"),
            assistant("ok"),
            user("bye"),
        ],
        id="system-messages-join-the-system-prompt",
    ),
    pytest.param(
        {"messages": [user([{"type": "search_result", "source": "https://s", "title": "S", "content": [text("x")]}])]},
        [user("S\nhttps://s\n\nx")],
        id="search-result",
    ),
]


@pytest.mark.parametrize(("fields", "messages"), MESSAGE_CASES)
def test_messages(fields: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    assert chat(**fields)["messages"] == messages


WEATHER = {"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"}}
WEATHER_FN = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object"}},
}

FIELD_CASES: list[Any] = [
    pytest.param({"tools": [WEATHER, {"type": "bash_20250124", "name": "bash"}]}, {"tools": [WEATHER_FN]}, id="tools"),
    pytest.param({"tools": [WEATHER], "tool_choice": {"type": "auto"}}, {"tool_choice": "auto"}, id="choice-auto"),
    pytest.param({"tools": [WEATHER], "tool_choice": {"type": "any"}}, {"tool_choice": "required"}, id="choice-any"),
    pytest.param({"tools": [WEATHER], "tool_choice": {"type": "none"}}, {"tool_choice": "none"}, id="choice-none"),
    pytest.param(
        {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False},
        id="choice-named-one-call",
    ),
    pytest.param(
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}], "tool_choice": {"type": "any"}},
        {"tools": None, "tool_choice": None},
        id="only-anthropic-tools",
    ),
    pytest.param(
        {"stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9, "top_k": 40, "metadata": {"user_id": "u1"}},
        {"stop": ["END"], "temperature": 0.2, "top_p": 0.9, "top_k": 40, "user": "u1", "max_tokens": 1024},
        id="sampling-and-metadata",
    ),
    pytest.param(
        {"service_tier": "auto", "container": "c", "context_management": {}, "mcp_servers": [], "cache_control": {}},
        {"service_tier": None, "container": None, "context_management": None, "mcp_servers": None},
        id="unknown-fields-dropped",
    ),
    pytest.param({}, {"stream": True, "stream_options": {"include_usage": True}}, id="stream-asks-usage"),
    pytest.param({}, {"chat_template_kwargs": {"enable_thinking": False, "thinking": False}}, id="thinking-off"),
    pytest.param(
        {"thinking": {"type": "enabled", "budget_tokens": 4096}},
        {"chat_template_kwargs": {"enable_thinking": True, "thinking": True}, "reasoning_effort": None},
        id="thinking-on",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), FIELD_CASES)
def test_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat(messages=[user("hi")], **fields)
    assert {k: out.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("thinking", "output_config", "expected"),
    [
        (None, None, {"reasoning_effort": "none", "thinking_budget_tokens": None}),
        ({"type": "disabled"}, None, {"reasoning_effort": "none", "thinking_budget_tokens": None}),
        ({"type": "enabled", "budget_tokens": 2048}, None, {"reasoning_effort": None, "thinking_budget_tokens": 2048}),
        ({"type": "adaptive"}, {"effort": "high"}, {"reasoning_effort": "high", "thinking_budget_tokens": None}),
    ],
)
def test_llamacpp_thinking_fields(thinking: Any, output_config: Any, expected: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"messages": [user("hi")]}
    if thinking is not None:
        fields["thinking"] = thinking
    if output_config is not None:
        fields["output_config"] = output_config
    out = msgspec.json.decode(translate_request(body(**fields), control=ThinkingControl.LLAMACPP).body)
    assert {k: out.get(k) for k in expected} == expected


def test_answer_context_and_model_override() -> None:
    translated = translate_request(
        body(messages=[user("hi")], stop_sequences=["A", "B"], thinking={"type": "adaptive"}), model="qwen3-8b"
    )
    assert msgspec.json.decode(translated.body)["model"] == "qwen3-8b"
    assert translated.answer == AnswerContext(
        "claude-sonnet-4-5", stream=False, thinking=True, stop_sequences=("A", "B")
    )
    assert "stream" not in msgspec.json.decode(translated.body)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"{not json", "not valid JSON"),
        (msgspec.json.encode({"model": "m", "messages": []}), "max_tokens"),
        (body(messages=[user([{"type": "server_tool_use", "id": "x", "name": "web_search", "input": {}}])]), "type"),
        (body(messages=[user([image({"type": "file", "file_id": "file_1"})])]), "Files API"),
        (body(messages=[user([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}])]), "by URL"),
        (body(messages=[user([tool_use("a", "f", {})])]), "user message cannot hold a `tool_use`"),
        (body(messages=[assistant([tool_result("a", "x")])]), "assistant message cannot hold a `tool_result`"),
        (body(messages=[user("x")], tools=[WEATHER], tool_choice={"type": "tool"}), "tool_choice.name"),
        (body(messages=[{"role": "moderator", "content": "x"}]), "role"),
        (
            body(messages=[{"role": "system", "content": [image({"type": "url", "url": "https://x/a.png"})]}]),
            "text only",
        ),
        (body(messages=[user(5)]), "content"),
    ],
)
def test_bad_requests_are_400(raw: bytes, complaint: str) -> None:
    with pytest.raises(MessagesRequestError, match=complaint) as caught:
        translate_request(raw)
    assert caught.value.status == 400
    assert caught.value.code == ErrorCode.INVALID_REQUEST


# -- whole answers ------------------------------------------------------------------------------------

ANSWER = AnswerContext(model="claude-haiku-4-5", stream=False, thinking=True, stop_sequences=("###",))


def completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> bytes:
    usage = {"prompt_tokens": 900, "completion_tokens": 60, "total_tokens": 960}
    usage["prompt_tokens_details"] = {"cached_tokens": 850}  # type: ignore[assignment]
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **extra}
    return msgspec.json.encode(
        {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen3", "choices": [choice], "usage": usage}
    )


def test_whole_answer_with_reasoning_text_and_tools() -> None:
    raw = completion(
        {
            "content": "Let me check both.",
            "reasoning_content": "Two cities.",
            "tool_calls": [call("call_a", "get_weather", '{"city":"Oslo"}'), call("call_b", "get_weather", "")],
        },
        finish="tool_calls",
    )
    out, tokens = translate_response(raw, ANSWER, "msg_1")
    message = Message.model_validate_json(out)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "Two cities.", "signature": ""},
        {"type": "text", "text": "Let me check both."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {}},
    ]
    assert (message.id, message.model, message.role, message.stop_reason) == (
        "msg_1",
        "claude-haiku-4-5",
        "assistant",
        "tool_use",
    )
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        50,
        850,
        60,
    )
    assert tokens is not None
    assert tokens.to_frame().prompt_tokens == 900


@pytest.mark.parametrize(
    ("finish", "extra", "reason", "sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("length", {}, "max_tokens", None),
        ("stop", {"stop_reason": "###"}, "stop_sequence", "###"),
        ("stop", {"stop_reason": 2}, "end_turn", None),
        ("content_filter", {}, "refusal", None),
    ],
)
def test_whole_answer_stop_reasons(finish: str, extra: dict[str, Any], reason: str, sequence: str | None) -> None:
    out, _ = translate_response(completion({"content": "x"}, finish, **extra), ANSWER)
    message = Message.model_validate_json(out)
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)
    assert message.id.startswith("msg_")


def test_whole_answer_reasoning_left_out_without_thinking() -> None:
    answer = AnswerContext(model="m", stream=False, thinking=False)
    out, _ = translate_response(completion({"content": "x", "reasoning": "hidden"}), answer)
    assert [b.type for b in Message.model_validate_json(out).content] == ["text"]


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"<html>", "not a chat completion"),
        (msgspec.json.encode({"choices": []}), "no choices"),
        (completion({"tool_calls": [call("c", "f", "[1, 2]")]}), "not a JSON object"),
        (completion({"tool_calls": [call("c", "", "{}")]}), "without naming it"),
    ],
)
def test_bad_whole_answers(raw: bytes, complaint: str) -> None:
    with pytest.raises(BadAnswerError, match=complaint):
        translate_response(raw, ANSWER)


def test_message_response_collects_pieces() -> None:
    raw = completion({"content": "Hello"})
    response = MessageResponse(ANSWER, "msg_2")
    assert all(response.feed(raw[i : i + 7]) == b"" for i in range(0, len(raw), 7))
    message = Message.model_validate_json(response.finish())
    assert message.content[0].model_dump(exclude_none=True) == {"type": "text", "text": "Hello"}
    assert response.usage is not None
    assert response.usage.prompt_tokens == 900
    assert response.error is None

    broken = MessageResponse(ANSWER)
    broken.feed(b'{"choices": [')
    assert broken.finish() == b""
    assert broken.error is not None
    assert broken.error.code == ErrorCode.UPSTREAM_ERROR


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "raw", "expected"),
    [
        (
            400,
            b'{"error":{"message":"bad","type":"invalid_request_error","code":null}}',
            ("invalid_request_error", "bad"),
        ),
        (
            401,
            b'{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}',
            ("authentication_error", "Invalid API Key"),
        ),
        (403, b'{"error":"forbidden"}', ("permission_error", "forbidden")),
        (
            404,
            b'{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","code":404}',
            ("not_found_error", "The model `x` does not exist."),
        ),
        (413, b'{"detail":"too big"}', ("request_too_large", "too big")),
        (429, b'{"error":{"message":"slow down","type":"rate_limit_error"}}', ("rate_limit_error", "slow down")),
        (500, b"Internal Server Error", ("api_error", "Internal Server Error")),
        (
            503,
            b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}',
            ("overloaded_error", "Loading model"),
        ),
        (529, b"", ("overloaded_error", "the backend answered HTTP 529")),
        (502, b'{"error":{"message":"no agent","code":"server_overloaded"}}', ("overloaded_error", "no agent")),
        (404, b'{"error":{"message":"no such model","code":"model_not_found"}}', ("not_found_error", "no such model")),
        (
            422,
            b'{"detail":[{"loc":["body"],"msg":"x"}]}',
            ("invalid_request_error", '[{"loc":["body"],"msg":"x"}]'),
        ),
        (504, b"{}", ("timeout_error", "the backend answered HTTP 504")),
        (418, b"{}", ("invalid_request_error", "the backend answered HTTP 418")),
        (507, b"{}", ("api_error", "the backend answered HTTP 507")),
    ],
)
def test_error_translation(status: int, raw: bytes, expected: tuple[str, str]) -> None:
    out = translate_error(status, raw)
    assert msgspec.json.decode(out) == {"type": "error", "error": {"type": expected[0], "message": expected[1]}}
    if expected[0] != "request_too_large":  # in Anthropic's docs, but not in the SDK's union of error objects
        error = ErrorResponse.model_validate_json(out)
        assert (error.error.type, error.error.message) == expected


# -- count_tokens ------------------------------------------------------------------------------------


COUNT_BODY = msgspec.json.encode(
    {
        "model": "claude-sonnet-4-5",
        "system": [text(BILLING), text("Be brief.")],
        "messages": [user("What is the weather in Paris?")],
        "tools": [WEATHER],
    }
)


def test_count_request_needs_no_max_tokens_and_builds_the_prompt() -> None:
    count = count_request(COUNT_BODY, model="qwen3")
    assert count.chat == {
        "messages": [{"role": "system", "content": "Be brief."}, user("What is the weather in Paris?")],
        "tools": [WEATHER_FN],
        "chat_template_kwargs": {"enable_thinking": False, "thinking": False},
        "model": "qwen3",
    }
    assert msgspec.json.decode(apply_template_body(count)) == count.chat
    assert msgspec.json.decode(vllm_tokenize_body(count)) == {**count.chat, "add_generation_prompt": True}
    assert msgspec.json.decode(llamacpp_tokenize_body("<|im_start|>")) == {
        "content": "<|im_start|>",
        "add_special": True,
        "parse_special": True,
    }


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (b'{"tokens": [1, 2, 3]}', 3),
        (b'{"tokens": [{"id": 1, "piece": "a"}]}', 1),
        (b'{"count": 12, "max_model_len": 4096, "tokens": [1]}', 12),
        (b'{"object": "response.input_tokens", "input_tokens": 11}', 11),
    ],
)
def test_token_counts_are_read(raw: bytes, count: int) -> None:
    assert read_token_count(raw) == count
    assert MessageTokensCount.model_validate_json(token_count_body(count)).input_tokens == count


def test_unreadable_tokenizer_answers() -> None:
    assert read_prompt(b'{"prompt": "<|im_start|>user"}') == "<|im_start|>user"
    for raw in (b"{}", b"nope"):
        with pytest.raises(CountError):
            read_token_count(raw)
    with pytest.raises(CountError):
        read_prompt(b"{}")


def test_estimate_is_length_based() -> None:
    plain = decode_request(msgspec.json.encode({"model": "m", "messages": [user("x" * 400)]}))
    assert estimate_input_tokens(plain) == 4 + 100
    rich = decode_request(
        msgspec.json.encode(
            {
                "model": "m",
                "system": "s" * 40,
                "messages": [user([text("y" * 40), BASE64_IMAGE]), assistant([tool_use("a", "f", {"k": "v"})])],
                "tools": [WEATHER],
            }
        )
    )
    assert estimate_input_tokens(rich) > estimate_input_tokens(plain) - 100 + 1600


def test_estimate_counts_every_kind_of_block() -> None:
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d" * 8}}
    inner = {"type": "document", "source": {"type": "content", "content": [text("e" * 4)]}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    search = {"type": "search_result", "source": "ab", "title": "cd", "content": [text("ef")]}
    req = decode_request(
        msgspec.json.encode(
            {
                "model": "m",
                "messages": [
                    user([doc, inner, {"type": "document", "source": {"type": "content", "content": "f" * 4}}]),
                    assistant(
                        [
                            {"type": "thinking", "thinking": "t" * 8, "signature": ""},
                            {"type": "redacted_thinking", "data": "x" * 99},
                        ]
                    ),
                    user([tool_result("a", [text("g" * 4), BASE64_IMAGE]), tool_result("b", "h" * 4), search, pdf]),
                ],
            }
        )
    )
    # 3 messages; 8+4+4 + 8 + 4+4 + 6 characters = 38 -> 10 tokens; an image and a PDF.
    assert estimate_input_tokens(req) == 3 * 4 + 10 + 2 * 1600
