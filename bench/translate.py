"""What translating a stream to Anthropic's Messages events costs the agent, per chunk, in-process.

The agent relays an OpenAI stream through `SSEUsageScanner` (whole events, usage picked out, bytes
untouched). A Messages client over a chat-completions backend gets `MessagesStream` instead, which
decodes every chunk and writes Anthropic events. This times both on the same llama.cpp-shaped streams:

    .venv/bin/python bench/translate.py [--chunks 2000] [--repeat 7] [--json]

Each stream is fed as the network delivers it: one event per read (a token at a time), and bursts of
16 events per read (a backend ahead of a slow reader). It prints µs per chunk (best of the repeats).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/translate.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))

from potluck.agent.dialects.anthropic_request import AnswerContext  # noqa: E402
from potluck.agent.dialects.anthropic_stream import MessagesStream  # noqa: E402
from potluck.protocol.sse import SSEUsageScanner  # noqa: E402

_WORDS = ["Hello", " there", ",", " the", " quick", " brown", " fox", " jumps", " über", " the", " lazy", " dog", "."]


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _event(
        {
            "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
            "created": 1767225600,
            "id": "chatcmpl-8c4WkpHqB3dSkNxF2vZyQe0rTtUaLmNo",
            "model": "qwen3-8b-q4_k_m.gguf",
            "system_fingerprint": "b6500-1a2b3c4d",
            "object": "chat.completion.chunk",
            "timings": {"prompt_n": 1, "prompt_ms": 30.9, "predicted_n": 35, "predicted_ms": 661.0},
        }
    )


def _tail(n: int) -> list[bytes]:
    usage = {"prompt_tokens": 900, "completion_tokens": n, "total_tokens": 900 + n}
    usage["prompt_tokens_details"] = {"cached_tokens": 850}  # type: ignore[assignment]
    return [_chunk({}, "stop"), _event({"choices": [], "id": "chatcmpl-x", "usage": usage}), b"data: [DONE]\n\n"]


def text_stream(n: int) -> list[bytes]:
    """A plain answer: one token per chunk."""
    return (
        [_chunk({"role": "assistant", "content": None})]
        + [_chunk({"content": _WORDS[i % len(_WORDS)]}) for i in range(n)]
        + _tail(n)
    )


def thinking_stream(n: int) -> list[bytes]:
    """Reasoning for half the answer, then text."""
    half = n // 2
    body = [_chunk({"reasoning_content": _WORDS[i % len(_WORDS)]}) for i in range(half)]
    body += [_chunk({"content": _WORDS[i % len(_WORDS)]}) for i in range(n - half)]
    return [_chunk({"role": "assistant", "content": None}), *body, *_tail(n)]


def tool_stream(n: int) -> list[bytes]:
    """A tool call whose JSON arguments stream one token per chunk (a file being written)."""
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "Write", "arguments": '{"content": "'},
    }
    body = [_chunk({"tool_calls": [first]})]
    body += [
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": _WORDS[i % len(_WORDS)]}}]}) for i in range(n - 2)
    ]
    body.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"}'}}]}))
    return [_chunk({"role": "assistant", "content": None}), *body, *_tail(n)]


def _reads(events: list[bytes], per_read: int) -> list[bytes]:
    return [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]


def _time(make: Callable[[], Any], reads: list[bytes], repeat: int) -> float:
    """Best wall time of feeding every read and finishing, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        transform = make()
        start = time.perf_counter()
        for data in reads:
            transform.feed(data)
        transform.finish()
        best = min(best, time.perf_counter() - start)
    return best


def run(chunks: int, repeat: int) -> list[dict[str, Any]]:
    answer = AnswerContext(model="claude-sonnet-4-5", stream=True, thinking=True)
    rows = []
    for name, build in (("text", text_stream), ("thinking", thinking_stream), ("tool", tool_stream)):
        events = build(chunks)
        for per_read in (1, 16):
            reads = _reads(events, per_read)
            through = _time(lambda: SSEUsageScanner(strip_usage=False), reads, repeat)
            translated = _time(lambda: MessagesStream(answer), reads, repeat)
            rows.append(
                {
                    "stream": name,
                    "events_per_read": per_read,
                    "chunks": len(events),
                    "passthrough_us_per_chunk": round(through / len(events) * 1e6, 3),
                    "translate_us_per_chunk": round(translated / len(events) * 1e6, 3),
                    "ratio": round(translated / through, 1),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2000, help="chunks of content per stream")
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement; the best is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = parser.parse_args()
    rows = run(args.chunks, args.repeat)
    if args.json:
        print(json.dumps({"rows": rows}))
        return 0
    print(f"{'stream':<10}{'events/read':>12}{'pass-through µs':>17}{'translate µs':>14}{'ratio':>8}")
    for row in rows:
        print(
            f"{row['stream']:<10}{row['events_per_read']:>12}{row['passthrough_us_per_chunk']:>17.2f}"
            f"{row['translate_us_per_chunk']:>14.2f}{row['ratio']:>7.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
