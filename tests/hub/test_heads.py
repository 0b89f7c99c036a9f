"""The hub's own check of an agent's response head: allow-listed headers and content types, malformed heads refused."""

from __future__ import annotations

import pytest

from potluck.hub.heads import MAX_HEADERS, MalformedHeadError, checked_head
from potluck.protocol.agent import HeadMessage

JSON = ("Content-Type", "application/json")


def test_only_allow_listed_headers_are_kept_in_lower_case() -> None:
    head = HeadMessage(
        200,
        [
            JSON,
            ("Content-Length", " 12 "),
            ("Retry-After", "3"),
            ("Set-Cookie", "a=b"),
            ("Access-Control-Allow-Origin", "*"),
            ("Location", "/elsewhere"),
            ("X-Anything", "1"),
        ],
    )
    assert checked_head(head) == HeadMessage(
        200, [("content-type", "application/json"), ("content-length", "12"), ("retry-after", "3")]
    )


@pytest.mark.parametrize("media", ["text/event-stream", "application/json; charset=utf-8", "Application/JSON"])
def test_the_listed_content_types_pass(media: str) -> None:
    assert checked_head(HeadMessage(200, [("Content-Type", media)])).headers == [("content-type", media)]


@pytest.mark.parametrize("headers", [[("Content-Type", "text/html")], [("Content-Type", "image/svg+xml")], []])
def test_a_success_of_another_content_type_is_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(MalformedHeadError, match="content type"):
        checked_head(HeadMessage(200, headers))


def test_an_error_status_may_carry_any_content_type_since_its_body_is_rewrapped() -> None:
    assert checked_head(HeadMessage(503, [("Content-Type", "text/html")])).status == 503


@pytest.mark.parametrize(
    "head",
    [
        HeadMessage(302, [JSON, ("Location", "https://evil.example/")]),
        HeadMessage(101, [JSON]),
        HeadMessage(600, [JSON]),
        HeadMessage(200, [JSON, ("Content-Length", "abc")]),
        HeadMessage(200, [JSON, ("Content-Length", "-1")]),
        HeadMessage(200, [JSON, ("Content-Length", "1" * 16)]),
        HeadMessage(200, [JSON, ("Content-Length", "1"), ("content-length", "2")]),
        HeadMessage(200, [JSON, ("Content-Type", "text/event-stream")]),
        HeadMessage(200, [JSON, ("X-A", "b\r\nSet-Cookie: c=d")]),
        HeadMessage(200, [JSON, ("X-A", "nul\x00")]),
        HeadMessage(200, [JSON, ("Bad Name", "v")]),
        HeadMessage(200, [JSON, ("", "v")]),
        HeadMessage(200, [JSON, ("X-Big", "a" * 9000)]),
        HeadMessage(200, [JSON] + [("X-N", "v")] * MAX_HEADERS),
    ],
)
def test_a_malformed_head_is_refused(head: HeadMessage) -> None:
    with pytest.raises(MalformedHeadError) as refused:
        checked_head(head)
    assert refused.value.retriable  # nothing reached the client: another agent may take it
    assert refused.value.status == 502


def test_a_repeated_identical_content_length_is_kept_once() -> None:
    head = HeadMessage(200, [JSON, ("Content-Length", "2"), ("Content-Length", "2")])
    assert checked_head(head).headers == [("content-type", "application/json"), ("content-length", "2")]
