"""Anthropic's and the Responses API's answers, read as they pass through untouched: usage and a terminal error.

A backend that speaks a client's dialect itself gets its answer relayed byte for byte; these readers
see it once on the way, like `sse.SSEUsageScanner` does for OpenAI's streams, and (1) return only
whole events, (2) decode just the events that carry usage or end the stream in error, and (3) never
remove or re-encode anything: these dialects' clients always get their usage.

- Anthropic Messages: ``message_start`` carries the prompt's usage, ``message_delta`` the cumulative
  usage at the end (any field it has replaces the start's); ``event: error`` ends the stream.
- Responses: ``response.completed``/``response.incomplete``/``response.failed`` carry the Response with
  its usage; ``response.failed`` and ``error`` end the stream.
- Whole bodies: the ``usage`` object at the top of a Message or a Response.

An event is decoded only when its bytes hold a usage object or an error type, which JSON text
inside a string never does (its quotes are escaped), so text and tool deltas cost one regex pass.
"""

from __future__ import annotations

import contextlib
import re

import msgspec

from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.anthropic_answer import OutputTokensDetails
from potluck.protocol.anthropic_answer import Usage as AnthropicUsage
from potluck.protocol.errors import ErrorCode
from potluck.protocol.sse import whole_events_end
from potluck.protocol.usage import TokenUsage

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_ANTHROPIC_MARK = re.compile(rb'"usage"\s*:\s*\{|"type"\s*:\s*"error"')
_RESPONSES_MARK = re.compile(rb'"usage"\s*:\s*\{|"type"\s*:\s*"(?:response\.failed|error)"')
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


class _Thinking(msgspec.Struct):
    thinking_tokens: int = 0


class _AnthropicCounts(msgspec.Struct):
    """Anthropic's usage, every field optional (``message_delta`` may carry only ``output_tokens``)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: _Thinking | None = None


class _WithUsage(msgspec.Struct):
    usage: _AnthropicCounts | None = None


class _ErrorDetail(msgspec.Struct):
    type: str = ""
    message: str = ""


class _AnthropicEvent(msgspec.Struct):
    type: str = ""
    message: _WithUsage | None = None
    usage: _AnthropicCounts | None = None
    error: _ErrorDetail | None = None


class _CachedDetails(msgspec.Struct):
    cached_tokens: int = 0


class _ReasoningDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class _ResponsesCounts(msgspec.Struct):
    """The Responses API's usage: ``input_tokens`` includes the cached ones, ``output_tokens`` the reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_tokens_details: _CachedDetails | None = None
    output_tokens_details: _ReasoningDetails | None = None


