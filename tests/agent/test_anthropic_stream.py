"""Chat-completions streams translated to Anthropic's event grammar (golden streams, random chunk splits).

Every output is checked by `testing.anthropic_grammar` (strict grammar, the SDK's event types and its
accumulator); the validator's own rules are tested at the end.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from potluck.agent.backends.base import ResponseTranslator
from potluck.agent.dialects.anthropic_request import AnswerContext
from potluck.agent.dialects.anthropic_response import MessageResponse
from potluck.agent.dialects.anthropic_stream import MessagesStream, Phase
from potluck.protocol.anthropic_answer import ErrorType
from potluck.protocol.errors import ErrorCode
from testing.anthropic_grammar import GrammarError, StreamResult, validate_stream

ANSWER = AnswerContext(model="claude-sonnet-4-5", stream=True, thinking=True, stop_sequences=("END",))
SEEDS = range(40)


def event(payload: dict[str, Any] | str) -> bytes:
    return b"data: " + (payload.encode() if isinstance(payload, str) else msgspec.json.encode(payload)) + b"\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any) -> bytes:
    """A chunk as llama.cpp and vLLM send it."""
    body = {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "qwen3-8b",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish, **choice}],
    }
    return event(body)


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> bytes:
    body: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    body["total_tokens"] = prompt + completion
    body["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return event({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "choices": [], "usage": body})


def call(index: int, arguments: str, name: str | None = None, call_id: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name is not None:
        piece["id"] = call_id or f"call_{index}"
        piece["type"] = "function"
        piece["function"]["name"] = name
    return {"tool_calls": [piece]}


DONE = b"data: [DONE]\n\n"
ROLE = chunk({"role": "assistant", "content": ""})

TEXT_ONLY = [
    ROLE,
    chunk({"content": "Hel"}),
    chunk({"content": "lo, wör"}),
    chunk({"content": "ld ✓"}),
    chunk({}, "stop"),
    usage(120, 4, cached=100),
    DONE,
]
ONE_TOOL = [
    ROLE,
    chunk({"content": "Let me look."}),
    chunk(call(0, "", name="get_weather", call_id="call_w1")),
    chunk(call(0, '{"city": ')),
    chunk(call(0, '"Paris", "unit": "°C"}')),
    chunk({}, "tool_calls"),
    usage(300, 25),
    DONE,
]
PARALLEL_INTERLEAVED = [
    ROLE,
    chunk(call(0, '{"path"', name="read")),
    chunk(call(1, '{"path"', name="read")),
    chunk(call(0, ': "a.py"}')),
    chunk(call(2, "{}", name="list_dir")),
    chunk(call(1, ': "b.py"}')),
    chunk({}, "tool_calls"),
    usage(50, 30),
    DONE,
]
PARALLEL_SEQUENTIAL = [
    ROLE,
    chunk(call(0, '{"path": "a.py"}', name="read")),
    chunk(call(1, '{"path": ', name="read")),
    chunk(call(1, '"b.py"}')),
    chunk({}, "tool_calls"),
    usage(50, 30),
    DONE,
]
THINKING_THEN_TEXT = [
    ROLE,
    chunk({"reasoning_content": "The user greets. "}),
    chunk({"reasoning_content": "Answer briefly."}),
    chunk({"content": "Hi!"}),
    chunk({}, "stop"),
    usage(10, 40, reasoning=35),
    DONE,
]
ERROR_MID_STREAM = [
    ROLE,
    chunk({"content": "Partial "}),
    event({"error": {"code": 500, "message": "CUDA error: out of memory", "type": "server_error"}}),
    chunk({"content": "never seen"}),
]
CUT_SHORT = [ROLE, chunk({"content": "The answer is"}), chunk({"content": " forty"})]


def split_randomly(stream: list[bytes], seed: int) -> list[bytes]:
    """The stream's bytes cut at random places: mid-line, mid-UTF-8... (never mid-character: aiohttp yields bytes)."""
    raw = b"".join(stream)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(1, 40))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def translate(pieces: list[bytes], answer: AnswerContext = ANSWER) -> tuple[MessagesStream, bytes]:
    stream = MessagesStream(answer, msg_id="msg_test")
    out = b"".join(stream.feed(p) for p in pieces) + stream.finish()
    return stream, out


