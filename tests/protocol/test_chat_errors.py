"""Every error shape an OpenAI-compatible server uses reads the same through `read_error`/`error_fields`."""

from __future__ import annotations

import msgspec
import pytest

from potluck.protocol.chat_completions import ChatChunk, ErrorFields, error_fields, read_error


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error":{"message":"m","type":"t","code":"c","param":"p"}}', ErrorFields("m", "t", "c", "p")),
        (b'{"error":{"message":"too long","code":400}}', ErrorFields("too long", None, 400, None)),
        (b'{"error":"plain"}', ErrorFields("plain", None, None, None)),
        (
            b'{"object":"error","message":"vllm","type":"BadRequestError","code":400}',
            ErrorFields("vllm", "BadRequestError", 400, None),
        ),
        (b'{"message":"top level"}', ErrorFields("top level", None, None, None)),
        (b'{"detail":"fastapi"}', ErrorFields("fastapi", None, None, None)),
        (b'{"detail":[{"loc":["body"]}]}', ErrorFields('[{"loc":["body"]}]', None, None, None)),
        (b'"a bare string"', ErrorFields("a bare string", None, None, None)),
        (b"Bad Gateway", ErrorFields("Bad Gateway", None, None, None)),
        (b"{}", ErrorFields(None, None, None, None)),
        (b"", ErrorFields(None, None, None, None)),
    ],
)
def test_read_error_reads_each_shape(body: bytes, expected: ErrorFields) -> None:
    assert read_error(body) == expected


def test_a_normal_chunk_carries_no_error() -> None:
    chunk = msgspec.json.decode(
        b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}', type=ChatChunk
    )
    assert error_fields(chunk) is None
    assert chunk.choices is not None
    assert chunk.choices[0].delta is not None
    assert chunk.choices[0].delta.content == "hi"


def test_a_top_level_message_marks_an_error_only_in_a_failed_answer() -> None:
    chunk = msgspec.json.decode(b'{"message":"hello","detail":"x"}', type=ChatChunk)
    assert error_fields(chunk) is None
    assert error_fields(chunk, failed=True) == ErrorFields("hello", None, None, None)
