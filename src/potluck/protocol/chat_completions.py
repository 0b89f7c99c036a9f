"""OpenAI chat completions on the wire, as a translator builds and reads them.

Requests are built for the backend (`ChatRequest`, encoded with ``omit_defaults`` so an unset field is
absent, not ``null``); answers are read from it (`ChatChunk` for a stream, `ChatCompletion` otherwise),
keeping only the fields a translation needs. The reading side is lenient where servers differ: the
reasoning text is ``reasoning_content`` (llama.cpp, vLLM) or ``reasoning`` (Ollama, newer vLLM), an
error may arrive inside a stream, and counts may be ``null``.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from potluck.protocol.usage import OpenAIUsage

# -- requests -------------------------------------------------------------------------------------


class ImageURL(msgspec.Struct, omit_defaults=True):
    """The image of an ``image_url`` content part."""

    url: str
    """An ``https:`` or ``data:`` URL."""
    detail: str | None = None
    """``low``, ``high`` or ``auto``."""


class FileData(msgspec.Struct, omit_defaults=True):
    """The file of a ``file`` content part."""

    file_data: str
    """The file's content as a base64 ``data:`` URL."""
    filename: str | None = None
    """Its name, shown to the model."""


class ContentPart(msgspec.Struct, omit_defaults=True):
    """One part of a message's content: ``text``, ``image_url`` or ``file``."""

    type: str
    """Which part this is."""
    text: str | None = None
    """The text of a ``text`` part."""
    image_url: ImageURL | None = None
    """The image of an ``image_url`` part."""
    file: FileData | None = None
    """The file of a ``file`` part."""


class FunctionCall(msgspec.Struct, omit_defaults=True):
    """A function the model called: its name and its arguments as a JSON string."""

    name: str
    """The function's name."""
    arguments: str
    """Its arguments, a JSON object as a string."""


class ToolCall(msgspec.Struct, tag="function", tag_field="type"):
    """An assistant message's call of a tool (``type: function``)."""

    id: str
    """The call's id; the tool message answering it carries it as ``tool_call_id``."""
    function: FunctionCall
    """What was called."""


class Message(msgspec.Struct, omit_defaults=True):
    """One message of a chat request."""

    role: str
    """``system``, ``user``, ``assistant`` or ``tool``."""
    content: str | list[ContentPart] | None = None
    """Text or parts; absent on an assistant message that only calls tools."""
    tool_calls: list[ToolCall] | None = None
    """The tools an assistant message called."""
    tool_call_id: str | None = None
    """The call a tool message answers."""
    reasoning_content: str | None = None
    """What the model reasoned before this assistant message (llama.cpp's and vLLM's name)."""


class FunctionDefinition(msgspec.Struct, omit_defaults=True):
    """A function the model may call."""

    name: str
    """Its name."""
    description: str | None = None
    """What it does, for the model."""
    parameters: msgspec.Raw | None = None
    """Its arguments' JSON Schema, as the client sent it."""
    strict: bool | None = None
    """Ask the backend to keep to the schema exactly."""


class Tool(msgspec.Struct, tag="function", tag_field="type"):
    """A tool of a chat request (``type: function``: chat completions tools are functions)."""

    function: FunctionDefinition
    """The function."""


class FunctionName(msgspec.Struct):
    """Names the one function a ``tool_choice`` forces."""

    name: str
    """The function's name."""


class NamedToolChoice(msgspec.Struct, tag="function", tag_field="type"):
    """A ``tool_choice`` that forces one function (``type: function``)."""

    function: FunctionName
    """The function."""


class JSONSchemaFormat(msgspec.Struct, omit_defaults=True):
    """The schema of a ``json_schema`` response format."""

    name: str
    """The schema's name."""
    schema: msgspec.Raw | None = None
    """The JSON Schema the answer must follow, as the client sent it."""
    description: str | None = None
    """What the answer is, for the model."""
    strict: bool | None = None
    """Keep to the schema exactly."""


class ResponseFormat(msgspec.Struct, omit_defaults=True):
    """``response_format``: ``json_object``, or ``json_schema`` with its schema."""

    type: str
    """``json_object`` or ``json_schema``."""
    json_schema: JSONSchemaFormat | None = None
    """The schema, for ``json_schema``."""


class StreamOptions(msgspec.Struct):
    """``stream_options``."""

    include_usage: bool = True
    """Send a last chunk with the usage."""


class ChatRequest(msgspec.Struct, omit_defaults=True):
    """A ``POST /v1/chat/completions`` body."""

    model: str
    """The model."""
    messages: list[Message]
    """The conversation."""
    stream: bool | None = None
    """Answer as server-sent events."""
    stream_options: StreamOptions | None = None
    """Streaming options (set whenever ``stream`` is, so the usage arrives)."""
    max_tokens: int | None = None
    """Tokens to generate at most."""
    temperature: float | None = None
    """Sampling temperature."""
    top_p: float | None = None
    """Nucleus sampling."""
    tools: list[Tool] | None = None
    """Functions the model may call."""
    tool_choice: str | NamedToolChoice | None = None
    """``auto``, ``none``, ``required`` or one function."""
    parallel_tool_calls: bool | None = None
    """Whether the model may call several tools in one turn."""
    reasoning_effort: str | None = None
    """How hard a reasoning model thinks: ``minimal``, ``low``, ``medium``, ``high``..."""
    response_format: ResponseFormat | None = None
    """Constrain the answer to JSON."""
    user: str | None = None
    """The end user, as the client named them."""


