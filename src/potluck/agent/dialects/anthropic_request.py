"""An Anthropic Messages request as a chat-completions request, for a backend that has no ``/v1/messages``.

Unknown top-level fields are dropped. What cannot be said in chat completions is refused with a
400 rather than lost: a file uploaded to Anthropic, a PDF by URL, a block type out of place.
Anthropic's own tools (``bash_20250124``, ``web_search_...``: no ``input_schema``) are skipped,
since no local backend can run them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec

from potluck.protocol.anthropic import (
    Base64Source,
    ContentBlock,
    ContentSource,
    DocumentBlock,
    FileSource,
    ImageBlock,
    MessagesRequest,
    RedactedThinkingBlock,
    Role,
    SearchResultBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    ThinkingType,
    ToolChoiceType,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from potluck.protocol.errors import ErrorCode, PotluckError

BILLING_HEADER = "x-anthropic-billing-header"
"""Claude Code's first system block: it changes on every request, which would defeat the backend's prompt cache."""

_BILLING_HEADER_BYTES = BILLING_HEADER.encode()
_decode_request = msgspec.json.Decoder(MessagesRequest).decode
_encode = msgspec.json.encode


class MessagesRequestError(PotluckError):
    """A Messages request that cannot be read, or says something chat completions cannot."""

    code = ErrorCode.INVALID_REQUEST


class ThinkingControl(enum.Enum):
    """How a backend is told to think or not (besides ``chat_template_kwargs``, which every kind gets)."""

    TEMPLATE = "template"
    """Only ``chat_template_kwargs`` (vLLM, SGLang, and any other server)."""
    LLAMACPP = "llamacpp"
    """Also llama.cpp's ``reasoning_effort`` (``none`` turns reasoning off) and ``thinking_budget_tokens``."""


THINKING_CONTROL = {"llamacpp": ThinkingControl.LLAMACPP}
"""The control for each backend kind that has more than the template switch."""


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """What translating the answer back needs to know about the request."""

    model: str
    """The model as the client named it: answers carry this name."""
    stream: bool
    """The client asked for server-sent events."""
    thinking: bool
    """The client asked for thinking: reasoning becomes ``thinking`` blocks (else it is left out)."""
    stop_sequences: tuple[str, ...] = ()
    """The client's stop sequences."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The translated request."""

    body: bytes
    """The chat-completions body to POST to the backend."""
    answer: AnswerContext
    """For translating its answer."""


