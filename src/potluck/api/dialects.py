"""The client API's dialects: how each one shapes errors, before and after a response has started.

OpenAI's chat/completions/embeddings and Responses share OpenAI's error envelope; Anthropic's Messages
API (``/v1/messages...``) has its own, with ``request-id`` and 529 for an overloaded service. Bodies
are never translated here: the agent relays or translates them; the hub only frames its own errors.
"""

from __future__ import annotations

import enum

import msgspec

from potluck.hub.dispatch import normalize_error_body
from potluck.protocol.anthropic_answer import ErrorDetail, ErrorEvent, ErrorType
from potluck.protocol.errors import ErrorCode, code_for_status, error_envelope


class Dialect(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    RESPONSES = "responses"

    @classmethod
    def of_path(cls, path: str) -> Dialect:
        if path.startswith("/v1/messages"):
            return cls.ANTHROPIC
        if path.startswith("/v1/responses"):
            return cls.RESPONSES
        return cls.OPENAI

    def status(self, code: str, status: int) -> int:
        """The HTTP status this dialect answers for an error code (Anthropic says 529 when overloaded)."""
        if self is Dialect.ANTHROPIC and _anthropic_type(code) is ErrorType.OVERLOADED:
            return 529
        return status

    def error_body(self, code: str, message: str, request_id: str, *, param: str | None = None) -> bytes:
        if self is Dialect.ANTHROPIC:
            return msgspec.json.encode(ErrorEvent(ErrorDetail(_anthropic_type(code), message)))
        return error_envelope(code, message, param=param)

    def stream_error(self, code: str, message: str) -> bytes:
        """The terminal event of a stream that failed after it started (never a silent end)."""
        if self is Dialect.ANTHROPIC:
            event = ErrorEvent(ErrorDetail(_anthropic_type(code), message))
            return b"event: error\ndata: " + msgspec.json.encode(event) + b"\n\n"
        if self is Dialect.RESPONSES:
            # The hub cannot know the stream's last sequence number: the agent's own `response.failed`
            # covers failures it sees; this one covers the agent lost mid-stream.
            failed = _ResponsesStreamError(code=code, message=message)
            return b"event: error\ndata: " + msgspec.json.encode(failed) + b"\n\n"
        return b"data: " + error_envelope(code, message) + b"\n\n"

    def upstream_error(self, status: int, body: bytes, request_id: str) -> bytes:
        """An agent's error body in this dialect's shape: kept when it already is, wrapped otherwise."""
        if self is Dialect.ANTHROPIC:
            try:
                msgspec.json.decode(body, type=ErrorEvent)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                text = body.decode("utf-8", "replace").strip()[:1000] or f"upstream answered HTTP {status}"
                return self.error_body(_code_for_upstream(status), text, request_id)
            return body
        return normalize_error_body(status, body)


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


class _ResponsesStreamError(msgspec.Struct, tag_field="type", tag="error"):
    code: str
    message: str
    param: str | None = None
