"""OpenAI's Responses API on the wire, the answer's side: the Response object, its output items, its stream events.

Each is a Struct built for encoding (never decoded: its ``Raw | None`` fields could not be); items and events
are tagged with their ``type``. `sse_event` frames an event as ``event: <type>`` + ``data: <json>``, and
`DeltaFrame` pre-frames one item's delta events, the only ones written per backend chunk.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    """The text of an assistant message."""

    text: str
    annotations: list[str] = []
    """Always empty: Potluck adds no citations."""


class ReasoningText(msgspec.Struct, tag="reasoning_text", tag_field="type"):
    """Raw reasoning text (as the backend reasoned, not a summary)."""

    text: str


class MessageItem(msgspec.Struct, tag="message", tag_field="type"):
    """An assistant message of the output."""

    id: str
    status: str
    """``in_progress``, ``completed`` or ``incomplete``."""
    content: list[OutputText]
    role: str = "assistant"


class FunctionCallItem(msgspec.Struct, tag="function_call", tag_field="type"):
    """A function the model called."""

    id: str
    call_id: str
    """What the client's ``function_call_output`` refers to."""
    name: str
    arguments: str
    status: str


class ReasoningItem(msgspec.Struct, tag="reasoning", tag_field="type"):
    """What the model reasoned, as ``reasoning_text`` content (``summary`` stays empty)."""

    id: str
    status: str
    content: list[ReasoningText]
    summary: list[str] = []


OutputItem = MessageItem | FunctionCallItem | ReasoningItem


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    """Input tokens read from the prompt cache (a part of ``input_tokens``)."""
    cache_write_tokens: int = 0
    """Always 0: chat completions backends do not report cache writes."""


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0
    """Output tokens spent reasoning (a part of ``output_tokens``)."""


class ResponseUsage(msgspec.Struct):
    """A Response's usage: ``input_tokens`` includes the cached ones, ``output_tokens`` the reasoning."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(msgspec.Struct):
    """Why a Response failed."""

    code: str
    """``server_error`` or ``rate_limit_exceeded`` (codes of OpenAI's list)."""
    message: str


class IncompleteDetails(msgspec.Struct):
    reason: str
    """``max_output_tokens`` or ``content_filter``."""


_AUTO = msgspec.Raw(b'"auto"')
_NO_TOOLS = msgspec.Raw(b"[]")
_TEXT = msgspec.Raw(b'{"format":{"type":"text"}}')
_NO_METADATA = msgspec.Raw(b"{}")


class ResponseObject(msgspec.Struct):
    """A Response (``object: response``), as a whole answer or inside the stream's lifecycle events.

    The fields after ``object`` repeat the request (`ResponseEcho`), as OpenAI's Responses do.
    """

    id: str
    created_at: int
    status: str
    """``in_progress``, ``completed``, ``incomplete`` or ``failed``."""
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    object: str = "response"
    instructions: msgspec.Raw | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: msgspec.Raw | None = None
    store: bool = False
    """Always false, whatever was asked: nothing is stored."""
    temperature: float | None = None
    text: msgspec.Raw = _TEXT
    tool_choice: msgspec.Raw = _AUTO
    tools: msgspec.Raw = _NO_TOOLS
    top_p: float | None = None
    truncation: str = "disabled"
    metadata: msgspec.Raw = _NO_METADATA
    user: str | None = None


# -- stream events --------------------------------------------------------------------------------


class ResponseCreated(msgspec.Struct, tag="response.created", tag_field="type"):
    response: ResponseObject
    sequence_number: int


class ResponseInProgress(msgspec.Struct, tag="response.in_progress", tag_field="type"):
    response: ResponseObject
    sequence_number: int


class ResponseCompleted(msgspec.Struct, tag="response.completed", tag_field="type"):
    response: ResponseObject
    sequence_number: int


class ResponseIncomplete(msgspec.Struct, tag="response.incomplete", tag_field="type"):
    response: ResponseObject
    sequence_number: int


class ResponseFailed(msgspec.Struct, tag="response.failed", tag_field="type"):
    response: ResponseObject
    sequence_number: int


class OutputItemAdded(msgspec.Struct, tag="response.output_item.added", tag_field="type"):
    output_index: int
    item: OutputItem
    sequence_number: int


class OutputItemDone(msgspec.Struct, tag="response.output_item.done", tag_field="type"):
    output_index: int
    item: OutputItem
    sequence_number: int


class ContentPartAdded(msgspec.Struct, tag="response.content_part.added", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText
    sequence_number: int


class ContentPartDone(msgspec.Struct, tag="response.content_part.done", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText
    sequence_number: int


class OutputTextDelta(msgspec.Struct, tag="response.output_text.delta", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    sequence_number: int
    logprobs: list[str] = []


class OutputTextDone(msgspec.Struct, tag="response.output_text.done", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    sequence_number: int
    logprobs: list[str] = []


class ReasoningTextDelta(msgspec.Struct, tag="response.reasoning_text.delta", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    sequence_number: int


class ReasoningTextDone(msgspec.Struct, tag="response.reasoning_text.done", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    sequence_number: int


class FunctionCallArgumentsDelta(msgspec.Struct, tag="response.function_call_arguments.delta", tag_field="type"):
    item_id: str
    output_index: int
    delta: str
    sequence_number: int


class FunctionCallArgumentsDone(msgspec.Struct, tag="response.function_call_arguments.done", tag_field="type"):
    item_id: str
    output_index: int
    arguments: str
    sequence_number: int


StreamEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | ReasoningTextDelta
    | ReasoningTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
)

_encode = msgspec.json.Encoder().encode
_FRAME_START: dict[type, bytes] = {
    cls: b"event: " + str(cls.__struct_config__.tag).encode() + b"\ndata: " for cls in typing.get_args(StreamEvent)
}


def sse_event(event: StreamEvent) -> bytes:
    """One event as Responses streams it: ``event: <type>``, ``data: <json>``, a blank line."""
    return _FRAME_START[type(event)] + _encode(event) + b"\n\n"


_PROBE_DELTA = "\x00"
_PROBE_SEQUENCE = 918273645
_PROBE_SEQUENCE_BYTES = b"%d" % _PROBE_SEQUENCE


class DeltaFrame:
    """One item's delta events, pre-framed: the bytes `sse_event` would write, with the delta and the sequence
    number as the only holes. Cut from the Struct's own encoding (so it cannot drift from it), because a
    delta is written per backend chunk and building a Struct for each costs more than the rest of the chunk.
    """

    __slots__ = ("_head", "_middle", "_tail")

    def __init__(
        self, kind: type[OutputTextDelta | ReasoningTextDelta | FunctionCallArgumentsDelta], **fields: Any
    ) -> None:
        probe = sse_event(kind(delta=_PROBE_DELTA, sequence_number=_PROBE_SEQUENCE, **fields))
        head, found, rest = probe.partition(_encode(_PROBE_DELTA))
        middle, found_too, tail = rest.partition(_PROBE_SEQUENCE_BYTES)
        if not found or not found_too or _PROBE_SEQUENCE_BYTES in tail:
            raise ValueError(f"{kind.__name__} is not encoded as a delta before a sequence number")
        self._head = head
        self._middle = middle
        self._tail = tail

    def render(self, delta: str, sequence_number: int) -> bytes:
        """The event for this delta."""
        return b"".join((self._head, _encode(delta), self._middle, b"%d" % sequence_number, self._tail))
