"""A Responses request → a chat completions request, for a backend that has no ``/v1/responses``.

What becomes what:

- ``instructions`` and every ``system``/``developer`` message → one leading system message, in order. Chat
  templates often refuse a system message anywhere but first, so a later one is moved up rather than
  dropped; its text is kept.
- ``user`` messages keep their text and images (``input_image`` by URL); ``input_file`` with inline data
  becomes a ``file`` part. Consecutive user messages become one (texts joined by a blank line), as
  consecutive assistant texts do: some templates refuse two turns of one role in a row. A part that points
  at something Potluck cannot fetch (``file_id``, ``file_url``) is refused with a 400 naming it.
- ``assistant`` messages and ``function_call`` items → assistant messages with ``tool_calls``, in order; a
  call right after an assistant message joins it. ``custom_tool_call`` (arguments ``{"input": ...}``) and
  ``local_shell_call`` (arguments: its action) are replayed the same way, so their outputs still answer a call.
- ``*_call_output`` items → ``tool`` messages. Images in an output cannot go in a tool message: they follow
  the run of tool messages as one user message.
- A ``reasoning`` item's text becomes ``reasoning_content`` of the assistant message after it (templates
  that replay reasoning, gpt-oss's among them, need it between tool calls); its ``encrypted_content`` is
  OpenAI's and is dropped.
- Only ``function`` tools are sent; hosted and custom tools (``web_search``, ``file_search``,
  ``local_shell``, ``custom``, ``mcp``...) are skipped, and a ``tool_choice`` forcing one becomes ``auto``.
- ``max_output_tokens`` → ``max_tokens``; ``reasoning.effort`` → ``reasoning_effort``; ``text.format`` →
  ``response_format``; ``stream`` → ``stream`` with ``stream_options.include_usage``. ``store`` is accepted
  and ignored (nothing is stored); every other field is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from potluck.protocol.chat_completions import (
    ChatRequest,
    ContentPart,
    FileData,
    FunctionCall,
    FunctionDefinition,
    FunctionName,
    ImageURL,
    JSONSchemaFormat,
    Message,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    Tool,
    ToolCall,
)
from potluck.protocol.responses import (
    InputItem,
    InputPart,
    ItemType,
    RequestTool,
    ResponseEcho,
    ResponsesRequest,
    ResponsesRequestError,
    TextOptions,
    ToolChoice,
    given,
    refusal,
)

_decode_request = msgspec.json.Decoder(ResponsesRequest).decode
_decode_echo = msgspec.json.Decoder(ResponseEcho).decode
_encode = msgspec.json.Encoder().encode

_TOOL_CALLS = {ItemType.FUNCTION_CALL, ItemType.CUSTOM_TOOL_CALL, ItemType.LOCAL_SHELL_CALL}
_TOOL_OUTPUTS = {ItemType.FUNCTION_CALL_OUTPUT, ItemType.CUSTOM_TOOL_CALL_OUTPUT, ItemType.LOCAL_SHELL_CALL_OUTPUT}
_TEXT_PARTS = {"input_text", "output_text", "text", "summary_text", "reasoning_text"}
_CHOICES = {"auto", "none", "required"}


@dataclass(frozen=True, slots=True)
class ChatTranslation:
    """A Responses request translated: the chat body to send, and what the answer's translator needs."""

    body: bytes
    """The ``POST /v1/chat/completions`` body."""
    stream: bool
    """Whether the client asked for a stream (and the backend was asked for one)."""
    echo: ResponseEcho
    """The request fields the Response repeats."""


