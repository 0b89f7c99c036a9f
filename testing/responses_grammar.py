"""A strict checker of OpenAI Responses streams: framing, order, sequence numbers, and that every item is whole.

`check_stream(raw)` parses the SSE bytes (each event exactly ``event: <type>`` + ``data: <json>`` with the
same type) and runs `Grammar` over the events; it returns the terminal event's response or raises
`GrammarError` saying what is wrong. The grammar (OpenAI's, as its SDK's stream accumulator reads it):

- ``sequence_number`` strictly increases; the first event is ``response.created``, optionally followed by
  ``response.in_progress``; exactly one terminal event (``response.completed``, ``response.incomplete``,
  ``response.failed``) and it is the last; every lifecycle event carries the same response id;
- output items are added with output indexes 0, 1, 2... and one is open at a time; every event about an
  item names the open item's id and index;
- a message's or reasoning item's part is added before its deltas, its text ``.done`` repeats the deltas'
  concatenation, its ``content_part.done`` follows, and ``output_item.done`` comes only when every part is
  done; a function call's ``arguments.done`` repeats its deltas and precedes ``output_item.done``;
- ``response.completed``/``response.incomplete`` come with no item open and list exactly the items that
  were done, in order; ``response.failed`` carries ``status: failed`` and an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TERMINAL = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}
_TEXT_EVENTS = {
    "response.output_text.delta": ("output_text", False),
    "response.output_text.done": ("output_text", True),
    "response.reasoning_text.delta": ("reasoning_text", False),
    "response.reasoning_text.done": ("reasoning_text", True),
}
_PART_OF = {"message": "output_text", "reasoning": "reasoning_text"}


class GrammarError(AssertionError):
    """The stream breaks the Responses event grammar."""


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """The events of a Responses SSE body; each must be ``event: T\\ndata: {json with type T}\\n\\n``."""
    frames = raw.split(b"\n\n")
    if frames[-1] != b"":
        raise GrammarError(f"the body does not end with a blank line: {frames[-1][:80]!r}")
    events = []
    for frame in frames[:-1]:
        lines = frame.split(b"\n")
        if len(lines) != 2 or not lines[0].startswith(b"event: ") or not lines[1].startswith(b"data: "):
            raise GrammarError(f"not an `event:` + `data:` frame: {frame[:120]!r}")
        data = json.loads(lines[1][6:])
        if data.get("type") != lines[0][7:].decode():
            raise GrammarError(f"event line {lines[0]!r} names another type than its data ({data.get('type')!r})")
        events.append(data)
    return events


def check_stream(raw: bytes) -> dict[str, Any]:
    """Check a whole stream; return its terminal event's response."""
    grammar = Grammar()
    for event in parse_sse(raw):
        grammar.feed(event)
    return grammar.end()


@dataclass
class _Item:
    index: int
    id: str
    type: str
    added: dict[str, Any]
    parts: dict[int, list[str]] = field(default_factory=dict)  # content index -> deltas
    texts_done: dict[int, str] = field(default_factory=dict)
    parts_done: set[int] = field(default_factory=set)
    arguments: list[str] = field(default_factory=list)
    arguments_done: str | None = None


