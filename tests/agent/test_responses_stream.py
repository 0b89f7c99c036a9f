"""Chat completions streams → Responses streams (agent/dialects/responses/stream.py), on golden streams.

Each golden stream is translated whole, in random pieces (seeded) and byte by byte: the bytes out must
be the same every time, follow the grammar (testing/responses_grammar.py), and parse with the official
``openai`` SDK's event and Response types and its own stream accumulator.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from potluck.agent.backends.base import ResponseTranslator
from potluck.agent.dialects.responses import ResponsesStreamTranslator, translate_request
from potluck.protocol.agent import ErrorInfo, Usage
from testing.responses_grammar import check_stream, parse_sse
from tests.agent.responses_golden import GOLDEN, RESPONSE_ID, chunk, pieces, role, sse, text, translate, translator

EVENT = TypeAdapter(ResponseStreamEvent)


def summary(output: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for item in output:
        if item["type"] == "function_call":
            out.append(("function_call", item["call_id"], item["name"], item["arguments"], item["status"]))
        else:
            (part,) = item["content"]
            out.append((item["type"], part["text"], item["status"]))
    return out


def check_with_sdk(events: list[dict[str, Any]], final: dict[str, Any]) -> None:
    """Every event parses as the SDK's own type, its accumulator takes the stream, and the Response parses."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        parsed = EVENT.validate_python(event)
        assert parsed.type == event["type"]
        state.handle_event(parsed)
    response = Response.model_validate(final)
    assert response.id == RESPONSE_ID


@pytest.mark.parametrize("name", GOLDEN)
def test_a_golden_stream_translates_to_its_events(name: str) -> None:
    golden = GOLDEN[name]
    out = translate([golden.raw])
    events = parse_sse(out)
    assert [e["type"] for e in events] == golden.events
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = check_stream(out)
    assert final["status"] == golden.status
    assert summary(final["output"]) == golden.output
    if golden.usage is not None:
        assert final["usage"] == golden.usage
    expected_error = None if golden.error is None else {"code": "server_error", "message": golden.error}
    assert final["error"] == expected_error
    check_with_sdk(events, final)


@pytest.mark.parametrize("name", GOLDEN)
def test_a_golden_stream_in_any_pieces_translates_the_same(name: str) -> None:
    raw = GOLDEN[name].raw
    whole = translate([raw])
    for seed in range(30):
        assert translate(pieces(raw, seed)) == whole, f"seed {seed}"
    assert translate([raw[i : i + 1] for i in range(len(raw))]) == whole


def test_the_translator_reports_usage_and_errors_to_the_agent() -> None:
    done = translator()
    done.feed(GOLDEN["text"].raw)
    assert done.usage == Usage(prompt_tokens=26, completion_tokens=3, total_tokens=29, cache_read_tokens=20)
    assert done.error is None
    # A failure's response.failed is in the output already: the hub must not end the stream a second time.
    failed = translator()
    failed.feed(GOLDEN["error mid-stream (llama.cpp)"].raw)
    assert failed.error == ErrorInfo(502, "upstream_error", "KV cache full", terminal_sent=True)
    cut = translator()
    cut.feed(GOLDEN["stream cut short"].raw)
    assert cut.error is None
    cut.finish()
    assert cut.error == ErrorInfo(
        502, "upstream_error", "the backend's stream ended before its answer did", terminal_sent=True
    )


def test_nothing_follows_the_terminal_event() -> None:
    t = translator()
    out = t.feed(GOLDEN["text"].raw)
    assert out.endswith(b"\n\n")
    assert parse_sse(out)[-1]["type"] == "response.completed"
    assert t.feed(sse(text("more"), "[DONE]")) == b""
    assert t.finish() == b""
    assert t.abort("late") == b""


def test_a_failure_ends_the_stream_at_once() -> None:
    t = translator()
    out = t.feed(GOLDEN["error mid-stream (llama.cpp)"].raw + sse(text("after the error"), chunk({}, "stop"), "[DONE]"))
    assert parse_sse(out)[-1]["type"] == "response.failed"
    assert b"after the error" not in out
    assert t.finish() == b""


def test_abort_fails_the_response_where_it_stands() -> None:
    t = translator()
    out = t.feed(sse(role(), text("Half a sent")))
    out += t.abort("the backend broke off its response: connection reset")
    final = check_stream(out)
    assert final["status"] == "failed"
    assert final["error"]["message"] == "the backend broke off its response: connection reset"
    assert summary(final["output"]) == [("message", "Half a sent", "incomplete")]
    assert t.finish() == b""


def test_crlf_framing_comments_and_other_fields_change_nothing() -> None:
    raw = GOLDEN["reasoning then text"].raw
    noisy = b": ping\r\n\r\nevent: message\r\nid: 7\r\nretry: 100\r\n" + raw.replace(b"\n\n", b"\r\n\r\n")
    assert translate([noisy]) == translate([raw])


def test_an_event_of_several_data_lines_is_one_event() -> None:
    split = b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"joined"}}]}\n\n'
    out = translate([sse(role()), split, sse(chunk({}, "stop"), "[DONE]")])
    assert summary(check_stream(out)["output"]) == [("message", "joined", "completed")]


def test_ids_are_openai_shaped_and_calls_without_ids_get_one() -> None:
    translation = translate_request(b'{"model":"m","input":"hi","stream":true}')
    t = ResponsesStreamTranslator(translation.echo)
    nameless = chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]})
    final = check_stream(t.feed(sse(role(), chunk({"reasoning_content": "r"}), text("t"), nameless, "[DONE]")))
    assert final["id"].startswith("resp_")
    assert len(final["id"]) == 5 + 48
    digits = final["id"].removeprefix("resp_")
    assert [item["id"] for item in final["output"]] == [f"rs_{digits}0000", f"msg_{digits}0001", f"fc_{digits}0002"]
    assert final["output"][2]["call_id"].startswith("call_")


def test_a_call_whose_name_comes_late_is_added_with_its_arguments_so_far() -> None:
    out = translate(
        [
            sse(
                role(),
                chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"arguments": '{"a"'}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]}),
                chunk({}, "tool_calls"),
                "[DONE]",
            )
        ]
    )
    events = parse_sse(out)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert (added["item"]["name"], added["item"]["call_id"]) == ("f", "call_1")
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"a":1}']
    check_stream(out)


def test_the_lifecycle_events_echo_the_request() -> None:
    created = parse_sse(translate([GOLDEN["text"].raw]))[0]["response"]
    assert (created["model"], created["instructions"], created["status"]) == ("qwen3-8b", "Be brief.", "in_progress")
    assert [t["type"] for t in created["tools"]] == ["function", "web_search"]
    assert (created["tool_choice"], created["store"], created["output"], created["usage"]) == ("auto", False, [], None)


def test_it_has_the_agents_translator_shape() -> None:
    shaped: ResponseTranslator = translator()
    assert shaped.content_type == "text/event-stream"
