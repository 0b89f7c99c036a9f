"""SSE usage scanning and the include_usage rewrite of client bodies."""

from __future__ import annotations

import itertools
import random

import msgspec
import pytest

from potluck.protocol.agent import Usage
from potluck.protocol.sse import DONE_EVENT, SSEUsageScanner, add_include_usage, error_event, usage_from_json

CHUNK_1 = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null}\n\n'
CHUNK_2 = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo\\n\\n"}}],"usage":null}\n\n'
USAGE_ONLY = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
USAGE = Usage(5, 2, 7)
STREAM = CHUNK_1 + CHUNK_2 + USAGE_ONLY + DONE_EVENT


CRLF = [e.replace(b"\n\n", b"\r\n\r\n") for e in (CHUNK_1, CHUNK_2, USAGE_ONLY, DONE_EVENT)]
FRAMINGS = {
    "lf": (STREAM, CHUNK_1 + CHUNK_2 + DONE_EVENT),
    "crlf": (b"".join(CRLF), CRLF[0] + CRLF[1] + CRLF[3]),
}


def run_scanner(scanner: SSEUsageScanner, pieces: list[bytes]) -> list[bytes]:
    out = [scanner.feed(p) for p in pieces]
    out.append(scanner.finish())
    return [o for o in out if o]


def assert_whole_events(outputs: list[bytes]) -> None:
    for out in outputs:
        sep = b"\r\n\r\n" if out.endswith(b"\r\n\r\n") else b"\n\n"
        assert out.endswith(sep), out
        for event in out[: -len(sep)].split(sep):
            assert event.startswith(b"data: "), out


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- SSEUsageScanner ------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("strip_usage", [False, True])
def test_any_two_chunk_boundaries_yield_only_whole_events_and_the_usage(strip_usage: bool, framing: str) -> None:
    stream, stripped = FRAMINGS[framing]
    expected = stripped if strip_usage else stream
    n = len(stream)
    for i in range(n + 1):
        for j in range(i, n + 1, 7):
            scanner = SSEUsageScanner(strip_usage)
            outputs = run_scanner(scanner, splits(stream, [i, j]))
            assert b"".join(outputs) == expected, (i, j)
            assert_whole_events(outputs)
            assert scanner.usage == USAGE, (i, j)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("strip_usage", [False, True])
def test_random_chunking_yields_only_whole_events_and_the_usage(strip_usage: bool, framing: str) -> None:
    stream, stripped = FRAMINGS[framing]
    rng = random.Random(f"{framing}-{strip_usage}")
    for _ in range(200):
        cuts = rng.sample(range(1, len(stream)), rng.randint(1, 40))
        scanner = SSEUsageScanner(strip_usage)
        outputs = run_scanner(scanner, splits(stream, cuts))
        assert b"".join(outputs) == (stripped if strip_usage else stream), cuts
        assert_whole_events(outputs)
        assert scanner.usage == USAGE


def test_byte_by_byte_feed_returns_each_event_when_its_blank_line_arrives() -> None:
    scanner = SSEUsageScanner(strip_usage=False)
    returned = []
    for i in range(len(STREAM)):
        out = scanner.feed(STREAM[i : i + 1])
        if out:
            returned.append((i + 1, out))
    ends = [len(CHUNK_1), len(CHUNK_1 + CHUNK_2), len(CHUNK_1 + CHUNK_2 + USAGE_ONLY), len(STREAM)]
    assert [pos for pos, _ in returned] == ends
    assert [out for _, out in returned] == [CHUNK_1, CHUNK_2, USAGE_ONLY, DONE_EVENT]
    assert scanner.finish() == b""


def test_partial_event_is_held_back_until_complete() -> None:
    scanner = SSEUsageScanner(strip_usage=False)
    assert scanner.feed(CHUNK_1 + CHUNK_2[:10]) == CHUNK_1
    assert scanner.feed(CHUNK_2[10:-1]) == b""
    assert scanner.feed(CHUNK_2[-1:]) == CHUNK_2


