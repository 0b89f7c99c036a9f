"""``/v1/messages/count_tokens`` for a backend without it: its own tokenizer on the templated prompt.

The prompt is the same one `translate_request` would send (messages, tools, the thinking switch),
so the count is what the backend would see. Where a backend has no tokenizer endpoint,
`estimate_input_tokens` is the last resort: a guess from the text's length, never a count.

- llama.cpp: ``POST /apply-template`` (`apply_template_body`) gives the prompt text (`read_prompt`);
  ``POST /tokenize`` (`llamacpp_tokenize_body`) gives its tokens (`read_token_count`). Newer builds
  also take the chat body whole at ``POST /v1/chat/completions/input_tokens``.
- vLLM: ``POST /tokenize`` with the messages (`vllm_tokenize_body`) gives ``count``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from potluck.agent.dialects.anthropic_request import (
    ThinkingControl,
    chat_fields,
    decode_request,
    system_text,
)
from potluck.protocol.anthropic import (
    ContentBlock,
    ContentSource,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from potluck.protocol.anthropic_answer import TokenCount

_encode = msgspec.json.encode
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_MEDIA = 1600  # Anthropic's figure for a full-size image; PDFs are guessed the same


class CountError(ValueError):
    """A tokenizer answer that carries no count."""


class _Tokenized(msgspec.Struct):
    tokens: list[Any] | None = None  # llama.cpp /tokenize: ids, or {id, piece} objects
    count: int | None = None  # vLLM /tokenize
    input_tokens: int | None = None  # llama.cpp /v1/chat/completions/input_tokens


class _Templated(msgspec.Struct):
    prompt: str


@dataclass(frozen=True, slots=True)
class CountRequest:
    """A count_tokens body, read, with the chat-completions prompt it stands for."""

    request: MessagesRequest
    """The client's request."""
    chat: dict[str, Any]
    """``model``, ``messages``, ``tools`` and ``chat_template_kwargs`` as a chat body has them."""


def count_request(
    body: bytes, *, model: str | None = None, control: ThinkingControl = ThinkingControl.TEMPLATE
) -> CountRequest:
    """Read a ``/v1/messages/count_tokens`` body (``max_tokens`` not needed); a 400 if it is not one."""
    request = decode_request(body)
    chat = chat_fields(request, control)
    chat["model"] = model or request.model
    return CountRequest(request, chat)


def apply_template_body(count: CountRequest) -> bytes:
    """llama.cpp's ``/apply-template`` (or ``/v1/chat/completions/input_tokens``) body."""
    return _encode(count.chat)


def llamacpp_tokenize_body(prompt: str) -> bytes:
    """llama.cpp's ``/tokenize`` body for a templated prompt, tokenized as its chat path does (BOS added)."""
    return _encode({"content": prompt, "add_special": True, "parse_special": True})


def vllm_tokenize_body(count: CountRequest) -> bytes:
    """vLLM's ``/tokenize`` body: it applies the chat template itself."""
    return _encode({**count.chat, "add_generation_prompt": True})


def read_prompt(body: bytes) -> str:
    """The prompt of an ``/apply-template`` answer."""
    try:
        return msgspec.json.decode(body, type=_Templated).prompt
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CountError(f"not an /apply-template answer: {exc}") from exc


def read_token_count(body: bytes) -> int:
    """The count of a tokenizer answer: llama.cpp's ``tokens``, vLLM's ``count``, or ``input_tokens``."""
    try:
        answer = msgspec.json.decode(body, type=_Tokenized)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CountError(f"not a tokenizer answer: {exc}") from exc
    if answer.input_tokens is not None:
        return answer.input_tokens
    if answer.count is not None:
        return answer.count
    if answer.tokens is not None:
        return len(answer.tokens)
    raise CountError("the tokenizer answer has no count")


def token_count_body(input_tokens: int) -> bytes:
    """The ``/v1/messages/count_tokens`` answer."""
    return _encode(TokenCount(input_tokens))


def estimate_input_tokens(request: MessagesRequest) -> int:
    """AN ESTIMATE, NOT A COUNT: about four characters a token, plus a fixed cost per message and per image.

    Only for a backend with no tokenizer endpoint; whoever answers with it must say (and log) that it is one.
    """
    chars = len(system_text(request.system))
    tokens = 0
    for tool in request.tools or ():
        chars += len(tool.name) + len(tool.description or "") + len(_encode(tool.input_schema or {}))
    for message in request.messages:
        tokens += _TOKENS_PER_MESSAGE
        if isinstance(message.content, str):
            chars += len(message.content)
            continue
        block_chars, block_tokens = _estimate_blocks(message.content)
        chars += block_chars
        tokens += block_tokens
    return tokens + math.ceil(chars / _CHARS_PER_TOKEN)


def _estimate_block(block: ContentBlock) -> tuple[int, int]:
    """Characters of text and tokens of media in one block."""
    if isinstance(block, TextBlock):
        return len(block.text), 0
    if isinstance(block, ThinkingBlock):
        return len(block.thinking), 0
    if isinstance(block, ToolUseBlock):
        return len(block.name) + len(_encode(block.input)), 0
    if isinstance(block, SearchResultBlock):
        return len(block.title) + len(block.source) + sum(len(b.text) for b in block.content), 0
    if isinstance(block, DocumentBlock):
        return _estimate_document(block)
    if isinstance(block, ImageBlock):
        return 0, _TOKENS_PER_MEDIA
    if isinstance(block, ToolResultBlock):
        if isinstance(block.content, str):
            return len(block.content), 0
        return _estimate_blocks(block.content or [])
    return 0, 0  # redacted thinking: opaque, and never sent to a backend


def _estimate_document(block: DocumentBlock) -> tuple[int, int]:
    source = block.source
    if isinstance(source, TextSource):
        return len(source.data), 0
    if isinstance(source, ContentSource):
        return (len(source.content), 0) if isinstance(source.content, str) else _estimate_blocks(source.content)
    return 0, _TOKENS_PER_MEDIA


def _estimate_blocks(blocks: Sequence[ContentBlock]) -> tuple[int, int]:
    chars = tokens = 0
    for block in blocks:
        block_chars, block_tokens = _estimate_block(block)
        chars += block_chars
        tokens += block_tokens
    return chars, tokens
