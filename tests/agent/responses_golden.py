"""Golden chat completions streams, byte for byte as chat backends write them, and what each must translate to.

The chunks copy llama.cpp's server (first chunk ``role`` with ``content: null``, a ``timings`` object beside
the usage) and vLLM/Ollama where they differ (``reasoning`` instead of ``reasoning_content``, whole tool
calls in one delta, errors as top-level objects).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from potluck.agent.dialects.responses import ResponsesStreamTranslator, translate_request

RESPONSE_ID = "resp_" + "5e" * 24
CREATED_AT = 1_760_000_000
START = ["response.created", "response.in_progress"]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return {
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta if delta is not None else {}}],
        "created": 1_760_000_000,
        "id": "chatcmpl-Zx81",
        "model": "qwen3-8b",
        "system_fingerprint": "b6115-1d72c84",
        "object": "chat.completion.chunk",
    }


def usage_chunk(
    prompt: int, completion: int, cached: int | None = None, reasoning: int | None = None
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    out = chunk()
    out["choices"] = []
    out["usage"] = usage
    out["timings"] = {"prompt_n": prompt, "prompt_ms": 12.5, "predicted_n": completion, "predicted_ms": 40.1}
    return out


def sse(*events: dict[str, Any] | str) -> bytes:
    return b"".join(
        b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e, ensure_ascii=False).encode()) + b"\n\n"
        for e in events
    )


def role() -> dict[str, Any]:
    return chunk({"role": "assistant", "content": None})


def text(t: str) -> dict[str, Any]:
    return chunk({"content": t})


def tool(index: int, call_id: str | None = None, name: str | None = None, arguments: str = "") -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        piece |= {"id": call_id, "type": "function"}
        piece["function"]["name"] = name
    return chunk({"tool_calls": [piece]})


def message(n: int) -> list[str]:
    return [
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]


def reasoning(n: int) -> list[str]:
    return [
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * n,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]


def call(n: int) -> list[str]:
    return [
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * n,
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]


@dataclass(frozen=True)
class Golden:
    """A backend stream and the Responses stream it must become."""

    raw: bytes
    events: list[str]
    """The event types, in order."""
    status: str
    output: list[tuple[str, ...]]
    """Each output item: ("message", text, status), ("reasoning", text, status) or ("function_call", call_id,
    name, arguments, status)."""
    usage: dict[str, Any] | None = None
    error: str | None = None


GOLDEN: dict[str, Golden] = {
    "text": Golden(
        sse(
            role(),
            text("Hé"),
            text("llo ✓ "),
            text("world"),
            chunk({}, "stop"),
            usage_chunk(26, 3, cached=20),
            "[DONE]",
        ),
        [*START, *message(3), "response.completed"],
        "completed",
        [("message", "Héllo ✓ world", "completed")],
        usage={
            "input_tokens": 26,
            "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 29,
        },
    ),
    "one function call": Golden(
        sse(
            role(),
            tool(0, "call_Wq8e", "get_weather", ""),
            tool(0, arguments='{"city":'),
            tool(0, arguments=' "Tokyo"}'),
            chunk({}, "tool_calls"),
            usage_chunk(80, 12),
            "[DONE]",
        ),
        [*START, *call(2), "response.completed"],
        "completed",
        [("function_call", "call_Wq8e", "get_weather", '{"city": "Tokyo"}', "completed")],
    ),
    "parallel function calls": Golden(
        sse(
            role(),
            tool(0, "call_a", "read", '{"path":'),
            tool(0, arguments='"a.py"}'),
            tool(1, "call_b", "read", '{"path":"b.py"}'),
            chunk(
                {
                    "tool_calls": [
                        {"index": 2, "id": "call_c", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
                        {
                            "index": 3,
                            "id": "call_d",
                            "type": "function",
                            "function": {"name": "pwd", "arguments": "{}"},
                        },
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            usage_chunk(90, 40),
            "[DONE]",
        ),
        [*START, *call(2), *call(1), *call(1), *call(1), "response.completed"],
        "completed",
        [
            ("function_call", "call_a", "read", '{"path":"a.py"}', "completed"),
            ("function_call", "call_b", "read", '{"path":"b.py"}', "completed"),
            ("function_call", "call_c", "ls", "{}", "completed"),
            ("function_call", "call_d", "pwd", "{}", "completed"),
        ],
    ),
    "reasoning then text": Golden(
        sse(
            role(),
            chunk({"reasoning_content": "The user"}),
            chunk({"reasoning_content": " greets."}),
            text("Hi"),
            text("!"),
            chunk({}, "stop"),
            usage_chunk(10, 9, reasoning=5),
            "[DONE]",
        ),
        [*START, *reasoning(2), *message(2), "response.completed"],
        "completed",
        [("reasoning", "The user greets.", "completed"), ("message", "Hi!", "completed")],
        usage={
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 5},
            "total_tokens": 19,
        },
    ),
    "reasoning then a call (Ollama's field names)": Golden(
        sse(
            role(),
            chunk({"reasoning": "Need the time."}),
            chunk({"tool_calls": [{"id": "call_t", "index": 0, "function": {"name": "now", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
            usage_chunk(30, 8),
            "[DONE]",
        ),
        [*START, *reasoning(1), *call(1), "response.completed"],
        "completed",
        [("reasoning", "Need the time.", "completed"), ("function_call", "call_t", "now", "{}", "completed")],
    ),
    "cut by the token limit": Golden(
        sse(role(), text("one"), text(" two"), chunk({}, "length"), usage_chunk(5, 2), "[DONE]"),
        [*START, *message(2), "response.incomplete"],
        "incomplete",
        [("message", "one two", "incomplete")],
    ),
    "error mid-stream (llama.cpp)": Golden(
        sse(role(), text("Partial"), {"error": {"code": 500, "message": "KV cache full", "type": "server_error"}}),
        [
            *START,
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
        ],
        "failed",
        [("message", "Partial", "incomplete")],
        error="KV cache full",
    ),
    "error mid-stream (vLLM's older top-level error)": Golden(
        sse(role(), {"object": "error", "message": "engine dead", "type": "InternalServerError", "code": 500}),
        [*START, "response.failed"],
        "failed",
        [],
        error="engine dead",
    ),
    "stream cut short": Golden(
        sse(role(), text("Once upon"), tool(0, "call_x", "f", '{"a"')),
        [
            *START,
            *message(1),
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.failed",
        ],
        "failed",
        [("message", "Once upon", "completed"), ("function_call", "call_x", "f", '{"a"', "incomplete")],
        error="the backend's stream ended before its answer did",
    ),
    "an event that is not JSON": Golden(
        sse(role(), text("a"), "{not json"),
        [
            *START,
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
        ],
        "failed",
        [("message", "a", "incomplete")],
        error="the backend sent an event that is not a chat completion chunk",
    ),
    "a call the backend goes back to": Golden(
        sse(role(), tool(0, "call_1", "f", "{}"), tool(1, "call_2", "g", "{}"), tool(0, arguments=" "), "[DONE]"),
        [*START, *call(1), "response.output_item.added", "response.function_call_arguments.delta", "response.failed"],
        "failed",
        [("function_call", "call_1", "f", "{}", "completed"), ("function_call", "call_2", "g", "{}", "incomplete")],
        error="the backend went back to a tool call it had finished",
    ),
    "a finish reason but no [DONE]": Golden(
        sse(role(), text("ok"), chunk({}, "stop")),
        [*START, *message(1), "response.completed"],
        "completed",
        [("message", "ok", "completed")],
    ),
    "nothing at all": Golden(
        b"",
        [*START, "response.failed"],
        "failed",
        [],
        error="the backend's stream ended before its answer did",
    ),
}

REQUEST = json.dumps(
    {
        "model": "qwen3-8b",
        "instructions": "Be brief.",
        "input": "Hi",
        "stream": True,
        "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
            {"type": "web_search"},
        ],
    }
).encode()


def translator() -> ResponsesStreamTranslator:
    translation = translate_request(REQUEST)
    return ResponsesStreamTranslator(translation.echo, response_id=RESPONSE_ID, created_at=CREATED_AT)


def pieces(raw: bytes, seed: int) -> list[bytes]:
    """``raw`` cut at random places (seeded): anywhere, inside lines and UTF-8 characters too."""
    if not raw:
        return [b""]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(1, 60))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def translate(parts: list[bytes]) -> bytes:
    t = translator()
    return b"".join(t.feed(p) for p in parts) + t.finish()
