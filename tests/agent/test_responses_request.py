"""Responses requests → chat completions requests (agent/dialects/responses/request.py), case by case.

Each case is a Responses body as clients send it and the exact chat body the backend must get.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from potluck.agent.dialects.responses import translate_request
from potluck.protocol.responses import (
    ResponsesRequestError,
)

PNG = "data:image/png;base64,iVBORw0KGgo="
SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}},
}
SHELL_CHAT = {
    "type": "function",
    "function": {
        "name": "shell",
        "description": "Runs a shell command",
        "parameters": SHELL["parameters"],
        "strict": False,
    },
}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def call(call_id: str, name: str = "shell", arguments: str = '{"command":["ls"]}') -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def chat_call(call_id: str, name: str = "shell", arguments: str = '{"command":["ls"]}') -> dict[str, Any]:
    return {"type": "function", "id": call_id, "function": {"name": name, "arguments": arguments}}


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "consecutive messages of one role become one; an empty one adds nothing",
        {
            "model": "m",
            "input": [
                {"role": "user", "content": []},
                user("a"),
                {"role": "user", "content": [{"type": "input_image", "image_url": PNG}]},
                {"role": "assistant", "content": "First."},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Second."}]},
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                },
                {"role": "assistant", "content": "First.\n\nSecond."},
            ],
        },
    ),
    (
        "a string input and instructions",
        {"model": "m", "instructions": "Be brief.", "input": "Hi"},
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    ),
    (
        "instructions and every developer or system message become one leading system message",
        {
            "model": "m",
            "instructions": "A",
            "input": [
                {"role": "developer", "content": "B"},
                user("hi"),
                {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "C"}]},
                {"role": "user", "content": "again"},
            ],
        },
        {
            "model": "m",
            "messages": [{"role": "system", "content": "A\n\nB\n\nC"}, {"role": "user", "content": "hi\n\nagain"}],
        },
    ),
    (
        "text and images, by URL, with their detail",
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": PNG, "detail": "high"},
                        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
                    ],
                }
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    ],
                }
            ],
        },
    ),
    (
        "an inline file",
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
                    ],
                }
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}
                    ],
                }
            ],
        },
    ),
    (
        "an assistant message, then its function call and the call's output, in order",
        {
            "model": "m",
            "input": [
                user("list files"),
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Listing.", "annotations": []}],
                },
                call("call_1"),
                output("call_1", "a.txt"),
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": "Listing.", "tool_calls": [chat_call("call_1")]},
                {"role": "tool", "content": "a.txt", "tool_call_id": "call_1"},
            ],
        },
    ),
    (
        "parallel calls join one assistant message; their outputs follow in order",
        {
            "model": "m",
            "input": [
                user("go"),
                call("call_a", arguments='{"command":["a"]}'),
                call("call_b", arguments='{"command":["b"]}'),
                output("call_a", "A"),
                output("call_b", "B"),
                {"role": "assistant", "content": "Done."},
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        chat_call("call_a", arguments='{"command":["a"]}'),
                        chat_call("call_b", arguments='{"command":["b"]}'),
                    ],
                },
                {"role": "tool", "content": "A", "tool_call_id": "call_a"},
                {"role": "tool", "content": "B", "tool_call_id": "call_b"},
                {"role": "assistant", "content": "Done."},
            ],
        },
    ),
    (
        "reasoning folds into the next assistant message; reasoning before a user message is dropped",
        {
            "model": "m",
            "input": [
                user("q1"),
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "think 1"}],
                    "encrypted_content": None,
                },
                call("call_1"),
                output("call_1", "ok"),
                {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "sum 2"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "A1"}]},
                {"type": "reasoning", "id": "rs_3", "summary": [{"type": "summary_text", "text": "lost"}]},
                user("q2"),
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "tool_calls": [chat_call("call_1")], "reasoning_content": "think 1"},
                {"role": "tool", "content": "ok", "tool_call_id": "call_1"},
                {"role": "assistant", "content": "A1", "reasoning_content": "sum 2"},
                {"role": "user", "content": "q2"},
            ],
        },
    ),
    (
        "custom and local shell calls are replayed as function calls so their outputs pair up",
        {
            "model": "m",
            "input": [
                user("patch"),
                {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "applied"},
                {
                    "type": "local_shell_call",
                    "call_id": "c2",
                    "status": "completed",
                    "action": {"type": "exec", "command": ["ls"]},
                },
                output("c2", "a.txt"),
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "patch"},
                {
                    "role": "assistant",
                    "tool_calls": [chat_call("c1", "apply_patch", '{"input":"*** Begin Patch"}')],
                },
                {"role": "tool", "content": "applied", "tool_call_id": "c1"},
                {
                    "role": "assistant",
                    "tool_calls": [chat_call("c2", "local_shell", '{"type": "exec", "command": ["ls"]}')],
                },
                {"role": "tool", "content": "a.txt", "tool_call_id": "c2"},
            ],
        },
    ),
    (
        "images in a tool's output follow the tool messages as a user message",
        {
            "model": "m",
            "input": [
                user("look"),
                call("call_1", "view"),
                {
                    "type": "function_call_output",
                    "call_id": "call_1",
                    "output": [
                        {"type": "input_text", "text": "here"},
                        {"type": "input_image", "image_url": PNG},
                    ],
                },
                {"role": "user", "content": "and?"},
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "look"},
                {"role": "assistant", "tool_calls": [chat_call("call_1", "view")]},
                {"role": "tool", "content": "here", "tool_call_id": "call_1"},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": PNG}}, {"type": "text", "text": "and?"}],
                },
            ],
        },
    ),
    (
        "hosted tools' items and outputs of unknown calls are skipped",
        {
            "model": "m",
            "input": [
                user("search"),
                {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
                {"type": "compaction", "encrypted_content": "opaque"},
                output("call_never_made", "orphan"),
                {"role": "assistant", "content": "Found it."},
            ],
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "search"}, {"role": "assistant", "content": "Found it."}],
        },
    ),
    (
        "only function tools are sent; hosted and custom tools are skipped, not refused",
        {
            "model": "m",
            "input": "hi",
            "tools": [
                SHELL,
                {"type": "web_search"},
                {"type": "file_search", "vector_store_ids": ["vs_1"]},
                {"type": "local_shell"},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
                {"type": "mcp", "server_label": "x", "server_url": "https://x.test"},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [SHELL_CHAT],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
    ),
    (
        "with every tool skipped, no tools, tool_choice or parallel_tool_calls are sent",
        {
            "model": "m",
            "input": "hi",
            "tools": [{"type": "web_search"}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        },
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "a forced function becomes chat's named tool choice",
        {"model": "m", "input": "hi", "tools": [SHELL], "tool_choice": {"type": "function", "name": "shell"}},
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [SHELL_CHAT],
            "tool_choice": {"type": "function", "function": {"name": "shell"}},
        },
    ),
    (
        "a forced hosted tool becomes auto",
        {"model": "m", "input": "hi", "tools": [SHELL, {"type": "web_search"}], "tool_choice": {"type": "web_search"}},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [SHELL_CHAT], "tool_choice": "auto"},
    ),
    (
        "allowed_tools keeps its mode",
        {
            "model": "m",
            "input": "hi",
            "tools": [SHELL],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "shell"}],
            },
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [SHELL_CHAT],
            "tool_choice": "required",
        },
    ),
    (
        "sampling, limits, reasoning effort and a JSON schema",
        {
            "model": "m",
            "input": "hi",
            "max_output_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "reasoning": {"effort": "high", "summary": "auto"},
            "text": {
                "format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True},
                "verbosity": "low",
            },
            "user": "u1",
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "reasoning_effort": "high",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
            "user": "u1",
        },
    ),
    (
        "json_object, and text which asks for nothing",
        {"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
    ),
    (
        "a stream asks the backend for its usage; store and every other field are dropped",
        {
            "model": "m",
            "input": "hi",
            "stream": True,
            "store": True,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "thread-1",
            "service_tier": "auto",
            "metadata": {"k": "v"},
            "truncation": "auto",
            "client_metadata": {"x": "y"},
            "background": False,
            "text": {"format": {"type": "text"}},
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
]


@pytest.mark.parametrize(("body", "chat"), [(b, c) for _, b, c in CASES], ids=[c[0] for c in CASES])
def test_a_responses_request_becomes_this_chat_request(body: dict[str, Any], chat: dict[str, Any]) -> None:
    translation = translate_request(json.dumps(body).encode())
    assert json.loads(translation.body) == chat
    assert translation.stream is bool(body.get("stream"))


def test_a_codex_turn_translates_whole() -> None:
    """A second turn as Codex CLI sends it (codex-rs ResponsesApiRequest: store false, include, prompt_cache_key)."""
    body = {
        "model": "qwen3-coder",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>"}]},
            user("What is in this directory?"),
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Use ls."}]},
            {"type": "function_call", "name": "shell", "arguments": '{"command":["ls"]}', "call_id": "call_9"},
            {"type": "function_call_output", "call_id": "call_9", "output": "README.md\nsrc"},
        ],
        "tools": [
            SHELL,
            {"type": "web_search"},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a0c4-thread",
        "text": {"verbosity": "medium"},
        "client_metadata": {"x-codex-installation-id": "i"},
    }
    translation = translate_request(json.dumps(body).encode())
    assert json.loads(translation.body) == {
        "model": "qwen3-coder",
        "messages": [
            {"role": "system", "content": "You are Codex, a coding agent.\n\n<permissions>"},
            {"role": "user", "content": "<environment_context>\n\nWhat is in this directory?"},
            {
                "role": "assistant",
                "tool_calls": [chat_call("call_9", arguments='{"command":["ls"]}')],
                "reasoning_content": "Use ls.",
            },
            {"role": "tool", "content": "README.md\nsrc", "tool_call_id": "call_9"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [SHELL_CHAT],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
    }
    assert translation.stream
    assert translation.echo.model == "qwen3-coder"


PREVIOUS_RESPONSE_ERROR = {
    "error": {
        "message": "`previous_response_id` is not supported: Potluck stores no responses to continue from. "
        "Send the whole conversation in `input` (Codex does when `store` is false).",
        "type": "invalid_request_error",
        "code": "invalid_request_error",
        "param": "previous_response_id",
    }
}


def test_previous_response_id_is_refused_with_this_exact_400() -> None:
    body = {"model": "m", "input": "and then?", "previous_response_id": "resp_abc", "store": True}
    with pytest.raises(ResponsesRequestError) as caught:
        translate_request(json.dumps(body).encode())
    assert caught.value.status == 400
    assert json.loads(caught.value.body()) == PREVIOUS_RESPONSE_ERROR


REFUSED: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("a stored conversation", {"conversation": "conv_1"}, "conversation", "stores no conversations"),
    ("a stored prompt", {"prompt": {"id": "pmpt_1"}}, "prompt", "stores no prompt templates"),
    ("a background response", {"background": True}, "background", "Stream the response instead"),
    (
        "an item reference",
        {"input": [user("hi"), {"type": "item_reference", "id": "msg_1"}]},
        "input[1]",
        "`item_reference` is not supported",
    ),
    (
        "an image by file id",
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0]",
        "no Files API",
    ),
    (
        "a file by URL",
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]}]},
        "input[0].content[0]",
        "fetches nothing",
    ),
    (
        "an image by file id in a tool's output",
        {
            "input": [
                call("call_1"),
                {
                    "type": "function_call_output",
                    "call_id": "call_1",
                    "output": [{"type": "input_image", "file_id": "f"}],
                },
            ]
        },
        "input[1].output[0]",
        "no Files API",
    ),
    ("input of the wrong type", {"input": 42}, None, r"not a valid Responses request: .* `\$.input`"),
]


@pytest.mark.parametrize(
    ("fields", "param", "message"), [(f, p, m) for _, f, p, m in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_what_cannot_be_served_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str | None, message: str
) -> None:
    with pytest.raises(ResponsesRequestError, match=message) as caught:
        translate_request(json.dumps({"model": "m", "input": "hi", **fields}).encode())
    assert caught.value.status == 400
    error = json.loads(caught.value.body())["error"]
    assert (error["type"], error["code"], error.get("param")) == (
        "invalid_request_error",
        "invalid_request_error",
        param,
    )


def test_a_body_that_is_not_json_is_a_400() -> None:
    with pytest.raises(ResponsesRequestError, match="not a valid Responses request") as caught:
        translate_request(b"{not json")
    assert caught.value.status == 400


def test_the_echo_keeps_the_clients_own_json() -> None:
    tools = [SHELL, {"type": "web_search", "search_context_size": "low"}]
    body = {
        "model": "m",
        "input": "hi",
        "tools": tools,
        "tool_choice": "required",
        "metadata": {"k": "v"},
        "top_p": 0.5,
    }
    echo = translate_request(json.dumps(body).encode()).echo
    assert json.loads(bytes(echo.tools)) == tools
    assert json.loads(bytes(echo.tool_choice)) == "required"
    assert json.loads(bytes(echo.metadata)) == {"k": "v"}
    assert (echo.model, echo.top_p, bytes(echo.instructions)) == ("m", 0.5, b"")