class _ResponseError(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _Response(msgspec.Struct):
    usage: _ResponsesCounts | None = None
    error: _ResponseError | None = None


class _ResponsesEvent(msgspec.Struct):
    type: str = ""
    response: _Response | None = None
    message: str | None = None


_decode_anthropic = msgspec.json.Decoder(_AnthropicEvent).decode
_decode_responses = msgspec.json.Decoder(_ResponsesEvent).decode


def _data(event: bytes) -> bytes:
    """The data of one SSE event: its ``data:`` lines, joined."""
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def _ended_in_error(message: str) -> ErrorInfo:
    return ErrorInfo(502, ErrorCode.UPSTREAM_ERROR, message or "the backend reported an error", terminal_sent=True)


class _PassThroughScanner:
    """Whole events through untouched; the events `_mark` picks are decoded by `_read`."""

    __slots__ = ("_pending", "error", "usage")
    _mark: re.Pattern[bytes]

    def __init__(self) -> None:
        self.usage: Usage | None = None
        """The usage the backend reported so far."""
        self.error: ErrorInfo | None = None
        """Set once the backend ended the stream with its dialect's error event (already in what was returned)."""
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes from the backend; return the complete events to relay now."""
        if self._pending:
            data = self._pending + data
        cut = whole_events_end(data)
        if not cut:
            self._pending = data
            return b""
        if cut == len(data):
            complete, self._pending = data, b""
        else:
            complete, self._pending = data[:cut], data[cut:]
        if self._mark.search(complete) is not None:
            self._scan(complete)
        return complete

    def finish(self) -> bytes:
        """What is left when the backend closes: a final event without its blank line."""
        rest, self._pending = self._pending, b""
        if rest and self._mark.search(rest) is not None:
            self._scan(rest)
        return rest

    def abort(self, message: str) -> bytes:
        """Nothing: a stream relayed untouched that breaks off gets its terminal error event from the hub."""
        return b""

    def _scan(self, events: bytes) -> None:
        for event in _EVENT_END.split(events):
            if self.error is None and self._mark.search(event) is not None:
                # An event that is not one of the dialect's is relayed as it is, read for nothing.
                with contextlib.suppress(*_DECODE_ERRORS):
                    self._read(_data(event))

    def _read(self, data: bytes) -> None:
        raise NotImplementedError


class AnthropicUsageScanner(_PassThroughScanner):
    """Reads a Messages event stream relayed untouched (a relay transform: ``feed``/``finish``/``usage``/``error``)."""

    __slots__ = ("_counts",)
    _mark = _ANTHROPIC_MARK

    def __init__(self) -> None:
        super().__init__()
        self._counts = _AnthropicCounts()

    def _read(self, data: bytes) -> None:
        event = _decode_anthropic(data)
        if event.type == "error":
            detail = event.error or _ErrorDetail()
            self.error = _ended_in_error(detail.message)
            return
        counts = event.message.usage if event.message is not None else event.usage
        if counts is None:
            return
        merged = self._counts
        for field in _AnthropicCounts.__struct_fields__:
            value = getattr(counts, field)
            if value is not None:
                setattr(merged, field, value)
        self.usage = _anthropic_frame(merged)


class ResponsesUsageScanner(_PassThroughScanner):
    """Reads a Responses event stream relayed untouched (a relay transform: ``feed``/``finish``/``usage``/``error``)."""

    __slots__ = ()
    _mark = _RESPONSES_MARK

    def _read(self, data: bytes) -> None:
        event = _decode_responses(data)
        response = event.response
        if response is not None and response.usage is not None:
            self.usage = _responses_frame(response.usage)
        if event.type == "response.failed":
            error = response.error if response is not None else None
            self.error = _ended_in_error(error.message if error is not None else "")
        elif event.type == "error":
            self.error = _ended_in_error(event.message or "")


def _anthropic_frame(counts: _AnthropicCounts) -> Usage:
    thinking = counts.output_tokens_details
    usage = AnthropicUsage(
        input_tokens=counts.input_tokens or 0,
        output_tokens=counts.output_tokens or 0,
        cache_creation_input_tokens=counts.cache_creation_input_tokens,
        cache_read_input_tokens=counts.cache_read_input_tokens,
        output_tokens_details=OutputTokensDetails(thinking.thinking_tokens) if thinking is not None else None,
    )
    return TokenUsage.from_anthropic(usage).to_frame()


def _responses_frame(counts: _ResponsesCounts) -> Usage:
    cached = counts.input_tokens_details
    reasoning = counts.output_tokens_details
    return TokenUsage.of_prompt(
        counts.input_tokens,
        counts.output_tokens,
        cache_read=cached.cached_tokens if cached is not None else 0,
        reasoning=reasoning.reasoning_tokens if reasoning is not None else 0,
    ).to_frame()


class _AnthropicBody(msgspec.Struct):
    usage: _AnthropicCounts | None = None


class _ResponsesBody(msgspec.Struct):
    usage: _ResponsesCounts | None = None


_decode_anthropic_body = msgspec.json.Decoder(_AnthropicBody).decode
_decode_responses_body = msgspec.json.Decoder(_ResponsesBody).decode


def anthropic_usage_from_json(body: bytes) -> Usage | None:
    """The usage of a whole Message, or None when it has none or is not one."""
    try:
        usage = _decode_anthropic_body(body).usage
    except _DECODE_ERRORS:
        return None
    return None if usage is None else _anthropic_frame(usage)


def responses_usage_from_json(body: bytes) -> Usage | None:
    """The usage of a whole Response, or None when it has none or is not one."""
    try:
        usage = _decode_responses_body(body).usage
    except _DECODE_ERRORS:
        return None
    return None if usage is None else _responses_frame(usage)
