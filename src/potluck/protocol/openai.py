"""The few fields of OpenAI-compatible bodies that routing and metering need.

Client bodies are passed through as bytes; these Structs decode only what the hub must know and
ignore everything else (msgspec skips unknown fields without building them).
"""

from __future__ import annotations

import msgspec

from potluck.protocol.agent import Usage


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class RoutingFields(msgspec.Struct):
    """What the hub reads from a client's request body."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class UsageEnvelope(msgspec.Struct):
    """Any OpenAI response or stream chunk, read only for its usage."""

    usage: Usage | None = None
    choices: list[msgspec.Raw] | None = None


INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
"""Paths an agent will forward to a backend. Nothing else, whatever a client sends."""

STREAMABLE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
