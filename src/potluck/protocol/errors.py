"""The error contract: codes, HTTP statuses and the OpenAI error envelope.

One table for both processes, so an error raised on the agent and one raised in the hub look the
same to a client. See docs/api.md (error contract).
"""

from __future__ import annotations

import msgspec


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


# code -> (HTTP status, OpenAI error type)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_api_key": (401, "invalid_request_error"),
    "permission_denied": (403, "permission_error"),
    "model_not_found": (404, "invalid_request_error"),
    "not_found": (404, "invalid_request_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "conflict": (409, "invalid_request_error"),
    "invalid_invite": (400, "invalid_request_error"),
    "invalid_request_error": (400, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_exceeded": (429, "rate_limit_error"),
    "insufficient_quota": (402, "insufficient_quota"),
    "server_overloaded": (503, "server_error"),
    "shutting_down": (503, "server_error"),
    "upstream_error": (502, "server_error"),
    "backend_unavailable": (502, "server_error"),
    "upstream_timeout": (504, "server_error"),
    "internal_error": (500, "server_error"),
}


def error_envelope(code: str, message: str, *, param: str | None = None, type_: str | None = None) -> bytes:
    """The JSON bytes of an OpenAI-shaped error body."""
    default_type = ERROR_CODES.get(code, (500, "server_error"))[1]
    return msgspec.json.encode(
        ErrorEnvelope(ErrorBody(message=message, type=type_ or default_type, code=code, param=param))
    )


def status_for(code: str) -> int:
    return ERROR_CODES.get(code, (500, "server_error"))[0]


class PotluckError(Exception):
    """Root of every error Potluck raises on purpose. Carries what the API layer renders."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
            self.status = status if status is not None else status_for(code)
        elif status is not None:
            self.status = status
