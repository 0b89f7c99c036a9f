"""The error contract: one table of codes, each with its HTTP status and its type in each API dialect.

One table for both processes and every dialect, so an error raised on the agent and one raised in the
hub look the same to a client, and an OpenAI and an Anthropic client see the same failure in their own
shape. See docs/api.md (error contract).
"""

from __future__ import annotations

import enum

import msgspec


class ErrorCode(enum.StrEnum):
    """Every error code Potluck answers with. `status`, `openai_type` and `anthropic_type` come from `_TABLE`."""

    INVALID_API_KEY = "invalid_api_key"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    INVALID_REQUEST = "invalid_request_error"
    INVALID_INVITE = "invalid_invite"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    SERVER_OVERLOADED = "server_overloaded"
    SHUTTING_DOWN = "shutting_down"
    MODEL_UNAVAILABLE = "model_unavailable"
    UPSTREAM_ERROR = "upstream_error"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL_ERROR = "internal_error"

    @property
    def status(self) -> int:
        return _TABLE[self][0]

    @property
    def openai_type(self) -> str:
        return _TABLE[self][1]

    @property
    def anthropic_type(self) -> str:
        return _TABLE[self][2]


# code -> (HTTP status, OpenAI error type, Anthropic error type)
_TABLE: dict[ErrorCode, tuple[int, str, str]] = {
    ErrorCode.INVALID_API_KEY: (401, "invalid_request_error", "authentication_error"),
    ErrorCode.PERMISSION_DENIED: (403, "permission_error", "permission_error"),
    ErrorCode.MODEL_NOT_FOUND: (404, "invalid_request_error", "not_found_error"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error", "not_found_error"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "invalid_request_error", "invalid_request_error"),
    ErrorCode.CONFLICT: (409, "invalid_request_error", "invalid_request_error"),
    ErrorCode.INVALID_INVITE: (400, "invalid_request_error", "invalid_request_error"),
    ErrorCode.INVALID_REQUEST: (400, "invalid_request_error", "invalid_request_error"),
    ErrorCode.REQUEST_TOO_LARGE: (413, "invalid_request_error", "request_too_large"),
    ErrorCode.RATE_LIMIT_EXCEEDED: (429, "rate_limit_error", "rate_limit_error"),
    ErrorCode.INSUFFICIENT_QUOTA: (402, "insufficient_quota", "billing_error"),
    ErrorCode.SERVER_OVERLOADED: (503, "server_error", "overloaded_error"),
    ErrorCode.SHUTTING_DOWN: (503, "server_error", "overloaded_error"),
    ErrorCode.MODEL_UNAVAILABLE: (503, "server_error", "overloaded_error"),
    ErrorCode.UPSTREAM_ERROR: (502, "server_error", "api_error"),
    ErrorCode.BACKEND_UNAVAILABLE: (502, "server_error", "api_error"),
    ErrorCode.UPSTREAM_TIMEOUT: (504, "server_error", "api_error"),
    ErrorCode.INTERNAL_ERROR: (500, "server_error", "api_error"),
}

ERROR_CODES: dict[str, tuple[int, str]] = {code.value: (status, openai) for code, (status, openai, _) in _TABLE.items()}
"""code -> (HTTP status, OpenAI error type): the table as plain strings, for docs and the OpenAPI document."""

_BY_STATUS: dict[int, ErrorCode] = {}  # the first code of a status is its generic one
for _code in ErrorCode:
    _BY_STATUS.setdefault(_code.status, _code)


def code_for_status(status: int) -> ErrorCode:
    """The first code of the table with this HTTP status (for errors that carry only a status)."""
    return _BY_STATUS.get(status, ErrorCode.INTERNAL_ERROR)


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """What went wrong, in OpenAI's words."""

    message: str
    """For people; may change between versions."""
    type: str
    """OpenAI's error type, e.g. ``invalid_request_error`` or ``server_error``."""
    code: str | None = None
    """The machine-readable code (see ``ERROR_CODES``)."""
    param: str | None = None
    """The request field at fault, when known."""


class ErrorEnvelope(msgspec.Struct):
    """Every error answer: OpenAI's error shape."""

    error: ErrorBody
    """The error."""


def _lookup(code: str) -> ErrorCode | None:
    try:
        return ErrorCode(code)
    except ValueError:
        return None


def error_envelope(code: str, message: str, *, param: str | None = None, type_: str | None = None) -> bytes:
    """The JSON bytes of an OpenAI-shaped error body."""
    known = _lookup(code)
    default_type = known.openai_type if known is not None else "server_error"
    return msgspec.json.encode(
        ErrorEnvelope(ErrorBody(message=message, type=type_ or default_type, code=code, param=param))
    )


def status_for(code: str) -> int:
    known = _lookup(code)
    return known.status if known is not None else 500


class PotluckError(Exception):
    """Root of every error Potluck raises on purpose. Carries what the API layer renders.

    A subclass names its `code`; its HTTP status comes from the code table unless it sets `status`.
    """

    code: str = ErrorCode.INTERNAL_ERROR
    status: int = _TABLE[ErrorCode.INTERNAL_ERROR][0]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "status" not in cls.__dict__:
            cls.status = status_for(cls.code)

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
            self.status = status if status is not None else status_for(code)
        elif status is not None:
            self.status = status