def translate_request(body: bytes) -> ChatTranslation:
    """Translate a ``POST /v1/responses`` body. Raises `ResponsesRequestError` (a 400) for what cannot be served."""
    try:
        request = _decode_request(body)
        echo = _decode_echo(body)
    except msgspec.DecodeError as exc:
        raise ResponsesRequestError(f"the body is not a valid Responses request: {exc}") from exc
    refused = refusal(request)
    if refused is not None:
        raise refused
    conversation = _Conversation()
    if isinstance(request.instructions, str):
        conversation.system.append(request.instructions)
    elif request.instructions is not None:
        conversation.add_items(request.instructions, "instructions")
    if isinstance(request.input, str):
        conversation.add_user(request.input)
    else:
        conversation.add_items(request.input, "input")
    tools = _tools(request.tools)
    stream = bool(request.stream)
    chat = ChatRequest(
        model=request.model,
        messages=conversation.messages(),
        stream=True if stream else None,
        stream_options=StreamOptions() if stream else None,
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        reasoning_effort=request.reasoning.effort if request.reasoning is not None else None,
        response_format=_response_format(request.text),
        user=request.user,
    )
    if tools:
        chat.tools = tools
        chat.tool_choice = _tool_choice(request.tool_choice, {t.function.name for t in tools})
        chat.parallel_tool_calls = request.parallel_tool_calls
    return ChatTranslation(body=_encode(chat), stream=stream, echo=echo)


