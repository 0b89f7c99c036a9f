"""What the Responses translation costs the agent, in µs per backend chunk, next to OpenAI pass-through.

    .venv/bin/python bench/translate_responses.py [--chunks 512] [--repeat 30] [--json]

Each stream scenario feeds a chat completions stream, written the way llama.cpp's server writes it (one
``data:`` event per token), to the agent's transform of it: `SSEUsageScanner` for a chat request that
passes through untouched (the baseline), `ResponsesStreamTranslator` for a Responses request served by a
chat backend. ``read`` is how many events reach the agent in one read from the socket: 1 when a backend
paces its tokens, 16 when they arrive in a burst. The request scenario times `translate_request` on a
Codex-sized request (instructions, 40 items, 12 tools with schemas); the whole-body scenario times
`ResponsesJSONTranslator` on one completion. Times are the median of ``--repeat`` runs, in-process, one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from potluck.agent.dialects.responses import (
    ResponsesJSONTranslator,
    ResponsesStreamTranslator,
    translate_request,
)
from potluck.protocol.sse import SSEUsageScanner


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
        "created": 1_760_000_000,
        "id": "chatcmpl-8f3c1e2a9b",
        "model": "qwen3-coder-30b",
        "system_fingerprint": "b6115-1d72c84",
        "object": "chat.completion.chunk",
    }


def _event(obj: dict[str, Any] | str) -> bytes:
    return b"data: " + (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()) + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    usage = _chunk({})
    usage["choices"] = []
    usage["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return usage


WORDS = ["The", " function", " returns", " a", " list", " of", " the", " files", ",", " sorted", " by", " name", "."]


def text_stream(n: int) -> list[bytes]:
    body = [_event(_chunk({"content": WORDS[i % len(WORDS)]})) for i in range(n)]
    end = [_event(_chunk({}, "stop")), _event(_usage(900, n)), _event("[DONE]")]
    return [_event(_chunk({"role": "assistant", "content": None})), *body, *end]


def tool_stream(n: int) -> list[bytes]:
    first = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "shell", "arguments": ""}}
    pieces = ['{"command": ["rg", "-n", "', *["def " for _ in range(n - 2)], '"]}']
    body = [_event(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})) for p in pieces]
    end = [_event(_chunk({}, "tool_calls")), _event(_usage(900, n)), _event("[DONE]")]
    return [_event(_chunk({"role": "assistant", "content": None, "tool_calls": [first]})), *body, *end]


def reasoning_stream(n: int) -> list[bytes]:
    half = n // 2
    thoughts = [_event(_chunk({"reasoning_content": WORDS[i % len(WORDS)]})) for i in range(half)]
    words = [_event(_chunk({"content": WORDS[i % len(WORDS)]})) for i in range(n - half)]
    end = [_event(_chunk({}, "stop")), _event(_usage(900, n)), _event("[DONE]")]
    return [_event(_chunk({"role": "assistant", "content": None})), *thoughts, *words, *end]


def codex_request() -> bytes:
    schema = {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The command and its arguments."},
            "workdir": {"type": "string", "description": "The working directory."},
            "timeout_ms": {"type": "number", "description": "The timeout in milliseconds."},
        },
        "required": ["command"],
        "additionalProperties": False,
    }
    tools = [
        {
            "type": "function",
            "name": f"tool_{i}",
            "description": "Runs something. " * 20,
            "strict": False,
            "parameters": schema,
        }
        for i in range(12)
    ]
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions> " * 50}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context> " * 20}]},
    ]
    for i in range(12):
        items.append(
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Step {i}. " * 30}]}
        )
        items.append(
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Think. " * 40}]}
        )
        items.append(
            {"type": "function_call", "call_id": f"call_{i}", "name": "tool_0", "arguments": '{"command":["ls"]}'}
        )
        items.append({"type": "function_call_output", "call_id": f"call_{i}", "output": "file.py\n" * 60})
    body = {
        "model": "qwen3-coder-30b",
        "instructions": "You are Codex, a coding agent. " * 200,
        "input": items[:40],
        "tools": [*tools, {"type": "web_search"}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1",
    }
    return json.dumps(body).encode()


def completion(n: int) -> bytes:
    text = "".join(WORDS[i % len(WORDS)] for i in range(n))
    message = {"role": "assistant", "content": text, "reasoning_content": "Think. " * 50}
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 900, "completion_tokens": n, "total_tokens": 900 + n},
        }
    ).encode()


def _reads(events: list[bytes], read: int) -> list[bytes]:
    return [b"".join(events[i : i + read]) for i in range(0, len(events), read)]


def _median_ns(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times)


def measure(chunks: int, repeat: int) -> dict[str, Any]:
    echo = translate_request(b'{"model":"qwen3-coder-30b","input":"hi","stream":true}').echo
    results: dict[str, Any] = {"chunks": chunks, "repeat": repeat, "streams": [], "requests": []}
    for name, make in (("text", text_stream), ("tool call", tool_stream), ("reasoning+text", reasoning_stream)):
        events = make(chunks)
        for read in (1, 16):
            reads = _reads(events, read)

            def passthrough(reads: list[bytes] = reads) -> object:
                scanner = SSEUsageScanner(strip_usage=False)
                for r in reads:
                    scanner.feed(r)
                return scanner.finish()

            def responses(reads: list[bytes] = reads, name: str = name) -> object:
                translator = ResponsesStreamTranslator(echo)
                out = [translator.feed(r) for r in reads]
                out.append(translator.finish())
                if translator.error is not None or b"response.completed" not in out[-2] + out[-1]:
                    raise RuntimeError(f"the {name} stream did not complete")
                return out

            base = _median_ns(passthrough, repeat) / len(events) / 1000
            translated = _median_ns(responses, repeat) / len(events) / 1000
            results["streams"].append(
                {
                    "stream": name,
                    "read": read,
                    "events": len(events),
                    "passthrough_us": base,
                    "responses_us": translated,
                }
            )
    body = codex_request()
    results["requests"].append(
        {
            "what": f"translate_request ({len(body) // 1024} KB Codex turn)",
            "us": _median_ns(lambda: translate_request(body), repeat) / 1000,
        }
    )
    whole = completion(chunks)

    def json_answer() -> object:
        translator = ResponsesJSONTranslator(echo)
        translator.feed(whole)
        return translator.finish()

    results["requests"].append(
        {"what": f"whole completion → Response ({chunks} tokens)", "us": _median_ns(json_answer, repeat) / 1000}
    )
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"µs per backend event, median of {results['repeat']} runs ({results['chunks']} generated tokens)",
        f"{'stream':<16}{'events/read':>12}{'pass-through':>14}{'responses':>12}{'ratio':>8}",
    ]
    for row in results["streams"]:
        ratio = row["responses_us"] / row["passthrough_us"]
        lines.append(
            f"{row['stream']:<16}{row['read']:>12}{row['passthrough_us']:>14.2f}{row['responses_us']:>12.2f}{ratio:>7.1f}x"
        )
    lines.append("")
    lines.extend(f"{row['what']:<48}{row['us']:>10.1f} µs" for row in results["requests"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=512, help="generated tokens (chunks) per stream")
    parser.add_argument("--repeat", type=int, default=30, help="runs per measurement (the median is reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args()
    results = measure(args.chunks, args.repeat)
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