def decode_request(body: bytes) -> MessagesRequest:
    """Read a Messages body; a 400 that names the faulty field if it is not one."""
    try:
        return _decode_request(body)
    except msgspec.ValidationError as exc:
        raise MessagesRequestError(f"invalid Messages request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MessagesRequestError(f"the request body is not valid JSON: {exc}") from exc


def translate_request(
    body: bytes, *, model: str | None = None, control: ThinkingControl = ThinkingControl.TEMPLATE
) -> ChatRequest:
    """The chat-completions request for a ``/v1/messages`` body; ``model`` replaces the requested one."""
    req = decode_request(body)
    if req.max_tokens is None:
        raise MessagesRequestError("max_tokens: Field required")
    out = chat_fields(req, control)
    out["model"] = model or req.model
    out["max_tokens"] = req.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(req, name)
        if value is not None:
            out[name] = value
    if req.stop_sequences:
        out["stop"] = req.stop_sequences
    if req.metadata is not None and req.metadata.user_id:
        out["user"] = req.metadata.user_id
    if req.stream:
        out["stream"] = True
        # Always: the agent meters every request from the usage chunk.
        out["stream_options"] = {"include_usage": True}
    answer = AnswerContext(
        model=req.model,
        stream=req.stream,
        thinking=thinking_on(req),
        stop_sequences=tuple(req.stop_sequences or ()),
    )
    return ChatRequest(_encode(out), answer)


def without_billing_header(body: bytes) -> bytes:
    """A Messages body to pass through as it is, but for Claude Code's billing header in its system prompt.

    The header changes on every request; left in, it would defeat the backend's prompt cache. A body
    without it (any client's but Claude Code's) is returned untouched, without being decoded.
    """
    if _BILLING_HEADER_BYTES not in body:
        return body
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body  # the backend answers a malformed body itself
    system = obj.get("system") if isinstance(obj, dict) else None
    if isinstance(system, str) and system.startswith(BILLING_HEADER):
        obj["system"] = system.partition("\n")[2]
    elif isinstance(system, list):
        kept = [b for b in system if not (isinstance(b, dict) and str(b.get("text", "")).startswith(BILLING_HEADER))]
        if len(kept) == len(system):
            return body
        if kept:
            obj["system"] = kept
        else:
            del obj["system"]
    else:
        return body
    return _encode(obj)


def thinking_on(req: MessagesRequest) -> bool:
    """Thinking is on only when asked for (``enabled`` or ``adaptive``); absent means off."""
    return req.thinking is not None and req.thinking.type in (ThinkingType.ENABLED, ThinkingType.ADAPTIVE)


def chat_fields(req: MessagesRequest, control: ThinkingControl) -> dict[str, Any]:
    """What the prompt is made of: messages, tools and the thinking switch (shared with token counting)."""
    out: dict[str, Any] = {"messages": chat_messages(req)}
    tools = [
        {"type": "function", "function": _function(t.name, t.description, t.input_schema)}
        for t in req.tools or ()
        if t.input_schema is not None and t.type in (None, "custom")
    ]
    if tools:
        out["tools"] = tools
        choice = req.tool_choice
        if choice is not None:
            if choice.type is ToolChoiceType.TOOL:
                if not choice.name:
                    raise MessagesRequestError("tool_choice.name: required with type `tool`")
                out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                out["tool_choice"] = {
                    ToolChoiceType.AUTO: "auto",
                    ToolChoiceType.ANY: "required",
                    ToolChoiceType.NONE: "none",
                }[choice.type]
            if choice.disable_parallel_tool_use:
                out["parallel_tool_calls"] = False
    on = thinking_on(req)
    # Said explicitly either way: a template's default (Qwen3 thinks unless told not to) is not the client's.
    out["chat_template_kwargs"] = {"enable_thinking": on, "thinking": on}
    if control is ThinkingControl.LLAMACPP:
        if not on:
            out["reasoning_effort"] = "none"
        else:
            if req.thinking is not None and req.thinking.budget_tokens:
                out["thinking_budget_tokens"] = req.thinking.budget_tokens
            if req.output_config is not None and req.output_config.effort:
                out["reasoning_effort"] = req.output_config.effort
    return out


def _function(name: str, description: str | None, schema: dict[str, Any] | None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = schema
    return function


def system_text(system: str | list[TextBlock] | None) -> str:
    """The system prompt as one text, without Claude Code's per-request billing header."""
    if system is None:
        return ""
    if isinstance(system, str):
        if system.startswith(BILLING_HEADER):
            _, _, system = system.partition("\n")
        return system
    return "\n\n".join(b.text for b in system if not b.text.startswith(BILLING_HEADER))


def chat_messages(req: MessagesRequest) -> list[dict[str, Any]]:
    """The conversation as chat-completions messages.

    A user turn's tool results come first, as ``tool`` messages in their order; images a tool
    returned and the turn's other content follow in one user message. Consecutive turns of one
    role are merged, as Anthropic does, since many chat templates insist on alternation.
    """
    out: list[dict[str, Any]] = []
    # System text inside `messages` (Claude Code sends some) joins the top-level system prompt: many chat
    # templates accept one system message, and only first.
    texts = [system_text(req.system)]
    texts += [_system_message_text(m.content) for m in req.messages if m.role is Role.SYSTEM]
    system = "\n\n".join(t for t in texts if t)
    if system:
        out.append({"role": "system", "content": system})
    for message in req.messages:
        if message.role is Role.SYSTEM:
            continue
        if isinstance(message.content, str):
            _append(out, {"role": message.role.value, "content": message.content})
        elif message.role is Role.USER:
            _user_turn(message.content, out)
        else:
            _assistant_turn(message.content, out)
    return out


def _system_message_text(content: str | list[ContentBlock]) -> str:
    """A system message's text (billing header dropped, as in the system prompt); text blocks only."""
    if isinstance(content, str):
        return system_text(content)
    texts: list[TextBlock] = []
    for block in content:
        if not isinstance(block, TextBlock):
            raise MessagesRequestError(f"a system message can hold text only, not a `{_tag(block)}` block")
        texts.append(block)
    return system_text(texts)


def _user_turn(blocks: list[ContentBlock], out: list[dict[str, Any]]) -> None:
    results: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            text, returned_media = _tool_result(block)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            media.extend(returned_media)
        elif isinstance(block, ToolUseBlock | ThinkingBlock | RedactedThinkingBlock):
            raise MessagesRequestError(f"a user message cannot hold a `{_tag(block)}` block")
        else:
            parts.extend(_parts(block))
    out.extend(results)
    if media or parts:
        _append(out, {"role": "user", "content": _content(media + parts)})


def _assistant_turn(blocks: list[ContentBlock], out: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            arguments = _encode(block.input).decode()
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif not isinstance(block, RedactedThinkingBlock):  # opaque to any model but Claude: left out
            raise MessagesRequestError(f"an assistant message cannot hold a `{_tag(block)}` block")
    if not (texts or reasoning or calls):
        return
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    _append(out, message)


def _tool_result(block: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
    """A tool result's text, and the images or files it returned (which a tool message cannot carry)."""
    content = block.content
    media: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts: list[str] = []
        for item in content:
            for part in _parts(item):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    media.append(part)
        text = "\n".join(texts)
    if block.is_error:
        text = f"Error: {text}" if text else "Error"
    return text, media


def _parts(block: ContentBlock) -> list[dict[str, Any]]:
    """Chat-completions content parts for a text, image, document or search-result block."""
    if isinstance(block, TextBlock):
        return [_text(block.text)]
    if isinstance(block, ImageBlock):
        return [_image(block.source)]
    if isinstance(block, DocumentBlock):
        return _document(block)
    if isinstance(block, SearchResultBlock):
        body = "\n".join(b.text for b in block.content)
        return [_text(f"{block.title}\n{block.source}\n\n{body}")]
    raise MessagesRequestError(f"a `{_tag(block)}` block cannot be content here")


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image(source: Base64Source | URLSource | FileSource) -> dict[str, Any]:
    if isinstance(source, Base64Source):
        return {"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}
    if isinstance(source, URLSource):
        return {"type": "image_url", "image_url": {"url": source.url}}
    raise MessagesRequestError("files uploaded to Anthropic's Files API cannot be read here: send the image inline")


def _document(block: DocumentBlock) -> list[dict[str, Any]]:
    source = block.source
    heading = "\n\n".join(t for t in (block.title, block.context) if t)
    if isinstance(source, TextSource):
        return [_text(f"{heading}\n\n{source.data}" if heading else source.data)]
    if isinstance(source, ContentSource):
        inner = (
            [_text(source.content)]
            if isinstance(source.content, str)
            else [p for b in source.content for p in _parts(b)]
        )
        return [_text(heading), *inner] if heading else inner
    if isinstance(source, Base64Source):
        data_url = f"data:{source.media_type};base64,{source.data}"
        return [{"type": "file", "file": {"filename": block.title or "document.pdf", "file_data": data_url}}]
    if isinstance(source, URLSource):
        raise MessagesRequestError("documents by URL cannot be read here: send the PDF inline (base64)")
    raise MessagesRequestError("files uploaded to Anthropic's Files API cannot be read here: send the document inline")


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone text part as a plain string: every template renders that."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _append(out: list[dict[str, Any]], message: dict[str, Any]) -> None:
    last = out[-1] if out else None
    if last is None or last["role"] != message["role"] or message["role"] not in ("user", "assistant"):
        out.append(message)
    elif message["role"] == "user":
        last["content"] = _as_parts(last["content"]) + _as_parts(message["content"])
    else:
        last["content"] = (last.get("content") or "") + (message.get("content") or "")
        if message.get("tool_calls"):
            last["tool_calls"] = [*last.get("tool_calls", []), *message["tool_calls"]]
        if message.get("reasoning_content"):
            last["reasoning_content"] = last.get("reasoning_content", "") + message["reasoning_content"]


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_text(content)] if isinstance(content, str) else content


def _tag(block: ContentBlock) -> str:
    return str(type(block).__struct_config__.tag)
