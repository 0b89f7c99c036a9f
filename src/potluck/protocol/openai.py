"""The few fields of OpenAI-compatible bodies that routing and metering need.

Client bodies are passed through as bytes; these Structs decode only what the hub must know and
ignore everything else (msgspec skips unknown fields without building them).
"""

from __future__ import annotations

import enum

import msgspec

from potluck.protocol.agent import Usage


class StreamOptions(msgspec.Struct):
    """OpenAI's ``stream_options``."""

    include_usage: bool | None = None
    """Ask for a final chunk with the usage (the hub asks for one anyway and drops it unless this is set)."""


class RoutingFields(msgspec.Struct):
    """What the hub reads from a client's request body."""

    model: str | None = None
    """The model, or a group's alias of models, to route to."""
    stream: bool | None = None
    """Answer as server-sent events (chat and text completions only)."""
    stream_options: StreamOptions | None = None
    """Streaming options; the hub reads only ``include_usage``."""
    max_tokens: int | None = None
    """Completion tokens at most; in credit groups the hold assumes it (else the group's cap)."""
    max_completion_tokens: int | None = None
    """OpenAI's newer name for ``max_tokens``; with both, the hold assumes the larger."""


class UsageEnvelope(msgspec.Struct):
    """Any OpenAI response or stream chunk, read only for its usage."""

    usage: Usage | None = None
    choices: list[msgspec.Raw] | None = None


class Dialect(enum.Enum):
    """The client API a request speaks: OpenAI's (chat, completions, embeddings) or one translated to chat."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    """Anthropic's Messages API."""
    RESPONSES = "responses"
    """OpenAI's Responses API."""


CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
RESPONSES_PATH = "/v1/responses"

DIALECT_PATHS: dict[str, Dialect] = {
    MESSAGES_PATH: Dialect.ANTHROPIC,
    COUNT_TOKENS_PATH: Dialect.ANTHROPIC,
    RESPONSES_PATH: Dialect.RESPONSES,
}
"""Paths of the dialects other than OpenAI's: passed through to a backend that speaks them, else translated."""

INFERENCE_PATHS = frozenset({CHAT_PATH, "/v1/completions", "/v1/embeddings", *DIALECT_PATHS})
"""Paths an agent will forward to a backend. Nothing else, whatever a client sends."""
