"""How deeply a JSON document nests, measured on its bytes before anything decodes it.

msgspec, like every recursive parser and encoder, raises RecursionError on documents nested about a
thousand levels deep, at a depth that depends on the caller's stack. Checking the nesting first turns
such input into a plain "invalid request" wherever it arrives, and keeps every later decode and
re-encode of the body (the hub rewriting an alias, the agent adding ``stream_options``) far from
that limit. The check is linear in the body's size: a few C-level passes over the bytes, and only
two of them for a body with at most ``MAX_JSON_DEPTH`` opening brackets.
"""

from __future__ import annotations

from itertools import accumulate

MAX_JSON_DEPTH = 128
"""Arrays and objects nested deeper than this are refused (real requests, tool schemas included, stay
far below; every decoder has more than enough stack for it)."""

# Brackets become signed steps: +1 opens, 0xff (-1 as a signed byte) closes.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_OPEN = b"\x01"
_LEAF = b"\x01\xff"
_LEAF_PASSES = 4
"""Passes that strip the innermost level before the steps are summed one by one: most of a large,
shallow document (an array of small objects) is gone after a pass or two, at memory speed."""


def nested_deeper_than(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in ``body`` nest more than ``limit`` levels deep.

    Exact for well-formed JSON. Malformed input may be called too deep where a parser would have
    failed anyway, but it never passes when the part a parser would read before failing (a prefix
    of some JSON document) nests deeper than ``limit``.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # every level opens a bracket
    return _depth_bound(_structure(body), limit) > limit


def _structure(body: bytes) -> bytes:
    """The brackets outside strings, in order, as steps."""
    # Escaped backslashes go first, then escaped quotes, so that every quote left delimits a string.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Two adjacent quotes enclose no bracket; dropping them keeps every other quote's parity.
    marks = unescaped.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    return b"".join(marks.split(b'"')[::2]).translate(_STEPS)


def _depth_bound(steps: bytes, limit: int) -> int:
    """The deepest nesting of ``steps`` (exact when they balance, an upper bound otherwise), or
    ``limit + 1`` as soon as it is known to be deeper than ``limit``.

    Removing every adjacent open-close pair (a leaf) leaves the running depth of every other step
    unchanged and lowers the deepest nesting by one at most (by exactly one when the steps balance);
    so after ``passes`` such passes the deepest nesting is at most ``passes`` plus the deepest
    running depth of what is left, and equal to it when the steps balance.
    """
    too_deep = _OPEN * (limit + 1)
    passes = 0
    while len(steps) + passes > limit:
        if too_deep in steps:
            return limit + 1
        if passes == _LEAF_PASSES:
            return passes + max(accumulate(memoryview(steps).cast("b"), initial=0))
        shorter = steps.replace(_LEAF, b"")
        if len(shorter) == len(steps):
            # No pair left: unbalanced closers, then openers, each opener one level deeper at most.
            return passes + steps.count(_OPEN)
        steps, passes = shorter, passes + 1
    return len(steps) + passes
