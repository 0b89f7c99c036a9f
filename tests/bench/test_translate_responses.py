"""bench/translate_responses.py: its streams are valid chat streams that translate whole, and it reports every row."""

from __future__ import annotations

from bench.translate_responses import codex_request, measure, reasoning_stream, report, text_stream, tool_stream
from potluck.agent.dialects.responses import ResponsesStreamTranslator, translate_request
from testing.responses_grammar import check_stream


def test_each_bench_stream_translates_to_a_completed_response() -> None:
    echo = translate_request(b'{"model":"m","input":"hi","stream":true}').echo
    for make, kinds in (
        (text_stream, ["message"]),
        (tool_stream, ["function_call"]),
        (reasoning_stream, ["reasoning", "message"]),
    ):
        translator = ResponsesStreamTranslator(echo)
        out = b"".join(translator.feed(event) for event in make(20)) + translator.finish()
        final = check_stream(out)
        assert final["status"] == "completed"
        assert [item["type"] for item in final["output"]] == kinds
        assert final["usage"]["output_tokens"] == 20


def test_the_codex_sized_request_translates() -> None:
    translation = translate_request(codex_request())
    assert translation.stream
    assert len(translation.body) > 10_000


def test_a_small_run_reports_every_scenario() -> None:
    results = measure(chunks=8, repeat=2)
    assert [(row["stream"], row["read"]) for row in results["streams"]] == [
        (stream, read) for stream in ("text", "tool call", "reasoning+text") for read in (1, 16)
    ]
    assert all(row["passthrough_us"] > 0 and row["responses_us"] > 0 for row in results["streams"])
    assert len(results["requests"]) == 2
    assert "µs per backend event" in report(results)