def golden(stream_events: list[bytes], answer: AnswerContext = ANSWER) -> list[tuple[MessagesStream, StreamResult]]:
    """The stream translated whole, one byte at a time, and in 40 random splits; each output validated."""
    splits = [stream_events, [bytes([b]) for b in b"".join(stream_events)]]
    splits += [split_randomly(stream_events, seed) for seed in SEEDS]
    results = []
    for pieces in splits:
        stream, out = translate(pieces, answer)
        results.append((stream, validate_stream(out)))
    return results


def blocks(result: StreamResult) -> list[dict[str, Any]]:
    assert result.message is not None
    return [b.model_dump(exclude_none=True) for b in result.message.content]


def test_text_only() -> None:
    for stream, result in golden(TEXT_ONLY):
        assert result.message is not None
        assert blocks(result) == [{"type": "text", "text": "Hello, wörld ✓"}]
        assert result.message.id == "msg_test"
        assert result.message.model == "claude-sonnet-4-5"
        assert result.message.stop_reason == "end_turn"
        # Anthropic's input_tokens leaves out the 100 cached tokens that OpenAI's prompt_tokens counts.
        assert result.message.usage.input_tokens == 20
        assert result.message.usage.cache_read_input_tokens == 100
        assert result.message.usage.output_tokens == 4
        assert stream.phase is Phase.DONE
        assert stream.error is None
        assert stream.usage is not None
        assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (120, 4)


def test_one_tool_after_text() -> None:
    for _, result in golden(ONE_TOOL):
        assert result.message is not None
        assert blocks(result) == [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris", "unit": "°C"}},
        ]
        assert result.message.stop_reason == "tool_use"
        assert result.message.usage.input_tokens == 300


def test_parallel_tool_calls_interleaved_become_separate_blocks_in_order() -> None:
    for _, result in golden(PARALLEL_INTERLEAVED):
        assert blocks(result) == [
            {"type": "tool_use", "id": "call_0", "name": "read", "input": {"path": "a.py"}},
            {"type": "tool_use", "id": "call_1", "name": "read", "input": {"path": "b.py"}},
            {"type": "tool_use", "id": "call_2", "name": "list_dir", "input": {}},
        ]


def test_sequential_parallel_tool_calls_stream_live() -> None:
    """The second call starts as soon as the first is whole, not at the end of the answer."""
    stream = MessagesStream(ANSWER, msg_id="msg_test")
    out = b"".join(stream.feed(e) for e in PARALLEL_SEQUENTIAL[:3])
    assert out.count(b"event: content_block_start") == 2
    assert b'"partial_json":"{\\"path\\": "' in out
    for _, result in golden(PARALLEL_SEQUENTIAL):
        assert [b["input"] for b in blocks(result)] == [{"path": "a.py"}, {"path": "b.py"}]


def test_thinking_then_text() -> None:
    for _, result in golden(THINKING_THEN_TEXT):
        assert result.message is not None
        assert blocks(result) == [
            {"type": "thinking", "thinking": "The user greets. Answer briefly.", "signature": ""},
            {"type": "text", "text": "Hi!"},
        ]
        assert result.message.usage.output_tokens == 40
        assert "signature_delta" not in str(result.events)  # no signature to give


def test_reasoning_is_left_out_when_thinking_was_not_asked_for() -> None:
    no_thinking = AnswerContext(model="m", stream=True, thinking=False)
    vllm_style = [e.replace(b'"reasoning_content"', b'"reasoning"') for e in THINKING_THEN_TEXT]
    for events in (THINKING_THEN_TEXT, vllm_style):
        for _, result in golden(events, no_thinking):
            assert result.message is not None
            assert blocks(result) == [{"type": "text", "text": "Hi!"}]
            assert result.message.usage.output_tokens == 40  # the reasoning is still counted


