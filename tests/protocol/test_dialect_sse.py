"""Anthropic and Responses answers passed through untouched: whole events out, usage and a terminal error read."""

from __future__ import annotations

import random

import msgspec
import pytest

from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.dialect_sse import (
    AnthropicUsageScanner,
    ResponsesUsageScanner,
    anthropic_usage_from_json,
    responses_usage_from_json,
)


def event(name: str, payload: object) -> bytes:
    return f"event: {name}\ndata: ".encode() + msgspec.json.encode(payload) + b"\n\n"


def delta(text: str) -> bytes:
    return event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


START_USAGE = {
    "input_tokens": 25,
    "output_tokens": 1,
    "cache_read_input_tokens": 400,
    "cache_creation_input_tokens": 30,
}
# Anthropic's documented stream, with prompt caching, a ping, and text that looks like the marks the scanner seeks.
MESSAGES = (
    event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "m",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": START_USAGE,
            },
        },
    )
    + event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}})
    + event("ping", {"type": "ping"})
    + delta('Say "usage": {"input_tokens": 999} and "type":"error"')
    + delta("!")
    + event("content_block_stop", {"type": "content_block_stop", "index": 0})
    + event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    )
    + event("message_stop", {"type": "message_stop"})
)
MESSAGES_USAGE = Usage(
    prompt_tokens=455, completion_tokens=15, total_tokens=470, cache_read_tokens=400, cache_write_tokens=30
)


def pieces(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 12))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def scan(scanner: AnthropicUsageScanner | ResponsesUsageScanner, chunks: list[bytes]) -> list[bytes]:
    out = [scanner.feed(c) for c in chunks]
    out.append(scanner.finish())
    return [o for o in out if o]


@pytest.mark.parametrize("seed", range(20))
def test_a_messages_stream_goes_through_as_whole_events_with_its_usage(seed: int) -> None:
    scanner = AnthropicUsageScanner()
    out = scan(scanner, pieces(MESSAGES, seed))
    assert b"".join(out) == MESSAGES
    assert all(o.endswith(b"\n\n") for o in out)
    # message_delta's output count replaces message_start's; the cached prompt counts once, inside the prompt.
    assert scanner.usage == MESSAGES_USAGE
    assert scanner.error is None
    assert scanner.abort("cut") == b""  # the hub ends a stream it relayed untouched


def test_message_delta_fields_replace_message_starts() -> None:
    final = {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 410, "output_tokens_details": {}}
    stream = MESSAGES.replace(b'"usage":{"output_tokens":15}', msgspec.json.encode({"usage": final})[1:-1])
    scanner = AnthropicUsageScanner()
    scanner.feed(stream)
    assert scanner.usage == Usage(
        prompt_tokens=460, completion_tokens=9, total_tokens=469, cache_read_tokens=410, cache_write_tokens=30
    )


def test_crlf_framing_reads_the_same() -> None:
    scanner = AnthropicUsageScanner()
    crlf = MESSAGES.replace(b"\n", b"\r\n")
    assert b"".join(scan(scanner, pieces(crlf, 3))) == crlf
    assert scanner.usage == MESSAGES_USAGE


def test_an_error_event_ends_the_messages_stream_and_says_it_was_sent() -> None:
    error = event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    scanner = AnthropicUsageScanner()
    out = scanner.feed(MESSAGES.split(b"event: content_block_stop")[0] + error)
    assert out.endswith(error)
    assert scanner.error == ErrorInfo(502, "upstream_error", "Overloaded", terminal_sent=True)
    assert scanner.usage == Usage(
        prompt_tokens=455, completion_tokens=1, total_tokens=456, cache_read_tokens=400, cache_write_tokens=30
    )


def response(status: str, usage: object, **extra: object) -> dict[str, object]:
    return {"id": "resp_1", "object": "response", "status": status, "output": [], "usage": usage, **extra}


RESPONSE_USAGE = {
    "input_tokens": 300,
    "input_tokens_details": {"cached_tokens": 256},
    "output_tokens": 40,
    "output_tokens_details": {"reasoning_tokens": 32},
    "total_tokens": 340,
}
RESPONSES = (
    event(
        "response.created",
        {"type": "response.created", "response": response("in_progress", None), "sequence_number": 0},
    )
    + event(
        "response.output_text.delta",
        {"type": "response.output_text.delta", "delta": '"usage": {', "sequence_number": 1},
    )
    + event(
        "response.completed",
        {"type": "response.completed", "response": response("completed", RESPONSE_USAGE), "sequence_number": 2},
    )
)
RESPONSES_FRAME = Usage(
    prompt_tokens=300, completion_tokens=40, total_tokens=340, cache_read_tokens=256, reasoning_tokens=32
)


@pytest.mark.parametrize("seed", range(10))
def test_a_responses_stream_goes_through_with_the_usage_of_its_completed_event(seed: int) -> None:
    scanner = ResponsesUsageScanner()
    out = scan(scanner, pieces(RESPONSES, seed))
    assert b"".join(out) == RESPONSES
    assert scanner.usage == RESPONSES_FRAME
    assert scanner.error is None


def test_response_failed_ends_the_stream_and_says_it_was_sent() -> None:
    failed = response("failed", RESPONSE_USAGE, error={"code": "server_error", "message": "KV cache full"})
    stream = RESPONSES.split(b"event: response.completed")[0] + event(
        "response.failed", {"type": "response.failed", "response": failed, "sequence_number": 2}
    )
    scanner = ResponsesUsageScanner()
    scanner.feed(stream)
    assert scanner.error == ErrorInfo(502, "upstream_error", "KV cache full", terminal_sent=True)
    assert scanner.usage == RESPONSES_FRAME
    bare = ResponsesUsageScanner()
    bare.feed(event("error", {"type": "error", "code": "server_error", "message": "boom", "sequence_number": 0}))
    assert bare.error == ErrorInfo(502, "upstream_error", "boom", terminal_sent=True)


def test_whole_bodies_give_their_usage() -> None:
    message = {"id": "msg_1", "type": "message", "content": [], "usage": START_USAGE | {"output_tokens": 15}}
    assert anthropic_usage_from_json(msgspec.json.encode(message)) == MESSAGES_USAGE
    assert anthropic_usage_from_json(b'{"input_tokens": 12}') is None  # a token count carries no usage
    assert responses_usage_from_json(msgspec.json.encode(response("completed", RESPONSE_USAGE))) == RESPONSES_FRAME
    assert responses_usage_from_json(b"not json") is None
    assert anthropic_usage_from_json(b'{"usage": "odd"}') is None
