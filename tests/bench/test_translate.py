"""bench/translate.py: it times valid translations, and reports every stream at both read sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.translate import run, text_stream, thinking_stream, tool_stream
from potluck.agent.dialects.anthropic_request import AnswerContext
from potluck.agent.dialects.anthropic_stream import MessagesStream
from testing.anthropic_grammar import validate_stream

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("build", [text_stream, thinking_stream, tool_stream])
def test_the_benchmarked_streams_translate_to_valid_messages(build: Callable[[int], list[bytes]]) -> None:
    stream = MessagesStream(AnswerContext(model="m", stream=True, thinking=True))
    events = build(40)
    out = b"".join(stream.feed(e) for e in events) + stream.finish()
    message = validate_stream(out).message
    assert message is not None
    assert message.usage.output_tokens == 40
    assert message.stop_reason in ("end_turn", "tool_use")


def test_every_stream_is_reported_at_both_read_sizes() -> None:
    rows = run(chunks=30, repeat=1)
    assert [(r["stream"], r["events_per_read"]) for r in rows] == [
        (name, size) for name in ("text", "thinking", "tool") for size in (1, 16)
    ]
    assert all(r["passthrough_us_per_chunk"] > 0 and r["translate_us_per_chunk"] > 0 for r in rows)


def test_json_output() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "translate.py"), "--chunks", "20", "--repeat", "1", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(json.loads(done.stdout)["rows"]) == 6
