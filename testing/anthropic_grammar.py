"""A strict checker of Anthropic's Messages stream grammar, for tests of anything that writes one.

    stream  := ping* message_start (ping | block)* message_delta ping* message_stop
    block   := content_block_start(i) (content_block_delta(i) | ping)* content_block_stop(i)
    error   := may replace the rest of the stream at any point; nothing follows it

Block indexes count from 0 with no gap, one block is open at a time, a delta's type matches its
block's, a tool call's input JSON is a whole object at its stop, and the SSE ``event:`` name is
the data's ``type``. Each event is also validated by the official ``anthropic`` SDK's types and
folded by the SDK's own accumulator, so `StreamResult.message` is what an SDK client would hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

_EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
_DELTAS = {"text": {"text_delta", "citations_delta"}, "thinking": {"thinking_delta", "signature_delta"}}
_DELTAS["tool_use"] = {"input_json_delta"}
_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
}


class GrammarError(AssertionError):
    """The stream breaks Anthropic's event grammar."""


@dataclass
class StreamResult:
    """What a valid stream said."""

    events: list[dict[str, Any]] = field(default_factory=list)
    """Every event's data, in order (pings included)."""
    message: Message | None = None
    """The message the SDK's accumulator built (None if an error came before ``message_start``)."""
    error: dict[str, Any] | None = None
    """The ``error`` object of a failed stream."""

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each event's name and JSON data; every event must be ``event:`` + ``data:`` lines and a blank line."""
    text = raw.decode("utf-8")
    if text and not text.endswith("\n\n"):
        raise GrammarError(f"the stream does not end with a whole event: {text[-80:]!r}")
    out = []
    for frame in text.split("\n\n")[:-1]:
        lines = frame.split("\n")
        if len(lines) != 2 or not lines[0].startswith("event: ") or not lines[1].startswith("data: "):
            raise GrammarError(f"not an `event:` and `data:` pair: {frame!r}")
        name = lines[0].removeprefix("event: ")
        try:
            data = json.loads(lines[1].removeprefix("data: "))
        except json.JSONDecodeError as exc:
            raise GrammarError(f"the data is not JSON: {frame!r}") from exc
        if not isinstance(data, dict) or data.get("type") != name:
            raise GrammarError(f"the event is named {name!r} but its data's type is {data!r}")
        out.append((name, data))
    return out


class _Checker:
    def __init__(self) -> None:
        self.result = StreamResult()
        self.started = False
        self.delta_seen = False
        self.stopped = False
        self.ended = False  # message_stop or error seen
        self.blocks: list[str] = []
        self.open: int | None = None
        self.json: dict[int, str] = {}
        self.signed: set[int] = set()
        self.snapshot: Any = None
        self.json_bufs: dict[int, bytes] = {}

    def check(self, name: str, data: dict[str, Any]) -> None:
        if self.ended:
            raise GrammarError(f"`{name}` after the stream ended")
        self.result.events.append(data)
        if name == "ping":
            return
        if name == "error":
            self._error(data)
            return
        event = _EVENTS.validate_python(data)
        getattr(self, "_" + name, self._unknown)(data)
        self.snapshot = accumulate_event(event=event, current_snapshot=self.snapshot, json_bufs=self.json_bufs)

    def _unknown(self, data: dict[str, Any]) -> None:
        raise GrammarError(f"unknown event type {data['type']!r}")

    def _error(self, data: dict[str, Any]) -> None:
        error = data.get("error")
        if (
            not isinstance(error, dict)
            or error.get("type") not in _ERROR_TYPES
            or not isinstance(error.get("message"), str)
        ):
            raise GrammarError(f"malformed error event: {data!r}")
        self.result.error = error
        self.ended = True

    def _message_start(self, data: dict[str, Any]) -> None:
        if self.started:
            raise GrammarError("a second message_start")
        message = data["message"]
        if message["content"] or message["stop_reason"] is not None:
            raise GrammarError(f"message_start must be empty and unfinished: {message!r}")
        self.started = True

    def _content_block_start(self, data: dict[str, Any]) -> None:
        self._require_started("content_block_start")
        if self.delta_seen:
            raise GrammarError("content_block_start after message_delta")
        if self.open is not None:
            raise GrammarError(f"content_block_start while block {self.open} is open")
        if data["index"] != len(self.blocks):
            raise GrammarError(f"block index {data['index']}, expected {len(self.blocks)}")
        block = data["content_block"]
        kind = block["type"]
        if kind not in _DELTAS:
            raise GrammarError(f"unexpected block type {kind!r}")
        if block.get("text") or block.get("thinking") or block.get("input"):
            raise GrammarError(f"a block must start empty: {block!r}")
        self.blocks.append(kind)
        self.open = data["index"]

    def _content_block_delta(self, data: dict[str, Any]) -> None:
        index = data["index"]
        if self.open is None or index != self.open:
            raise GrammarError(f"content_block_delta for block {index}, but the open block is {self.open}")
        kind = self.blocks[index]
        delta_type = data["delta"]["type"]
        if delta_type not in _DELTAS[kind]:
            raise GrammarError(f"a {delta_type} in a {kind} block")
        if index in self.signed:
            raise GrammarError("a delta after the thinking block's signature_delta")
        if delta_type == "signature_delta":
            self.signed.add(index)
        if delta_type == "input_json_delta":
            self.json[index] = self.json.get(index, "") + data["delta"]["partial_json"]

    def _content_block_stop(self, data: dict[str, Any]) -> None:
        index = data["index"]
        if self.open is None or index != self.open:
            raise GrammarError(f"content_block_stop for block {index}, but the open block is {self.open}")
        if self.blocks[index] == "tool_use":
            text = self.json.get(index, "")
            if text.strip() and not isinstance(json.loads(text), dict):
                raise GrammarError(f"tool input is not a JSON object: {text!r}")
        self.open = None

    def _message_delta(self, data: dict[str, Any]) -> None:
        self._require_started("message_delta")
        if self.delta_seen:
            raise GrammarError("a second message_delta")
        if self.open is not None:
            raise GrammarError(f"message_delta while block {self.open} is open")
        if data["delta"]["stop_reason"] is None:
            raise GrammarError("message_delta without a stop_reason")
        self.delta_seen = True

    def _message_stop(self, data: dict[str, Any]) -> None:
        if not self.delta_seen:
            raise GrammarError("message_stop without message_delta")
        self.ended = True
        self.stopped = True

    def _require_started(self, name: str) -> None:
        if not self.started:
            raise GrammarError(f"{name} before message_start")


def validate_stream(raw: bytes) -> StreamResult:
    """Check a whole Messages stream; GrammarError names the first rule it breaks."""
    checker = _Checker()
    for name, data in parse_sse(raw):
        checker.check(name, data)
    if not checker.ended:
        raise GrammarError("the stream ends without message_stop or an error")
    if checker.snapshot is not None:
        checker.result.message = Message.model_validate(checker.snapshot.model_dump())
    return checker.result