@dataclass
class Grammar:
    """Feed events one by one (`feed`), then `end`."""

    seq: int = -1
    count: int = 0
    response_id: str | None = None
    open: _Item | None = None
    done_items: list[dict[str, Any]] = field(default_factory=list)
    terminal: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        where = f"event {self.count} ({kind})"
        self.count += 1
        if self.terminal is not None:
            raise GrammarError(f"{where} after the terminal event")
        seq = event.get("sequence_number")
        if not isinstance(seq, int) or seq <= self.seq:
            raise GrammarError(f"{where}: sequence_number {seq!r} does not increase (last was {self.seq})")
        self.seq = seq
        if self.count == 1 and kind != "response.created":
            raise GrammarError(f"{where}: the first event must be response.created")
        if kind in ("response.created", "response.in_progress") or kind in TERMINAL:
            self._lifecycle(str(kind), event, where)
        elif kind == "response.output_item.added":
            self._added(event, where)
        elif kind == "response.output_item.done":
            self._item_done(event, where)
        elif kind in ("response.content_part.added", "response.content_part.done"):
            self._part(str(kind), event, where)
        elif kind in _TEXT_EVENTS:
            self._text(str(kind), event, where)
        elif kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
            self._arguments(str(kind), event, where)
        else:
            raise GrammarError(f"{where}: an event type this grammar does not know")

    def end(self) -> dict[str, Any]:
        if self.terminal is None:
            raise GrammarError(f"the stream ended after {self.count} events without a terminal event")
        return self.terminal

    def _lifecycle(self, kind: str, event: dict[str, Any], where: str) -> None:
        response = event.get("response")
        if not isinstance(response, dict) or response.get("object") != "response":
            raise GrammarError(f"{where}: no response object")
        if kind == "response.created":
            if self.count != 1:
                raise GrammarError(f"{where}: response.created must come first, and once")
            self.response_id = response.get("id")
        elif kind == "response.in_progress" and self.count != 2:
            raise GrammarError(f"{where}: response.in_progress must follow response.created directly")
        if response.get("id") != self.response_id:
            raise GrammarError(f"{where}: response id {response.get('id')!r} is not {self.response_id!r}")
        if kind not in TERMINAL:
            if response.get("status") != "in_progress":
                raise GrammarError(f"{where}: status {response.get('status')!r} before the end")
            return
        self._terminal(kind, response, where)

    def _terminal(self, kind: str, response: dict[str, Any], where: str) -> None:
        if response.get("status") != TERMINAL[kind]:
            raise GrammarError(f"{where}: status {response.get('status')!r} in a {kind} event")
        if kind == "response.failed":
            error = response.get("error")
            if not isinstance(error, dict) or not error.get("message") or not error.get("code"):
                raise GrammarError(f"{where}: a failed response without an error code and message")
        else:
            if self.open is not None:
                raise GrammarError(f"{where}: item {self.open.index} ({self.open.type}) was never done")
            if response.get("output") != self.done_items:
                raise GrammarError(f"{where}: the output is not the items that were done")
            if kind == "response.incomplete" and not (response.get("incomplete_details") or {}).get("reason"):
                raise GrammarError(f"{where}: an incomplete response without a reason")
        self.terminal = response

    def _added(self, event: dict[str, Any], where: str) -> None:
        if self.open is not None:
            raise GrammarError(f"{where}: item {self.open.index} is still open")
        item = event.get("item") or {}
        index = event.get("output_index")
        if index != len(self.done_items):
            raise GrammarError(f"{where}: output_index {index!r}, expected {len(self.done_items)}")
        if item.get("type") not in ("message", "reasoning", "function_call") or not item.get("id"):
            raise GrammarError(f"{where}: an item without a known type and an id: {item}")
        if item.get("status") != "in_progress":
            raise GrammarError(f"{where}: an added item must be in_progress")
        if item["type"] == "function_call" and not (item.get("call_id") and item.get("name")):
            raise GrammarError(f"{where}: a function call without call_id and name")
        self.open = _Item(index, item["id"], item["type"], item)

    def _current(self, event: dict[str, Any], where: str) -> _Item:
        item = self.open
        if item is None:
            raise GrammarError(f"{where}: no item is open")
        if event.get("output_index") != item.index:
            raise GrammarError(f"{where}: output_index {event.get('output_index')!r} is not the open item's")
        if "item_id" in event and event["item_id"] != item.id:
            raise GrammarError(f"{where}: item_id {event['item_id']!r} is not the open item's")
        return item

    def _part(self, kind: str, event: dict[str, Any], where: str) -> None:
        item = self._current(event, where)
        expected = _PART_OF.get(item.type)
        part = event.get("part") or {}
        if expected is None or part.get("type") != expected:
            raise GrammarError(f"{where}: a {part.get('type')!r} part in a {item.type} item")
        index = event.get("content_index")
        if not isinstance(index, int):
            raise GrammarError(f"{where}: no content_index")
        if kind == "response.content_part.added":
            if index != len(item.parts) or part.get("text") != "":
                raise GrammarError(f"{where}: part {index} added out of order, or not empty")
            item.parts[index] = []
            return
        if index not in item.texts_done:
            raise GrammarError(f"{where}: part {index} done before its text")
        if index in item.parts_done or part.get("text") != item.texts_done[index]:
            raise GrammarError(f"{where}: part {index} done twice, or with another text")
        item.parts_done.add(index)

    def _text(self, kind: str, event: dict[str, Any], where: str) -> None:
        item = self._current(event, where)
        part_type, is_done = _TEXT_EVENTS[kind]
        if _PART_OF.get(item.type) != part_type:
            raise GrammarError(f"{where}: {part_type} text in a {item.type} item")
        index = event.get("content_index")
        if index not in item.parts or index in item.texts_done:
            raise GrammarError(f"{where}: text for part {index!r}, which is not open")
        if not is_done:
            if not isinstance(event.get("delta"), str):
                raise GrammarError(f"{where}: no delta")
            item.parts[index].append(event["delta"])
            return
        if event.get("text") != "".join(item.parts[index]):
            raise GrammarError(f"{where}: the text is not the concatenation of the deltas")
        item.texts_done[index] = event["text"]

    def _arguments(self, kind: str, event: dict[str, Any], where: str) -> None:
        item = self._current(event, where)
        if item.type != "function_call" or item.arguments_done is not None:
            raise GrammarError(f"{where}: arguments for a {item.type} item, or after they were done")
        if kind.endswith(".delta"):
            item.arguments.append(event["delta"])
            return
        if event.get("arguments") != "".join(item.arguments):
            raise GrammarError(f"{where}: the arguments are not the concatenation of the deltas")
        item.arguments_done = event["arguments"]

    def _item_done(self, event: dict[str, Any], where: str) -> None:
        item = self._current(event, where)
        done = event.get("item") or {}
        if done.get("id") != item.id or done.get("type") != item.type:
            raise GrammarError(f"{where}: the done item is not the one added")
        if done.get("status") not in ("completed", "incomplete"):
            raise GrammarError(f"{where}: a done item's status is {done.get('status')!r}")
        if item.type == "function_call":
            if item.arguments_done is None:
                raise GrammarError(f"{where}: function call done without function_call_arguments.done")
            same = all(done.get(k) == item.added.get(k) for k in ("call_id", "name"))
            if not same or done.get("arguments") != item.arguments_done:
                raise GrammarError(f"{where}: the done call differs from what was streamed")
        else:
            missing = set(item.parts) - item.parts_done
            if missing:
                raise GrammarError(f"{where}: part(s) {sorted(missing)} never done")
            texts = [part.get("text") for part in done.get("content") or []]
            if texts != [item.texts_done[i] for i in sorted(item.texts_done)]:
                raise GrammarError(f"{where}: the done item's content differs from what was streamed")
        self.done_items.append(done)
        self.open = None