def test_usage_only_chunk_is_stripped_when_client_did_not_ask() -> None:
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(STREAM) == CHUNK_1 + CHUNK_2 + DONE_EVENT
    assert scanner.usage == USAGE


def test_usage_only_chunk_is_kept_byte_for_byte_when_client_asked() -> None:
    scanner = SSEUsageScanner(strip_usage=False)
    assert scanner.feed(STREAM) == STREAM
    assert scanner.usage == USAGE


def test_usage_chunk_alone_is_stripped_to_nothing() -> None:
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(USAGE_ONLY) == b""
    assert scanner.usage == USAGE
    assert scanner.feed(DONE_EVENT) == DONE_EVENT


def test_usage_on_a_chunk_with_choices_is_kept_even_when_stripping() -> None:
    last = (
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n'
    )
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(CHUNK_1 + last + DONE_EVENT) == CHUNK_1 + last + DONE_EVENT
    assert scanner.usage == Usage(3, 4, 7)


def test_usage_null_chunks_are_not_usage() -> None:
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(CHUNK_1 + CHUNK_2) == CHUNK_1 + CHUNK_2
    assert scanner.usage is None


def test_usage_text_inside_content_is_not_taken_for_usage() -> None:
    tricky = b'data: {"choices":[{"delta":{"content":"\\"usage\\": {\\"prompt_tokens\\": 9}"}}]}\n\n'
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(tricky) == tricky
    assert scanner.usage is None


def test_malformed_usage_event_is_relayed_untouched() -> None:
    broken = b'data: {"choices":[],"usage":{"prompt_tokens":1,\n\n'
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(broken + DONE_EVENT) == broken + DONE_EVENT
    assert scanner.usage is None


def test_flush_returns_final_event_without_blank_line() -> None:
    scanner = SSEUsageScanner(strip_usage=False)
    assert scanner.feed(CHUNK_1 + b'data: {"choices":[{"delta":{"content":"x"}}]}') == CHUNK_1
    assert scanner.finish() == b'data: {"choices":[{"delta":{"content":"x"}}]}'
    assert scanner.finish() == b""


def test_flush_picks_usage_from_final_event_without_blank_line() -> None:
    scanner = SSEUsageScanner(strip_usage=False)
    assert scanner.feed(CHUNK_1 + USAGE_ONLY[:-2]) == CHUNK_1
    rest = scanner.finish()
    assert rest.startswith(USAGE_ONLY[:-2])
    assert rest.strip(b"\n") == USAGE_ONLY[:-2]
    assert scanner.usage == USAGE


def test_flush_strips_final_usage_only_event_without_blank_line() -> None:
    scanner = SSEUsageScanner(strip_usage=True)
    assert scanner.feed(CHUNK_1 + USAGE_ONLY[:-2]) == CHUNK_1
    assert scanner.finish() == b""
    assert scanner.usage == USAGE


def test_crlf_framed_events_are_returned_whole() -> None:
    crlf = [e.replace(b"\n\n", b"\r\n\r\n") for e in (CHUNK_1, CHUNK_2)]
    scanner = SSEUsageScanner(strip_usage=False)
    assert scanner.feed(crlf[0] + crlf[1][:5]) == crlf[0]
    assert scanner.feed(crlf[1][5:]) == crlf[1]


def test_crlf_framed_usage_chunk_followed_by_done_is_picked_and_stripped() -> None:
    # llama-cpp-python's server (sse-starlette) frames events with CRLF; the usage chunk and
    # [DONE] typically arrive in one read.
    crlf_usage = USAGE_ONLY.replace(b"\n\n", b"\r\n\r\n")
    crlf_done = DONE_EVENT.replace(b"\n\n", b"\r\n\r\n")
    scanner = SSEUsageScanner(strip_usage=True)
    out = scanner.feed(crlf_usage + crlf_done)
    assert scanner.usage == USAGE
    assert b"usage" not in out
    assert b"[DONE]" in out


# -- add_include_usage ----------------------------------------------------------------------------