def test_error_mid_stream_is_one_error_event() -> None:
    for stream, result in golden(ERROR_MID_STREAM):
        assert result.error == {"type": "api_error", "message": "CUDA error: out of memory"}
        assert result.types[-1] == "error"
        assert "message_stop" not in result.types
        assert "never seen" not in str(result.events)
        assert blocks(result) == [{"type": "text", "text": "Partial "}]
        assert stream.phase is Phase.FAILED
        assert stream.error is not None
        assert stream.error.code == ErrorCode.UPSTREAM_ERROR
        assert stream.error.terminal_sent  # the hub must not end the stream a second time


def test_a_stream_that_broke_off_is_aborted_with_one_error_event() -> None:
    stream = MessagesStream(ANSWER)
    out = stream.feed(ROLE + b'data: {"choices": [{"index": 0, "delta": {"content": "Half"}}]}\n\n')
    out += stream.abort("the backend broke off its response: connection reset")
    result = validate_stream(out)
    assert blocks(result) == [{"type": "text", "text": "Half"}]
    assert result.error == {"type": "api_error", "message": "the backend broke off its response: connection reset"}
    assert stream.error is not None
    assert stream.error.terminal_sent
    assert stream.abort("again") == b""
    assert MessageResponse(ANSWER).abort("a whole answer has written nothing") == b""


@pytest.mark.parametrize(
    ("error_events", "expected"),
    [
        pytest.param(
            [b'error: {"code":400,"message":"the request exceeds the available context size","type":"x"}\n\n'],
            {"type": "invalid_request_error", "message": "the request exceeds the available context size"},
            id="llama.cpp-error-line",
        ),
        pytest.param(
            [b'event: error\ndata: {"message":"model unloaded"}\n\n'],
            {"type": "api_error", "message": "model unloaded"},
            id="named-error-event",
        ),
        pytest.param(
            [event({"error": "backend exploded"})],
            {"type": "api_error", "message": "backend exploded"},
            id="error-string",
        ),
        pytest.param(
            [event({"error": {"code": "server_overloaded", "message": "busy"}})],
            {"type": "overloaded_error", "message": "busy"},
            id="potluck-code",
        ),
        pytest.param(
            [b"data: {not json\n\n"],
            {"type": "api_error", "message": "the backend sent an event that is not a chat completion chunk"},
            id="not-json",
        ),
    ],
)
def test_backend_errors_become_anthropic_errors(error_events: list[bytes], expected: dict[str, str]) -> None:
    for pieces in ([ROLE, *error_events], split_randomly([ROLE, *error_events], 7)):
        _, out = translate(pieces)
        assert validate_stream(out).error == expected


def test_error_before_anything_is_the_only_event() -> None:
    _, out = translate([event({"error": {"code": 503, "message": "Loading model"}})])
    result = validate_stream(out)
    assert result.types == ["error"]
    assert result.error == {"type": "overloaded_error", "message": "Loading model"}
    assert result.message is None


def test_stream_cut_short_is_an_error_not_a_silent_end() -> None:
    for stream, result in golden(CUT_SHORT):
        assert result.error == {
            "type": "api_error",
            "message": "the backend's stream ended before the answer was complete",
        }
        assert blocks(result) == [{"type": "text", "text": "The answer is forty"}]
        assert stream.error is not None


def test_finish_without_done_still_ends_the_message() -> None:
    for _, result in golden(TEXT_ONLY[:-1]):  # everything but [DONE]
        assert result.types[-1] == "message_stop"
        assert result.message is not None
        assert result.message.usage.output_tokens == 4


def test_a_final_event_without_its_blank_line_is_read() -> None:
    _, out = translate([*TEXT_ONLY[:-2], usage(120, 4)[:-2]])
    assert validate_stream(out).message.usage.output_tokens == 4  # type: ignore[union-attr]


def test_crlf_framing_and_comments() -> None:
    crlf = [e.replace(b"\n", b"\r\n") for e in TEXT_ONLY]
    for _, result in golden([b": keep-alive\r\n\r\n", *crlf]):
        assert blocks(result) == [{"type": "text", "text": "Hello, wörld ✓"}]


