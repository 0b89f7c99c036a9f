"""A chat completion as a Response, the backend's errors in OpenAI's shape, and what the stream shares with them.

Ids: a Response is ``resp_`` + 48 hex digits (as OpenAI's); its items are ``rs_``/``msg_``/``fc_`` + the same
digits + the item's output index, so they are unique and need no randomness of their own. A call the
backend sent without an id gets ``call_`` + random digits.
"""

from __future__ import annotations

import secrets
import time

import msgspec

from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.chat_completions import ChatChunk, ChatCompletion, Delta, error_fields
from potluck.protocol.errors import ErrorCode, code_for_status, error_envelope
from potluck.protocol.responses import (
    ResponseEcho,
    given,
)
from potluck.protocol.responses_output import (
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    MessageItem,
    OutputItem,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)
from potluck.protocol.usage import OpenAIUsage, TokenUsage

_encode = msgspec.json.Encoder().encode
_decode_completion = msgspec.json.Decoder(ChatCompletion).decode

COMPLETED = "completed"
INCOMPLETE = "incomplete"
IN_PROGRESS = "in_progress"
FAILED = "failed"


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def item_id(prefix: str, response_id: str, output_index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}{output_index:04x}"


def now_s() -> int:
    return int(time.time())


def reasoning_of(delta: Delta) -> str | None:
    return delta.reasoning_content or delta.reasoning


def ending(finish_reason: str | None) -> tuple[str, IncompleteDetails | None]:
    """The Response's status for a chat finish reason: cut off by the token limit or a filter is incomplete."""
    if finish_reason == "length":
        return INCOMPLETE, IncompleteDetails("max_output_tokens")
    if finish_reason == "content_filter":
        return INCOMPLETE, IncompleteDetails("content_filter")
    return COMPLETED, None


