"""testing/responses_grammar.py: it accepts a well-formed Responses stream and rejects each way of breaking one.

The valid stream here is written by hand from OpenAI's documented events (not produced by Potluck's
translator), so the checker is tested independently of the code it checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from testing.responses_grammar import GrammarError, check_stream

RESP = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": [], "status": "in_progress"}
MSG = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "f",
    "arguments": "",
    "status": "in_progress",
}
MSG_DONE = {**MSG, "status": "completed", "content": [{"type": "output_text", "text": "Hi!", "annotations": []}]}
CALL_DONE = {**CALL, "status": "completed", "arguments": '{"a":1}'}


def valid_events() -> list[dict[str, Any]]:
    """created, in_progress, a message of two deltas, a function call of two deltas, completed."""
    text = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    args = {"item_id": "fc_1", "output_index": 1}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": RESP},
        {"type": "response.in_progress", "response": RESP},
        {"type": "response.output_item.added", "output_index": 0, "item": MSG},
        {"type": "response.content_part.added", **text, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **text, "delta": "Hi", "logprobs": []},
        {"type": "response.output_text.delta", **text, "delta": "!", "logprobs": []},
        {"type": "response.output_text.done", **text, "text": "Hi!", "logprobs": []},
        {"type": "response.content_part.done", **text, "part": MSG_DONE["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": MSG_DONE},
        {"type": "response.output_item.added", "output_index": 1, "item": CALL},
        {"type": "response.function_call_arguments.delta", **args, "delta": '{"a"'},
        {"type": "response.function_call_arguments.delta", **args, "delta": ":1}"},
        {"type": "response.function_call_arguments.done", **args, "arguments": '{"a":1}'},
        {"type": "response.output_item.done", "output_index": 1, "item": CALL_DONE},
        {"type": "response.completed", "response": {**RESP, "status": "completed", "output": [MSG_DONE, CALL_DONE]}},
    ]
    for n, event in enumerate(events):
        event["sequence_number"] = n
    return copy.deepcopy(events)


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def index_of(events: list[dict[str, Any]], kind: str) -> int:
    return next(i for i, e in enumerate(events) if e["type"] == kind)


def test_a_well_formed_stream_is_accepted_and_its_final_response_returned() -> None:
    final = check_stream(sse(valid_events()))
    assert final["status"] == "completed"
    assert [item["id"] for item in final["output"]] == ["msg_1", "fc_1"]


def swap(kind_a: str, kind_b: str) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(events: list[dict[str, Any]]) -> None:
        a, b = index_of(events, kind_a), index_of(events, kind_b)
        events[a], events[b] = events[b], events[a]
        events[a]["sequence_number"], events[b]["sequence_number"] = a, b

    return mutate


def drop(kind: str) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(events: list[dict[str, Any]]) -> None:
        del events[index_of(events, kind)]
        for n, event in enumerate(events):
            event["sequence_number"] = n

    return mutate


def set_field(position: int, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(events: list[dict[str, Any]]) -> None:
        events[position][key] = value

    return mutate


def failed_with_error(error: Any) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(events: list[dict[str, Any]]) -> None:
        events[-1] = {
            "type": "response.failed",
            "sequence_number": events[-1]["sequence_number"],
            "response": {**RESP, "status": "failed", "error": error},
        }

    return mutate


def append_after_end(events: list[dict[str, Any]]) -> None:
    extra = copy.deepcopy(events[4])
    extra["sequence_number"] = len(events)
    events.append(extra)


def second_item_while_first_open(events: list[dict[str, Any]]) -> None:
    at = index_of(events, "response.output_text.done")
    events.insert(at, {"type": "response.output_item.added", "output_index": 1, "item": CALL})
    for n, event in enumerate(events):
        event["sequence_number"] = n


REJECTED = [
    (
        "delta before its item is added",
        swap("response.output_item.added", "response.output_text.delta"),
        "no item is open",
    ),
    ("item done before its text", swap("response.output_text.done", "response.output_item.done"), "never done"),
    ("part added after a delta", swap("response.content_part.added", "response.output_text.delta"), "not open"),
    ("missing output_text.done", drop("response.output_text.done"), "done before its text"),
    ("missing content_part.done", drop("response.content_part.done"), r"part\(s\) \[0\] never done"),
    ("missing arguments.done", drop("response.function_call_arguments.done"), "without function_call_arguments.done"),
    ("missing output_item.done", drop("response.output_item.done"), "still open"),
    ("missing terminal event", lambda events: events.pop(), "without a terminal event"),
    ("missing response.created", drop("response.created"), "first event must be response.created"),
    ("repeated sequence number", set_field(5, "sequence_number", 4), "does not increase"),
    ("decreasing sequence number", set_field(9, "sequence_number", 2), "does not increase"),
    ("no sequence number", lambda events: events[3].pop("sequence_number"), "does not increase"),
    ("text is not the deltas", set_field(6, "text", "Hello"), "concatenation of the deltas"),
    ("arguments are not the deltas", set_field(12, "arguments", "{}"), "concatenation of the deltas"),
    ("wrong output index", set_field(4, "output_index", 1), "not the open item's"),
    ("wrong item id", set_field(5, "item_id", "msg_2"), "not the open item's"),
    ("two items open at once", second_item_while_first_open, "still open"),
    ("event after the terminal event", append_after_end, "after the terminal event"),
    ("completed output differs", lambda events: events[-1]["response"]["output"].pop(), "not the items that were done"),
    ("failed without an error", failed_with_error(None), "without an error code and message"),
    ("unknown event type", set_field(4, "type", "response.output_text.delta2"), "does not know"),
]


@pytest.mark.parametrize(("mutate", "message"), [(m, msg) for _, m, msg in REJECTED], ids=[r[0] for r in REJECTED])
def test_a_broken_stream_is_rejected(mutate: Callable[[list[dict[str, Any]]], None], message: str) -> None:
    events = valid_events()
    mutate(events)
    with pytest.raises(GrammarError, match=message):
        check_stream(sse(events))


def test_a_failed_response_may_leave_an_item_open() -> None:
    events = valid_events()[:6]
    error = {"code": "server_error", "message": "backend died"}
    events.append(
        {"type": "response.failed", "sequence_number": 6, "response": {**RESP, "status": "failed", "error": error}}
    )
    assert check_stream(sse(events))["error"] == error


@pytest.mark.parametrize(
    "raw",
    [
        b'data: {"type":"response.created"}\n\n',
        b'event: response.created\ndata: {"type":"response.in_progress","sequence_number":0}\n\n',
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0}',
    ],
    ids=["no event line", "event line names another type", "no blank line at the end"],
)
def test_badly_framed_events_are_rejected(raw: bytes) -> None:
    with pytest.raises(GrammarError):
        check_stream(raw)
