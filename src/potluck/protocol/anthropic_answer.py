"""Anthropic's Messages API: the answer (``message``), its stream events, token counts and errors.

Stream events are a tagged union on ``type``; the SSE ``event:`` name of each is that ``type``.
"""

from __future__ import annotations

import enum

import msgspec

from potluck.protocol.anthropic import AnswerBlock, Role

# -- the answer -----------------------------------------------------------------------------------


class StopReason(enum.StrEnum):
    """Why the model stopped."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_USE = "tool_use"
    PAUSE_TURN = "pause_turn"
    REFUSAL = "refusal"


class OutputTokensDetails(msgspec.Struct):
    """Parts of ``output_tokens``."""

    thinking_tokens: int
    """Output tokens spent reasoning (counted in ``output_tokens``)."""


class Usage(msgspec.Struct, omit_defaults=True):
    """Anthropic's ``usage``: ``input_tokens`` excludes the cached tokens, reported beside it."""

    input_tokens: int
    """Prompt tokens neither read from nor written to the cache."""
    output_tokens: int
    """Generated tokens, thinking included."""
    cache_creation_input_tokens: int | None = None
    """Prompt tokens written to the cache."""
    cache_read_input_tokens: int | None = None
    """Prompt tokens read from the cache."""
    output_tokens_details: OutputTokensDetails | None = None
    """Which output tokens were thinking."""


class Message(msgspec.Struct, tag_field="type", tag="message"):
    """A whole answer (the non-streamed body, and the ``message`` of ``message_start``)."""

    id: str
    """``msg_...``."""
    model: str
    """The model the client asked for."""
    content: list[AnswerBlock]
    """Thinking, text and tool calls, in order."""
    stop_reason: StopReason | None
    """Why it stopped; null in ``message_start``."""
    stop_sequence: str | None
    """The stop sequence generated, with ``stop_reason: stop_sequence``."""
    usage: Usage
    """Tokens used."""
    role: Role = Role.ASSISTANT
    """Always ``assistant``."""


class TokenCount(msgspec.Struct):
    """The ``/v1/messages/count_tokens`` answer."""

    input_tokens: int
    """Tokens of the system prompt, tools and messages."""


# -- stream events ---------------------------------------------------------------------------------


class TextDelta(msgspec.Struct, tag_field="type", tag="text_delta"):
    """More text."""

    text: str
    """The text to append."""


class InputJSONDelta(msgspec.Struct, tag_field="type", tag="input_json_delta"):
    """More of a tool call's input, as JSON text."""

    partial_json: str
    """The JSON text to append."""


class ThinkingDelta(msgspec.Struct, tag_field="type", tag="thinking_delta"):
    """More reasoning."""

    thinking: str
    """The reasoning text to append."""


class SignatureDelta(msgspec.Struct, tag_field="type", tag="signature_delta"):
    """A thinking block's signature, just before it stops."""

    signature: str
    """The signature."""


class MessageStartEvent(msgspec.Struct, tag_field="type", tag="message_start"):
    """The first event: the message, empty, with the usage known so far."""

    message: Message
    """The message without content."""


class ContentBlockStartEvent(msgspec.Struct, tag_field="type", tag="content_block_start"):
    """A block begins; its deltas follow."""

    index: int
    """The block's place in ``content``."""
    content_block: AnswerBlock
    """The block, empty."""


class ContentBlockDeltaEvent(msgspec.Struct, tag_field="type", tag="content_block_delta"):
    """More of the open block."""

    index: int
    """The block's place in ``content``."""
    delta: TextDelta | InputJSONDelta | ThinkingDelta | SignatureDelta
    """What to append."""


class ContentBlockStopEvent(msgspec.Struct, tag_field="type", tag="content_block_stop"):
    """A block is complete."""

    index: int
    """The block's place in ``content``."""


class MessageDelta(msgspec.Struct):
    """What changed on the message at its end."""

    stop_reason: StopReason | None
    """Why it stopped."""
    stop_sequence: str | None = None
    """The stop sequence generated, if that is why."""


class MessageDeltaUsage(msgspec.Struct, omit_defaults=True):
    """The message's cumulative usage at its end."""

    output_tokens: int
    """Generated tokens."""
    input_tokens: int | None = None
    """Uncached prompt tokens."""
    cache_creation_input_tokens: int | None = None
    """Prompt tokens written to the cache."""
    cache_read_input_tokens: int | None = None
    """Prompt tokens read from the cache."""
    output_tokens_details: OutputTokensDetails | None = None
    """Which output tokens were thinking."""


class MessageDeltaEvent(msgspec.Struct, tag_field="type", tag="message_delta"):
    """The stop reason and the final usage, after the last block."""

    delta: MessageDelta
    """Stop reason and sequence."""
    usage: MessageDeltaUsage
    """Cumulative usage."""


class MessageStopEvent(msgspec.Struct, tag_field="type", tag="message_stop"):
    """The last event of a complete message."""


class PingEvent(msgspec.Struct, tag_field="type", tag="ping"):
    """Keep-alive; carries nothing."""


# -- errors ------------------------------------------------------------------------------------------


class ErrorType(enum.StrEnum):
    """Anthropic's error types."""

    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    BILLING = "billing_error"
    PERMISSION = "permission_error"
    NOT_FOUND = "not_found_error"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit_error"
    API = "api_error"
    TIMEOUT = "timeout_error"
    OVERLOADED = "overloaded_error"


_TYPE_OF_STATUS = {
    400: ErrorType.INVALID_REQUEST,
    401: ErrorType.AUTHENTICATION,
    402: ErrorType.BILLING,
    403: ErrorType.PERMISSION,
    404: ErrorType.NOT_FOUND,
    413: ErrorType.REQUEST_TOO_LARGE,
    429: ErrorType.RATE_LIMIT,
    500: ErrorType.API,
    503: ErrorType.OVERLOADED,
    504: ErrorType.TIMEOUT,
    529: ErrorType.OVERLOADED,
}


def error_type_for_status(status: int) -> ErrorType:
    """Anthropic's error type for an HTTP status: other 4xx are invalid requests, other 5xx API errors."""
    known = _TYPE_OF_STATUS.get(status)
    if known is not None:
        return known
    return ErrorType.INVALID_REQUEST if 400 <= status < 500 else ErrorType.API


class ErrorDetail(msgspec.Struct):
    """What went wrong."""

    type: ErrorType
    """The error's type."""
    message: str
    """For people."""


class ErrorEvent(msgspec.Struct, tag_field="type", tag="error"):
    """An error: the whole body of an error answer, and the ``error`` event that ends a failed stream."""

    error: ErrorDetail
    """What went wrong."""


StreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | PingEvent
    | ErrorEvent
)
"""Every event of a Messages stream; the SSE ``event:`` name is the ``type``."""


def error_body(type_: ErrorType, message: str) -> bytes:
    """The JSON bytes of an error answer in Anthropic's shape."""
    return msgspec.json.encode(ErrorEvent(ErrorDetail(type_, message)))