# -- answers --------------------------------------------------------------------------------------


class FunctionDelta(msgspec.Struct):
    """A piece of a called function: its name (once) and the next piece of its arguments."""

    name: str | None = None
    """The function's name, in the call's first piece."""
    arguments: str | None = None
    """The next piece of the arguments' JSON."""


class ToolCallDelta(msgspec.Struct):
    """A piece of one tool call in a streamed delta (or a whole call in a complete message)."""

    index: int | None = None
    """Which call of the turn this piece belongs to (parallel calls have distinct indexes)."""
    id: str | None = None
    """The call's id, in its first piece."""
    function: FunctionDelta | None = None
    """The piece of the function."""


class Delta(msgspec.Struct):
    """What one stream chunk adds to the assistant message (or the whole message, when not streamed)."""

    content: str | None = None
    """Text."""
    reasoning_content: str | None = None
    """Reasoning text (llama.cpp, vLLM, LM Studio, DeepSeek)."""
    reasoning: str | None = None
    """Reasoning text (Ollama, vLLM ≥ 0.10)."""
    refusal: str | None = None
    """A refusal's text."""
    tool_calls: list[ToolCallDelta] | None = None
    """Pieces of tool calls."""


class Choice(msgspec.Struct):
    """One choice of a chunk or a completion; translators read only the first."""

    index: int = 0
    """The choice's number."""
    delta: Delta | None = None
    """A stream chunk's addition."""
    message: Delta | None = None
    """A complete answer's message."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``tool_calls``, ``content_filter``, or null while streaming."""
    stop_reason: int | str | None = None
    """vLLM: the stop string (or token id) that ended the answer, null for end-of-sequence."""


class ChatError(msgspec.Struct):
    """An error object as backends send it (``code`` is a number in llama.cpp and vLLM)."""

    message: str | None = None
    """What went wrong."""
    type: str | None = None
    """The backend's error type."""
    code: str | int | None = None
    """The backend's code."""
    param: str | None = None
    """The request field at fault."""


class ChatChunk(msgspec.Struct):
    """One ``data:`` event of a chat completions stream, a whole answer, or an error in their place.

    Errors come as OpenAI's ``{"error": {...}}`` or ``{"error": "..."}``, vLLM's older top-level
    ``{"object": "error", "message": ...}``, or FastAPI's ``{"detail": ...}``; `error_fields` reads them all.
    """

    id: str | None = None
    """The backend's id of the completion."""
    model: str | None = None
    """The model that answered."""
    object: str | None = None
    """``chat.completion.chunk`` or ``chat.completion``; ``error`` for vLLM's older top-level errors."""
    choices: list[Choice] | None = None
    """Usually one choice; empty in the usage-only last chunk."""
    usage: OpenAIUsage | None = None
    """The usage, in the last chunk (``stream_options.include_usage``) or the whole answer."""
    error: ChatError | str | None = None
    """An error the backend reports in place of an answer (llama.cpp, vLLM, SGLang)."""
    message: str | None = None
    """The message of a top-level error."""
    type: str | None = None
    """The type of a top-level error."""
    code: str | int | None = None
    """The code of a top-level error."""
    detail: msgspec.Raw = msgspec.Raw()
    """FastAPI's error: a string, or a list of validation problems."""


ChatCompletion = ChatChunk
"""A complete (non-streamed) answer has the same fields that matter: ``choices[0].message`` and ``usage``."""


class ErrorFields(NamedTuple):
    """An error as a backend reported it, whichever shape it used."""

    message: str | None
    type: str | None
    code: str | int | None
    """A number for llama.cpp and vLLM (the HTTP status), a string for OpenAI-shaped servers."""
    param: str | None


def error_fields(answer: ChatChunk, *, failed: bool = False) -> ErrorFields | None:
    """The error an answer carries in place of a completion, or None when it carries none.

    ``failed``: the answer came with an error status, so a top-level ``message`` or FastAPI's ``detail``
    is its error too (in a 2xx answer, only ``error`` and vLLM's ``"object": "error"`` mark one).
    """
    error = answer.error
    if isinstance(error, ChatError):
        return ErrorFields(error.message, error.type, error.code, error.param)
    if isinstance(error, str):
        return ErrorFields(error, None, None, None)
    if answer.object == "error" or (failed and answer.message is not None):
        return ErrorFields(answer.message, answer.type, answer.code, None)
    if failed and answer.detail and bytes(answer.detail) != b"null":
        try:
            detail = msgspec.json.decode(answer.detail)
        except msgspec.DecodeError:
            detail = None
        text = detail if isinstance(detail, str) else bytes(answer.detail).decode("utf-8", "replace")
        return ErrorFields(text, None, None, None)
    return None


_decode_answer = msgspec.json.Decoder(ChatChunk).decode


def read_error(body: bytes) -> ErrorFields:
    """An error answer, or a stream's error event, in any of the shapes servers use (a bare JSON string
    included); a body that is no JSON is its own message, a JSON object without an error has none."""
    try:
        return error_fields(_decode_answer(body), failed=True) or _NO_ERROR
    except msgspec.DecodeError:
        pass
    try:
        return ErrorFields(msgspec.json.decode(body, type=str), None, None, None)
    except msgspec.DecodeError:
        return ErrorFields(body.decode("utf-8", "replace").strip() or None, None, None, None)


_NO_ERROR = ErrorFields(None, None, None, None)
