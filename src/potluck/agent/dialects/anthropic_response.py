"""A chat-completions answer as an Anthropic Messages answer: the whole JSON body, and error bodies.

The stream has its own state machine (`anthropic_stream`); the pieces both need live here: the
stop reason, a tool call's input, the message id.
"""

from __future__ import annotations

import msgspec

from potluck._shared.ids import new_id
from potluck.agent.dialects.anthropic_request import AnswerContext
from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.anthropic import AnswerBlock, TextBlock, ThinkingBlock, ToolUseBlock
from potluck.protocol.anthropic_answer import ErrorType, Message, StopReason, error_body, error_type_for_status
from potluck.protocol.chat_completions import ChatCompletion, ErrorFields, read_error
from potluck.protocol.errors import ErrorCode
from potluck.protocol.usage import TokenUsage

_decode_completion = msgspec.json.Decoder(ChatCompletion).decode
_decode_json = msgspec.json.decode
_encode = msgspec.json.encode
_BODY_LIMIT = 64 << 20

_STOP_REASON = {
    "stop": StopReason.END_TURN,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "content_filter": StopReason.REFUSAL,
}


def message_id() -> str:
    """A new ``msg_...`` id (the backend's ``chatcmpl-...`` id is not reused: it is not unique everywhere)."""
    return new_id("msg")


def tool_use_id(backend_id: str | None) -> str:
    """The backend's own call id when it gave one (the client sends it back in ``tool_result``), else a new one."""
    return backend_id or new_id("toolu")


def stop_reason(
    finish_reason: str | None, backend_stop: int | str | None, called_tools: bool, answer: AnswerContext
) -> tuple[StopReason, str | None]:
    """Anthropic's stop reason (and stop sequence) from the backend's finish.

    ``stop`` means either end-of-turn or a stop sequence; only a backend that names the string
    (vLLM's ``stop_reason``) tells them apart, and only a string the client asked for counts.
    """
    if called_tools and finish_reason in (None, "stop", "tool_calls", "function_call"):
        return StopReason.TOOL_USE, None
    if isinstance(backend_stop, str) and backend_stop in answer.stop_sequences and finish_reason in (None, "stop"):
        return StopReason.STOP_SEQUENCE, backend_stop
    return _STOP_REASON.get(finish_reason or "stop", StopReason.END_TURN), None


def tool_input(arguments: str) -> dict[str, object] | None:
    """A tool call's JSON arguments as its ``input``: ``{}`` when empty, None when not a JSON object."""
    if not arguments.strip():
        return {}
    try:
        value = _decode_json(arguments)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


class BadAnswerError(ValueError):
    """The backend's answer cannot be said in Anthropic's shape."""


def translate_response(
    body: bytes, answer: AnswerContext, msg_id: str | None = None
) -> tuple[bytes, TokenUsage | None]:
    """A ``chat.completion`` body as a Messages body, with its usage; BadAnswerError if it is not one."""
    try:
        completion = _decode_completion(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadAnswerError(f"the backend's answer is not a chat completion: {exc}") from exc
    if not completion.choices:
        raise BadAnswerError("the backend's answer has no choices")
    choice = completion.choices[0]
    message = choice.message
    content: list[AnswerBlock] = []
    if message is not None:
        reasoning = message.reasoning_content or message.reasoning
        if reasoning and answer.thinking:
            content.append(ThinkingBlock(reasoning))
        if message.content:
            content.append(TextBlock(message.content))
        for call in message.tool_calls or ():
            function = call.function
            name = function.name if function is not None else None
            if not name:
                raise BadAnswerError("the backend called a tool without naming it")
            arguments = (function.arguments if function is not None else None) or ""
            parsed = tool_input(arguments)
            if parsed is None:
                raise BadAnswerError(f"the backend's arguments for tool `{name}` are not a JSON object: {arguments!r}")
            content.append(ToolUseBlock(tool_use_id(call.id), name, parsed))
    called = any(isinstance(b, ToolUseBlock) for b in content)
    reason, sequence = stop_reason(choice.finish_reason, choice.stop_reason, called, answer)
    tokens = TokenUsage.from_openai(completion.usage) if completion.usage is not None else None
    usage = (tokens or TokenUsage()).to_anthropic()
    out = Message(msg_id or message_id(), answer.model, content, reason, sequence, usage)
    return _encode(out), tokens


def translate_error(status: int, body: bytes) -> bytes:
    """An error answer from an OpenAI-compatible backend (any of the shapes they use) in Anthropic's shape."""
    error = read_error(body)
    message, code = error_message(error), error.code
    return error_body(error_type(status, code), message or f"the backend answered HTTP {status}")


class _ErrorShape(msgspec.Struct):
    """Anthropic's error answer, read only to tell whether a body has its shape."""

    class _Detail(msgspec.Struct):
        type: str
        message: str

    type: str
    error: _Detail


_decode_shape = msgspec.json.Decoder(_ErrorShape).decode


def keep_or_translate_error(status: int, body: bytes) -> bytes:
    """A native Messages backend's error answer: kept when it has Anthropic's shape, translated when not
    (llama.cpp answers its ``/v1/messages`` errors in OpenAI's)."""
    try:
        if _decode_shape(body).type == "error":
            return body
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    return translate_error(status, body)


def error_type(status: int, code: int | str | None) -> ErrorType:
    """The Anthropic type of an error: from Potluck's code table when ``code`` is one of its codes, else by status."""
    if isinstance(code, str):
        try:
            return ErrorType(ErrorCode(code).anthropic_type)
        except ValueError:
            pass
    return error_type_for_status(status)


def error_message(error: ErrorFields) -> str:
    """The words of a backend's error, or empty."""
    return error.message or error.type or ""


class MessageResponse:
    """A non-streamed answer, collected as it arrives and translated whole at its end (a relay transform)."""

    content_type = "application/json"

    def __init__(self, answer: AnswerContext, msg_id: str | None = None) -> None:
        self.answer = answer
        self.id = msg_id or message_id()
        self.tokens: TokenUsage | None = None
        self.error: ErrorInfo | None = None
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def usage(self) -> Usage | None:
        """The usage as the agent→hub frame carries it."""
        return None if self.tokens is None else self.tokens.to_frame()

    def translate_error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body)

    def abort(self, message: str) -> bytes:
        """Nothing: a whole answer is written only once complete, so one that broke off has written nothing."""
        return b""

    def feed(self, data: bytes) -> bytes:
        if self.error is None:
            self._size += len(data)
            if self._size > _BODY_LIMIT:
                self.error = ErrorInfo(502, ErrorCode.UPSTREAM_ERROR, "the backend's answer is too large to translate")
                self._parts.clear()
            else:
                self._parts.append(data)
        return b""

    def finish(self) -> bytes:
        if self.error is not None:
            return b""
        try:
            out, self.tokens = translate_response(b"".join(self._parts), self.answer, self.id)
        except BadAnswerError as exc:
            self.error = ErrorInfo(502, ErrorCode.UPSTREAM_ERROR, str(exc))
            return b""
        return out