class _Conversation:
    """Chat messages built item by item, keeping tool calls and their outputs paired and in order."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self._messages: list[Message] = []
        self._calls: set[str] = set()
        self._reasoning: str | None = None
        self._tool_images: list[ContentPart] = []

    def messages(self) -> list[Message]:
        self._flush_tool_images()
        if not self.system:
            return self._messages
        return [Message(role="system", content="\n\n".join(self.system)), *self._messages]

    def add_user(self, content: str | list[ContentPart]) -> None:
        self._flush_tool_images()
        self._reasoning = None  # reasoning belongs to the assistant turn it preceded, not to a later one
        last = self._messages[-1] if self._messages else None
        if last is not None and last.role == "user":
            last.content = _joined(last.content, content)
        else:
            self._messages.append(Message(role="user", content=content))

    def add_items(self, items: list[InputItem], field: str) -> None:
        for i, item in enumerate(items):
            where = f"{field}[{i}]"
            kind = item.type
            if kind == ItemType.MESSAGE:
                self._message(item, where)
            elif kind in _TOOL_CALLS:
                self._tool_call(item)
            elif kind in _TOOL_OUTPUTS:
                self._tool_output(item, where)
            elif kind == ItemType.REASONING:
                parts = item.content if isinstance(item.content, list) else item.summary
                self._reasoning = _text(parts or [], "\n") or None
            elif kind == ItemType.ITEM_REFERENCE:
                raise ResponsesRequestError(
                    "`item_reference` is not supported: Potluck stores no items. Send the item itself.", param=where
                )
            # Anything else (web_search_call, file_search_call, compaction, mcp_*...) was a hosted tool's
            # doing or OpenAI-only state: nothing a chat backend can read.

    def _message(self, item: InputItem, where: str) -> None:
        role = item.role or "user"
        content = item.content if item.content is not None else ""
        if role in ("system", "developer"):
            self.system.append(content if isinstance(content, str) else _text(content, "\n"))
        elif role == "assistant":
            text = content if isinstance(content, str) else _text(content, "")
            last = self._messages[-1] if self._messages else None
            if last is not None and last.role == "assistant" and not last.tool_calls and not self._tool_images:
                last.content = _joined(last.content, text)
            else:
                self._append(Message(role="assistant", content=text, reasoning_content=self._reasoning))
            self._reasoning = None
        else:
            self.add_user(content if isinstance(content, str) else _user_parts(content, where))

    def _tool_call(self, item: InputItem) -> None:
        call_id = item.call_id or item.id or ""
        if item.type == ItemType.FUNCTION_CALL:
            name, arguments = item.name or "", item.arguments or "{}"
        elif item.type == ItemType.CUSTOM_TOOL_CALL:
            name, arguments = item.name or "", _encode({"input": item.input or ""}).decode()
        else:
            action = given(item.action)
            name, arguments = "local_shell", bytes(action).decode() if action is not None else "{}"
        call = ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))
        self._calls.add(call_id)
        last = self._messages[-1] if self._messages else None
        if last is not None and last.role == "assistant" and not self._tool_images:
            last.tool_calls = [*(last.tool_calls or ()), call]
            if last.reasoning_content is None:
                last.reasoning_content = self._reasoning
        else:
            self._append(Message(role="assistant", tool_calls=[call], reasoning_content=self._reasoning))
        self._reasoning = None

    def _tool_output(self, item: InputItem, where: str) -> None:
        call_id = item.call_id or item.id or ""
        if call_id not in self._calls:
            return  # answers a call this conversation does not hold (a skipped hosted tool's): nothing to pair
        output = item.output if item.output is not None else ""
        if isinstance(output, str):
            text = output
        else:
            text = _text(output, "\n")
            self._tool_images.extend(_images(output, f"{where}.output"))
        self._messages.append(Message(role="tool", tool_call_id=call_id, content=text))

    def _append(self, message: Message) -> None:
        self._flush_tool_images()
        self._messages.append(message)

    def _flush_tool_images(self) -> None:
        if self._tool_images:
            self._messages.append(Message(role="user", content=self._tool_images))
            self._tool_images = []


def _joined(first: str | list[ContentPart] | None, second: str | list[ContentPart]) -> str | list[ContentPart]:
    """Two consecutive messages of one role as one: templates that want roles to alternate (Mistral's,
    Gemma's) refuse two in a row, and Codex sends several user messages (its context, then the prompt)."""
    if not first:
        return second
    if not second:
        return first
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"
    return [*_as_parts(first), *_as_parts(second)]


def _as_parts(content: str | list[ContentPart] | None) -> list[ContentPart]:
    if isinstance(content, list):
        return content
    return [ContentPart(type="text", text=content or "")]


def _text(parts: list[InputPart], sep: str) -> str:
    return sep.join(p.text or p.refusal or "" for p in parts if p.type in _TEXT_PARTS or p.type == "refusal")


def _user_parts(parts: list[InputPart], where: str) -> str | list[ContentPart]:
    """A message's parts for chat: text, images by URL, inline files. One text part is sent as a string."""
    out: list[ContentPart] = []
    for j, part in enumerate(parts):
        if part.type in _TEXT_PARTS:
            out.append(ContentPart(type="text", text=part.text or ""))
        elif part.type == "input_image":
            out.append(_image(part, f"{where}.content[{j}]"))
        elif part.type == "input_file":
            if part.file_data is None:
                raise _unfetchable(f"{where}.content[{j}]", "a file by `file_id` or `file_url`", "`file_data`")
            out.append(ContentPart(type="file", file=FileData(file_data=part.file_data, filename=part.filename)))
    if not out or (len(out) == 1 and out[0].type == "text"):
        return out[0].text or "" if out else ""
    return out


def _images(parts: list[InputPart], where: str) -> list[ContentPart]:
    return [_image(part, f"{where}[{j}]") for j, part in enumerate(parts) if part.type == "input_image"]


def _image(part: InputPart, param: str) -> ContentPart:
    if part.image_url is None:
        raise _unfetchable(param, "an image by `file_id`", "an `image_url` (a `data:` URL)")
    detail = part.detail if part.detail in ("low", "high") else None
    return ContentPart(type="image_url", image_url=ImageURL(url=part.image_url, detail=detail))


def _unfetchable(param: str, what: str, instead: str) -> ResponsesRequestError:
    return ResponsesRequestError(
        f"{what} is not supported: Potluck has no Files API and fetches nothing. Send {instead} instead.",
        param=param,
    )


def _tools(tools: list[RequestTool] | None) -> list[Tool]:
    return [
        Tool(
            FunctionDefinition(name=t.name, description=t.description, parameters=given(t.parameters), strict=t.strict)
        )
        for t in tools or ()
        if t.type == "function" and t.name
    ]


def _tool_choice(choice: str | ToolChoice | None, functions: set[str]) -> str | NamedToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return choice if choice in _CHOICES else None
    if choice.type == "function" and choice.name in functions:
        return NamedToolChoice(FunctionName(choice.name))
    if choice.type == "allowed_tools" and choice.mode in _CHOICES:
        return choice.mode
    return "auto"  # forces a tool that was skipped (hosted, custom, unknown): let the model choose


def _response_format(text: TextOptions | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema":
        schema = JSONSchemaFormat(
            name=fmt.name or "response", schema=given(fmt.schema), description=fmt.description, strict=fmt.strict
        )
        return ResponseFormat(type="json_schema", json_schema=schema)
    return ResponseFormat(type=fmt.type)
