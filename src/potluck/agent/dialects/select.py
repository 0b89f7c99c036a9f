"""How a request in each client dialect goes to a backend: passed through untouched, or translated.

OpenAI requests go to the backend kind's own adapter (`Backend.upstream`). A request in Anthropic's
Messages or the Responses dialect passes through untouched when the backend serves its path itself
(`Backend.native_paths`, which each kind decides; none for a generic server), and is otherwise
translated to ``/v1/chat/completions``, with a translator for the answer. What the translation
cannot serve is refused here with a 400 in the dialect's error shape (`RefusedError`).
``/v1/messages/count_tokens`` on a backend without it is answered by `agent.counting`.

`PASS_THROUGH` says how the relay reads an answer it passes through: its usage (never removed from
these dialects' answers) and, for the dialects, its errors in the client's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from potluck.agent.backends.base import Backend, BodyTransform, Upstream
from potluck.agent.dialects import anthropic_response, responses
from potluck.agent.dialects.anthropic_request import (
    THINKING_CONTROL,
    MessagesRequestError,
    ThinkingControl,
    translate_request,
    without_billing_header,
)
from potluck.agent.dialects.anthropic_response import MessageResponse
from potluck.agent.dialects.anthropic_stream import MessagesStream
from potluck.protocol.agent import RequestMessage, Usage
from potluck.protocol.anthropic_answer import ErrorType, error_body
from potluck.protocol.dialect_sse import (
    AnthropicUsageScanner,
    ResponsesUsageScanner,
    anthropic_usage_from_json,
    responses_usage_from_json,
)
from potluck.protocol.openai import CHAT_PATH, COUNT_TOKENS_PATH, DIALECT_PATHS, Dialect
from potluck.protocol.responses import ResponsesRequestError
from potluck.protocol.sse import SSEUsageScanner, add_include_usage, usage_from_json


class RefusedError(Exception):
    """A request the translation cannot serve: answered on the agent with ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        """The error in the client's dialect."""


def control_for(backend: Backend) -> ThinkingControl:
    """How this backend kind is told to think or not."""
    return THINKING_CONTROL.get(backend.kind, ThinkingControl.TEMPLATE)


def counts_here(backend: Backend, req: RequestMessage) -> bool:
    """A token count the agent answers itself (the backend has no ``/v1/messages/count_tokens``)."""
    return req.path == COUNT_TOKENS_PATH and req.path not in backend.native_paths


def upstream_for(backend: Backend, req: RequestMessage, body: bytes) -> Upstream:
    """How to send this request to this backend; raises `RefusedError` for one the translation cannot serve.

    Not for a token count the agent answers itself (`counts_here`)."""
    dialect = DIALECT_PATHS.get(req.path)
    if dialect is None:
        upstream = backend.upstream(req, body)
        if req.strip_usage and upstream.translator is None:
            upstream.body = add_include_usage(upstream.body)  # metered, then removed from the stream
        return upstream
    if req.path in backend.native_paths:
        if dialect is Dialect.ANTHROPIC:
            body = without_billing_header(body)
        return Upstream(req.path, body, dialect=dialect)
    if dialect is Dialect.ANTHROPIC:
        try:
            chat = translate_request(body, model=req.model, control=control_for(backend))
        except MessagesRequestError as exc:
            raise RefusedError(400, error_body(ErrorType.INVALID_REQUEST, exc.message), exc.message) from exc
        answer = chat.answer
        return Upstream(CHAT_PATH, chat.body, MessagesStream(answer) if answer.stream else MessageResponse(answer))
    try:
        translation = responses.translate_request(body)
    except ResponsesRequestError as exc:
        raise RefusedError(exc.status, exc.body(), exc.message) from exc
    return Upstream(CHAT_PATH, translation.body, responses.translator_for(translation))


@dataclass(frozen=True, slots=True)
class PassThrough:
    """How the relay reads an answer that it passes through untouched."""

    stream: Callable[[RequestMessage], BodyTransform]
    """A reader of its event stream: whole events out, usage (and a terminal error event) picked out."""
    body_usage: Callable[[bytes], Usage | None]
    """The usage of a whole body."""
    error_body: Callable[[int, bytes], bytes] | None
    """An error answer in the dialect's shape (None: relayed as the backend sent it)."""


PASS_THROUGH: dict[Dialect, PassThrough] = {
    Dialect.OPENAI: PassThrough(lambda req: SSEUsageScanner(req.strip_usage), usage_from_json, None),
    Dialect.ANTHROPIC: PassThrough(
        lambda req: AnthropicUsageScanner(), anthropic_usage_from_json, anthropic_response.keep_or_translate_error
    ),
    Dialect.RESPONSES: PassThrough(
        lambda req: ResponsesUsageScanner(), responses_usage_from_json, responses.translate_error
    ),
}
