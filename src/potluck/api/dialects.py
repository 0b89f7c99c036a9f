"""The client API's dialects (`protocol.openai.Dialect`): how each one shapes the hub's own errors.

OpenAI's chat/completions/embeddings and Responses share OpenAI's error envelope; Anthropic's Messages
API (``/v1/messages...``) has its own, with ``request-id`` and 529 for an overloaded service. Bodies
are never translated here: the agent relays or translates them; the hub only frames its own errors.
"""

from __future__ import annotations

import msgspec

from potluck.protocol.anthropic_answer import ErrorDetail, ErrorEvent, ErrorType
from potluck.protocol.errors import ErrorCode, code_for_status, error_envelope
from potluck.protocol.json_depth import nested_deeper_than
from potluck.protocol.openai import DIALECT_PATHS, Dialect


def dialect_of(path: str) -> Dialect:
    """The dialect of a route (by its path, without the query)."""
    return DIALECT_PATHS.get(path, Dialect.OPENAI)


def id_headers(dialect: Dialect, request_id: str) -> dict[str, str]:
    """The request id headers of every answer: ``x-request-id``, and Anthropic's ``request-id`` where its SDKs
    look for it."""
    if dialect is Dialect.ANTHROPIC:
        return {"x-request-id": request_id, "request-id": request_id}
    return {"x-request-id": request_id}


def error_status(dialect: Dialect, code: str, status: int) -> int:
    """The HTTP status this dialect answers for an error code (Anthropic says 529 when overloaded)."""
    if dialect is Dialect.ANTHROPIC and _anthropic_type(code) is ErrorType.OVERLOADED:
        return 529
    return status


def error_body(dialect: Dialect, code: str, message: str, *, param: str | None = None) -> bytes:
    """The body of an error the hub answers itself, in the dialect's shape."""
    if dialect is Dialect.ANTHROPIC:
        return msgspec.json.encode(ErrorEvent(ErrorDetail(_anthropic_type(code), message)))
    return error_envelope(code, message, param=param)


def stream_error(dialect: Dialect, code: str, message: str) -> bytes:
    """The terminal event of a stream that failed after it started (never a silent end)."""
    if dialect is Dialect.ANTHROPIC:
        event = ErrorEvent(ErrorDetail(_anthropic_type(code), message))
        return b"event: error\ndata: " + msgspec.json.encode(event) + b"\n\n"
    if dialect is Dialect.RESPONSES:
        # The hub cannot know the stream's last sequence number: the agent's own `response.failed`
        # covers failures it sees; this one covers the agent lost mid-stream.
        failed = _ResponsesStreamError(code=code, message=message)
        return b"event: error\ndata: " + msgspec.json.encode(failed) + b"\n\n"
    return b"data: " + error_envelope(code, message) + b"\n\n"


def upstream_error(dialect: Dialect, status: int, body: bytes) -> bytes:
    """An agent's error body in the dialect's shape: kept when it already is, wrapped otherwise.

    OpenAI's shape is an object whose ``error`` is an object with a string ``message``; a wrapped body is
    an ``upstream_error``. Anthropic's is its error event; a wrapped body takes the status's error type.
    """
    shape: type[msgspec.Struct] = ErrorEvent if dialect is Dialect.ANTHROPIC else _OpenAIErrorShape
    try:
        if nested_deeper_than(body):
            raise msgspec.DecodeError("nested too deeply")  # a decoder would recurse without bound
        msgspec.json.decode(body, type=shape)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body.decode("utf-8", "replace").strip()[:1000] or f"upstream answered HTTP {status}"
        code = _code_for_upstream(status) if dialect is Dialect.ANTHROPIC else ErrorCode.UPSTREAM_ERROR
        return error_body(dialect, code, text)
    return body


def _anthropic_type(code: str) -> ErrorType:
    try:
        return ErrorType(ErrorCode(code).anthropic_type)
    except ValueError:
        return ErrorType.API


def _code_for_upstream(status: int) -> str:
    """The error code of a status a backend answered (an unknown 4xx is the client's, a 5xx the upstream's)."""
    code = code_for_status(status)
    if code is ErrorCode.INTERNAL_ERROR:
        return ErrorCode.INVALID_REQUEST if status < 500 else ErrorCode.UPSTREAM_ERROR
    return code


class _OpenAIErrorMessage(msgspec.Struct):
    message: str


class _OpenAIErrorShape(msgspec.Struct):
    error: _OpenAIErrorMessage


class _ResponsesStreamError(msgspec.Struct, tag_field="type", tag="error"):
    code: str
    message: str
    param: str | None = None