def test_nothing_after_done_is_translated() -> None:
    events = [*TEXT_ONLY, chunk({"content": "late"}), DONE]
    for pieces in (events, [b"".join(events)]):
        _, out = translate(pieces)
        assert b"late" not in out
        validate_stream(out)


@pytest.mark.parametrize(
    ("finish", "backend_stop", "reason", "sequence"),
    [
        ("stop", None, "end_turn", None),
        ("stop", 151645, "end_turn", None),  # vLLM: the EOS token id
        ("stop", "END", "stop_sequence", "END"),  # vLLM names the stop string
        ("stop", "OTHER", "end_turn", None),  # not one the client asked for
        ("length", None, "max_tokens", None),
        ("content_filter", None, "refusal", None),
    ],
)
def test_stop_reasons(finish: str, backend_stop: int | str | None, reason: str, sequence: str | None) -> None:
    _, out = translate([ROLE, chunk({"content": "x"}), chunk({}, finish, stop_reason=backend_stop), DONE])
    message = validate_stream(out).message
    assert message is not None
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)


def test_tool_calls_with_finish_stop_are_tool_use() -> None:
    _, out = translate([ROLE, chunk(call(0, "{}", name="now")), chunk({}, "stop"), DONE])
    assert validate_stream(out).message.stop_reason == "tool_use"  # type: ignore[union-attr]


def test_tool_arguments_that_are_not_an_object_fail_the_stream() -> None:
    _, out = translate([ROLE, chunk(call(0, '{"a": ', name="f")), chunk({}, "tool_calls"), DONE])
    result = validate_stream(out)
    assert result.error is not None
    assert "not a JSON object" in result.error["message"]


def test_a_tool_call_going_on_after_it_was_complete_fails() -> None:
    events = [ROLE, chunk(call(0, "{}", name="f")), chunk(call(1, "{}", name="g")), chunk(call(0, ', "x"'))]
    _, out = translate([*events, chunk({}, "tool_calls"), DONE])
    assert "after its arguments were complete" in validate_stream(out).error["message"]  # type: ignore[index]


def test_caller_can_fail_the_stream_once() -> None:
    stream = MessagesStream(ANSWER, msg_id="msg_test")
    out = stream.feed(ROLE + chunk({"content": "so far"}))
    out += stream.fail("the client's time limit passed", ErrorType.OVERLOADED)
    assert stream.fail("again") == b""
    assert stream.feed(chunk({"content": "more"})) == b""
    assert stream.finish() == b""
    result = validate_stream(out)
    assert result.error == {"type": "overloaded_error", "message": "the client's time limit passed"}
    assert blocks(result) == [{"type": "text", "text": "so far"}]


def test_done_without_chunks_is_an_empty_message() -> None:
    _, out = translate([DONE])
    result = validate_stream(out)
    assert result.types == ["message_start", "message_delta", "message_stop"]


def test_message_start_carries_the_usage_known_so_far() -> None:
    """vLLM's continuous usage stats put usage on every chunk: message_start reports the prompt already."""
    first = event(
        {
            "choices": [{"index": 0, "delta": {"content": "a"}}],
            "usage": {"prompt_tokens": 70, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 64}},
        }
    )
    _, out = translate([first, chunk({}, "stop"), DONE])
    start = validate_stream(out).events[0]["message"]["usage"]
    assert (start["input_tokens"], start["cache_read_input_tokens"]) == (6, 64)


def test_text_deltas_of_one_feed_are_written_as_one() -> None:
    stream = MessagesStream(ANSWER)
    out = stream.feed(b"".join([ROLE, *[chunk({"content": c}) for c in "abcdef"]]))
    assert out.count(b"text_delta") == 1
    assert b'"text":"abcdef"' in out


