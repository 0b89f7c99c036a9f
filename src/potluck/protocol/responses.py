"""OpenAI's Responses API (``POST /v1/responses``) on the wire: the request, and what Potluck refuses in it.

Requests are read leniently: one flat Struct per input item and per content part holds every field the
translation reads, whatever the item's ``type`` (an ``EasyInputMessage`` may omit its type; unknown item
and tool types are skipped by the translator, not refused here). `ResponseEcho` re-reads the same body
keeping the client's own JSON of the fields a Response echoes back. Fields kept as raw JSON default to
an empty `msgspec.Raw` (msgspec cannot decode a ``Raw`` inside a union): `given` tells them apart.

The answer's side (the Response object, its items, the stream events) is in `responses_output`.
"""

from __future__ import annotations

import enum

import msgspec

from potluck.protocol.errors import ErrorCode, PotluckError, error_envelope

# -- requests -------------------------------------------------------------------------------------

_ABSENT = msgspec.Raw()
"""The default of a request field kept as raw JSON: empty, so a field that was sent (even as null) is not."""


def given(raw: msgspec.Raw) -> msgspec.Raw | None:
    """A raw request field, or None when it was absent or null."""
    return raw if raw and bytes(raw) != b"null" else None


class ItemType(enum.StrEnum):
    """The input item types the translation reads; any other type is skipped."""

    MESSAGE = "message"
    FUNCTION_CALL = "function_call"
    FUNCTION_CALL_OUTPUT = "function_call_output"
    CUSTOM_TOOL_CALL = "custom_tool_call"
    CUSTOM_TOOL_CALL_OUTPUT = "custom_tool_call_output"
    LOCAL_SHELL_CALL = "local_shell_call"
    LOCAL_SHELL_CALL_OUTPUT = "local_shell_call_output"
    REASONING = "reasoning"
    ITEM_REFERENCE = "item_reference"


class InputPart(msgspec.Struct):
    """A content part of an input item: ``input_text``, ``input_image``, ``input_file``, ``output_text``,
    ``refusal``, ``reasoning_text`` or ``summary_text``."""

    type: str = "input_text"
    """Which part this is."""
    text: str | None = None
    """The text of a text, output text, reasoning or summary part."""
    image_url: str | None = None
    """An image part's ``https:`` or ``data:`` URL."""
    file_id: str | None = None
    """An uploaded file (Potluck has no Files API: refused)."""
    detail: str | None = None
    """An image's detail: ``low``, ``high`` or ``auto``."""
    file_data: str | None = None
    """A file part's content as a base64 ``data:`` URL."""
    file_url: str | None = None
    """A file part's URL (refused: the agent fetches nothing)."""
    filename: str | None = None
    """A file part's name."""
    refusal: str | None = None
    """A refusal part's text."""


class InputItem(msgspec.Struct):
    """One item of ``input``: a message, a tool call or its output, or a reasoning item."""

    type: str = ItemType.MESSAGE
    """The item's type; a message may omit it."""
    role: str | None = None
    """A message's role: ``user``, ``assistant``, ``system`` or ``developer``."""
    content: str | list[InputPart] | None = None
    """A message's text or parts; a reasoning item's ``reasoning_text`` parts."""
    id: str | None = None
    """The item's id (a reference's target; a local shell output's call)."""
    call_id: str | None = None
    """The tool call an item makes or answers."""
    name: str | None = None
    """A called tool's name."""
    arguments: str | None = None
    """A function call's arguments, a JSON object as a string."""
    input: str | None = None
    """A custom tool call's free-form input."""
    action: msgspec.Raw = _ABSENT
    """A local shell call's action (``exec`` with its command)."""
    output: str | list[InputPart] | None = None
    """A tool call's output: text, or parts."""
    summary: list[InputPart] | None = None
    """A reasoning item's summary parts."""


class RequestTool(msgspec.Struct):
    """A tool of the request. Only ``function`` tools are translated; the others are skipped."""

    type: str
    """``function``, ``web_search``, ``file_search``, ``local_shell``, ``custom``, ``mcp``..."""
    name: str | None = None
    """A function's name."""
    description: str | None = None
    """A function's description."""
    parameters: msgspec.Raw = _ABSENT
    """A function's JSON Schema."""
    strict: bool | None = None
    """Whether calls must follow the schema exactly."""


