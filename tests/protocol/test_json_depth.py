"""The nesting check on raw JSON bytes: exact on valid JSON, never too lenient on anything, safe for msgspec."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from potluck.protocol.json_depth import MAX_JSON_DEPTH, nested_deeper_than


def reference_depth(data: bytes) -> int:
    """The deepest running nesting of brackets outside strings, byte by byte, as a parser descends."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def random_document(rng: random.Random, depth: int) -> Any:
    """A JSON value at most ``depth`` deep, with strings full of brackets, quotes and backslashes."""
    if depth == 0 or rng.random() < 0.15:
        return rng.choice(
            [1, -2.5, True, None, "plain", 'br[ack{ets]}"', "\\[", '\\"{', "\u00e9[", "", "]]]]}}", "[[{{", '\\\\"]']
        )
    children = [random_document(rng, depth - 1) for _ in range(rng.randrange(1, 4))]
    if rng.random() < 0.5:
        return children
    return {f"k{i}[{{": child for i, child in enumerate(children)}


def test_a_thousand_nested_arrays_in_an_unknown_field_are_too_deep() -> None:
    body = b'{"model":"m","messages":[],"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert len(body) < 5 * 1024
    assert nested_deeper_than(body)


@pytest.mark.parametrize("leaf", [0, "x", [], {}])
def test_the_limit_is_exact(leaf: Any) -> None:
    extra = 1 if leaf in ([], {}) else 0
    at_limit = json.dumps(nested(MAX_JSON_DEPTH - extra, leaf)).encode()
    over = json.dumps(nested(MAX_JSON_DEPTH + 1 - extra, leaf)).encode()
    assert reference_depth(at_limit) == MAX_JSON_DEPTH
    assert not nested_deeper_than(at_limit)
    assert nested_deeper_than(over)


def test_brackets_inside_strings_do_not_count() -> None:
    text = "[" * 5000 + '\\"{' * 1000 + "}"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    assert not nested_deeper_than(body)
    assert nested_deeper_than(body[:-1] + b',"x":' + b"[" * 200 + b"]" * 200 + b"}")
    # Closing brackets in a string must not hide the depth that follows it.
    closers = json.dumps({"a": "]}" * 300, "b": nested(MAX_JSON_DEPTH + 1)}).encode()
    assert nested_deeper_than(closers)
    assert not nested_deeper_than(json.dumps({"a": "]}" * 300, "b": nested(MAX_JSON_DEPTH - 1)}).encode())


def test_deep_chains_hidden_between_leaves_and_wide_shallow_documents() -> None:
    # Every level also holds an empty array: no long run of openers until the leaves are stripped.
    hidden = b"".join(b"[[],{}," for _ in range(200)) + b"0" + b"]" * 200
    assert reference_depth(hidden) == 201
    assert nested_deeper_than(hidden)
    wide = b"[" + b",".join([b'[{"a":[1,{"b":[]}]}]'] * 50_000) + b"]"
    assert reference_depth(wide) == 6
    assert nested_deeper_than(wide, limit=5)
    assert not nested_deeper_than(wide, limit=6)


@pytest.mark.parametrize("seed", range(30))
def test_agrees_with_a_byte_by_byte_parser_on_valid_json(seed: int) -> None:
    rng = random.Random(seed)
    body = json.dumps(nested(rng.randrange(0, 12), random_document(rng, 6))).encode()
    depth = reference_depth(body)
    assert depth == reference_depth(msgspec.json.encode(msgspec.json.decode(body)))
    for limit in range(max(0, depth - 2), depth + 3):
        assert nested_deeper_than(body, limit) == (depth > limit), (limit, body)


@pytest.mark.parametrize("seed", range(30))
def test_never_lets_through_input_a_parser_would_descend_deeper_into(seed: int) -> None:
    # A parser reads a malformed body up to its first error: the longest prefix of some JSON document.
    rng = random.Random(seed)
    alphabet = b'[[[{{]]]}}}""\\ a,:'
    for _ in range(40):
        document = json.dumps(nested(rng.randrange(0, 40), random_document(rng, 5))).encode()
        prefix = document[: rng.randrange(0, len(document) + 1)]
        junk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        depth = reference_depth(prefix)
        for limit in range(max(0, depth - 3), depth):
            assert nested_deeper_than(prefix + junk, limit), (limit, prefix, junk)


def test_msgspec_decodes_and_encodes_anything_the_check_lets_through() -> None:
    body = json.dumps({"model": "m", "x": nested(MAX_JSON_DEPTH - 1)}).encode()
    assert not nested_deeper_than(body)
    assert msgspec.json.encode(msgspec.json.decode(body)) == body.replace(b" ", b"")
