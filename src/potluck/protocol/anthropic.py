"""Anthropic's Messages API (``POST /v1/messages``): the request and its content blocks.

Only documented fields are modelled, and only those a translation to chat completions reads;
msgspec skips any other field without building it. Content blocks are a tagged union on
``type``, so an unknown block type fails to decode (a 400 for the client) instead of being lost.
The answer, its stream events and errors are in `anthropic_answer`.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class Role(enum.StrEnum):
    """Who said a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    """Not in Anthropic's documented API, but Claude Code sends system text inside ``messages`` too."""


# -- content blocks (requests and answers) --------------------------------------------------------


class Base64Source(msgspec.Struct, tag_field="type", tag="base64"):
    """Inline data of an image or PDF."""

    media_type: str
    """``image/png``, ``application/pdf``..."""
    data: str
    """The bytes, base64-encoded."""


class URLSource(msgspec.Struct, tag_field="type", tag="url"):
    """An image or PDF the model's server fetches."""

    url: str
    """Where it is."""


class FileSource(msgspec.Struct, tag_field="type", tag="file"):
    """A file uploaded to Anthropic's Files API (nothing a local backend can read)."""

    file_id: str
    """The uploaded file."""


class TextSource(msgspec.Struct, tag_field="type", tag="text"):
    """A plain-text document."""

    data: str
    """The text."""
    media_type: str = "text/plain"
    """Always ``text/plain``."""


class ContentSource(msgspec.Struct, tag_field="type", tag="content"):
    """A document made of content blocks."""

    content: str | list[TextBlock | ImageBlock]
    """The document's text, or its text and image blocks."""


class TextBlock(msgspec.Struct, tag_field="type", tag="text"):
    """Text."""

    text: str
    """The text."""


class ImageBlock(msgspec.Struct, tag_field="type", tag="image"):
    """An image."""

    source: Base64Source | URLSource | FileSource
    """Where its bytes are."""


class DocumentBlock(msgspec.Struct, tag_field="type", tag="document"):
    """A document: a PDF, plain text, or content blocks."""

    source: Base64Source | URLSource | TextSource | ContentSource | FileSource
    """Its content."""
    title: str | None = None
    """A title, shown to the model."""
    context: str | None = None
    """Context about it, shown to the model."""


class SearchResultBlock(msgspec.Struct, tag_field="type", tag="search_result"):
    """A search result the client supplies (for citations)."""

    source: str
    """Where it came from (a URL or name)."""
    title: str
    """Its title."""
    content: list[TextBlock]
    """Its text."""


class ToolUseBlock(msgspec.Struct, tag_field="type", tag="tool_use"):
    """The model calls a tool."""

    id: str
    """The call's id; its result names it in ``tool_use_id``."""
    name: str
    """The tool."""
    input: dict[str, Any]
    """The arguments, an object matching the tool's ``input_schema``."""


class ToolResultBlock(msgspec.Struct, tag_field="type", tag="tool_result"):
    """What a tool call returned (in a user message)."""

    tool_use_id: str
    """The ``tool_use`` block this answers."""
    content: str | list[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock] | None = None
    """The result: text, or text, image and document blocks."""
    is_error: bool = False
    """The tool failed; ``content`` says why."""


class ThinkingBlock(msgspec.Struct, tag_field="type", tag="thinking"):
    """The model's visible reasoning."""

    thinking: str
    """The reasoning text."""
    signature: str = ""
    """Anthropic's integrity signature; empty from Potluck (no backend signs its reasoning)."""


class RedactedThinkingBlock(msgspec.Struct, tag_field="type", tag="redacted_thinking"):
    """Reasoning Anthropic encrypted; opaque to every other model."""

    data: str
    """The encrypted reasoning."""


ContentBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)
"""Every block a request's message may hold."""

AnswerBlock = TextBlock | ThinkingBlock | ToolUseBlock
"""Every block Potluck's answers hold."""


# -- the request ----------------------------------------------------------------------------------


class MessageParam(msgspec.Struct):
    """One turn of the conversation."""

    role: Role
    """``user`` or ``assistant``."""
    content: str | list[ContentBlock]
    """Text, or content blocks."""


class Tool(msgspec.Struct):
    """A tool the model may call. Client tools have an ``input_schema``; Anthropic's own tools a dated ``type``."""

    name: str
    """The tool's name."""
    description: str | None = None
    """What it does, for the model."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema of its input (client tools only)."""
    type: str | None = None
    """``custom`` (or absent) for a client tool; e.g. ``bash_20250124`` for Anthropic's."""


class ToolChoiceType(enum.StrEnum):
    """How the model may use the tools."""

    AUTO = "auto"
    ANY = "any"
    TOOL = "tool"
    NONE = "none"


class ToolChoice(msgspec.Struct):
    """How the model should use the tools."""

    type: ToolChoiceType
    """``auto`` (it decides), ``any`` (some tool), ``tool`` (the named one), ``none``."""
    name: str | None = None
    """The tool to call, with ``type: tool``."""
    disable_parallel_tool_use: bool = False
    """At most one tool call."""


class ThinkingType(enum.StrEnum):
    """Whether the model thinks before it answers."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    ADAPTIVE = "adaptive"
    BETWEEN_TOOLS = "between_tools"


class ThinkingConfig(msgspec.Struct):
    """The request's ``thinking``."""

    type: ThinkingType
    """``enabled`` (with a budget), ``adaptive`` (the model decides), ``disabled``, ``between_tools``."""
    budget_tokens: int | None = None
    """Tokens the reasoning may use, with ``enabled``; counted in ``max_tokens``."""


class OutputConfig(msgspec.Struct):
    """The request's ``output_config``."""

    effort: str | None = None
    """``low``, ``medium``, ``high``, ``xhigh`` or ``max``."""


class Metadata(msgspec.Struct):
    """The request's ``metadata``."""

    user_id: str | None = None
    """An opaque id of the end user."""


class MessagesRequest(msgspec.Struct):
    """A ``POST /v1/messages`` (or ``/v1/messages/count_tokens``) body."""

    model: str
    """The model (or a group's alias of models)."""
    messages: list[MessageParam]
    """The conversation so far."""
    max_tokens: int | None = None
    """Tokens to generate at most (required by ``/v1/messages``, absent from ``count_tokens``)."""
    system: str | list[TextBlock] | None = None
    """The system prompt, as text or text blocks."""
    stop_sequences: list[str] | None = None
    """Strings that end the answer when generated."""
    stream: bool = False
    """Answer as server-sent events."""
    temperature: float | None = None
    """Sampling temperature."""
    top_p: float | None = None
    """Nucleus sampling."""
    top_k: int | None = None
    """Top-k sampling."""
    metadata: Metadata | None = None
    """About the request: the end user's id."""
    tools: list[Tool] | None = None
    """Tools the model may call."""
    tool_choice: ToolChoice | None = None
    """How it may call them."""
    thinking: ThinkingConfig | None = None
    """Whether it thinks first; off when absent."""
    output_config: OutputConfig | None = None
    """Output options: the effort."""