def responses_usage(usage: OpenAIUsage) -> ResponseUsage:
    """Chat usage as Responses usage. Both count cached tokens inside the input and reasoning inside the output."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details is not None else None
    reasoning = (
        usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details is not None else None
    )
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached or 0),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning or 0),
        total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    )


def agent_usage(usage: OpenAIUsage) -> Usage:
    """The counts the agent reports to the hub, cached and reasoning parts included, through the usage record."""
    return TokenUsage.from_openai(usage).to_frame()


def chunk_error(chunk: ChatChunk) -> str | None:
    """The message of an error the backend put where an answer belongs, if it did."""
    error = error_fields(chunk)
    if error is None:
        return None
    return error.message or error.type or "the backend reported an error"


def response_object(
    echo: ResponseEcho,
    response_id: str,
    created_at: int,
    status: str,
    output: list[OutputItem],
    *,
    usage: ResponseUsage | None = None,
    error: ResponseError | None = None,
    incomplete: IncompleteDetails | None = None,
) -> ResponseObject:
    response = ResponseObject(
        id=response_id,
        created_at=created_at,
        status=status,
        model=echo.model,
        output=output,
        usage=usage,
        error=error,
        incomplete_details=incomplete,
        instructions=given(echo.instructions),
        max_output_tokens=echo.max_output_tokens,
        parallel_tool_calls=echo.parallel_tool_calls,
        reasoning=given(echo.reasoning),
        temperature=echo.temperature,
        top_p=echo.top_p,
        user=echo.user,
    )
    # Absent in the request: keep the Struct's defaults ("auto", [], text format, {}).
    for name in ("text", "tool_choice", "tools", "metadata"):
        raw = given(getattr(echo, name))
        if raw is not None:
            setattr(response, name, raw)
    return response


class ResponsesJSONTranslator:
    """A whole ``chat.completion`` → a whole Response (``stream`` false)."""

    content_type = "application/json"

    def __init__(self, echo: ResponseEcho, *, response_id: str | None = None, created_at: int | None = None) -> None:
        self.echo = echo
        self.id = response_id or new_response_id()
        self.created_at = now_s() if created_at is None else created_at
        self.usage: Usage | None = None
        self.error: ErrorInfo | None = None
        self._body: list[bytes] = []

    def translate_error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body)

    def abort(self, message: str) -> bytes:
        """Nothing: a whole Response is written only once complete, so one that broke off has written nothing."""
        return b""

    def feed(self, data: bytes) -> bytes:
        self._body.append(data)
        return b""

    def finish(self) -> bytes:
        body, self._body = b"".join(self._body), []
        try:
            completion = _decode_completion(body)
        except msgspec.DecodeError:
            self.error = ErrorInfo(502, "upstream_error", "the backend's answer is not a chat completion")
            return b""
        problem = chunk_error(completion)
        if problem is not None:
            self.error = ErrorInfo(502, "upstream_error", problem)
            return b""
        choice = completion.choices[0] if completion.choices else None
        message = choice.message if choice is not None else None
        status, incomplete = ending(choice.finish_reason if choice is not None else None)
        output = _output_items(message, self.id) if message is not None else []
        if incomplete is not None and output:
            output[-1].status = INCOMPLETE
        usage = None
        if completion.usage is not None:
            self.usage = agent_usage(completion.usage)
            usage = responses_usage(completion.usage)
        response = response_object(
            self.echo, self.id, self.created_at, status, output, usage=usage, incomplete=incomplete
        )
        return _encode(response)


def _output_items(message: Delta, response_id: str) -> list[OutputItem]:
    output: list[OutputItem] = []
    reasoning = reasoning_of(message)
    if reasoning:
        output.append(ReasoningItem(item_id("rs", response_id, 0), COMPLETED, [ReasoningText(reasoning)]))
    text = message.content or message.refusal
    if text:
        output.append(MessageItem(item_id("msg", response_id, len(output)), COMPLETED, [OutputText(text)]))
    for call in message.tool_calls or ():
        function = call.function
        output.append(
            FunctionCallItem(
                id=item_id("fc", response_id, len(output)),
                call_id=call.id or new_call_id(),
                name=(function.name if function is not None else None) or "",
                arguments=(function.arguments if function is not None else None) or "",
                status=COMPLETED,
            )
        )
    return output


_CONTEXT_OVERFLOW = ("context length", "context size", "context window", "maximum context", "exceed_context_size")
_MESSAGE_LIMIT = 4000


def _is_openai_envelope(answer: ChatChunk | None) -> bool:
    """``{"error": {"message": str, "type": str, "code": str | null}}``: a numeric code (llama.cpp's, vLLM's)
    is not OpenAI's and is replaced by one of ours."""
    if answer is None or answer.error is None or isinstance(answer.error, str):
        return False
    error = answer.error
    return bool(error.message) and error.type is not None and not isinstance(error.code, int)


def translate_error(status: int, body: bytes) -> bytes:
    """A backend's non-2xx answer in OpenAI's error envelope, which the Responses API shares with chat.

    An envelope that already is OpenAI's goes through untouched, unless it reports an overlong prompt:
    that becomes OpenAI's own code for it, ``context_length_exceeded``.
    """
    try:
        answer: ChatChunk | None = _decode_completion(body)
    except msgspec.DecodeError:
        answer = None
    message, type_, code, param = _error_fields(answer, body)
    said = f"{message or ''} {type_ or ''}".lower()
    if any(phrase in said for phrase in _CONTEXT_OVERFLOW):
        code, type_ = "context_length_exceeded", "invalid_request_error"
    elif _is_openai_envelope(answer):
        return body
    generic = code_for_status(status)
    if status == 404:
        generic = ErrorCode.MODEL_NOT_FOUND  # the chat endpoint exists: what it did not find is the model
    elif generic is ErrorCode.INTERNAL_ERROR and 400 <= status < 500:
        generic = ErrorCode.INVALID_REQUEST  # a 4xx the table does not list (422...) is still the client's
    return error_envelope(
        code or generic.value,
        (message or f"the backend answered HTTP {status}")[:_MESSAGE_LIMIT],
        param=param,
        type_=type_ or generic.openai_type,
    )


def _error_fields(answer: ChatChunk | None, body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, code, param) as the backend gave them; a numeric code is no OpenAI code and is dropped."""
    found = error_fields(answer, failed=True) if answer is not None else None
    if found is None:
        return body.decode("utf-8", "replace").strip(), None, None, None
    return found.message, found.type, found.code if isinstance(found.code, str) else None, found.param