def test_include_usage_is_spliced_in_and_every_original_byte_follows() -> None:
    body = (
        b'{"model":"m",  "stream":true,"messages":[{"role":"user","content":"h\\u00e9 \xc3\xa9"}],"temperature":1.0e0}'
    )
    out = add_include_usage(body)
    assert out == b'{"stream_options":{"include_usage":true},' + body[1:]
    decoded = msgspec.json.decode(out)
    assert decoded["stream_options"] == {"include_usage": True}
    assert decoded["model"] == "m"


def test_include_usage_splice_skips_leading_whitespace() -> None:
    body = b'\n  {"model":"m"}'
    out = add_include_usage(body)
    assert out == b'{"stream_options":{"include_usage":true},"model":"m"}'


@pytest.mark.parametrize("body", [b"{}", b"{ }", b"{\n}"])
def test_include_usage_in_empty_object_is_valid_json(body: bytes) -> None:
    out = add_include_usage(body)
    assert msgspec.json.decode(out) == {"stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    "options",
    [b"{}", b'{"include_usage":false}', b"null", b'{"include_usage":false,"continuous_usage_stats":true}'],
)
def test_existing_stream_options_get_include_usage_true(options: bytes) -> None:
    body = b'{"model":"m","stream":true,"stream_options":' + options + b',"n":2,"messages":[]}'
    decoded = msgspec.json.decode(add_include_usage(body))
    original = msgspec.json.decode(body)
    assert decoded["stream_options"]["include_usage"] is True
    if isinstance(original["stream_options"], dict):
        for k, v in original["stream_options"].items():
            if k != "include_usage":
                assert decoded["stream_options"][k] == v
    assert {k: v for k, v in decoded.items() if k != "stream_options"} == {
        k: v for k, v in original.items() if k != "stream_options"
    }


def test_stream_options_only_nested_still_adds_top_level_field() -> None:
    body = b'{"metadata":{"stream_options":"x"},"model":"m"}'
    decoded = msgspec.json.decode(add_include_usage(body))
    assert decoded["stream_options"] == {"include_usage": True}
    assert decoded["metadata"] == {"stream_options": "x"}


@pytest.mark.parametrize(
    "body", [b"", b"[]", b'[{"stream_options":{}}]', b'"text"', b"null", b"42", b"  [1, 2]", b'{"stream_options": oops']
)
def test_non_object_or_undecodable_bodies_are_untouched(body: bytes) -> None:
    assert add_include_usage(body) == body


# -- usage_from_json ------------------------------------------------------------------------------


def test_usage_from_json_reads_a_completion_usage() -> None:
    body = (
        b'{"id":"x","object":"chat.completion","choices":[{"message":{"content":"hi"}}],'
        b'"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33,"prompt_tokens_details":{"cached_tokens":0}}}'
    )
    assert usage_from_json(body) == Usage(11, 22, 33)


def test_usage_from_json_reads_embeddings_usage_without_completion_tokens() -> None:
    assert usage_from_json(b'{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}') == Usage(8, 0, 8)


@pytest.mark.parametrize(
    "body",
    [b'{"choices":[]}', b'{"usage":null}', b"not json", b"", b"[1,2]", b'{"usage":{"prompt_tokens":"many"}}'],
)
def test_usage_from_json_is_none_without_usable_usage(body: bytes) -> None:
    assert usage_from_json(body) is None


def test_error_event_is_one_whole_data_event() -> None:
    assert error_event(b'{"error":{}}') == b'data: {"error":{}}\n\n'


def test_the_cached_and_reasoning_parts_of_the_usage_are_read_too() -> None:
    usage = (
        b'{"prompt_tokens":1000,"completion_tokens":50,"total_tokens":1050,'
        b'"prompt_tokens_details":{"cached_tokens":800},"completion_tokens_details":{"reasoning_tokens":20}}'
    )
    expected = Usage(1000, 50, 1050, cache_read_tokens=800, reasoning_tokens=20)
    scanner = SSEUsageScanner(strip_usage=False)
    scanner.feed(b'data: {"id":"c1","choices":[],"usage":' + usage + b"}\n\n")
    assert scanner.usage == expected
    assert usage_from_json(b'{"id":"c2","usage":' + usage + b"}") == expected