# -- the validator itself ---------------------------------------------------------------------------


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + msgspec.json.encode(e) + b"\n\n" for e in events)


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 0},
    },
}
TEXT_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
TEXT_DELTA = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
STOP_0 = {"type": "content_block_stop", "index": 0}
DELTA = {
    "type": "message_delta",
    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    "usage": {"output_tokens": 1},
}
END = {"type": "message_stop"}
PING = {"type": "ping"}
ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
TOOL_START = {
    "type": "content_block_start",
    "index": 1,
    "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
}


def test_validator_accepts_a_valid_stream() -> None:
    result = validate_stream(sse(PING, START, PING, TEXT_START, TEXT_DELTA, PING, STOP_0, DELTA, PING, END))
    assert result.message is not None
    assert result.message.content[0].model_dump(exclude_none=True) == {"type": "text", "text": "hi"}
    assert validate_stream(sse(START, TEXT_START, ERROR)).error == ERROR["error"]


@pytest.mark.parametrize(
    ("events", "complaint"),
    [
        ([START, TEXT_DELTA, STOP_0, DELTA, END], "open block is None"),  # no content_block_start
        ([START, TEXT_START, STOP_0, TEXT_DELTA, DELTA, END], "open block is None"),  # delta after stop
        ([START, START, DELTA, END], "second message_start"),
        ([START, TEXT_START, TEXT_DELTA, STOP_0, DELTA], "without message_stop"),
        ([TEXT_START, STOP_0, DELTA, END], "before message_start"),
        ([START, TEXT_START, TEXT_START], "while block 0 is open"),
        ([START, TEXT_START, STOP_0, {**TEXT_START, "index": 2}], "expected 1"),
        ([START, TEXT_START, DELTA, END], "while block 0 is open"),
        ([START, DELTA, DELTA, END], "second message_delta"),
        ([START, END], "without message_delta"),
        ([START, DELTA, END, PING], "after the stream ended"),
        ([START, ERROR, TEXT_START], "after the stream ended"),
        ([START, {**DELTA, "delta": {"stop_reason": None}}, END], "without a stop_reason"),
        ([START, DELTA, TEXT_START], "after message_delta"),
        (
            [START, TEXT_START, {**TEXT_DELTA, "delta": {"type": "input_json_delta", "partial_json": "{"}}],
            "input_json_delta in a text block",
        ),
        (
            [
                START,
                TEXT_START,
                STOP_0,
                TOOL_START,
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "[1]"},
                },
                {"type": "content_block_stop", "index": 1},
            ],
            "not a JSON object",
        ),
        ([START, {"type": "error", "error": {"type": "oops", "message": "x"}}], "malformed error"),
    ],
)
def test_validator_rejects(events: list[dict[str, Any]], complaint: str) -> None:
    with pytest.raises(GrammarError, match=complaint):
        validate_stream(sse(*events))


def test_validator_rejects_bad_framing() -> None:
    with pytest.raises(GrammarError, match="named"):
        validate_stream(b'event: ping\ndata: {"type":"message_stop"}\n\n')
    with pytest.raises(GrammarError, match="whole event"):
        validate_stream(sse(START)[:-1])
    with pytest.raises(GrammarError, match="pair"):
        validate_stream(b'data: {"type":"ping"}\n\n')


def test_both_translators_are_relay_transforms() -> None:
    """What `agent/relay.py` will drive: the `ResponseTranslator` interface it already uses for Ollama."""
    transforms: list[ResponseTranslator] = [MessagesStream(ANSWER), MessageResponse(ANSWER)]
    assert [t.content_type for t in transforms] == ["text/event-stream", "application/json"]
    assert all(t.usage is None and t.error is None for t in transforms)
    error = transforms[0].translate_error(429, b'{"error": {"message": "slow down"}}')
    assert msgspec.json.decode(error) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }


def test_an_endless_event_fails_instead_of_growing() -> None:
    stream = MessagesStream(ANSWER)
    out = stream.feed(ROLE + b'data: {"choices": [{"delta": {"content": "') + stream.feed(b"x" * (17 << 20))
    assert validate_stream(out).error == {
        "type": "api_error",
        "message": "the backend sent an event of more than 16 MiB",
    }