class ToolChoice(msgspec.Struct):
    """A ``tool_choice`` object: one function, a hosted tool, or ``allowed_tools``."""

    type: str
    """``function``, ``allowed_tools``, ``custom``, ``mcp``, or a hosted tool's type."""
    name: str | None = None
    """The forced function's name."""
    mode: str | None = None
    """``auto`` or ``required``, for ``allowed_tools``."""


class ReasoningOptions(msgspec.Struct):
    """``reasoning``: how hard a reasoning model thinks."""

    effort: str | None = None
    """``none``, ``minimal``, ``low``, ``medium``, ``high`` or ``xhigh``."""


class TextFormat(msgspec.Struct):
    """``text.format``: plain text, any JSON object, or JSON following a schema."""

    type: str = "text"
    """``text``, ``json_object`` or ``json_schema``."""
    name: str | None = None
    """The schema's name."""
    schema: msgspec.Raw = _ABSENT
    """The JSON Schema."""
    description: str | None = None
    """What the answer is."""
    strict: bool | None = None
    """Keep to the schema exactly."""


class TextOptions(msgspec.Struct):
    """``text``: the answer's format."""

    format: TextFormat | None = None
    """The format."""


class ResponsesRequest(msgspec.Struct):
    """The fields of a ``POST /v1/responses`` body that the translation reads; others are dropped."""

    model: str = ""
    """The model."""
    input: str | list[InputItem] = ""
    """A user message's text, or the conversation as items."""
    instructions: str | list[InputItem] | None = None
    """The system (developer) message."""
    tools: list[RequestTool] | None = None
    """Tools the model may call."""
    tool_choice: str | ToolChoice | None = None
    """``auto``, ``none``, ``required``, or an object."""
    parallel_tool_calls: bool | None = None
    """Whether the model may call several tools in one turn."""
    max_output_tokens: int | None = None
    """Tokens to generate at most, reasoning included."""
    temperature: float | None = None
    """Sampling temperature."""
    top_p: float | None = None
    """Nucleus sampling."""
    reasoning: ReasoningOptions | None = None
    """Reasoning options."""
    text: TextOptions | None = None
    """The answer's format."""
    stream: bool | None = None
    """Answer as server-sent events."""
    store: bool | None = None
    """Accepted and ignored: Potluck stores no responses."""
    user: str | None = None
    """The end user."""
    previous_response_id: str | None = None
    """Refused: continuing a stored response needs storage Potluck does not keep."""
    conversation: msgspec.Raw = _ABSENT
    """Refused, like ``previous_response_id``."""
    prompt: msgspec.Raw = _ABSENT
    """Refused: a stored prompt template."""
    background: bool | None = None
    """Refused when true: a background response must be stored to be fetched later."""


class ResponseEcho(msgspec.Struct):
    """The request fields a Response object repeats, as the client's own JSON (see `ResponseObject`)."""

    model: str = ""
    instructions: msgspec.Raw = _ABSENT
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    reasoning: msgspec.Raw = _ABSENT
    temperature: float | None = None
    text: msgspec.Raw = _ABSENT
    tool_choice: msgspec.Raw = _ABSENT
    tools: msgspec.Raw = _ABSENT
    top_p: float | None = None
    metadata: msgspec.Raw = _ABSENT
    user: str | None = None


class ResponsesRequestError(PotluckError):
    """A Responses request Potluck cannot serve as sent: a 400 ``invalid_request_error`` naming the field."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def body(self) -> bytes:
        """The error as OpenAI's JSON envelope."""
        return error_envelope(self.code, self.message, param=self.param)


_STATEFUL = {
    "previous_response_id": "Potluck stores no responses to continue from",
    "conversation": "Potluck stores no conversations",
    "prompt": "Potluck stores no prompt templates",
    "background": "Potluck stores no responses to fetch later",
}
_INSTEAD = {
    "previous_response_id": "Send the whole conversation in `input` (Codex does when `store` is false).",
    "conversation": "Send the whole conversation in `input`.",
    "prompt": "Send the instructions and input themselves.",
    "background": "Stream the response instead.",
}


def refusal(request: ResponsesRequest) -> ResponsesRequestError | None:
    """Why Potluck refuses this request, if it does: it names server-side state Potluck does not keep.

    The hub may call this before dispatching (no agent needed); the agent calls it again when translating.
    """
    for field, why in _STATEFUL.items():
        value = getattr(request, field)
        if isinstance(value, msgspec.Raw):
            value = given(value)
        if value is None or value is False:
            continue
        return ResponsesRequestError(f"`{field}` is not supported: {why}. {_INSTEAD[field]}", param=field)
    return None
