"""The fields of OpenAI chat-completion answers that a translation to another dialect reads.

Decoded once per body or stream chunk by a typed decoder; every other field is skipped unbuilt.
Reasoning arrives as ``reasoning_content`` (llama.cpp, older vLLM) or ``reasoning`` (vLLM, Ollama).
"""

from __future__ import annotations

import msgspec

from potluck.protocol.usage import OpenAIUsage


class FunctionCall(msgspec.Struct):
    """A tool call's function, whole or a streamed piece of it."""

    name: str | None = None
    """The function's name (whole, in the first piece of a stream)."""
    arguments: str | None = None
    """The arguments as JSON text (a piece of it, when streamed)."""


class ToolCall(msgspec.Struct):
    """A tool call, whole or a streamed piece of it."""

    index: int = 0
    """Which call a streamed piece belongs to (parallel calls have distinct indexes)."""
    id: str | None = None
    """The call's id (in the first piece of a stream)."""
    function: FunctionCall | None = None
    """Name and arguments."""


class ChatMessage(msgspec.Struct):
    """A whole answer's message, or one chunk's ``delta`` of it."""

    content: str | None = None
    """Text."""
    reasoning_content: str | None = None
    """Reasoning (llama.cpp, DeepSeek, older vLLM)."""
    reasoning: str | None = None
    """Reasoning (vLLM ≥ 0.10, Ollama)."""
    tool_calls: list[ToolCall] | None = None
    """Tool calls."""


class Choice(msgspec.Struct):
    """One choice of an answer or chunk; only the first is read."""

    index: int = 0
    """The choice's number."""
    message: ChatMessage | None = None
    """The whole message (non-streamed answers)."""
    delta: ChatMessage | None = None
    """The new part of the message (stream chunks)."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``tool_calls``, ``content_filter``; null until the end."""
    stop_reason: int | str | None = None
    """vLLM: the stop string (or token id) that ended the answer, null for end-of-sequence."""


class ChatCompletion(msgspec.Struct):
    """A ``chat.completion`` body, or a ``chat.completion.chunk`` event, or an error event in a stream."""

    id: str | None = None
    """The backend's id of the completion."""
    model: str | None = None
    """The model that answered."""
    choices: list[Choice] | None = None
    """The choices; empty in the usage-only final chunk."""
    usage: OpenAIUsage | None = None
    """Token counts (in the final chunk, when streamed with ``include_usage``)."""
    error: msgspec.Raw = msgspec.Raw()
    """An error reported in place of a chunk: ``{"message", "type", "code"}`` or a string."""


class ErrorObject(msgspec.Struct):
    """The ``error`` of an OpenAI-shaped error body, as backends fill it."""

    message: str | None = None
    """For people."""
    type: str | None = None
    """OpenAI's error type, or the backend's own."""
    code: int | str | None = None
    """A code: Potluck's names, llama.cpp's HTTP status, OpenAI's strings."""


class ErrorEnvelope(msgspec.Struct):
    """An error body as OpenAI-compatible servers send it: ``{"error": {...}}`` or ``{"error": "..."}``.

    vLLM's older ``{"object": "error", "message": ...}`` and FastAPI's ``{"detail": ...}`` are read too.
    """

    error: ErrorObject | str | None = None
    """The error object, or its message."""
    message: str | None = None
    """vLLM's older top-level message."""
    detail: str | None = None
    """FastAPI's message."""
